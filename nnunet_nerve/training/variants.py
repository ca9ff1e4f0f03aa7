"""Variants of FCDenseNetTrainer, named as nnU-Net names its own: ``FCDenseNetTrainer_<what differs>``.

Each overrides one thing. They import the base trainer by its package name, never as a
top-level module, so they work whichever way nnU-Net imported this folder.
"""
from __future__ import annotations

import torch

from nnunet_nerve.training.fcdensenet_trainer import FCDenseNetTrainer


class FCDenseNetTrainer_5epochs(FCDenseNetTrainer):
    """The paper's trainer stopped after 5 epochs (learning rate stays at 1e-3)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5


class FCDenseNetTrainer_noConvBias(FCDenseNetTrainer):
    """No bias in convolutions that feed a batch norm (977,762 instead of 979,106 parameters)."""

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        from nnunet_nerve.network.fcdensenet import FCDenseNet

        return FCDenseNet(in_channels=num_input_channels, num_classes=num_output_channels, conv_bias=False)


class FCDenseNetTrainer_mirrorTTA(FCDenseNetTrainer):
    """Allows nnU-Net's test-time mirroring at prediction (the paper used none)."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        result = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = result[3]
        return result


class FCDenseNetTrainer_plannedPatch(FCDenseNetTrainer):
    """nnU-Net's planned 2D patch (each side rounded up to a multiple of 16) instead of 320 x 320:
    for images much smaller than the paper's, where a 320 x 320 patch would be mostly padding."""

    def patch_size_for(self, plans, configuration):
        from nnunet_nerve.training.plans import divisible_patch, resolved_configuration

        return divisible_patch(resolved_configuration(plans["configurations"], configuration)["patch_size"])


class FCDenseNetTrainer_plannedPatchInference(FCDenseNetTrainer):
    """Trains on the paper's 320 x 320 crops, predicts with nnU-Net's planned 2D patch (each
    side rounded up to a multiple of 16), which nnU-Net sizes to the median slice: the network
    is fully convolutional, so a 640 x 768 slice takes one tile instead of 12 at
    nnUNetv2_predict's default step 0.5 (docs/inference.md has the measured speed-up)."""

    def inference_patch_size_for(self, plans, configuration):
        from nnunet_nerve.training.plans import divisible_patch, resolved_configuration

        return divisible_patch(resolved_configuration(plans["configurations"], configuration)["patch_size"])


class FCDenseNetTrainer_cpuSmoke(FCDenseNetTrainer):
    """A CPU smoke run, for tests and first checks only: 64 x 64 patches, batches of 2,
    3 epochs of at most 2 training and 1 validation iterations, a checkpoint after every
    epoch (so an interrupted run resumes with --c). It learns nothing useful."""

    patch_size = (64, 64)
    batch_size_slices = 2

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 3
        self.save_every = 1

    def set_iterations_per_epoch(self):
        super().set_iterations_per_epoch()
        self.num_iterations_per_epoch = min(self.num_iterations_per_epoch, 2)
        self.num_val_iterations_per_epoch = 1
