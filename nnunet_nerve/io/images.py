"""Reading images and masks with SimpleITK, and comparing their grids.

An image is a file (.nii.gz, .nii, .mha, .nrrd) or a folder holding exactly one DICOM
series, read with SimpleITK's series reader (slices ordered by position along the
slice normal, which ``GetGDCMSeriesFileNames`` does).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.integrity import GZIP_MAGIC, check_complete

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")

#: Grids agree when spacing and direction agree to this relative/absolute tolerance and
#: origins agree to ``ORIGIN_TOLERANCE_FRACTION`` of the smallest spacing. A DICOM series
#: and a NIfTI mask written from it differ only in the last float digits (single
#: precision in the NIfTI header): about 1e-6 relative.
SPACING_RTOL = 1e-4
DIRECTION_ATOL = 1e-4
ORIGIN_TOLERANCE_FRACTION = 1e-3


@contextlib.contextmanager
def itk_warnings_hidden() -> Iterator[None]:
    """Hide ITK's own warnings (printed straight to the terminal) while reading: the checks
    around every read report the problems they stand for in one line naming the file
    (damaged files: ``integrity``; slice gaps and jitter: ``dicom.series``; grids:
    ``grid_mismatch``). The previous setting is restored."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def has_image_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def image_suffix(name: str) -> "str | None":
    """The image suffix (``IMAGE_SUFFIXES``) a file name ends with, case-insensitive, or None."""
    lower = name.lower()
    return next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)


