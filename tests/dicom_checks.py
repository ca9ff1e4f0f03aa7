"""Independent checks of DICOM outputs: David Clunie's dciodvfy (Debian package dicom3tools) and a
reader of SEG frames by their referenced source instance, from pydicom alone (not our code)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy prints for ``path`` (it exits 0 with or without them).
    Fails the test (never skips) when dciodvfy is not installed: `.ci/run` installs it."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy is not installed (Debian package dicom3tools: apt-get install -y dicom3tools; "
                    ".ci/run installs it)")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=300)
    lines = (proc.stdout + proc.stderr).splitlines()
    if not any(line.strip() for line in lines):
        pytest.fail(f"dciodvfy printed nothing for {path} (exit {proc.returncode})")
    return [line for line in lines if "Error" in line]


def source_geometry(folder: Path) -> dict:
    """{SOPInstanceUID: dict(ipp, row, col, spacing_rc, rows, cols, pixels, path)} of every
    DICOM file in ``folder``, read with pydicom."""
    import pydicom

    out = {}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(path))
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        out[str(ds.SOPInstanceUID)] = dict(
            ipp=np.array(ds.ImagePositionPatient, dtype=float), row=iop[:3], col=iop[3:],
            spacing_rc=np.array(ds.PixelSpacing, dtype=float), rows=int(ds.Rows), cols=int(ds.Columns),
            pixels=ds.pixel_array, path=path, frame_of_reference=str(ds.FrameOfReferenceUID),
            study=str(ds.StudyInstanceUID), series=str(ds.SeriesInstanceUID), patient_id=str(ds.get("PatientID", "")))
    return out


def pixel_points(src: dict) -> np.ndarray:
    """Physical (LPS, mm) centre of every pixel of a source instance, shape (rows, cols, 3):
    IPP + column index x column spacing x row cosine + row index x row spacing x column cosine
    (DICOM PS3.3 C.7.6.2.1.1)."""
    r = np.arange(src["rows"])[:, None, None]
    c = np.arange(src["cols"])[None, :, None]
    return src["ipp"] + c * src["spacing_rc"][1] * src["row"] + r * src["spacing_rc"][0] * src["col"]


def seg_frames_by_source(seg_path: Path) -> tuple:
    """(dataset, {referenced SOPInstanceUID: frame (rows, cols) uint8}) of a SEG, each frame mapped
    through its Derivation Image Sequence in the Per-Frame Functional Groups."""
    import pydicom

    seg = pydicom.dcmread(str(seg_path))
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    frames = {}
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        assert uid not in frames, f"two frames reference source instance {uid}"
        frames[uid] = pixels[i]
    return seg, frames


def nifti_values_at(image, points: np.ndarray) -> np.ndarray:
    """Values of a SimpleITK image at physical points (..., 3), nearest voxel, from its header
    (origin, spacing, direction) by the test's own arithmetic; -1 outside the grid."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    d = np.array(image.GetDirection()).reshape(3, 3)
    s = np.array(image.GetSpacing())
    idx = np.rint(np.linalg.solve(d * s, (points - np.array(image.GetOrigin())).reshape(-1, 3).T).T).astype(int)
    size = np.array(image.GetSize())
    inside = np.all((idx >= 0) & (idx < size), axis=1)
    out = np.full(len(idx), -1, dtype=int)
    out[inside] = array[idx[inside, 2], idx[inside, 1], idx[inside, 0]]
    return out.reshape(points.shape[:-1])
