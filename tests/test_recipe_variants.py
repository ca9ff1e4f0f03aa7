"""The one-hook recipe variants (nnunet_nerve/training/recipe_variants.py), built from a real tiny
preprocessed dataset: each changes exactly its component, to nnU-Net's, and nothing else;
each trains with the real nnUNetv2_train. The seeded demo-budget trainers repeat with one
seed and differ between seeds."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import run, script
from tiny_trainer import DATASET_ID, preprocessed, trainer_factory  # noqa: F401 (fixtures: one dataset per module)

BASE = "FCDenseNetTrainer"
#: variant -> the components it may change (keys of ``components``)
CHANGES = {
    "FCDenseNetTrainer_DiceCE": {"loss"},
    "FCDenseNetTrainer_SGDPoly": {"optimizer", "lr_schedule"},
    "FCDenseNetTrainer_nnUNetDA": {"augmentation"},
    "FCDenseNetTrainer_nnUNetRecipe": {"loss", "optimizer", "lr_schedule", "augmentation"},
}
PROBE_EPOCHS = (0, 1, 29, 30, 50, 80, 99)


def describe_loss(loss) -> tuple:
    """The loss's class and every setting that decides its value (recursively for compound losses)."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss

    if isinstance(loss, DC_and_CE_loss):
        dc = loss.dc
        return (type(loss).__name__, loss.weight_ce, loss.weight_dice, loss.ignore_label,
                describe_loss(loss.ce), (type(dc).__name__, dc.batch_dice, dc.do_bg, dc.smooth, dc.apply_nonlin.__name__))
    return (type(loss).__name__, getattr(loss, "ignore_index", None), getattr(loss, "weight", None),
            getattr(loss, "reduction", None))


def components(t) -> dict:
    """Everything that defines a training run, by component."""
    rotation, dummy_2d, initial_patch, mirror_axes = t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    patch = t.configuration_manager.patch_size
    pipeline = t.get_training_transforms(patch, rotation, t._get_deep_supervision_scales(), mirror_axes, dummy_2d)
    t.set_iterations_per_epoch()
    optimizer = t.optimizer
    hyper = {k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, bool, tuple))}
    lrs = []
    for epoch in PROBE_EPOCHS:
        t.lr_scheduler.step(epoch)
        lrs.append(round(optimizer.param_groups[0]["lr"], 12))
    return {
        "network": (type(t.network).__name__, sum(p.numel() for p in t.network.parameters())),
        "loss": describe_loss(t.loss),
        "optimizer": (type(optimizer).__name__, sorted(hyper.items())),
        "lr_schedule": (type(t.lr_scheduler).__name__, tuple(lrs)),
        "augmentation": (repr(pipeline), repr(rotation), tuple(int(i) for i in initial_patch), dummy_2d),
        "mirror_axes_in_training": tuple(mirror_axes),
        "validation_transforms": repr(t.get_validation_transforms(t._get_deep_supervision_scales())),
        "budget": (t.num_epochs, t.batch_size, tuple(patch), t.num_iterations_per_epoch,
                   t.num_val_iterations_per_epoch, t.oversample_foreground_percent),
        "deep_supervision": t.enable_deep_supervision,
        "inference": (t.inference_allowed_mirroring_axes,
                      t.plans_for_inference()["configurations"]["2d"]["patch_size"]),
    }


@pytest.mark.parametrize("variant", sorted(CHANGES))
def test_variant_changes_exactly_its_component(trainer_factory, variant):
    base = components(trainer_factory(BASE))
    changed = components(trainer_factory(variant))
    assert base.keys() == changed.keys()
    assert {k for k in base if base[k] != changed[k]} == CHANGES[variant]


def _soft_dice_foreground(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool, smooth: float = 1e-5):
    """nnU-Net's soft Dice of the foreground class, from its definition:
    (2 sum(p*g) + smooth) / (sum(p) + sum(g) + smooth), p the softmax foreground probability,
    summed over the batch and pixels (batch Dice) or per sample and then averaged."""
    p = torch.softmax(logits.double(), 1)[:, 1]
    g = (target[:, 0] == 1).double()
    axes = (0, 1, 2) if batch_dice else (1, 2)
    dice = (2 * (p * g).sum(axes) + smooth) / (p.sum(axes) + g.sum(axes) + smooth)
    return dice.mean()