def image_stem(name: str) -> str:
    """A file name without its image suffix (``sub-001.nii.gz`` -> ``sub-001``); a name
    without one is returned whole."""
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else name


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image file or a one-series DICOM folder; NerveError names the file on failure.

    A file is first checked to hold every byte its header promises (``integrity.check_complete``:
    ITK would read a cut file as zeros), and refused when a voxel holds NaN or infinity
    (``non_finite_count``: ITK's NIfTI reader would read those as 0, an image's dark voxels or a
    mask's background). A folder's series is checked and read by ``io.dicom_series`` (uniform
    slice spacing, one geometry, the image matches the headers).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_folder(path)
    if not path.is_file():
        raise NerveError(f"{path}: no such file")
    check_complete(path)
    try:
        with itk_warnings_hidden():
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise NerveError(f"{path}: cannot read image ({_last_line(e)})") from None
    n_bad = non_finite_count(image, path)
    if n_bad:
        raise NerveError(f"{path}: {n_bad} NaN or infinite voxel values; expected finite numbers")
    return image


def read_dicom_folder(folder: Path) -> sitk.Image:
    """The one DICOM series directly in ``folder``, read and checked by ``io.dicom_series``."""
    from nnunet_nerve.io.dicom_series import checked_series, scan_folder

    found, _ = scan_folder(folder)
    if not found:
        raise NerveError(f"{folder}: folder holds no DICOM series")
    if len(found) > 1:
        raise NerveError(f"{folder}: folder holds {len(found)} DICOM series, expected one")
    uid, members = next(iter(found.items()))
    return checked_series(folder, uid, members).read_image()


def volume_problem(image: sitk.Image, what: str = "image") -> "str | None":
    """Why ``image`` is not a 3D image with one value per voxel, or None when it is."""
    if image.GetDimension() != 3:
        return f"{what} is {image.GetDimension()}D, expected a 3D image"
    if image.GetNumberOfComponentsPerPixel() != 1:
        return (f"{what} has {image.GetNumberOfComponentsPerPixel()} values per voxel (a 4D or vector image), "
                "expected one")
    return None


def read_volume(path: str | os.PathLike, what: str = "image") -> sitk.Image:
    """``read_image``, then NerveError naming ``path`` unless it is 3D with one value per voxel."""
    image = read_image(path)
    problem = volume_problem(image, what)
    if problem:
        raise NerveError(f"{path}: {problem}")
    return image


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    sitk.WriteImage(image, str(path), useCompression=compress)


def grid_mismatch(image: sitk.Image, other: sitk.Image, reference: str = "the image's") -> str | None:
    """Describe how ``other``'s grid differs from ``image``'s (called ``reference`` in the text),
    or None when they agree.

    Size must match exactly; spacing to ``SPACING_RTOL`` (relative), direction cosines
    to ``DIRECTION_ATOL`` (absolute), origin to ``ORIGIN_TOLERANCE_FRACTION`` x the
    smallest spacing (mm).
    """
    if image.GetSize() != other.GetSize():
        return f"size {other.GetSize()} differs from {reference} {image.GetSize()}"
    sp_a, sp_b = np.array(image.GetSpacing()), np.array(other.GetSpacing())
    if not np.allclose(sp_a, sp_b, rtol=SPACING_RTOL, atol=0):
        return f"spacing {_numbers(sp_b, 6)} differs from {reference} {_numbers(sp_a, 6)}"
    if not np.allclose(image.GetDirection(), other.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        return (f"direction cosines {_numbers(other.GetDirection(), 4)} differ from {reference} "
                f"{_numbers(image.GetDirection(), 4)} (a flipped or rotated grid: resample the mask onto the image)")
    tol = ORIGIN_TOLERANCE_FRACTION * float(sp_a.min())
    if not np.allclose(image.GetOrigin(), other.GetOrigin(), rtol=0, atol=tol):
        return f"origin {_numbers(other.GetOrigin(), 4)} differs from {reference} {_numbers(image.GetOrigin(), 4)}"
    return None


def _numbers(values, decimals: int) -> str:
    """``(0.52, 0.52, 4)``: rounded plain numbers (no numpy reprs)."""
    return "(" + ", ".join(f"{round(float(v), decimals):g}" for v in values) + ")"


#: Per-slice CSA needs slices across the nerve: the thigh's nerves run head to foot, so the
#: slices' normal may tilt at most this far (degrees) from the head-foot axis (an oblique
#: axial acquisition, corrected for by the CSA's obliquity correction); beyond it the slices
#: are coronal or sagittal and cut the nerve lengthwise.
MAX_SLICE_TILT_DEG = 45.0


def slice_normal(direction) -> np.ndarray:
    """The slices' unit normal, the grid's third axis: the third column of ITK's direction
    matrix, in its LPS patient frame."""
    normal = np.asarray(direction, dtype=float).reshape(3, 3)[:, 2]
    return normal / np.linalg.norm(normal)


def slice_tilt_deg(direction) -> float:
    """The angle (degrees, 0-90) between the slices' normal (``slice_normal``) and the
    head-foot axis."""
    return float(np.degrees(np.arccos(min(1.0, abs(slice_normal(direction)[2])))))


def axial_slices_problem(image: sitk.Image) -> "str | None":
    """Why the slices of ``image`` cannot give a nerve's CSA per slice (they are coronal or
    sagittal: ``slice_tilt_deg`` over ``MAX_SLICE_TILT_DEG``), or None for axial slices."""
    tilt = slice_tilt_deg(image.GetDirection())
    if tilt <= MAX_SLICE_TILT_DEG:
        return None
    normal = np.abs(slice_normal(image.GetDirection()))
    plane, axis = ("sagittal", "left-right") if normal[0] >= normal[1] else ("coronal", "anterior-posterior")
    return (f"the slices are {plane} (their normal is {tilt:.0f} degrees from the head-foot axis, towards the "
            f"{axis} axis) and cut the nerve lengthwise; CSA per slice needs axial slices across the nerve: "
            "reorient the image and its masks to axial first (SimpleITK.DICOMOrient(image, 'LPS') permutes and "
            "flips the axes without resampling)")


def require_axial_slices(image: sitk.Image, path) -> None:
    """NerveError naming ``path`` when ``axial_slices_problem`` finds one."""
    why = axial_slices_problem(image)
    if why:
        raise NerveError(f"{path}: {why}")


def default_geometry_problem(image: sitk.Image) -> "str | None":
    """Why the header of ``image`` looks like no geometry at all, or None: spacing exactly 1 mm
    on every axis and origin exactly 0, the defaults an array gets when it is written without
    its scan's geometry (``SimpleITK.GetImageFromArray``, nibabel with an identity affine). A
    scanner's image is never at origin 0; a scan that really has 1 mm voxels there is measured
    the same, the line only says what to check."""
    if any(s != 1.0 for s in image.GetSpacing()) or any(o != 0.0 for o in image.GetOrigin()):
        return None
    return ("the header holds no geometry (1 mm voxels at origin 0, the defaults of an array written without its "
            "scan's geometry): areas, lengths and volumes are in voxel units unless the voxels really are 1 mm; "
            "copy the scan's geometry into the file (SimpleITK: image.CopyInformation(scan))")


def default_geometry_warning(image: sitk.Image, path) -> "str | None":
    """"<path>: <default_geometry_problem>" when ``image`` (read from ``path``) has one, else None."""
    why = default_geometry_problem(image)
    return f"{path}: {why}" if why else None


def spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """The spacing in the axis order of ``sitk.GetArrayFromImage`` (z, y, x)."""
    return tuple(float(s) for s in reversed(image.GetSpacing()))


#: SimpleITK pixel types that can hold NaN or infinity (every other one is an integer type).
_FLOAT_PIXEL_IDS = {sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def non_finite_count(image: sitk.Image, path: str | os.PathLike) -> int:
    """NaN and infinite voxels of ``image`` read from ``path``. ITK's NIfTI reader turns them
    into 0, so a NIfTI file with a floating-point data type is counted from the file itself
    (with nibabel, which keeps them; compression recognised by the gzip magic bytes). An image
    ITK reads with an integer pixel type has none, and its file is not read again."""
    if image.GetPixelID() not in _FLOAT_PIXEL_IDS:
        return 0
    if str(path).lower().endswith((".nii", ".nii.gz")):
        import nibabel

        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
        nifti2 = data[:4] in (struct.pack("<i", 540), struct.pack(">i", 540))
        nifti = (nibabel.Nifti2Image if nifti2 else nibabel.Nifti1Image).from_bytes(data)
        if nifti.get_data_dtype().kind not in "fc":
            return 0
        array = np.asanyarray(nifti.dataobj)
    else:
        array = sitk.GetArrayViewFromImage(image)
        if array.dtype.kind not in "fc":
            return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of the exception's message (SimpleITK/ITK put the reason there,
    after the file and line of the C++ source); the exception type's name when empty."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
