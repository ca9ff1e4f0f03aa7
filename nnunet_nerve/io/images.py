"""Reading images and masks with SimpleITK, and comparing their grids.

An image is a file (.nii.gz, .nii, .mha, .nrrd) or a folder holding exactly one DICOM
series, read with SimpleITK's series reader (slices ordered by position along the
slice normal, which ``GetGDCMSeriesFileNames`` does).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_nerve.errors import NerveError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")

#: Grids agree when spacing and direction agree to this relative/absolute tolerance and
#: origins agree to ``ORIGIN_TOLERANCE_FRACTION`` of the smallest spacing. A DICOM series
#: and a NIfTI mask written from it differ only in the last float digits (single
#: precision in the NIfTI header): about 1e-6 relative.
SPACING_RTOL = 1e-4
DIRECTION_ATOL = 1e-4
ORIGIN_TOLERANCE_FRACTION = 1e-3


def has_image_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def dicom_series_ids(folder: str | os.PathLike) -> list[str]:
    """The DICOM series instance UIDs found directly in ``folder``."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image file or a one-series DICOM folder; NerveError names the file on failure."""
    path = Path(path)
    if path.is_dir():
        ids = dicom_series_ids(path)
        if not ids:
            raise NerveError(f"{path}: folder holds no DICOM series")
        if len(ids) > 1:
            raise NerveError(f"{path}: folder holds {len(ids)} DICOM series, expected one")
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            return reader.Execute()
        except RuntimeError as e:
            raise NerveError(f"{path}: cannot read DICOM series ({_last_line(e)})") from None
    if not path.is_file():
        raise NerveError(f"{path}: no such file")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise NerveError(f"{path}: cannot read image ({_last_line(e)})") from None


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    sitk.WriteImage(image, str(path), useCompression=compress)


def grid_mismatch(image: sitk.Image, other: sitk.Image) -> str | None:
    """Describe how ``other``'s grid differs from ``image``'s, or None when they agree.

    Size must match exactly; spacing to ``SPACING_RTOL`` (relative), direction cosines
    to ``DIRECTION_ATOL`` (absolute), origin to ``ORIGIN_TOLERANCE_FRACTION`` x the
    smallest spacing (mm).
    """
    if image.GetSize() != other.GetSize():
        return f"size {other.GetSize()} differs from the image's {image.GetSize()}"
    sp_a, sp_b = np.array(image.GetSpacing()), np.array(other.GetSpacing())
    if not np.allclose(sp_a, sp_b, rtol=SPACING_RTOL, atol=0):
        return f"spacing {tuple(np.round(sp_b, 6))} differs from the image's {tuple(np.round(sp_a, 6))}"
    if not np.allclose(image.GetDirection(), other.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        return "direction cosines differ from the image's"
    tol = ORIGIN_TOLERANCE_FRACTION * float(sp_a.min())
    if not np.allclose(image.GetOrigin(), other.GetOrigin(), rtol=0, atol=tol):
        return f"origin {tuple(np.round(other.GetOrigin(), 4))} differs from the image's {tuple(np.round(image.GetOrigin(), 4))}"
    return None


def spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """The spacing in the axis order of ``sitk.GetArrayFromImage`` (z, y, x)."""
    return tuple(float(s) for s in reversed(image.GetSpacing()))


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of the exception's message (SimpleITK/ITK put the reason there,
    after the file and line of the C++ source); the exception type's name when empty."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
