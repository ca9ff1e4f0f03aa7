"""FCDenseNetTrainer built from a real (tiny) preprocessed dataset: the paper's settings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiny_trainer import DATASET_ID, preprocessed, trainer_factory  # noqa: F401 (fixtures: one dataset per module)

def test_paper_settings(trainer_factory):
    from nnunet_nerve.network.fcdensenet import FCDenseNet

    t = trainer_factory()
    assert isinstance(t.network, FCDenseNet)
    assert isinstance(t.optimizer, torch.optim.Adam)
    group = t.optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["weight_decay"] == 0
    assert t.num_epochs == 100
    assert t.enable_deep_supervision is False
    assert t.batch_size == 8 and t.configuration_manager.batch_size == 8
    assert list(t.configuration_manager.patch_size) == [320, 320]
    assert t.plans_manager.plans["configurations"]["2d"]["patch_size"] == [320, 320]


@pytest.mark.parametrize("epoch,lr", [(0, 1e-3), (29, 1e-3), (30, 1e-4), (79, 1e-4), (80, 1e-5), (99, 1e-5)])
def test_learning_rate_by_epoch(trainer_factory, epoch, lr):
    t = trainer_factory()
    t.lr_scheduler.step(epoch)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-9)


def test_loss_is_plain_cross_entropy(trainer_factory):
    from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

    t = trainer_factory()
    assert type(t.loss) is RobustCrossEntropyLoss
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 1, 8, 8))
    expected = torch.nn.functional.cross_entropy(logits, target[:, 0])
    assert t.loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_iterations_are_one_pass_over_training_slices(trainer_factory):
    t = trainer_factory()
    t.set_iterations_per_epoch()
    tr_keys, val_keys = t.do_split()
    slices = 6 * len(tr_keys)  # every tiny case has 6 slices
    assert t.num_iterations_per_epoch == -(-slices // 8)
    assert t.num_val_iterations_per_epoch == -(-6 * len(val_keys) // 8)


def test_augmentation_is_flips_translation_elastic_only(trainer_factory):
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

    t = trainer_factory()
    rot, dummy2d, initial, mirror = t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert t.inference_allowed_mirroring_axes is None  # the paper used no test-time mirroring
    pipeline = t.get_training_transforms(t.configuration_manager.patch_size, rot, None, mirror, dummy2d)
    kinds = [type(x) for x in pipeline.transforms]
    assert kinds == [SpatialTransform, MirrorTransform, RemoveLabelTansform]
    spatial = pipeline.transforms[0]
    assert spatial.p_rotation == 0 and spatial.p_scaling == 0 and spatial.p_elastic_deform > 0
    assert spatial.random_crop  # random translation inside the larger initial patch
    assert all(i > p for i, p in zip(initial, t.configuration_manager.patch_size))


def test_dataloader_gives_paper_batches(trainer_factory):
    t = trainer_factory()
    train_gen, val_gen = t.get_dataloaders()
    batch = next(train_gen)
    assert tuple(batch["data"].shape) == (8, 1, 320, 320)
    assert tuple(batch["target"].shape) == (8, 1, 320, 320)
    assert set(torch.unique(batch["target"]).tolist()) <= {0, 1}
    out = t.network(batch["data"][:1])
    assert tuple(out.shape) == (1, 2, 320, 320)


def test_variant_network_without_conv_bias(trainer_factory):
    t = trainer_factory("FCDenseNetTrainer_noConvBias")
    assert sum(p.numel() for p in t.network.parameters() if p.requires_grad) == 977_762


def test_planned_patch_variant_uses_multiple_of_16(trainer_factory):
    t = trainer_factory("FCDenseNetTrainer_plannedPatch")
    assert all(p % 16 == 0 for p in t.configuration_manager.patch_size)


def test_planned_patch_inference_variant_saves_planned_tile(trainer_factory, preprocessed):
    """Trains on 320 x 320 batches, but the plans.json that on_train_start writes for
    nnUNetv2_predict (and nnU-Net's predictor reads back) carry nnU-Net's planned patch."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    base, _ = preprocessed
    planned = json.loads((base / "pre" / f"Dataset{DATASET_ID:03d}_Tiny" / "nnUNetPlans.json").read_text())
    expected = [-(-p // 16) * 16 for p in planned["configurations"]["2d"]["patch_size"]]
    t = trainer_factory("FCDenseNetTrainer_plannedPatchInference")
    assert list(t.configuration_manager.patch_size) == [320, 320]
    t.on_train_start()
    try:
        saved = json.loads((Path(t.output_folder_base) / "plans.json").read_text())
        assert saved["configurations"]["2d"]["patch_size"] == expected
        assert list(t.configuration_manager.patch_size) == [320, 320]   # still trains on crops
        t.save_checkpoint(str(Path(t.output_folder) / "checkpoint_final.pth"))
    finally:
        t.on_train_end()
    predictor = nnUNetPredictor(device=torch.device("cpu"))
    predictor.initialize_from_trained_model_folder(t.output_folder_base, (0,), "checkpoint_final.pth")
    assert list(predictor.configuration_manager.patch_size) == expected
    plain = trainer_factory("FCDenseNetTrainer")
    assert plain.plans_for_inference()["configurations"]["2d"]["patch_size"] == [320, 320]


def test_3d_configuration_is_refused():
    from nnunet_nerve.errors import NerveError
    from nnunet_nerve.training.plans import with_patch_and_batch

    plans = {"plans_name": "p", "configurations": {"3d_fullres": {"patch_size": [8, 64, 64]}}}
    with pytest.raises(NerveError, match="2D network"):
        with_patch_and_batch(plans, "3d_fullres", (320, 320), 8)
