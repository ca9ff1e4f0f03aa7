"""Registry -> nnU-Net raw dataset: voxel-by-voxel content, provenance, the fixed split, atomicity,
refusal to overwrite, and nnU-Net's own plan_and_preprocess --verify_dataset_integrity on the output."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import read_array, run, script
from nnunet_nerve import __version__
from nnunet_nerve.registry import conversion
from nnunet_nerve.registry.conversion import convert_registry
from nnunet_nerve.registry.dataset_info import load_dataset_info, read_participants
from nnunet_nerve.errors import NerveError
from nnunet_nerve.registry.phantom import write_phantom_registry
from nnunet_nerve.registry.phantom_anatomy import RATERS
from nnunet_nerve.registry.reader import image_path, mask_path


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """4 volunteers + 4 patients, small size (read-only for the tests: copy before changing)."""
    return write_phantom_registry(tmp_path_factory.mktemp("phantom") / "reg", volunteers=4, patients=4, seed=1,
                                  log=None)


def _tree(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_conversion_voxel_by_voxel(phantom, nnunet_env, tmp_path):
    out = convert_registry(phantom, 42, name="Phantom", log=None)
    assert out == tmp_path / "nnUNet_raw" / "Dataset042_Phantom"
    cases = [f"sub-{i:03d}" for i in range(1, 9)]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in cases]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in cases]
    assert sorted(p.name for p in (out / "raters").iterdir()) == sorted(RATERS)
    for case in cases:
        source = sitk.ReadImage(str(image_path(phantom, case)))
        converted = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), sitk.GetArrayFromImage(source))
        assert converted.GetPixelID() == source.GetPixelID()
        np.testing.assert_allclose(converted.GetSpacing(), source.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(converted.GetOrigin(), source.GetOrigin(), atol=1e-5)
        assert converted.GetDirection() == source.GetDirection()
        rater_masks = [read_array(mask_path(phantom, case, r)) for r in RATERS]
        votes = np.zeros(rater_masks[0].shape, int)
        for m in rater_masks:
            votes += m
        label = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), (votes >= 2).astype(np.uint8))
        assert label.GetOrigin() == converted.GetOrigin() and label.GetSpacing() == converted.GetSpacing()
        for rater, m in zip(RATERS, rater_masks):
            np.testing.assert_array_equal(read_array(out / "raters" / rater / f"{case}.nii.gz"), m)
    assert read_participants(out / "participants.tsv") == read_participants(phantom / "participants.tsv")
    header = (out / "participants.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["participant_id", "cohort", "location", "age", "sex", "lesion", "lesion_first_slice",
                      "lesion_last_slice"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2"} and meta["labels"] == {"background": 0, "nerve": 1}
    assert meta["numTraining"] == 8 and meta["file_ending"] == ".nii.gz"
    assert meta["nnunet_nerve"] == {"consensus": "majority", "raters": list(RATERS), "rater_order": "raters.tsv",
                                    "version": __version__, "registry": str(phantom.resolve())}
    info = load_dataset_info(42)
    assert info.cases == tuple(cases) and info.raters == RATERS == ("OS", "BW", "AB")  # the phantom's raters.tsv
    assert [info.cohort(c) for c in cases] == ["volunteer"] * 4 + ["patient"] * 4
    splits = json.loads((tmp_path / "nnUNet_preprocessed" / "Dataset042_Phantom" / "splits_final.json").read_text())
    assert len(splits) == 4
    assert sorted(c for f in splits for c in f["val"]) == cases
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == cases and len(fold["val"]) == 2
        assert sum(c <= "sub-004" for c in fold["val"]) == 1  # one volunteer in every fold
    assert not [p for p in (tmp_path / "nnUNet_raw").iterdir() if p.name.startswith(".")]


def test_staple_consensus(phantom, nnunet_env):
    out = convert_registry(phantom, 43, name="Staple", consensus_method="staple", n_folds=2, log=None)
    assert json.loads((out / "dataset.json").read_text())["nnunet_nerve"]["consensus"] == "staple"
    for case in ("sub-001", "sub-008"):
        masks = [sitk.ReadImage(str(mask_path(phantom, case, r))) for r in RATERS]
        probability = sitk.GetArrayFromImage(sitk.STAPLE([sitk.Cast(m, sitk.sitkUInt8) for m in masks], 1.0))
        np.testing.assert_array_equal(read_array(out / "labelsTr" / f"{case}.nii.gz"), probability > 0.5)


def test_failure_midway_leaves_nothing(phantom, nnunet_env, tmp_path, monkeypatch):
    calls = []
    real = conversion.write_mask

    def failing(array, reference, path):
        calls.append(path)
        if len(calls) == 10:
            raise OSError("disk full (simulated)")
        real(array, reference, path)

    monkeypatch.setattr(conversion, "write_mask", failing)
    with pytest.raises(OSError, match="disk full"):
        convert_registry(phantom, 44, name="Broken", log=None)
    assert len(calls) == 10
    assert _tree(tmp_path / "nnUNet_raw") == []
    assert _tree(tmp_path / "nnUNet_preprocessed") == []


def test_refuses_to_overwrite_and_replaces_with_overwrite(phantom, nnunet_env, tmp_path):
    nerve = script("nnunet-nerve")
    run([nerve, "convert", str(phantom), "-d", "45", "--name", "Twice"], env=nnunet_env)
    dataset = tmp_path / "nnUNet_raw" / "Dataset045_Twice"
    splits = tmp_path / "nnUNet_preprocessed" / "Dataset045_Twice" / "splits_final.json"
    before = (dataset / "dataset.json").read_text(), splits.read_text()
    again = run([nerve, "convert", str(phantom), "-d", "45", "--name", "Twice", "--consensus", "staple"],
                env=nnunet_env, check=False)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: {dataset}: dataset already exists; pass --overwrite to replace it"
    assert ((dataset / "dataset.json").read_text(), splits.read_text()) == before
    other = run([nerve, "convert", str(phantom), "-d", "45", "--name", "Other"], env=nnunet_env, check=False)
    assert other.returncode == 2 and "dataset id 45 is already used" in other.stderr
    assert not (tmp_path / "nnUNet_raw" / "Dataset045_Other").exists()
    run([nerve, "convert", str(phantom), "-d", "45", "--name", "Twice", "--consensus", "staple", "--folds", "2",
         "--overwrite"], env=nnunet_env)
    assert json.loads((dataset / "dataset.json").read_text())["nnunet_nerve"]["consensus"] == "staple"
    assert len(json.loads(splits.read_text())) == 2
    assert sorted(p.name for p in (tmp_path / "nnUNet_raw").iterdir()) == ["Dataset045_Twice"]


def test_bad_registry_writes_nothing(phantom, nnunet_env, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(phantom, bad)
    mask_path(bad, "sub-002", "BW").unlink()
    tsv = bad / "participants.tsv"
    tsv.write_text(tsv.read_text().replace("\tvolunteer\t", "\thealthy\t", 1))
    proc = run([script("nnunet-nerve"), "convert", str(bad), "-d", "46"], env=nnunet_env, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, proc.stderr
    assert errors[0].startswith("error: sub-001: ") and "unknown cohort 'healthy'" in errors[0]
    assert errors[1].startswith(f"error: sub-002: {mask_path(bad, 'sub-002', 'BW')}: missing")
    assert _tree(tmp_path / "nnUNet_raw") == [] and _tree(tmp_path / "nnUNet_preprocessed") == []


def test_raters_tsv_must_match_the_masks(phantom, nnunet_env, tmp_path):
    """A rater listed in raters.tsv without masks, and masks of a rater it does not list: one
    error line each naming the rater, exit 2, nothing written."""
    bad = tmp_path / "bad"
    shutil.copytree(phantom, bad)
    (bad / "raters.tsv").write_text("rater_id\nOS\nLG\nBW\n")
    proc = run([script("nnunet-nerve"), "convert", str(bad), "-d", "46"], env=nnunet_env, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    tsv = bad.resolve() / "raters.tsv"
    assert errors[:2] == [f"error: {tsv}: rater LG is listed but no subject has a mask "
                          "sub-<id>_T2w_desc-raterLG_mask.nii.gz",
                          f"error: {tsv}: rater AB is not listed but has 8 mask(s), e.g. "
                          f"{mask_path(bad.resolve(), 'sub-001', 'AB')}; add the rater to raters.tsv or remove the masks"]
    assert len(errors) == 3 and "2 problem(s)" in errors[2]
    assert _tree(tmp_path / "nnUNet_raw") == [] and _tree(tmp_path / "nnUNet_preprocessed") == []


def test_dataset_json_with_a_repeated_rater_is_refused(phantom, nnunet_env, tmp_path):
    out = convert_registry(phantom, 53, name="Twice", n_folds=0, log=None)
    meta = json.loads((out / "dataset.json").read_text())
    meta["nnunet_nerve"]["raters"] = ["OS", "BW", "OS"]
    (out / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(NerveError, match="lists rater\\(s\\) OS more than once"):
        load_dataset_info(out)


def test_too_few_subjects_for_the_folds(phantom, nnunet_env, tmp_path):
    with pytest.raises(NerveError, match="8 subjects cannot be split into 9 folds; pass --folds 8 or fewer"):
        convert_registry(phantom, 47, n_folds=9, log=None)
    with pytest.raises(NerveError, match="--folds 1: expected 0"):
        convert_registry(phantom, 47, n_folds=1, log=None)
    assert _tree(tmp_path / "nnUNet_raw") == []


def test_split_is_independent_of_row_order(phantom, nnunet_env, tmp_path):
    shuffled = tmp_path / "shuffled"
    shutil.copytree(phantom, shuffled)
    lines = (shuffled / "participants.tsv").read_text().splitlines()
    rows = lines[1:]
    np.random.default_rng(7).shuffle(rows)
    assert rows != lines[1:]
    (shuffled / "participants.tsv").write_text("\n".join([lines[0]] + rows) + "\n")
    convert_registry(phantom, 48, name="A", seed=3, log=None)
    convert_registry(shuffled, 49, name="B", seed=3, log=None)
    pre = tmp_path / "nnUNet_preprocessed"
    a = (pre / "Dataset048_A" / "splits_final.json").read_text()
    assert a == (pre / "Dataset049_B" / "splits_final.json").read_text()
    convert_registry(phantom, 50, name="C", seed=4, log=None)
    assert a != (pre / "Dataset050_C" / "splits_final.json").read_text()


@pytest.mark.integration
def test_nnunet_plan_and_preprocess_accepts_it_and_keeps_the_split(phantom, nnunet_env, tmp_path):
    run([script("nnunet-nerve"), "convert", str(phantom), "-d", "501", "--name", "Phantom"], env=nnunet_env)
    splits = tmp_path / "nnUNet_preprocessed" / "Dataset501_Phantom" / "splits_final.json"
    before = splits.read_bytes()
    proc = run([script("nnUNetv2_plan_and_preprocess"), "-d", "501", "--verify_dataset_integrity", "-c", "2d",
                "-np", "1", "-npfp", "1"], env=nnunet_env, timeout=600)
    assert proc.returncode == 0
    assert splits.read_bytes() == before
    pre = splits.parent
    assert (pre / "nnUNetPlans.json").is_file() and (pre / "dataset_fingerprint.json").is_file()
    preprocessed = list((pre / "nnUNetPlans_2d").glob("sub-*"))
    cases = {p.name.split(".")[0].removesuffix("_seg") for p in preprocessed}
    assert cases == {f"sub-{i:03d}" for i in range(1, 9)}


def test_dataset_info_finds_the_dataset_by_id_name_or_path(phantom, nnunet_env, tmp_path):
    from nnunet_nerve.registry.dataset_info import find_dataset_dir

    out = convert_registry(phantom, 51, name="Found", n_folds=0, log=None)
    for key in (51, "51", "051", "Dataset051_Found", str(out)):
        assert find_dataset_dir(key) == out.resolve()
    with pytest.raises(NerveError, match="no dataset Dataset052_"):
        find_dataset_dir(52)
    with pytest.raises(NerveError, match="not a dataset folder, a dataset id"):
        find_dataset_dir("nonsense")
    (out / "raters" / "BW" / "sub-003.nii.gz").unlink()
    with pytest.raises(NerveError) as caught:
        load_dataset_info(out)
    assert caught.value.problems == [f"{out.resolve() / 'raters' / 'BW' / 'sub-003.nii.gz'}: rater BW has no mask "
                                     "for case sub-003"]
