"""The demo's trainers: FC-DenseNet and nnU-Net's default U-Net on the same small budget.

A DEMO-SIZED SCHEDULE, not the paper's: both train the same number of epochs of the same
number of iterations with batches of 8 on patches of the same size (``DEMO_PATCH``), so that `nnunet-nerve demo` finishes on a
laptop CPU. Everything else is each method's own: FC-DenseNet keeps the paper's Adam, loss
and augmentation; nnU-Net keeps its SGD/poly schedule, Dice+CE loss with deep supervision
and its augmentation.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_nerve import nnunet_plans
from nnunet_nerve.demo_budget import (DEMO_BATCH_SIZE, DEMO_PATCH, DEMO_SAVE_EVERY, DEMO_VAL_ITERATIONS,
                                      demo_epochs, demo_iterations)
from nnunet_nerve.trainers.fcdensenet_trainer import FCDenseNetTrainer

SKIPPED_VALIDATION = ("final validation skipped: the demo predicts the held-out fold with nnUNetv2_predict "
                      "and evaluates it with nnunet-nerve evaluate")


class FCDenseNetTrainer_demo(FCDenseNetTrainer):
    """FCDenseNetTrainer on the demo budget (see the module docstring)."""

    patch_size = DEMO_PATCH
    batch_size_slices = DEMO_BATCH_SIZE

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = demo_epochs()
        self.save_every = DEMO_SAVE_EVERY

    def set_iterations_per_epoch(self):
        self.num_iterations_per_epoch = demo_iterations()
        self.num_val_iterations_per_epoch = DEMO_VAL_ITERATIONS

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file(SKIPPED_VALIDATION)


class nnUNetTrainer_demo(nnUNetTrainer):
    """nnU-Net's default trainer on the demo budget (see the module docstring)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        plans = nnunet_plans.with_patch_and_batch(plans, configuration, DEMO_PATCH, DEMO_BATCH_SIZE)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = demo_epochs()
        self.num_iterations_per_epoch = demo_iterations()
        self.num_val_iterations_per_epoch = DEMO_VAL_ITERATIONS
        self.save_every = DEMO_SAVE_EVERY

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file(SKIPPED_VALIDATION)
