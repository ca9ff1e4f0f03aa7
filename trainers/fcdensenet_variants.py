"""Re-exports the trainer classes of ``nnunet_nerve.training.variants`` for nnU-Net's trainer lookup
(this folder is the one ``nnUNet_extTrainer`` points at; the classes live in the package)."""
from nnunet_nerve.training.variants import (  # noqa: F401
    FCDenseNetTrainer_5epochs,
    FCDenseNetTrainer_noConvBias,
    FCDenseNetTrainer_mirrorTTA,
    FCDenseNetTrainer_plannedPatch,
    FCDenseNetTrainer_plannedPatchInference,
    FCDenseNetTrainer_cpuSmoke,
)
