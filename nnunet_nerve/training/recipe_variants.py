"""FCDenseNetTrainer with one part of nnU-Net's training recipe swapped in: where the gap to nnU-Net comes from.

The paper's recipe (plain cross-entropy; Adam with a step schedule; flips, translation and
elastic deformation) differs from nnU-Net's in three places. Each variant below overrides
the one nnU-Net hook that holds one of them and calls nnU-Net's own implementation there
(``nnUNetTrainer.<hook>``), so it trains exactly what ``nnUNetTrainer`` would, nothing
re-implemented; everything else (network, patch and batch size, epochs, iterations, no
deep supervision, no test-time mirroring) stays the paper's:

- ``FCDenseNetTrainer_DiceCE``: ``_build_loss`` -> nnU-Net's Dice + cross-entropy
  (``DC_and_CE_loss``, weights 1 and 1, ``MemoryEfficientSoftDiceLoss`` without the
  background class, smooth 1e-5, batch Dice as planned). FC-DenseNet has one output, so
  there is no deep-supervision wrapper (nnU-Net adds it only with deep supervision on).
- ``FCDenseNetTrainer_SGDPoly``: ``configure_optimizers`` -> nnU-Net's SGD (momentum 0.99,
  Nesterov, initial rate 1e-2, weight decay 3e-5) with its poly schedule
  ``1e-2 * (1 - epoch / num_epochs) ** 0.9``.
- ``FCDenseNetTrainer_nnUNetDA``: ``get_training_transforms`` -> nnU-Net's default
  augmentation (rotation, scaling, noise, blur, brightness, contrast, low resolution,
  gamma, mirroring), plus the rotation range and larger initial patch that it needs from
  ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` (nnU-Net splits its
  augmentation over these two hooks). Prediction stays without test-time mirroring.
- ``FCDenseNetTrainer_nnUNetRecipe``: all three (the FC-DenseNet inside nnU-Net's recipe),
  by inheriting the three variants.

Budgets combine by multiple inheritance, variant first: ``class
FCDenseNetTrainer_DiceCE_cpuSmoke(FCDenseNetTrainer_DiceCE, FCDenseNetTrainer_cpuSmoke)``;
the variant's hook and the budget's (epochs, iterations, patch) touch different
attributes. The ``_cpuSmoke`` combinations are here, the demo budget's in
``demo_trainers.py``; any other (``_5epochs``, your own) is the same one line in a module of
a folder listed in ``nnUNet_extTrainer``.
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_nerve.training.fcdensenet_trainer import FCDenseNetTrainer
from nnunet_nerve.training.variants import FCDenseNetTrainer_cpuSmoke

#: nnUNetTrainer.__init__'s optimizer settings (FCDenseNetTrainer sets the paper's 1e-3 and 0).
NNUNET_INITIAL_LR = 1e-2
NNUNET_WEIGHT_DECAY = 3e-5


class FCDenseNetTrainer_DiceCE(FCDenseNetTrainer):
    """The paper's trainer with nnU-Net's Dice + cross-entropy loss instead of plain cross-entropy."""

    def _build_loss(self):
        return nnUNetTrainer._build_loss(self)   # enable_deep_supervision is False: no wrapper


class FCDenseNetTrainer_SGDPoly(FCDenseNetTrainer):
    """The paper's trainer with nnU-Net's SGD and poly schedule instead of Adam and its step schedule."""

    def configure_optimizers(self):
        self.initial_lr, self.weight_decay = NNUNET_INITIAL_LR, NNUNET_WEIGHT_DECAY
        return nnUNetTrainer.configure_optimizers(self)


class FCDenseNetTrainer_nnUNetDA(FCDenseNetTrainer):
    """The paper's trainer with nnU-Net's default augmentation instead of flips, translation and elastic."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        result = nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(self)
        self.inference_allowed_mirroring_axes = None   # augmentation only: prediction unchanged
        return result

    get_training_transforms = staticmethod(nnUNetTrainer.get_training_transforms)


class FCDenseNetTrainer_nnUNetRecipe(FCDenseNetTrainer_DiceCE, FCDenseNetTrainer_SGDPoly, FCDenseNetTrainer_nnUNetDA):
    """FC-DenseNet inside nnU-Net's recipe: its loss, optimizer and schedule, and augmentation."""


class FCDenseNetTrainer_DiceCE_cpuSmoke(FCDenseNetTrainer_DiceCE, FCDenseNetTrainer_cpuSmoke):
    """FCDenseNetTrainer_DiceCE on the CPU smoke budget."""


class FCDenseNetTrainer_SGDPoly_cpuSmoke(FCDenseNetTrainer_SGDPoly, FCDenseNetTrainer_cpuSmoke):
    """FCDenseNetTrainer_SGDPoly on the CPU smoke budget."""


class FCDenseNetTrainer_nnUNetDA_cpuSmoke(FCDenseNetTrainer_nnUNetDA, FCDenseNetTrainer_cpuSmoke):
    """FCDenseNetTrainer_nnUNetDA on the CPU smoke budget."""


class FCDenseNetTrainer_nnUNetRecipe_cpuSmoke(FCDenseNetTrainer_nnUNetRecipe, FCDenseNetTrainer_cpuSmoke):
    """FCDenseNetTrainer_nnUNetRecipe on the CPU smoke budget."""
