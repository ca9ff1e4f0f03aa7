"""What FCDenseNetTrainer changes in nnU-Net's plans, and what it reads from the dataset.

Kept out of the trainer module so that it can be imported and tested on its own.
"""
from __future__ import annotations

import math
from copy import deepcopy
from typing import Iterable, Sequence

from nnunet_nerve.errors import NerveError

PAPER_PATCH_SIZE = (320, 320)
PAPER_BATCH_SIZE = 8
#: nnU-Net's name for per-image z-score: (x - mean(x)) / std(x) over the whole image
#: (``use_mask_for_norm`` False), applied at preprocessing time.
ZSCORE = "ZScoreNormalization"


def with_patch_and_batch(plans: dict, configuration: str, patch_size: Sequence[int] | None,
                         batch_size: int | None) -> dict:
    """A copy of ``plans`` whose ``configuration`` uses this patch and batch size.

    The trainer saves these plans to its results folder, where ``nnUNetv2_predict`` reads
    the patch size for its sliding window. ``None`` keeps nnU-Net's planned value.
    """
    plans = deepcopy(plans)
    configs = plans.get("configurations", {})
    if configuration not in configs:
        raise NerveError(f"plans {plans.get('plans_name', '?')}: no configuration {configuration!r}")
    config = configs[configuration]
    planned = resolved_configuration(configs, configuration)
    if len(planned.get("patch_size", [])) != 2:
        raise NerveError(f"FCDenseNet is a 2D network: configuration {configuration!r} has patch size "
                         f"{planned.get('patch_size')}; train the '2d' configuration")
    if patch_size is not None:
        config["patch_size"] = [int(p) for p in patch_size]
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    return plans


def check_zscore(plans: dict, configuration: str) -> list[str]:
    """Problems with the planned intensity normalisation (empty when it is per-image z-score)."""
    config = resolved_configuration(plans["configurations"], configuration)
    problems = []
    schemes = config.get("normalization_schemes", [])
    if any(s != ZSCORE for s in schemes):
        problems.append(f"normalization is {schemes}, the paper uses per-image z-score ({ZSCORE}); "
                        "name the channel e.g. 'T2' (not 'CT') in dataset.json and re-run preprocessing")
    if any(config.get("use_mask_for_norm", [])):
        problems.append("use_mask_for_norm is on: the z-score is computed inside the nonzero mask only, "
                        "not over the whole image as in the paper")
    return problems


def divisible_patch(shape: Sequence[int], divisor: int = 16, cap: int | None = None) -> list[int]:
    """The smallest multiple of ``divisor`` per axis covering ``shape`` (capped at ``cap``)."""
    out = [int(math.ceil(s / divisor) * divisor) for s in shape]
    return [min(o, cap) for o in out] if cap else out


def iterations_per_pass(num_slices: int, batch_size: int) -> int:
    """One pass over the slices: ``ceil(num_slices / batch_size)`` (at least 1)."""
    return max(1, math.ceil(num_slices / batch_size))


def count_slices(dataset_class, folder: str, identifiers: Iterable[str]) -> int:
    """Number of 2D slices (axis 1 of nnU-Net's c, z, y, x arrays) over the given cases."""
    identifiers = list(identifiers)
    dataset = dataset_class(folder, identifiers)
    total = 0
    for key in identifiers:
        data = dataset.load_case(key)[0]
        total += int(data.shape[1])
    return total


def resolved_configuration(configs: dict, name: str) -> dict:
    """A configuration with nnU-Net's ``inherits_from`` chain applied."""
    config = dict(configs[name])
    parent = config.get("inherits_from")
    if parent:
        merged = resolved_configuration(configs, parent)
        merged.update(config)
        return merged
    return config
