"""Reading one DICOM series for `segment`: series choice, and refusal (one NerveError line naming the
folder or file) of non-DICOM folders, multi-frame and non-image instances, missing, repeated and
shifted slices. Real files written with pydicom (nnunet_nerve.dicom.synthetic), read with pydicom
and SimpleITK."""
from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from nnunet_nerve.io.dicom_series import read_series
from nnunet_nerve.errors import NerveError
from dicom_series_cases import SYNTHETIC, write_synthetic_series


def _series(folder, order="ascending", shape=(5, 8, 9), direction=np.eye(3)):
    return write_synthetic_series(folder, direction, order, shape=shape)


def _raises(folder, *words, series_uid=None):
    with pytest.raises(NerveError) as info:
        read_series(folder, series_uid)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return info.value


def test_reads_slices_in_order_along_the_normal_whatever_the_file_order(tmp_path):
    folder = _series(tmp_path / "s", order="shuffled")
    series = read_series(folder)
    positions = [float(np.dot(ds.ImagePositionPatient, [0, 0, 1])) for ds in series.datasets]
    assert positions == sorted(positions) and len(positions) == 5
    image = series.read_image()
    assert image.GetSize() == (9, 8, 5)
    array = sitk.GetArrayFromImage(image)
    for k, path in enumerate(series.files):
        assert np.array_equal(array[k], pydicom.dcmread(str(path)).pixel_array)


def test_a_folder_without_dicom_files_is_refused(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("not DICOM")
    (folder / "b.nii").write_bytes(b"\x00" * 400)
    _raises(folder, str(folder), "no DICOM files", "2 other file(s)")
    (folder / "a.txt").unlink()
    (folder / "b.nii").unlink()
    _series(folder / "sub")
    _raises(folder, "sub-folder")


def test_several_series_need_a_choice_and_the_choice_is_read(tmp_path):
    _series(tmp_path / "a")
    _series(tmp_path / "b", shape=(3, 8, 9))
    both = tmp_path / "both"
    both.mkdir()
    for sub, prefix in (("a", "a_"), ("b", "b_")):
        for f in (tmp_path / sub).iterdir():
            shutil.copy(f, both / (prefix + f.name))
    error = _raises(both, "2 DICOM series", "--series")
    uids = {str(pydicom.dcmread(str(next((tmp_path / s).iterdir()))).SeriesInstanceUID): s for s in ("a", "b")}
    assert len(error.problems) == 2 and all(any(uid in p for p in error.problems) for uid in uids)
    for uid, sub in uids.items():
        assert len(read_series(both, uid).files) == (5 if sub == "a" else 3)
    _raises(both, "no series with UID 1.2.3", series_uid="1.2.3")


def test_a_missing_slice_is_refused_naming_the_gap(tmp_path):
    folder = _series(tmp_path / "s", shape=(6, 8, 9))
    middle = sorted(folder.iterdir())[2]
    middle.unlink()
    _raises(folder, "non-uniform slice spacing", "gap of 6.000 mm", "median gap is 3.000 mm", "missing slice")


def test_a_repeated_slice_is_refused(tmp_path):
    folder = _series(tmp_path / "s")
    ds = pydicom.dcmread(str(sorted(folder.iterdir())[1]))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(str(folder / "IM0099.dcm"))
    _raises(folder, "repeated slice position", "IM0099.dcm")


def test_a_shifted_slice_is_refused(tmp_path):
    folder = _series(tmp_path / "s")
    path = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(str(path))
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 5.0, *ds.ImagePositionPatient[1:]]
    ds.save_as(str(path))
    _raises(folder, "do not stack along their normal", path.name)


def test_a_multi_frame_seg_is_refused(tmp_path):
    from nnunet_nerve.dicom.seg import Algorithm
    from nnunet_nerve.segmentation.segment import SEG_NAME, read_input, write_masks

    folder = _series(tmp_path / "s")
    scan = read_input(folder)
    mask = np.zeros(sitk.GetArrayViewFromImage(scan.image).shape, dtype=bool)
    mask[1:4, 2:5, 3:6] = True
    (tmp_path / "out").mkdir()
    write_masks(tmp_path / "out", scan, mask, Algorithm("FCDenseNetTrainer", "2d", (0,)))
    seg_only = tmp_path / "seg_only"
    seg_only.mkdir()
    shutil.copy(tmp_path / "out" / SEG_NAME, seg_only / SEG_NAME)
    _raises(seg_only, str(seg_only / SEG_NAME), "multi-frame", "3 frames")


def test_an_instance_without_pixel_data_is_refused(tmp_path):
    folder = _series(tmp_path / "s")
    path = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(str(path))
    del ds.PixelData
    ds.save_as(str(path))
    _raises(folder, path.name, "not an image", "no pixel data")


def test_a_single_slice_is_refused(tmp_path):
    folder = _series(tmp_path / "s", shape=(1, 8, 9))
    _raises(folder, "single slice")


def test_oblique_geometry_is_taken_from_the_headers(tmp_path):
    direction, order = SYNTHETIC["oblique"]
    series = read_series(write_synthetic_series(tmp_path / "s", direction, order, shape=(4, 6, 7)))
    image = series.read_image()
    assert np.allclose(np.array(image.GetDirection()).reshape(3, 3), direction, atol=1e-6)
    assert np.allclose(image.GetSpacing(), (0.9, 1.1, 3.0))
