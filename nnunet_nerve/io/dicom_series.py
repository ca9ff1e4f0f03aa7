"""One DICOM series from a folder: found, checked and read, with each slice's source instance.

A series is the single-frame image instances directly in the folder that share a Series
Instance UID. Its slices are ordered by position along the slice normal
n = row direction x column direction (the cross product of the two Image Orientation
(Patient) cosines), ascending, so that the image read from them has the direction
matrix [row, column, n] (columns), a right-handed grid whatever the signs of the cosines
or the order of the files and instance numbers. Slice ``k`` of the image
(``sitk.GetArrayFromImage(image)[k]``, rows x columns as the DICOM pixel matrix) comes
from ``DicomSeries.datasets[k]``.

Refused, with a ``NerveError`` naming the folder or file and the problem: a folder without
DICOM files, several series unless one is chosen by UID, a multi-frame or non-image
instance (a DICOM SEG, a structured report, ...), instances whose matrix, pixel spacing or
orientation differ, slices that do not stack along the normal (a gantry tilt or a mixed
series), repeated slice positions and non-uniform slice spacing (missing slices): a
relative deviation above ``SPACING_TOLERANCE`` from the median spacing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nnunet_nerve.errors import NerveError

#: Slice gaps may differ from the median gap by this fraction (scanners round positions to
#: about 1e-4 mm); a missing slice doubles a gap.
SPACING_TOLERANCE = 0.01
#: Cosines of one series agree to this; slice positions lie on the normal through the first
#: one to this fraction of the smallest pixel spacing.
ORIENTATION_ATOL = 1e-4
IN_PLANE_SHIFT_FRACTION = 0.05
#: Attributes a slice needs to be placed in space.
GEOMETRY_ATTRIBUTES = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
Log = Optional[Callable[[str], None]]


@dataclass
class DicomSeries:
    """A checked series: its files and headers (pixel data deferred) ordered along the
    slice normal, and the geometry they define."""

    folder: Path
    series_uid: str
    files: list
    datasets: list
    spacing_xyz: tuple       # (column spacing, row spacing, slice spacing), mm
    direction: tuple          # row cosine, column cosine, normal: the columns of the 3 x 3 matrix, row-major
    origin: tuple             # Image Position (Patient) of the first slice

    @property
    def description(self) -> str:
        return str(self.datasets[0].get("SeriesDescription", "") or "")

    def read_image(self):
        """The series as a SimpleITK image (ITK's series reader, slices in this order), its
        geometry checked against the headers."""
        import SimpleITK as sitk

        from nnunet_nerve.io.images import itk_warnings_hidden

        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in self.files])
        try:
            with itk_warnings_hidden():  # ITK warns on 1e-4 mm jitter, which we checked
                image = reader.Execute()
        except RuntimeError as e:
            raise NerveError(f"{self.folder}: cannot read the pixel data of series {self.series_uid} "
                             f"({_last_line(e)})") from None
        self._check_image(image)
        return image

    def _check_image(self, image) -> None:
        rows, cols = int(self.datasets[0].Rows), int(self.datasets[0].Columns)
        problems = []
        if image.GetSize() != (cols, rows, len(self.files)):
            problems.append(f"size {image.GetSize()}, headers {(cols, rows, len(self.files))}")
        elif image.GetNumberOfComponentsPerPixel() != 1:
            problems.append(f"{image.GetNumberOfComponentsPerPixel()} components per pixel (colour)")
        else:
            tol = IN_PLANE_SHIFT_FRACTION * min(self.spacing_xyz[:2])
            if not np.allclose(image.GetOrigin(), self.origin, atol=tol, rtol=0):
                problems.append(f"origin {image.GetOrigin()}, headers {self.origin}")
            if not np.allclose(image.GetSpacing(), self.spacing_xyz, rtol=SPACING_TOLERANCE, atol=0):
                problems.append(f"spacing {image.GetSpacing()}, headers {self.spacing_xyz}")
            if not np.allclose(image.GetDirection(), self.direction, atol=1e-3, rtol=0):
                problems.append(f"direction {np.round(image.GetDirection(), 4).tolist()}, headers "
                                f"{np.round(self.direction, 4).tolist()}")
        if problems:
            raise NerveError(f"{self.folder}: series {self.series_uid}: the image read does not match its headers: "
                             + "; ".join(problems))


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _read_header(path: Path):
    """The dataset with its pixel data deferred (read from the file only when used), or None
    when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), defer_size="4 KB")
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def scan_folder(folder: "str | os.PathLike") -> tuple[dict, list]:
    """({series UID: [(path, dataset), ...]}, [non-DICOM files]) for the files directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NerveError(f"{folder}: no such folder")
    series, other = {}, []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        ds = _read_header(path)
        if ds is None or "SeriesInstanceUID" not in ds:
            other.append(path)
            continue
        series.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return series, other


def describe_series(uid: str, members: list) -> str:
    ds = members[0][1]
    what = " ".join(str(ds.get(k, "") or "") for k in ("Modality", "SeriesDescription")).strip()
    return f"{uid} ({what + ', ' if what else ''}{len(members)} file(s), series number {ds.get('SeriesNumber', '?')})"


def read_series(folder: "str | os.PathLike", series_uid: "str | None" = None, log: Log = None) -> DicomSeries:
    """The checked series of ``folder`` (the only one, or the one with ``series_uid``)."""
    folder = Path(folder)
    series, other = scan_folder(folder)
    if not series:
        subfolders = [p for p in folder.iterdir() if p.is_dir()]
        hint = (f"; it has {len(subfolders)} sub-folder(s): give the folder that holds the series' files"
                if subfolders else "")
        raise NerveError(f"{folder}: no DICOM files in the folder ({len(other)} other file(s)){hint}")
    listing = [describe_series(uid, members) for uid, members in series.items()]
    if series_uid is None:
        if len(series) > 1:
            raise NerveError(f"{folder}: the folder holds {len(series)} DICOM series; choose one with --series UID",
                             [f"series {line}" for line in listing])
        series_uid = next(iter(series))
    elif series_uid not in series:
        raise NerveError(f"{folder}: no series with UID {series_uid} in the folder",
                         [f"series {line}" for line in listing])
    if other and log:
        log(f"note: {folder}: ignored {len(other)} file(s) that are not DICOM images of a series "
            f"(e.g. {other[0].name})")
    members = series[series_uid]
    if len(series) > 1 and log:
        log(f"note: {folder}: using series {series_uid}; ignored {len(series) - 1} other series")
    return checked_series(folder, series_uid, members)


def _check_instance(path: Path, ds) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    sop_class = ds.get("SOPClassUID")
    sop_name = getattr(sop_class, "name", str(sop_class))
    if frames > 1:
        raise NerveError(f"{path}: a multi-frame DICOM instance ({frames} frames, {sop_name}); segment takes a "
                         f"series of single-frame slices")
    if "PixelData" not in ds:
        raise NerveError(f"{path}: not an image ({sop_name}, no pixel data)")
    _check_pixel_data_complete(path, ds)
    missing = [a for a in GEOMETRY_ATTRIBUTES if a not in ds or ds.get(a) in (None, "")]
    if missing:
        raise NerveError(f"{path}: not a slice of a 3D series ({sop_name}): missing {', '.join(missing)}")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise NerveError(f"{path}: a colour image ({ds.SamplesPerPixel} samples per pixel); expected greyscale MR")


def _check_pixel_data_complete(path: Path, ds) -> None:
    """NerveError when the file ends before the Pixel Data its header announces (a cut copy;
    GDCM would refuse it without naming the file). Encapsulated data (undefined length) is
    left to the decoder."""
    element = ds.get_item("PixelData")
    tell, length = getattr(element, "value_tell", None), getattr(element, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return
    size = path.stat().st_size
    if tell + length > size:
        raise NerveError(f"{path}: damaged or incomplete file (the pixel data holds {max(size - tell, 0)} bytes, "
                         f"its header says {length})")


def checked_series(folder: Path, uid: str, members: list) -> DicomSeries:
    """The series of ``members`` ([(path, dataset), ...] of one UID, as ``scan_folder`` gives them), checked."""
    for path, ds in members:
        _check_instance(path, ds)
    first_path, first = members[0]
    cosines = np.array(first.ImageOrientationPatient, dtype=float)
    row, col = cosines[:3], cosines[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise NerveError(f"{first_path}: Image Orientation (Patient) {cosines.tolist()} is not two orthonormal "
                         f"direction cosines")
    pixel = np.array(first.PixelSpacing, dtype=float)
    shape = (int(first.Rows), int(first.Columns))
    for path, ds in members[1:]:
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise NerveError(f"{path}: matrix {ds.Rows} x {ds.Columns} differs from {first_path.name}'s "
                             f"{shape[0]} x {shape[1]} in series {uid}")
        if not np.allclose(np.array(ds.PixelSpacing, dtype=float), pixel, rtol=1e-4, atol=0):
            raise NerveError(f"{path}: pixel spacing {list(ds.PixelSpacing)} differs from {first_path.name}'s "
                             f"{pixel.tolist()} in series {uid}")
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=float), cosines, atol=ORIENTATION_ATOL, rtol=0):
            raise NerveError(f"{path}: orientation {list(ds.ImageOrientationPatient)} differs from "
                             f"{first_path.name}'s in series {uid}")
    if len(members) < 2:
        raise NerveError(f"{folder}: series {uid} holds a single slice; segment needs a stack of slices")

    normal = np.cross(row, col)
    positions = np.array([np.array(ds.ImagePositionPatient, dtype=float) for _, ds in members])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    members = [members[i] for i in order]
    positions, along = positions[order], along[order]
    names = [p.name for p, _ in members]
    gaps = np.diff(along)
    repeated = np.flatnonzero(gaps < 1e-3 * min(pixel))
    if repeated.size:
        i = int(repeated[0])
        raise NerveError(f"{folder}: series {uid}: {repeated.size} repeated slice position(s), e.g. "
                         f"{names[i]} and {names[i + 1]} both at {along[i]:.3f} mm along the slice normal")
    in_plane = positions - positions[0] - np.outer(along - along[0], normal)
    shift = np.linalg.norm(in_plane, axis=1).max()
    if shift > IN_PLANE_SHIFT_FRACTION * min(pixel):
        worst = int(np.linalg.norm(in_plane, axis=1).argmax())
        raise NerveError(f"{folder}: series {uid}: the slices do not stack along their normal ({names[worst]} is "
                         f"shifted {shift:.2f} mm in-plane: a gantry tilt or a mixed series)")
    spacing = float(np.median(gaps))
    off = np.flatnonzero(np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing)
    if off.size:
        i = int(off[0])
        kind = "missing slice(s)?" if gaps[i] > spacing else "uneven slices"
        raise NerveError(f"{folder}: series {uid}: non-uniform slice spacing: a gap of {gaps[i]:.3f} mm between "
                         f"{names[i]} ({along[i]:.3f} mm) and {names[i + 1]} ({along[i + 1]:.3f} mm) along the "
                         f"normal, where the median gap is {spacing:.3f} mm ({off.size} such gap(s); {kind})")
    direction = np.column_stack([row, col, normal]).ravel()
    return DicomSeries(folder=folder, series_uid=uid, files=[p for p, _ in members],
                       datasets=[ds for _, ds in members],
                       spacing_xyz=(float(pixel[1]), float(pixel[0]), float(along[-1] - along[0]) / (len(along) - 1)),
                       direction=tuple(float(v) for v in direction), origin=tuple(float(v) for v in positions[0]))
