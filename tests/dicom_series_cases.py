"""Synthetic DICOM MR series for the segment tests, written with real DICOM tags
(``nnunet_nerve.dicom.synthetic``) on grids of every orientation kind."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def _rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _columns(row, col, third) -> np.ndarray:
    return np.column_stack([row, col, third]).astype(float)


#: name -> (direction matrix (columns: x, y, z axes of the grid), instance order)
SYNTHETIC = {
    "axial": (np.eye(3), "descending"),
    "oblique": (_rotation("z", 23) @ _rotation("x", 31) @ _rotation("y", -17), "shuffled"),
    "left_handed": (_columns([1, 0, 0], [0, 1, 0], [0, 0, -1]), "ascending"),
    "negative_cosines": (_columns([-1, 0, 0], [0, 0, -1], np.cross([-1, 0, 0], [0, 0, -1])), "shuffled"),
}


def write_synthetic_series(folder, direction: np.ndarray, order: str, shape=(7, 24, 30), seed: int = 0):
    """Random int16 intensities on a (z, y, x) grid of 0.9 x 1.1 x 3.0 mm with ``direction``, written
    as a DICOM MR series into ``folder`` with instances numbered in ``order``; returns ``folder``."""
    from nnunet_nerve.dicom.synthetic import write_dicom_series

    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(0, 1000, size=shape).astype(np.int16))
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((-12.3, 40.7, 101.9))
    image.SetDirection(direction.ravel().tolist())
    write_dicom_series(image, folder, instance_order=order, patient_id="GEOM-1", patient_name="Geometry^Test")
    return folder
