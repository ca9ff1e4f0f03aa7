"""Damaged or incomplete image files are refused, never read as zeros (#13): real files written
with SimpleITK, cut or corrupted with Python, or holding NaN voxels (which ITK's NIfTI reader
alone reads as 0), read through ``io.images.read_image`` and through
the verbs (`check`, `convert`, `evaluate`, `biomarkers`, `postprocess` in subprocesses; `segment`'s
input reader), each giving one `error:` line naming the file and writing nothing."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run, script
from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.images import read_image
from nnunet_nerve.registry.reader import image_path, mask_path
from test_registry_validation import make_registry

DAMAGED = "damaged or incomplete file"
#: (suffix, compressed) of every file format the package reads.
FORMATS = [(".nii.gz", True), (".nii", False), (".nrrd", False), (".nrrd", True), (".mha", False),
           (".mha", True), (".mhd", False)]


def _volume(shape=(20, 16, 12), seed=0) -> sitk.Image:
    array = np.random.default_rng(seed).integers(1, 1000, shape).astype(np.int16)  # no zero voxel
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.52, 0.52, 4.0))
    return image


def cut(path: Path, fraction: float = 0.6) -> None:
    """Keep the first ``fraction`` of the file's bytes, as an interrupted copy does."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _data_file(path: Path) -> Path:
    """The file holding the voxels: a MetaImage .mhd keeps them in a .raw beside it."""
    return path.with_suffix(".raw") if path.suffix == ".mhd" else path


@pytest.mark.parametrize("suffix,compressed", FORMATS, ids=[f"{s}-{'z' if c else 'raw'}" for s, c in FORMATS])
def test_a_cut_file_is_refused_in_every_format(tmp_path, suffix, compressed):
    path = tmp_path / f"image{suffix}"
    image = _volume()
    sitk.WriteImage(image, str(path), useCompression=compressed)
    assert np.array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(image))
    cut(_data_file(path))
    with pytest.raises(NerveError) as caught:
        read_image(path)
    assert str(caught.value).startswith(f"{_data_file(path)}: {DAMAGED} (")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_itk_alone_would_read_a_cut_nifti_as_zeros(tmp_path, suffix):
    """Why the check exists: ITK reads the cut file without an error, zero-filling the missing voxels."""
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(_volume(), str(path))
    cut(path)
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        zeros = int((sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == 0).sum())
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    assert zeros > 0  # every voxel written was >= 1


def test_a_corrupt_gzip_stream_is_refused(tmp_path):
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(_volume(), str(path))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(NerveError, match="corrupt gzip stream|cut short"):
        read_image(path)


def test_an_uncompressed_nifti_named_nii_gz_is_read(tmp_path):
    """Compression is recognised by the file's first bytes, not by its name."""
    plain = tmp_path / "image.nii"
    sitk.WriteImage(_volume(), str(plain))
    named = tmp_path / "image.nii.gz"
    shutil.copy(plain, named)
    assert np.array_equal(sitk.GetArrayFromImage(read_image(named)), sitk.GetArrayFromImage(read_image(plain)))
    cut(named)
    with pytest.raises(NerveError, match=DAMAGED):
        read_image(named)


def test_real_nifti_headers_cut_are_refused(tmp_path, shared_data):
    source = shared_data / "sct" / "t2s_uncropped.nii.gz"
    read_image(source)
    gz = tmp_path / "t2s.nii.gz"
    shutil.copy(source, gz)
    plain = tmp_path / "t2s.nii"
    with gzip.open(source, "rb") as f:
        plain.write_bytes(f.read())
    read_image(plain)
    for path in (gz, plain):
        cut(path, 0.5)
        with pytest.raises(NerveError, match=DAMAGED):
            read_image(path)


# --- the verbs -----------------------------------------------------------------------------

def nan_voxels(path: Path) -> None:
    """Rewrite ``path`` as float32 with NaN in every non-zero voxel (a mask's nerve, all of an
    image): ITK's NIfTI reader alone reads them as 0, the nerve as background."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[array != 0] = np.nan
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))


#: (how a file is damaged, what the error line says)
DAMAGES = [(cut, DAMAGED), (nan_voxels, "NaN or infinite voxel values")]


def _single_error(proc, path: Path, problem: str = DAMAGED) -> None:
    """Exit 2 and exactly one `error:` line about ``path`` holding ``problem``."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if str(path) in ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage,problem", DAMAGES, ids=["cut", "nan"])
