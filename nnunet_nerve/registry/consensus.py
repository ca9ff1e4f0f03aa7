"""The consensus of several raters' binary masks: majority vote or STAPLE.

Plain functions over same-shaped arrays (any non-zero value counts as nerve); the result
is a uint8 0/1 array of the same shape.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk


METHODS = ("majority", "staple")
#: STAPLE's per-voxel probability of nerve above which the consensus is nerve.
STAPLE_THRESHOLD = 0.5


def _stack(masks: Sequence[np.ndarray]) -> np.ndarray:
    if len(masks) == 0:
        raise ValueError("consensus needs at least one rater mask")
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"rater masks differ in shape: {sorted(shapes)}")
    return np.stack([np.asarray(m) != 0 for m in masks])


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Nerve where more than half of the raters marked it: count > n/2 (2 of 3, 3 of 4, 2 of 2)."""
    stacked = _stack(masks)
    return (2 * stacked.sum(axis=0, dtype=np.int32) > stacked.shape[0]).astype(np.uint8)


def staple(masks: Sequence[np.ndarray], threshold: float = STAPLE_THRESHOLD) -> np.ndarray:
    """SimpleITK's STAPLE (Warfield et al. 2004) probability of nerve, thresholded: p > ``threshold``.

    Where STAPLE is undefined (every mask empty gives NaN) the result is background.
    """
    stacked = _stack(masks)
    images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stacked]
    probability = sitk.GetArrayFromImage(sitk.STAPLE(images, 1.0))
    return (np.nan_to_num(probability, nan=0.0) > threshold).astype(np.uint8)


def consensus(masks: Sequence[np.ndarray], method: str = "majority") -> np.ndarray:
    """The consensus by ``method`` (``"majority"`` or ``"staple"``)."""
    if method == "majority":
        return majority_vote(masks)
    if method == "staple":
        return staple(masks)
    raise ValueError(f"unknown consensus method {method!r}; expected one of {', '.join(METHODS)}")