@pytest.mark.parametrize("variant", ["FCDenseNetTrainer_DiceCE", "FCDenseNetTrainer_nnUNetRecipe"])
def test_dice_ce_loss_is_nnunets_without_deep_supervision(trainer_factory, variant):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

    t = trainer_factory(variant)
    assert type(t.loss) is DC_and_CE_loss   # not wrapped in DeepSupervisionWrapper
    assert (t.loss.weight_ce, t.loss.weight_dice) == (1, 1)
    assert type(t.loss.dc) is MemoryEfficientSoftDiceLoss and type(t.loss.ce) is RobustCrossEntropyLoss
    assert t.loss.dc.do_bg is False and t.loss.dc.smooth == 1e-5
    batch_dice = t.configuration_manager.batch_dice
    assert t.loss.dc.batch_dice == batch_dice
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 16, 16)
    target = (torch.rand(3, 1, 16, 16) > 0.7).long()
    expected = (torch.nn.functional.cross_entropy(logits.double(), target[:, 0])
                - _soft_dice_foreground(logits, target, batch_dice))
    assert t.loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("variant", ["FCDenseNetTrainer_SGDPoly", "FCDenseNetTrainer_nnUNetRecipe"])
def test_sgd_poly_is_nnunets_optimizer_and_schedule(trainer_factory, variant):
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    t = trainer_factory(variant)
    reference = trainer_factory("nnUNetTrainer")   # nnU-Net's own values, from the same plans
    opt = t.optimizer
    assert type(opt) is torch.optim.SGD and type(t.lr_scheduler) is PolyLRScheduler
    group = opt.param_groups[0]
    assert group["momentum"] == 0.99 and group["nesterov"] is True
    assert group["weight_decay"] == pytest.approx(3e-5) == reference.weight_decay
    assert t.initial_lr == pytest.approx(1e-2) == reference.initial_lr
    assert t.num_epochs == 100   # the paper's epochs: the schedule decays over them
    for epoch in (0, 10, 30, 80, 99):
        t.lr_scheduler.step(epoch)
        assert group["lr"] == pytest.approx(1e-2 * (1 - epoch / 100) ** 0.9, rel=1e-12)


@pytest.mark.parametrize("variant", ["FCDenseNetTrainer_nnUNetDA", "FCDenseNetTrainer_nnUNetRecipe"])
def test_nnunet_da_is_nnunets_default_augmentation(trainer_factory, variant):
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

    t = trainer_factory(variant)
    rotation, dummy_2d, initial_patch, mirror = t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert t.inference_allowed_mirroring_axes is None   # prediction as the paper: no test-time mirroring
    assert tuple(mirror) == (0, 1) and dummy_2d is False
    assert rotation == pytest.approx((-math.pi, math.pi))   # nnU-Net's range for a square 2D patch
    patch = t.configuration_manager.patch_size
    assert all(i > p for i, p in zip(initial_patch, patch))
    pipeline = t.get_training_transforms(patch, rotation, None, mirror, dummy_2d)
    inner = [type(getattr(x, "transform", x)).__name__ for x in pipeline.transforms]
    assert inner == ["SpatialTransform", "GaussianNoiseTransform", "GaussianBlurTransform",
                     "MultiplicativeBrightnessTransform", "ContrastTransform", "SimulateLowResolutionTransform",
                     "GammaTransform", "GammaTransform", "MirrorTransform", RemoveLabelTansform.__name__]
    spatial = pipeline.transforms[0]
    assert isinstance(spatial, SpatialTransform) and spatial.p_rotation == 0.2 and spatial.p_scaling == 0.2
    assert spatial.scaling == (0.7, 1.4) and spatial.p_elastic_deform == 0
    assert isinstance(pipeline.transforms[-2], MirrorTransform) and isinstance(pipeline.transforms[-1], RemoveLabelTansform)


def test_budget_combinations_keep_variant_and_budget(trainer_factory):
    smoke = trainer_factory("FCDenseNetTrainer_nnUNetRecipe_cpuSmoke")
    assert type(smoke.optimizer) is torch.optim.SGD and type(smoke.loss).__name__ == "DC_and_CE_loss"
    assert smoke.num_epochs == 3 and list(smoke.configuration_manager.patch_size) == [64, 64]
    demo = trainer_factory("FCDenseNetTrainer_SGDPoly_demo")
    from nnunet_nerve.training.demo_budget import demo_epochs

    assert type(demo.optimizer) is torch.optim.SGD and demo.num_epochs == demo_epochs()
    assert demo.lr_scheduler.max_steps == demo_epochs()   # the poly schedule decays over the budget's epochs