def test_check_and_convert_refuse_a_damaged_image_or_mask(tmp_path, nnunet_env, damage, problem):
    root = make_registry(tmp_path / "reg", n=2)
    image = image_path(root, "sub-001", ".nii.gz")
    mask = mask_path(root, "sub-002", "BW")
    damage(image)
    damage(mask)
    proc = run([script("nnunet-nerve"), "check", str(root)], env=nnunet_env, check=False)
    _single_error(proc, image, problem)
    _single_error(proc, mask, problem)
    proc = run([script("nnunet-nerve"), "convert", str(root), "-d", "7", "--folds", "0"], env=nnunet_env,
               check=False)
    _single_error(proc, image, problem)
    _single_error(proc, mask, problem)  # a damaged rater mask would change the consensus
    assert not any(Path(nnunet_env["nnUNet_raw"]).iterdir())


@pytest.mark.parametrize("damage,problem", DAMAGES, ids=["cut", "nan"])
def test_evaluate_biomarkers_and_postprocess_refuse_a_damaged_mask(tmp_path, nnunet_env, damage, problem):
    root = make_registry(tmp_path / "reg", n=2)
    run([script("nnunet-nerve"), "convert", str(root), "-d", "7", "--folds", "0"], env=nnunet_env)
    dataset = next(Path(nnunet_env["nnUNet_raw"]).iterdir())
    pred = tmp_path / "pred"
    shutil.copytree(dataset / "labelsTr", pred)
    damaged = pred / "sub-002.nii.gz"
    damage(damaged)
    out = tmp_path / "out"
    proc = run([script("nnunet-nerve"), "evaluate", "-d", str(dataset), "--pred", str(pred), "--out", str(out)],
               env=nnunet_env, check=False)
    _single_error(proc, damaged, problem)
    assert not out.exists()
    proc = run([script("nnunet-nerve"), "biomarkers", "--image", str(dataset / "imagesTr" / "sub-002_0000.nii.gz"),
                "--mask", str(damaged), "--out", str(out)], env=nnunet_env, check=False)
    _single_error(proc, damaged, problem)
    assert not out.exists()
    out_file = tmp_path / "post.nii.gz"
    proc = run([script("nnunet-nerve"), "postprocess", str(damaged), str(out_file)], env=nnunet_env, check=False)
    _single_error(proc, damaged, problem)
    assert not out_file.exists()


def test_segment_refuses_a_cut_image_file(tmp_path):
    from nnunet_nerve.segmentation.segment import read_input

    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(_volume(), str(path))
    cut(path)
    with pytest.raises(NerveError, match=DAMAGED):
        read_input(path)


def test_nan_count_of_an_uncompressed_float_nifti_named_nii_gz(tmp_path):
    from nnunet_nerve.io.images import non_finite_count

    array = np.ones((3, 5, 6), np.float32)
    array[0, 1, 2], array[2, 4, 5] = np.nan, np.inf
    plain = tmp_path / "image.nii"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(plain))
    named = tmp_path / "image.nii.gz"
    shutil.copy(plain, named)
    assert non_finite_count(sitk.ReadImage(str(named)), named) == 2
    with pytest.raises(NerveError, match="2 NaN or infinite voxel values"):
        read_image(named)


def test_a_cut_dicom_slice_is_refused_naming_the_file(tmp_path):
    from nnunet_nerve.dicom.synthetic import write_dicom_series
    from nnunet_nerve.segmentation.segment import read_input

    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(1, 500, (5, 12, 10)).astype(np.int16))
    image.SetSpacing((0.5, 0.5, 4.0))
    files = write_dicom_series(image, tmp_path / "series")
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-100])  # the end of the pixel data is lost
    for reader in (read_image, read_input):
        with pytest.raises(NerveError) as caught:
            reader(tmp_path / "series")
        assert str(caught.value).startswith(f"{files[2]}: {DAMAGED} (the pixel data holds ")
