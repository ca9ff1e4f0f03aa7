"""Write a 3D image as a DICOM MR series, as a scanner would send it (for tests, benchmarks and
trying `nnunet-nerve segment` on a phantom).

Each slice ``k`` of the SimpleITK image (``GetArrayFromImage(image)[k]``: rows x columns)
becomes one single-frame MR Image Storage instance (explicit VR little endian, signed 16-bit)
with Image Orientation (Patient) = the direction matrix's first two columns (row and column
cosines), Image Position (Patient) = the physical point of voxel (0, 0, k) and Pixel Spacing
= (row spacing, column spacing) = (spacing y, spacing x). When the image's grid is
left-handed (its third direction column is minus row x column), the slices run against the
DICOM normal; a reader that orders slices along the normal then sees them in reverse.
Every instance carries the Patient, General Study, General Series, Frame of Reference,
General Equipment, General Image, Image Plane, Image Pixel, MR Image and SOP Common modules'
required attributes (unknown values empty, as DICOM's type 2 allows).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_nerve.errors import NerveError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_dicom_series(image, folder: "str | os.PathLike", *, patient_id: str = "PHANTOM-001",
                       patient_name: str = "Phantom^Thigh", series_description: str = "T2 TSE axial (synthetic)",
                       series_number: int = 1, study_uid: "str | None" = None, frame_of_reference_uid: "str | None" = None,
                       laterality: str = "R", instance_order: str = "ascending",
                       file_names: str = "IM{index:04d}.dcm") -> list[Path]:
    """Write ``image`` (a 3D SimpleITK image, integer values within int16) into ``folder``
    (created; must not hold files), one file per slice; returns the paths in slice order.

    ``instance_order``: "ascending" numbers instances (and names files) with the slice index,
    "descending" against it and "shuffled" in a fixed random order, so that readers cannot
    rely on file names or instance numbers to order the slices.
    """
    import pydicom
    from pydicom.uid import generate_uid

    array = _int16_voxels(image)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise NerveError(f"{folder}: folder is not empty")

    nz, rows, cols = array.shape
    sx, sy, sz = image.GetSpacing()
    d = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    row_cosine, col_cosine = d[:, 0], d[:, 1]
    numbers = {"ascending": list(range(nz)), "descending": list(range(nz))[::-1],
               "shuffled": list(np.random.default_rng(0).permutation(nz))}[instance_order]
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    window = (float(np.percentile(array, 1)), float(np.percentile(array, 99)))
    series = _SeriesAttributes(patient_id, patient_name, series_description, series_number, laterality, study_uid,
                               series_uid, frame_uid, window, rows, cols, (sx, sy, sz))
    paths = []
    for k in range(nz):
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        number = int(numbers[k]) + 1
        ds = _mr_slice_dataset(series, number, position, row_cosine, col_cosine)
        ds.PixelData = np.ascontiguousarray(array[k]).tobytes()
        path = folder / file_names.format(index=number)
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
        paths.append(path)
    return paths


def _int16_voxels(image):
    """The voxels of a 3D image as int16; NerveError when it is not 3D, holds non-integer
    values or values outside the signed 16-bit range."""
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise NerveError(f"write_dicom_series: expected a 3D image, got {image.GetDimension()}D")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise NerveError("write_dicom_series: the image holds non-integer values; DICOM MR stores integers")
    if array.min() < -32768 or array.max() > 32767:
        raise NerveError("write_dicom_series: values outside the signed 16-bit range")
    return array.astype(np.int16)


@dataclass(frozen=True)
class _SeriesAttributes:
    """What every instance of a written series shares (``spacing``: x, y, z in mm; ``window``:
    the 1st and 99th percentile of the voxels)."""

    patient_id: str
    patient_name: str
    series_description: str
    series_number: int
    laterality: str
    study_uid: str
    series_uid: str
    frame_uid: str
    window: tuple
    rows: int
    cols: int
    spacing: tuple


def _mr_slice_dataset(series: _SeriesAttributes, number: int, position, row_cosine, col_cosine):
    """One MR Image Storage instance (file meta included, no pixel data yet) of ``series``:
    instance ``number`` at ``position`` (mm, patient coordinates)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "20180101", "120000"
    ds.SeriesDate, ds.SeriesTime = "20180101", "120500"
    ds.ContentDate, ds.ContentTime = "20180101", "120500"
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "nnunet-nerve synthetic"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series.series_description
    ds.PatientName = series.patient_name
    ds.PatientID = series.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "THIGH"
    ds.Laterality = series.laterality
    ds.PatientPosition = "FFS"
    ds.ScanningSequence = ["SE"]
    ds.SequenceVariant = ["SK"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = f"{series.spacing[2]:.6g}"
    ds.RepetitionTime = "4000"
    ds.EchoTime = "80"
    ds.EchoTrainLength = "13"
    ds.MagneticFieldStrength = "3"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = str(series.series_number)
    ds.InstanceNumber = str(number)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_cosine, *col_cosine)]
    ds.FrameOfReferenceUID = series.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = series.rows, series.cols
    ds.PixelSpacing = [f"{series.spacing[1]:.6g}", f"{series.spacing[0]:.6g}"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.WindowCenter = f"{(series.window[0] + series.window[1]) / 2:.1f}"
    ds.WindowWidth = f"{max(series.window[1] - series.window[0], 1.0):.1f}"
    return ds
