"""Re-exports the trainer classes of ``nnunet_nerve.training.recipe_variants`` for nnU-Net's trainer lookup
(this folder is the one ``nnUNet_extTrainer`` points at; the classes live in the package)."""
from nnunet_nerve.training.recipe_variants import (  # noqa: F401
    FCDenseNetTrainer_DiceCE,
    FCDenseNetTrainer_SGDPoly,
    FCDenseNetTrainer_nnUNetDA,
    FCDenseNetTrainer_nnUNetRecipe,
    FCDenseNetTrainer_DiceCE_cpuSmoke,
    FCDenseNetTrainer_SGDPoly_cpuSmoke,
    FCDenseNetTrainer_nnUNetDA_cpuSmoke,
    FCDenseNetTrainer_nnUNetRecipe_cpuSmoke,
)