@pytest.mark.integration
@pytest.mark.parametrize("variant", sorted(CHANGES))
def test_nnunetv2_train_runs_each_variant(preprocessed, variant):
    """The real nnUNetv2_train, a cpuSmoke-sized schedule; the saved run used the variant's components."""
    base, env = preprocessed
    trainer = f"{variant}_cpuSmoke"
    run([script("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", trainer, "-device", "cpu"],
        env=dict(env, nnUNet_compile="false", OMP_NUM_THREADS="2", nnUNet_def_n_proc="1"))
    fold = base / "res" / f"Dataset{DATASET_ID:03d}_Tiny" / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == trainer and checkpoint["current_epoch"] == 3
    group = checkpoint["optimizer_state"]["param_groups"][0]
    debug = json.loads((fold / "debug.json").read_text())
    assert ("momentum" in group and group["nesterov"]) == ("optimizer" in CHANGES[variant])
    assert ("betas" in group) == ("optimizer" not in CHANGES[variant])
    assert debug["loss"].startswith("DC_and_CE_loss") == ("loss" in CHANGES[variant])
    transforms = debug["dataloader_train.generator.transforms"]
    assert ("GaussianNoiseTransform" in transforms) == ("augmentation" in CHANGES[variant])
    assert checkpoint["inference_allowed_mirroring_axes"] is None
    assert (fold / "validation" / "summary.json").is_file()


# ---------------------------------------------------------------- seeds of the demo-budget trainers

def _first_batch(t) -> np.ndarray:
    train, val = t.get_dataloaders()
    try:
        batch = next(train)
        target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]  # deep supervision
        return torch.cat([batch["data"].flatten(), target.flatten().float()]).numpy()
    finally:
        for augmenter in (train, val):
            if hasattr(augmenter, "_finish"):
                augmenter._finish()


def _initial_weights(t) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in t.network.state_dict().values() if p.is_floating_point()]).numpy()


@pytest.mark.parametrize("trainer", ["FCDenseNetTrainer_demo", "nnUNetTrainer_demo"])
def test_seed_repeats_initial_weights_and_first_batch(trainer_factory, monkeypatch, trainer):
    """With augmentation workers (nnUNet_n_proc_DA=1, as the demo runs): the same seed gives the
    same initial weights and the same first batch, another seed other ones."""
    from nnunet_nerve.training.seeding import SEED_VARIABLE

    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    drawn = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        monkeypatch.setenv(SEED_VARIABLE, seed)
        t = trainer_factory(trainer)
        drawn[name] = (_initial_weights(t), _first_batch(t))
    for i in range(2):
        assert np.array_equal(drawn["a"][i], drawn["b"][i])
        assert not np.array_equal(drawn["a"][i], drawn["c"][i])


def test_without_seed_the_first_batches_differ(trainer_factory, monkeypatch):
    """Unseeded (nnU-Net's behaviour, kept when NNUNET_NERVE_SEED is unset): runs draw differently."""
    from nnunet_nerve.training.seeding import SEED_VARIABLE

    monkeypatch.delenv(SEED_VARIABLE, raising=False)
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    first = [_first_batch(trainer_factory("FCDenseNetTrainer_demo")) for _ in range(2)]
    assert not np.array_equal(first[0], first[1])


def test_seed_variable_is_checked():
    from nnunet_nerve.errors import NerveError
    from nnunet_nerve.training.seeding import SEED_VARIABLE, seed_from_environment, worker_seeds

    assert seed_from_environment({}) is None and seed_from_environment({SEED_VARIABLE: " 12 "}) == 12
    with pytest.raises(NerveError, match=SEED_VARIABLE):
        seed_from_environment({SEED_VARIABLE: "-1"})
    seeds = worker_seeds(3, 0, 4) + worker_seeds(3, 1, 4) + worker_seeds(4, 0, 4)
    assert len(set(seeds)) == 12 and worker_seeds(3, 0, 4) == worker_seeds(3, 0, 4)
