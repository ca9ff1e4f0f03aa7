"""Real headers through validation and conversion: the knee DICOM series (80 sagittal slices) as a
subject's image with NIfTI masks written from its grid, and the SCT T2* NIfTI with its manual mask.
Data are read from ../shared/data (the `shared_data` fixture), never copied into the repository."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_nerve.registry.conversion import convert_registry
from nnunet_nerve.registry.dataset_info import load_dataset_info
from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.images import read_image
from nnunet_nerve.registry.reader import image_path, mask_path, scan_registry
from nnunet_nerve.registry.validation import check_registry, registry_problems

RATERS = ("AB", "BW", "OS")


def _tsv(root, pid="sub-001"):
    (root / "participants.tsv").write_text(f"participant_id\tcohort\tlocation\n{pid}\tpatient\tdistal\n")


def _float32_geometry(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    """A mask on ``image``'s grid whose geometry went through single precision, as in a NIfTI header
    written by another tool from the DICOM series: it differs in the last float digits."""
    mask = sitk.GetImageFromArray(array)
    mask.SetSpacing([float(np.float32(v)) for v in image.GetSpacing()])
    mask.SetOrigin([float(np.float32(v) + np.float32(1e-5)) for v in image.GetOrigin()])
    mask.SetDirection([float(np.float32(v)) for v in image.GetDirection()])
    return mask


@functools.lru_cache(maxsize=1)
def _read_series(folder: str) -> sitk.Image:
    return read_image(folder)  # 2-3 s: read once per test session


@pytest.fixture
def knee(shared_data):
    folder = shared_data / "knee-dess-dicom"
    return folder, _read_series(str(folder))


def _dicom_registry(root, knee_folder, knee_image):
    anat = root / "sub-001" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-001_T2w").symlink_to(knee_folder, target_is_directory=True)
    shape = sitk.GetArrayViewFromImage(knee_image).shape
    rng = np.random.default_rng(0)
    base = np.zeros(shape, np.uint8)
    base[30:50, 200:260, 220:300] = 1
    for i, rater in enumerate(RATERS):
        mask = base.copy()
        mask[30:50, 200:260, 300:302 + i] = 1  # raters differ at one border
        mask[rng.integers(0, shape[0]), 100, 100] = 1
        path = mask_path(root, "sub-001", rater)
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_float32_geometry(knee_image, mask), str(path), useCompression=True)
    _tsv(root)
    return root


def test_dicom_series_subject_validates_and_converts(tmp_path, knee, nnunet_env):
    knee_folder, knee_image = knee
    root = _dicom_registry(tmp_path / "reg", knee_folder, knee_image)
    warnings: list = []
    registry = check_registry(root, warnings=warnings)
    assert registry.files["sub-001"].image.name == "sub-001_T2w"
    # The real series is sagittal: valid for training, refused by the biomarkers, said once.
    assert len(warnings) == 1 and warnings[0].startswith(f"sub-001: {root / 'sub-001' / 'anat' / 'sub-001_T2w'}: "
                                                         "the slices are sagittal (their normal is ")
    out = convert_registry(root, 7, name="Knee", n_folds=0, log=None)
    info = load_dataset_info(out)
    assert info.cases == ("sub-001",) and info.raters == RATERS
    converted = sitk.ReadImage(str(info.image_path("sub-001")))
    assert converted.GetSize() == (512, 512, 80)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), sitk.GetArrayFromImage(knee_image))
    np.testing.assert_allclose(converted.GetSpacing(), knee_image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(converted.GetOrigin(), knee_image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(converted.GetDirection(), knee_image.GetDirection(), atol=1e-6)
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(root, "sub-001", r)))) for r in RATERS]
    expected = (np.sum(masks, axis=0) >= 2).astype(np.uint8)
    label = sitk.ReadImage(str(info.consensus_path("sub-001")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), expected)
    # The consensus carries exactly the converted image's geometry (nnU-Net compares them).
    assert label.GetOrigin() == converted.GetOrigin() and label.GetDirection() == converted.GetDirection()
    assert not (tmp_path / "nnUNet_preprocessed" / out.name / "splits_final.json").exists()  # --folds 0


def test_dicom_mask_really_off_grid_is_refused(tmp_path, knee):
    knee_folder, knee_image = knee
    root = _dicom_registry(tmp_path / "reg", knee_folder, knee_image)
    path = mask_path(root, "sub-001", "BW")
    mask = sitk.ReadImage(str(path))
    mask.SetOrigin(tuple(np.array(knee_image.GetOrigin()) + np.array([0.0, 0.0, 0.5])))
    sitk.WriteImage(mask, str(path))
    problems = registry_problems(scan_registry(root))
    assert len(problems) == 1
    assert problems[0].startswith(f"sub-001: {path}: mask of rater BW is not on the image's grid: origin")


def test_dicom_folder_with_two_series(tmp_path, knee):
    knee_folder, knee_image = knee
    root = _dicom_registry(tmp_path / "reg", knee_folder, knee_image)
    folder = root / "sub-001" / "anat" / "sub-001_T2w"
    folder.unlink()
    folder.mkdir()
    for f in sorted(knee_folder.iterdir()):
        (folder / f.name).symlink_to(f)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(folder / "localizer.dcm"))
    with pytest.raises(NerveError) as caught:
        check_registry(root)
    assert caught.value.problems == [f"sub-001: {folder}: folder holds 2 DICOM series, expected one"]


def test_real_nifti_header_is_kept(tmp_path, shared_data, nnunet_env):
    source = shared_data / "sct" / "t2s_uncropped.nii.gz"
    gm = shared_data / "sct" / "t2s_uncropped_gmseg_manual.nii.gz"
    root = tmp_path / "reg"
    image_path(root, "sub-001").parent.mkdir(parents=True)
    image_path(root, "sub-001").symlink_to(source)
    for rater in RATERS:
        mask_path(root, "sub-001", rater).parent.mkdir(parents=True, exist_ok=True)
        mask_path(root, "sub-001", rater).symlink_to(gm)
    _tsv(root)
    out = convert_registry(root, 8, name="SCT", n_folds=0, log=None)
    original, mask = sitk.ReadImage(str(source)), sitk.ReadImage(str(gm))
    converted = sitk.ReadImage(str(out / "imagesTr" / "sub-001_0000.nii.gz"))
    assert converted.GetSize() == original.GetSize() == (320, 320, 11)
    assert converted.GetPixelID() == original.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), sitk.GetArrayFromImage(original))
    np.testing.assert_allclose(converted.GetSpacing(), original.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(converted.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(converted.GetDirection(), original.GetDirection(), atol=1e-6)
    for folder in ("labelsTr", "raters/OS"):
        label = sitk.ReadImage(str(out / folder / "sub-001.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(mask) != 0)


def test_dicom_series_with_a_missing_slice_is_refused_by_check_and_convert(tmp_path, nnunet_env):
    """A synthetic series (4 mm slices) with one file deleted: ITK alone would read it with a
    stretched z-spacing; check and convert name the subject, the series folder and the gap."""
    from conftest import run, script
    from nnunet_nerve.dicom.synthetic import write_dicom_series

    array = np.random.default_rng(0).integers(1, 500, (8, 12, 10)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.5, 4.0))
    root = tmp_path / "reg"
    folder = root / "sub-001" / "anat" / "sub-001_T2w"
    files = write_dicom_series(image, folder)
    for rater in RATERS:
        mask = np.zeros(array.shape, np.uint8)
        mask[:, 4:8, 3:7] = 1
        path = mask_path(root, "sub-001", rater)
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_float32_geometry(read_image(folder), mask), str(path))
    _tsv(root)
    check_registry(root)
    files[4].unlink()
    problems = registry_problems(scan_registry(root))
    assert len(problems) == 1
    assert problems[0].startswith(f"sub-001: {folder}: series ") and "non-uniform slice spacing" in problems[0]
    assert "a gap of 8.000 mm" in problems[0] and "median gap is 4.000 mm" in problems[0]
    for cmd in (["check", str(root)], ["convert", str(root), "-d", "7", "--folds", "0"]):
        proc = run([script("nnunet-nerve"), *cmd], env=nnunet_env, check=False)
        assert proc.returncode == 2
        assert proc.stderr.splitlines()[0] == f"error: {problems[0]}"
    assert not any(Path(nnunet_env["nnUNet_raw"]).iterdir())
