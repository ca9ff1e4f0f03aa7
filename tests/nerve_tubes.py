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
