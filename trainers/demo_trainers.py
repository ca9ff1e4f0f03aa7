"""Re-exports the trainer classes of ``nnunet_nerve.training.demo_trainers`` for nnU-Net's trainer lookup
(this folder is the one ``nnUNet_extTrainer`` points at; the classes live in the package)."""
from nnunet_nerve.training.demo_trainers import (  # noqa: F401
    FCDenseNetTrainer_demo,
    nnUNetTrainer_demo,
    FCDenseNetTrainer_DiceCE_demo,
    FCDenseNetTrainer_SGDPoly_demo,
    FCDenseNetTrainer_nnUNetDA_demo,
    FCDenseNetTrainer_nnUNetRecipe_demo,
)
