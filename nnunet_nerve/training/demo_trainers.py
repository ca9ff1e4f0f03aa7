"""The demo's trainers: FC-DenseNet and nnU-Net's default U-Net on the same small budget.

A DEMO-SIZED SCHEDULE, not the paper's: both train the same number of epochs of the same
number of iterations with batches of 8 on patches of the same size (``DEMO_PATCH``), so that `nnunet-nerve demo` finishes on a
laptop CPU. Everything else is each method's own: FC-DenseNet keeps the paper's Adam, loss
and augmentation; nnU-Net keeps its SGD/poly schedule, Dice+CE loss with deep supervision
and its augmentation.

Both draw from an explicit seed when ``NNUNET_NERVE_SEED`` is set (``SeededTraining``,
nnunet_nerve/training/seeding.py: initial weights, batches and augmentation), which is how
`nnunet-nerve demo --ablation` repeats each method over several seeds; unset, they draw as
nnU-Net does (unseeded). The ablation's ``FCDenseNetTrainer_<variant>_demo`` trainers put the
recipe variants of ``fcdensenet_recipe_variants.py`` on this budget.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_nerve.training import plans as nnunet_plans
from nnunet_nerve.training.demo_budget import (DEMO_BATCH_SIZE, DEMO_PATCH, DEMO_SAVE_EVERY, DEMO_VAL_ITERATIONS,
                                      demo_epochs, demo_iterations)
from nnunet_nerve.training.seeding import (TRAIN_STREAM, VALIDATION_STREAM, seed_augmenter_workers, seed_everything,
                                  seed_from_environment)
from nnunet_nerve.training.recipe_variants import (FCDenseNetTrainer_DiceCE, FCDenseNetTrainer_nnUNetDA,
                                                              FCDenseNetTrainer_nnUNetRecipe, FCDenseNetTrainer_SGDPoly)
from nnunet_nerve.training.fcdensenet_trainer import FCDenseNetTrainer

SKIPPED_VALIDATION = ("final validation skipped: the demo predicts the held-out fold with nnUNetv2_predict "
                      "and evaluates it with nnunet-nerve evaluate")


class SeededTraining:
    """Mixin (first base): seeds the run from ``NNUNET_NERVE_SEED`` before the network is
    built (``initialize``) and starts the augmentation workers from seeds derived from it
    (``get_dataloaders``); without the variable, nothing changes."""

    def initialize(self):
        seed = seed_from_environment()
        if seed is not None:
            self.print_to_log_file(f"seed {seed} (from NNUNET_NERVE_SEED): network init, batches, augmentation")
            seed_everything(seed)
        super().initialize()

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        seed = seed_from_environment()
        if seed is not None:
            seed_augmenter_workers(train, seed, TRAIN_STREAM)
            seed_augmenter_workers(val, seed, VALIDATION_STREAM)
        return train, val


class FCDenseNetTrainer_demo(SeededTraining, FCDenseNetTrainer):
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


class nnUNetTrainer_demo(SeededTraining, nnUNetTrainer):
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


class FCDenseNetTrainer_DiceCE_demo(FCDenseNetTrainer_DiceCE, FCDenseNetTrainer_demo):
    """FCDenseNetTrainer_DiceCE on the demo budget."""


class FCDenseNetTrainer_SGDPoly_demo(FCDenseNetTrainer_SGDPoly, FCDenseNetTrainer_demo):
    """FCDenseNetTrainer_SGDPoly on the demo budget (the poly schedule decays over the demo's epochs)."""


class FCDenseNetTrainer_nnUNetDA_demo(FCDenseNetTrainer_nnUNetDA, FCDenseNetTrainer_demo):
    """FCDenseNetTrainer_nnUNetDA on the demo budget."""


class FCDenseNetTrainer_nnUNetRecipe_demo(FCDenseNetTrainer_nnUNetRecipe, FCDenseNetTrainer_demo):
    """FCDenseNetTrainer_nnUNetRecipe on the demo budget."""
