"""Masks with known answers for the biomarker and post-processing tests: tubes drawn on a
(z, y, x) grid in mm, and NIfTI writing with SimpleITK."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

SPACING = (4.0, 0.5, 0.5)   # z, y, x in mm: the paper's slice thickness, a fine in-plane grid
SHAPE = (40, 96, 96)


def grid_mm(shape=SHAPE, spacing=SPACING):
    """(z, y, x) voxel-centre coordinates in mm, broadcastable."""
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing))
    return z[:, None, None], y[None, :, None], x[None, None, :]


def tube(centre, radius, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """Voxels whose in-slice distance to ``centre(z_mm) -> (x_mm, y_mm)`` is at most ``radius(z_mm)``
    (numbers are taken as constants)."""
    z, y, x = grid_mm(shape, spacing)
    zs = z[:, 0, 0]
    cx, cy = (np.array([centre(v)[i] if callable(centre) else centre[i] for v in zs])[:, None, None] for i in (0, 1))
    r = np.array([radius(v) if callable(radius) else radius for v in zs])[:, None, None]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r ** 2


def oblique_tube(x0: float, y0: float, angle_deg: float, radius: float, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """A straight tube of true (perpendicular) radius ``radius`` whose axis passes (x0, y0) at
    z = 0 and tilts by ``angle_deg`` from the slice normal towards +x."""
    z, y, x = grid_mm(shape, spacing)
    a = np.radians(angle_deg)
    return ((x - x0 - z * np.tan(a)) * np.cos(a)) ** 2 + (y - y0) ** 2 <= radius ** 2


def t2_image(mask: np.ndarray, nerve: "float | np.ndarray" = 150.0, muscle: float = 100.0, fat: float = 300.0,
             seed: int = 0) -> np.ndarray:
    """Air (0) around a body of muscle (x < 38 mm) and fat (x >= 38 mm) with noise, the nerve at ``nerve``."""
    rng = np.random.default_rng(seed)
    image = np.zeros(mask.shape, dtype=np.float32)
    image[:, 4:-4, 4:-4] = muscle + rng.normal(0, 3, image[:, 4:-4, 4:-4].shape)
    image[:, 4:-4, 76:-4] += fat - muscle
    nerve = np.broadcast_to(np.asarray(nerve, dtype=np.float32), mask.shape)
    image[mask] = nerve[mask] + rng.normal(0, 3, int(mask.sum()))
    return image


def write(path, array: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0), direction=None) -> str:
    """Write a (z, y, x) array as NIfTI with ``spacing`` (z, y, x); masks as uint8."""
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
    return str(path)


def disc_area_tolerance(radius: float, spacing_yx) -> float:
    """A bound on |pixel count x pixel area - pi r^2| for any disc of radius ``radius``: every
    counted pixel lies in the disc of radius r + h and every point of the disc of radius r - h
    lies in a counted pixel, h = half the pixel diagonal; so the error is at most pi (2 r h + h^2)."""
    h = float(np.hypot(*spacing_yx)) / 2
    return float(np.pi * (2 * radius * h + h * h))


# ----------------------------------------------------------------------------- network-like errors
# The errors a 2D segmentation network makes, applied to any binary mask (z, y, x); used by the
# biomarker tests and by benchmarks/bench_biomarker_stability.py.

_RING = np.ones((3, 3), dtype=bool)


def jitter_boundary(mask: np.ndarray, rng: np.random.Generator, p: float = 0.3) -> np.ndarray:
    """One-pixel boundary jitter without bias: in every slice, each mask pixel with a background
    8-neighbour (the inner ring) is removed with probability ``p``, and each background pixel
    8-adjacent to the mask (the outer ring) is added with probability p x inner / outer, so that
    the expected area is unchanged."""
    from scipy import ndimage

    out = mask.copy()
    for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        m = mask[z]
        outer = ndimage.binary_dilation(m, _RING) & ~m
        inner = m & ~ndimage.binary_erosion(m, _RING, border_value=0)
        p_out = p * inner.sum() / max(int(outer.sum()), 1)
        out[z] = (m | (outer & (rng.random(m.shape) < p_out))) & ~(inner & (rng.random(m.shape) < p))
    return out


def add_vein_blobs(mask: np.ndarray, spacing, rng: np.random.Generator, count: int = 2, slices=(3, 6),
                   radius_mm=(2.0, 3.5), distance_mm=(12.0, 35.0), clearance_mm: float = 3.0,
                   apart_mm: float = 15.0):
    """Vein-like false positives away from the nerve: ``count`` short straight tubes of
    ``slices`` (min, max) slices and radius ``radius_mm``, whose axis lies ``distance_mm`` from
    the nerve's centroid in a random direction, at least ``clearance_mm`` from every nerve
    voxel of their slices, inside the grid, and ``apart_mm`` from the axes of the blobs placed
    before (independent look-alikes, not one long vessel in pieces). Returns (mask with the
    blobs, [(first, last) slice of each blob])."""
    from scipy import ndimage

    sz, sy, sx = spacing
    nz, ny, nx = mask.shape
    nerve_z = np.flatnonzero(mask.reshape(nz, -1).any(axis=1))
    y, x = np.arange(ny)[:, None] * sy, np.arange(nx)[None, :] * sx
    out, placed, axes = mask.copy(), [], []
    for _ in range(count):
        for _attempt in range(100):
            length = int(rng.integers(slices[0], slices[1] + 1))
            first = int(rng.integers(nerve_z[0], max(nerve_z[-1] - length + 2, nerve_z[0] + 1)))
            zs = [z for z in range(first, first + length) if z < nz and mask[z].any()]
            ys, xs = np.nonzero(mask[zs[0]])
            heading, d, r = rng.uniform(0, 2 * np.pi), rng.uniform(*distance_mm), rng.uniform(*radius_mm)
            cx, cy = xs.mean() * sx + d * np.cos(heading), ys.mean() * sy + d * np.sin(heading)
            disc = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
            if not (r <= cx <= nx * sx - r and r <= cy <= ny * sy - r) \
                    or any(np.hypot(cx - ax, cy - ay) < apart_mm for ax, ay in axes):
                continue
            clear = all(ndimage.distance_transform_edt(~mask[z], sampling=(sy, sx))[disc].min() >= clearance_mm
                        for z in zs)
            if clear:
                for z in zs:
                    out[z] |= disc
                placed.append((zs[0], zs[-1]))
                axes.append((cx, cy))
                break
    return out, placed


def drop_slices(mask: np.ndarray, first: int, last: int) -> np.ndarray:
    """The mask with slices first..last (inclusive) emptied: a missed slice."""
    out = mask.copy()
    out[first:last + 1] = False
    return out


def drop_small_branch(mask: np.ndarray, first: int, last: int) -> np.ndarray:
    """The mask without the smaller of the two largest 2D components (8-connectivity) on slices
    first..last: a missed small branch."""
    from scipy import ndimage

    out = mask.copy()
    for z in range(first, last + 1):
        labels, n = ndimage.label(mask[z], structure=_RING)
        if n >= 2:
            areas = np.bincount(labels.ravel())[1:]
            out[z][labels == int(np.argsort(-areas, kind="stable")[1]) + 1] = False
    return out


def split_slices(mask: np.ndarray, min_fraction: float = 0.1) -> list:
    """Slices whose second-largest 2D component holds at least ``min_fraction`` of the slice's mask."""
    from scipy import ndimage

    out = []
    for z in range(mask.shape[0]):
        labels, n = ndimage.label(mask[z], structure=_RING)
        if n >= 2:
            areas = np.sort(np.bincount(labels.ravel())[1:])[::-1]
            if areas[1] >= min_fraction * areas.sum():
                out.append(z)
    return out
