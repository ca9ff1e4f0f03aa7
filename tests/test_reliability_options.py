"""Nonsense options and formats get one ``error:`` line and write nothing, on the command
line and through the library functions that take them."""
from __future__ import annotations

import math

import nibabel
import numpy as np
import pytest

from conftest import run, script
from nerve_tubes import SPACING, t2_image, tube, write
from test_evaluation import single_error_line

from nnunet_nerve.biomarkers.lesions import LesionRule
from nnunet_nerve.biomarkers.measures import biomarkers_from_files, nerve_biomarkers
from nnunet_nerve.biomarkers.postprocess import PostprocessRule
from nnunet_nerve.biomarkers.postprocess_files import postprocess_file
from nnunet_nerve.errors import NerveError


def cli(*args):
    return run([script("nnunet-nerve"), *map(str, args)], check=False, timeout=300)


@pytest.fixture
def scan(tmp_path):
    nerve = tube((24, 24), 3.0)
    return write(tmp_path / "t2.nii.gz", t2_image(nerve)), write(tmp_path / "mask.nii.gz", nerve)


def assert_one_line_nothing_written(proc, out, *words):
    assert proc.returncode == 2, proc.stderr
    line = single_error_line(proc)
    for word in words:
        assert word in line, line
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp*"))


@pytest.mark.parametrize("option, value, expected", [
    ("--k", "-3", "--k -3.0: expected a finite number > 0"),
    ("--k", "nan", "--k nan"),
    ("--min-excess", "-0.1", "--min-excess -0.1"),
    ("--min-lesion-slices", "0", "--min-lesion-slices 0"),
    ("--min-lesion-separation", "0", "--min-lesion-separation 0"),
])
def test_biomarkers_options(scan, tmp_path, option, value, expected):
    image, mask = scan
    out = tmp_path / "out"
    proc = cli("biomarkers", "--image", image, "--mask", mask, "--out", out, option, value)
    assert_one_line_nothing_written(proc, out, expected)


@pytest.mark.parametrize("option, value, expected", [
    ("--min-extent", "0", "--min-extent 0.0"),
    ("--min-extent", "1.5", "<= 1"),
    ("--max-branch-distance", "-20", "--max-branch-distance -20.0"),
    ("--max-branch-distance", "inf", "--max-branch-distance inf"),
    ("--max-gap", "-1", "--max-gap -1"),
    ("--side-fraction", "0.7", "--side-fraction 0.7"),
    ("--side-fraction", "nan", "--side-fraction nan"),
])
@pytest.mark.parametrize("verb", ["postprocess", "biomarkers", "segment"])
def test_postprocess_options(scan, tmp_path, option, value, expected, verb):
    """The same options and refusals wherever a verb post-processes (segment refuses them before
    it looks for the model)."""
    image, mask = scan
    out = tmp_path / ("clean.nii.gz" if verb == "postprocess" else "out")
    args = {"postprocess": [mask, out], "biomarkers": ["--image", image, "--mask", mask, "--out", out],
            "segment": [image, out, "--model", tmp_path / "no_model"]}[verb]
    assert_one_line_nothing_written(cli(verb, *args, option, value), out, expected)


@pytest.mark.parametrize("verb", ["biomarkers", "segment"])
def test_postprocess_options_without_postprocessing_are_refused(scan, tmp_path, verb):
    image, mask = scan
    out = tmp_path / "out"
    args = {"biomarkers": ["--image", image, "--mask", mask, "--out", out],
            "segment": [image, out, "--model", tmp_path / "no_model"]}[verb]
    proc = cli(verb, *args, "--no-postprocess", "--side-fraction", "0", "--max-gap", "1")
    assert_one_line_nothing_written(proc, out, "--max-gap 1", "--side-fraction 0.0", "--no-postprocess")


@pytest.mark.parametrize("name", ["clean.png", "clean.jpg", "clean", "clean.nii.gz.txt"])
def test_postprocess_refuses_formats_that_cannot_hold_a_3d_mask(scan, tmp_path, name):
    _, mask = scan
    out = tmp_path / name
    assert_one_line_nothing_written(cli("postprocess", mask, out), out, str(out), ".nii.gz")


def test_postprocess_onto_a_folder_is_refused(scan, tmp_path):
    _, mask = scan
    folder = tmp_path / "existing.nii.gz"
    folder.mkdir()
    proc = cli("postprocess", mask, folder, "--overwrite")
    assert proc.returncode == 2 and str(folder) in single_error_line(proc)
    assert folder.is_dir() and not any(folder.iterdir())


def test_library_refuses_the_same_values(scan, tmp_path):
    image, mask = scan
    for make in (lambda: LesionRule(k=-3), lambda: LesionRule(min_slices=1.5), lambda: LesionRule(k=math.inf),
                 lambda: PostprocessRule(max_gap_slices=-1), lambda: PostprocessRule(min_extent_fraction=2.0),
                 lambda: PostprocessRule(max_branch_distance_mm=float("nan"))):
        with pytest.raises(NerveError):
            make()
    with pytest.raises(NerveError, match="min_branch_fraction"):
        nerve_biomarkers(tube((24, 24), 3.0), SPACING, min_branch_fraction=-0.1)
    with pytest.raises(NerveError, match=r"\.png"):
        postprocess_file(mask, tmp_path / "x.png")
    assert LesionRule(k=0.5).k == 0.5 and PostprocessRule(max_gap_slices=0).max_gap_slices == 0


def test_non_finite_intensities_refused_as_check_refuses_them(tmp_path):
    """ITK's NIfTI reader turns NaN into 0, which would pass as dark nerve voxels."""
    nerve = tube((24, 24), 3.0)
    array = t2_image(nerve)
    array[5, nerve[5]] = np.nan
    n_nan = int(nerve[5].sum())
    path = tmp_path / "nan_t2.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)),
                                     np.diag([*reversed(SPACING), 1.0])), str(path))
    mask = write(tmp_path / "mask.nii.gz", nerve)
    with pytest.raises(NerveError, match=f"{n_nan} NaN or infinite"):
        biomarkers_from_files(path, mask)
    with pytest.raises(NerveError, match="NaN or infinite"):
        nerve_biomarkers(nerve, SPACING, array)
    out = tmp_path / "out"
    assert_one_line_nothing_written(cli("biomarkers", "--image", path, "--mask", mask, "--out", out), out,
                                    str(path), f"{n_nan} NaN")


@pytest.mark.parametrize("verb", ["convert", "phantom"])
def test_negative_seed(tmp_path, nnunet_env, verb):
    out = tmp_path / "reg"
    args = ["convert", tmp_path, "-d", "77"] if verb == "convert" else ["phantom", out]
    proc = run([script("nnunet-nerve"), *map(str, args), "--seed", "-1"], env=nnunet_env, check=False)
    assert proc.returncode == 2 and "--seed -1: expected an integer >= 0" in single_error_line(proc)
    assert not out.exists()
