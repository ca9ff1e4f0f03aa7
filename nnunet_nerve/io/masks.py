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


#: A nerve cut across (axial slices) shows compact pieces; cut lengthwise, long thin streaks.
LENGTHWISE_MIN_ELONGATION = 4.0


def piece_axes_mm(piece: np.ndarray, spacing_yx) -> tuple[float, float]:
    """(length, width) in mm of a 2D piece: its extents along the principal axes of its pixel
    centres (eigenvectors of their covariance), each the range of the centres' projections
    plus one pixel's extent along that axis. An ellipse gives its full axes, a bar its sides."""
    ys, xs = np.nonzero(piece)
    coords = np.stack([ys * spacing_yx[0], xs * spacing_yx[1]])
    _, vectors = np.linalg.eigh(np.cov(coords, bias=True) if ys.size > 1 else np.eye(2))
    extents = []
    for v in vectors.T[::-1]:                      # largest eigenvalue first
        projection = v @ coords
        extents.append(float(np.ptp(projection) + abs(v[0]) * spacing_yx[0] + abs(v[1]) * spacing_yx[1]))
    return extents[0], extents[1]


def lengthwise_nerve_problem(mask: np.ndarray, spacing_zyx) -> "str | None":
    """Why a nerve mask looks cut lengthwise although the header calls its slices axial, or
    None: the largest piece of each nerve slice (``piece_axes_mm``) is, as the median over the
    slices, at least ``LENGTHWISE_MIN_ELONGATION`` times longer than wide and longer than twice
    the stack length the nerve covers (nerve slices x slice spacing). A nerve crossing axial
    slices is a compact ellipse on every slice and runs through many of them; coronal slices
    stored without their orientation show it as streaks on a few slices. An empty mask gives
    None."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    nerve_z = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if nerve_z.size == 0:
        return None
    axes = []
    for z in nerve_z:
        labels, _ = ndimage.label(mask[z], structure=np.ones((3, 3), dtype=bool))
        largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
        axes.append(piece_axes_mm(labels == largest, spacing_zyx[1:]))
    length = float(np.median([a for a, _ in axes]))
    elongation = float(np.median([a / b for a, b in axes]))
    covered = float(nerve_z.size * spacing_zyx[0])
    if elongation < LENGTHWISE_MIN_ELONGATION or length <= 2 * covered:
        return None
    return (f"the nerve looks cut lengthwise: its pieces are {elongation:.0f} times longer than wide and {length:.0f} mm "
            f"long (medians over its {nerve_z.size} slices), longer than the {covered:.1f} mm of stack it covers; "
            "if the slices are really coronal or sagittal, the header's orientation was lost and CSA per slice is "
            "not a cross-section")


def lengthwise_nerve_warning(mask: np.ndarray, spacing_zyx, path) -> "str | None":
    """"<path>: <lengthwise_nerve_problem>" when ``mask`` (read from ``path``) has one, else None."""
    why = lengthwise_nerve_problem(mask, spacing_zyx)
    return f"{path}: {why}" if why else None
