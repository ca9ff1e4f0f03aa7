"""FCDenseNetTrainer: the 2D FC-DenseNet of Balsiger et al. (2018) trained by nnU-Net.

Each concern sits in the hook nnU-Net provides for it:
- ``__init__``: the paper's hyper-parameters (Adam 1e-3, 100 epochs, no deep supervision) and
  its 320 x 320 patches / batches of 8 written into the plans, which ``on_train_start``
  saves to the results folder, where ``nnUNetv2_predict`` reads them.
- ``build_network_architecture``: ``nnunet_nerve.FCDenseNet`` (returns logits).
- ``_build_loss``: plain cross-entropy over the 2 softmax classes.
- ``configure_optimizers``: Adam (betas 0.9/0.999, no weight decay), step schedule from the
  epoch number (1e-4 from epoch 30, 1e-5 from 80), so ``--c`` resumes at the right rate.
- ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` and
  ``get_training_transforms``: flips, translation, elastic deformation only; no test-time
  mirroring (the paper used none).
- ``on_train_start``: an epoch is one pass over the training slices.
- ``do_split``: a fold beyond splits_final.json is refused (nnU-Net would train on a random
  80:20 split).
Intensity normalisation is nnU-Net's per-image z-score, applied at preprocessing; the trainer
refuses plans that normalise otherwise.

One deliberate difference from the paper: slices are drawn by nnU-Net's data loader, which
centres a third of the patches on nerve voxels (``oversample_foreground_percent`` 0.33),
where the paper walked through the slices uniformly. With the nerve at about 0.14 % of the
voxels, uniform 320 x 320 crops of 640 x 768 slices would often hold no nerve at all.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_nerve.training import plans as nnunet_plans
from nnunet_nerve.training.augmentation import initial_patch_size, paper_training_transforms
from nnunet_nerve.errors import NerveError
from nnunet_nerve.training.schedule import EpochStepLR


#: The folds nnU-Net writes into a new splits_final.json.
NNUNET_DEFAULT_FOLDS = 5


class FCDenseNetTrainer(nnUNetTrainer):
    #: Patch and batch size written into the plans (None: keep nnU-Net's planned value).
    patch_size = nnunet_plans.PAPER_PATCH_SIZE
    batch_size_slices = nnunet_plans.PAPER_BATCH_SIZE

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        inference_patch = self.inference_patch_size_for(plans, configuration)
        plans = nnunet_plans.with_patch_and_batch(plans, configuration, self.patch_size_for(plans, configuration),
                                                  self.batch_size_slices)
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: the plans saved with the model (None: the training plans), see inference_patch_size_for
        self.inference_plans = (None if inference_patch is None else
                                nnunet_plans.with_patch_and_batch(plans, configuration, inference_patch, None))
        problems = nnunet_plans.check_zscore(plans, configuration)
        if problems:
            raise NerveError(f"{type(self).__name__}: " + "; ".join(problems))
        self.initial_lr = 1e-3
        self.weight_decay = 0.0
        self.num_epochs = 100
        self.enable_deep_supervision = False

    def patch_size_for(self, plans: dict, configuration: str):
        """The patch size this trainer trains and predicts with (a hook for variants)."""
        return self.patch_size

    def inference_patch_size_for(self, plans: dict, configuration: str):
        """The tile nnUNetv2_predict (and the final validation) slides over each slice, when it
        differs from the training patch; None: the training patch (a hook for variants). It
        goes into the plans.json saved with the model, which is where nnUNetv2_predict reads it."""
        return None

    def plans_for_inference(self) -> dict:
        """The plans saved with the model for nnUNetv2_predict."""
        return self.inference_plans if self.inference_plans is not None else self.plans_manager.plans

    def perform_actual_validation(self, save_probabilities: bool = False):
        if self.inference_plans is not None:   # validate as nnUNetv2_predict will predict
            from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

            self.configuration_manager = PlansManager(self.inference_plans).get_configuration(
                self.configuration_name)
        super().perform_actual_validation(save_probabilities)

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        from nnunet_nerve.network.fcdensenet import FCDenseNet

        return FCDenseNet(in_channels=num_input_channels, num_classes=num_output_channels)

    def set_deep_supervision_enabled(self, enabled: bool):
        """FC-DenseNet has a single output: nothing to switch."""

    def _build_loss(self):
        ignore = self.label_manager.ignore_label
        return RobustCrossEntropyLoss(weight=None, ignore_index=ignore if ignore is not None else -100)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, betas=(0.9, 0.999),
                                     weight_decay=self.weight_decay)
        return optimizer, EpochStepLR(optimizer, initial_lr=self.initial_lr)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        patch_size = self.configuration_manager.patch_size
        mirror_axes = tuple(range(len(patch_size)))
        self.inference_allowed_mirroring_axes = None
        no_rotation = (0.0, 0.0)
        return no_rotation, False, initial_patch_size(patch_size), mirror_axes

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        if is_cascaded or regions is not None:
            raise NerveError("FCDenseNetTrainer supports plain label training only (no cascade, no regions)")
        return paper_training_transforms(patch_size, mirror_axes)

    def on_train_start(self):
        super().on_train_start()   # saves the training plans as plans.json
        if self.inference_plans is not None and self.local_rank == 0:
            from batchgenerators.utilities.file_and_folder_operations import join, save_json

            save_json(self.plans_for_inference(), join(self.output_folder_base, "plans.json"), sort_keys=False)
        self.set_iterations_per_epoch()

    def do_split(self):
        """nnU-Net's split, but a fold beyond splits_final.json is refused (nnU-Net would
        silently train on a random 80:20 split instead): ``SystemExit`` with one ``error:``
        line saying how many folds the split file holds. Without the file nnU-Net writes 5."""
        if self.fold != "all":
            import json
            import os

            splits_file = os.path.join(self.preprocessed_dataset_folder_base, "splits_final.json")
            n_folds = len(json.loads(Path(splits_file).read_text())) if os.path.isfile(splits_file) else NNUNET_DEFAULT_FOLDS
            if not 0 <= int(self.fold) < n_folds:
                raise SystemExit(
                    f"error: fold {self.fold}: {splits_file} holds {n_folds} folds (0 to {n_folds - 1}); nnU-Net would "
                    f"silently train on a random 80:20 split instead. Train fold 0 to {n_folds - 1}, or 'all'")
        return super().do_split()

    def set_iterations_per_epoch(self):
        """An epoch is one pass over the training slices; validation one pass over the validation slices."""
        tr_keys, val_keys = self.do_split()
        folder = self.preprocessed_dataset_folder
        global_batch = self.configuration_manager.batch_size
        self.num_iterations_per_epoch = nnunet_plans.iterations_per_pass(
            nnunet_plans.count_slices(self.dataset_class, folder, tr_keys), global_batch)
        self.num_val_iterations_per_epoch = nnunet_plans.iterations_per_pass(
            nnunet_plans.count_slices(self.dataset_class, folder, val_keys), global_batch)
        self.print_to_log_file(f"iterations per epoch: {self.num_iterations_per_epoch} training, "
                               f"{self.num_val_iterations_per_epoch} validation (one pass over the slices)")
