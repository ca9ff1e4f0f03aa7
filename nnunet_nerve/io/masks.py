"""Checking mask arrays: binary (0 = background, 1 = nerve), or one label value (a rater's mask)."""
from __future__ import annotations

import numpy as np

from nnunet_nerve.errors import NerveError


def binary_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """The mask as booleans; NerveError naming ``name`` unless every value is 0 or 1."""
    if ((mask != 0) & (mask != 1)).any():
        values = np.unique(mask)
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
        raise NerveError(f"{name}: mask is not binary (values {shown}); expected 0 = background and 1 = nerve")
    return mask.astype(bool)


def label_mask_problems(mask: np.ndarray) -> list:
    """Why ``mask`` is not a one-label mask (at most one non-zero value, which conversion reads
    as nerve); each a phrase such as "has 2 different non-zero values (1, 2); ...". NaN and
    infinity never get here from a file: ``io.images.read_image`` refuses them."""
    problems = []
    values = np.unique(np.asarray(mask))
    nonzero = values[values != 0]
    if nonzero.size > 1:
        shown = ", ".join(f"{v:g}" for v in nonzero[:5]) + (", ..." if nonzero.size > 5 else "")
        problems.append(f"has {nonzero.size} different non-zero values ({shown}); expected a binary mask")
    return problems


def uniform_mask_problem(mask: np.ndarray) -> "str | None":
    """"is empty (no nerve voxel)" or "marks every voxel as nerve" for a mask with one value
    everywhere (an unfinished or inverted segmentation), else None."""
    nonzero = int(np.count_nonzero(mask))
    if nonzero == 0:
        return "is empty (no nerve voxel)"
    if nonzero == np.size(mask):
        return "marks every voxel as nerve"
    return None


#: A nerve fills a small part of any image that holds it with its surroundings: the sciatic
#: nerve under 1 % of an axial slice of the thigh, about 30 % of a crop leaving a few mm
#: around it. A mask marking more than this fraction of the voxels is no nerve.
MAX_NERVE_FRACTION = 0.5


def inverted_mask_problem(mask: np.ndarray) -> "str | None":
    """"marks P % of the voxels as nerve (...)" when more than ``MAX_NERVE_FRACTION`` of the
    voxels are non-zero but not all (``uniform_mask_problem`` names that): most likely a mask
    with the labels swapped (nerve 0, background 1); else None."""
    nonzero = int(np.count_nonzero(mask))
    if nonzero == np.size(mask) or nonzero <= MAX_NERVE_FRACTION * np.size(mask):
        return None
    return (f"marks {100 * nonzero / np.size(mask):.1f} % of the voxels as nerve (more than "
            f"{100 * MAX_NERVE_FRACTION:.0f} %: inverted, nerve 0 and background 1?)")
