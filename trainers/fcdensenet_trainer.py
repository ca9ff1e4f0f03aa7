"""Re-exports the trainer classes of ``nnunet_nerve.training.fcdensenet_trainer`` for nnU-Net's trainer lookup
(this folder is the one ``nnUNet_extTrainer`` points at; the classes live in the package)."""
from nnunet_nerve.training.fcdensenet_trainer import (  # noqa: F401
    FCDenseNetTrainer,
)
