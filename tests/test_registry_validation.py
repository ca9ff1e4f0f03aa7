"""Every validation rule of a registry (issue 3 part 3), on tiny registries written to disk with SimpleITK,
and `nnunet-nerve check` in a subprocess."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run, script
from nnunet_nerve.errors import NerveError
from nnunet_nerve.registry.reader import mask_path, scan_registry
from nnunet_nerve.evaluation.rater_agreement import rater_agreement
from nnunet_nerve.registry.validation import check_registry, registry_problems

SPACING = (0.52, 0.52, 4.0)
RATERS = ("AB", "BW", "OS")


def _image(array: np.ndarray, spacing=SPACING, origin=(-10.0, -12.0, 30.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def write_subject(root: Path, pid: str, image: "np.ndarray | None" = None, raters=RATERS, suffix=".nii.gz") -> None:
    """One subject in the layout: a (3, 10, 12) int16 image and a box mask per rater."""
    if image is None:
        image = np.random.default_rng(0).integers(0, 500, (3, 10, 12)).astype(np.int16)
    img_path = root / pid / "anat" / f"{pid}_T2w{suffix}"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(image), str(img_path))
    for rater in raters:
        mask = np.zeros(image.shape[-3:], np.uint8)
        mask[:, 3:6, 4:8] = 1
        path = mask_path(root, pid, rater)
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_image(mask), str(path))


def write_tsv(root: Path, rows) -> None:
    lines = ["participant_id\tcohort\tlocation\tage"] + ["\t".join(r) for r in rows]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")


def make_registry(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(1, n + 1):
        pid = f"sub-{i:03d}"
        write_subject(root, pid)
        rows.append((pid, "volunteer" if i == 1 else "patient", "distal", str(30 + i)))
    write_tsv(root, rows)
    return root


def problems_of(root: Path) -> list:
    return registry_problems(scan_registry(root))


def test_a_valid_registry_passes(tmp_path):
    registry = check_registry(make_registry(tmp_path / "reg"))
    assert registry.participant_ids == ["sub-001", "sub-002", "sub-003"]
    assert registry.raters == list(RATERS)
    assert registry.participant("sub-001").extra == {"age": "31"}
    assert registry.files["sub-002"].image.name == "sub-002_T2w.nii.gz"


@pytest.mark.parametrize("suffix", [".nii", ".mha", ".nrrd"])
def test_other_image_formats_are_found(tmp_path, suffix):
    root = make_registry(tmp_path / "reg", n=1)
    shutil.rmtree(root / "sub-001")
    write_subject(root, "sub-001", suffix=suffix)
    assert problems_of(root) == []
    assert scan_registry(root).files["sub-001"].image.name == f"sub-001_T2w{suffix}"


def test_unknown_cohort_and_location(tmp_path):
    root = make_registry(tmp_path / "reg")
    write_tsv(root, [("sub-001", "control", "distal", "1"), ("sub-002", "patient", "knee", "2"),
                     ("sub-003", "patient", "proximal", "3")])
    problems = problems_of(root)
    assert len(problems) == 2
    assert problems[0].startswith("sub-001: ") and "unknown cohort 'control'" in problems[0]
    assert problems[1].startswith("sub-002: ") and "unknown location 'knee'" in problems[1]
    assert all("participants.tsv" in p for p in problems)


def test_listed_subject_without_image_or_masks(tmp_path):
    root = make_registry(tmp_path / "reg")
    (root / "sub-002" / "anat" / "sub-002_T2w.nii.gz").unlink()
    shutil.rmtree(root / "derivatives" / "labels" / "sub-003")
    problems = problems_of(root)
    assert len(problems) == 2, problems
    assert problems[0].startswith("sub-002: ") and "no image sub-002_T2w" in problems[0]
    assert problems[1].startswith("sub-003: ") and "no rater masks" in problems[1]


def test_a_missing_rater_mask_is_named(tmp_path):
    root = make_registry(tmp_path / "reg")
    mask_path(root, "sub-003", "BW").unlink()
    problems = problems_of(root)
    assert len(problems) == 1
    assert problems[0].startswith(f"sub-003: {mask_path(root, 'sub-003', 'BW')}: missing")


def test_files_of_unlisted_subjects(tmp_path):
    root = make_registry(tmp_path / "reg")
    write_subject(root, "sub-099")
    (root / "derivatives" / "labels" / "sub-098" / "anat").mkdir(parents=True)
    problems = problems_of(root)
    assert len(problems) == 2
    assert problems[0].startswith(f"sub-098: {root / 'derivatives' / 'labels' / 'sub-098'}: ")
    assert problems[1].startswith(f"sub-099: {root / 'sub-099'}: ")
    assert all("not listed in participants.tsv" in p for p in problems)


def test_duplicate_ids(tmp_path):
    root = make_registry(tmp_path / "reg", n=2)
    write_tsv(root, [("sub-001", "patient", "distal", "1"), ("sub-002", "patient", "distal", "2"),
                     ("sub-001", "volunteer", "n/a", "3")])
    problems = problems_of(root)
    assert problems == [f"sub-001: {root / 'participants.tsv'}: participant id listed 2 times"]


@pytest.mark.parametrize("bad_id", ["001", "sub-0_1", "sub-..", "sub-a b", "sub-", "Sub-001"])
def test_unsafe_ids(tmp_path, bad_id):
    root = make_registry(tmp_path / "reg", n=1)
    write_tsv(root, [("sub-001", "patient", "distal", "1"), (bad_id, "patient", "distal", "2")])
    problems = problems_of(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(repr(bad_id)) and "unsafe participant id" in problems[0]
    assert "sub-" in problems[0]


def test_mask_off_the_image_grid(tmp_path):
    root = make_registry(tmp_path / "reg")
    ones = np.ones((3, 10, 12), np.uint8)
    sitk.WriteImage(_image(np.ones((3, 10, 11), np.uint8)), str(mask_path(root, "sub-001", "AB")))
    sitk.WriteImage(_image(ones, spacing=(0.6, 0.52, 4.0)), str(mask_path(root, "sub-002", "BW")))
    sitk.WriteImage(_image(ones, origin=(-10.0, -11.0, 30.0)), str(mask_path(root, "sub-003", "OS")))
    problems = problems_of(root)
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"sub-001: {mask_path(root, 'sub-001', 'AB')}: ") and "size" in problems[0]
    assert problems[1].startswith(f"sub-002: {mask_path(root, 'sub-002', 'BW')}: ") and "spacing" in problems[1]
    assert problems[2].startswith(f"sub-003: {mask_path(root, 'sub-003', 'OS')}: ") and "origin" in problems[2]
    assert all("not on the image's grid" in p for p in problems)


def test_last_digit_geometry_differences_pass(tmp_path):
    root = make_registry(tmp_path / "reg", n=1)
    box = np.zeros((3, 10, 12), np.uint8)
    box[:, 2:5, 3:7] = 1
    mask = _image(box, spacing=(0.52 * (1 + 3e-7), 0.52, 4.0 * (1 - 2e-7)),
                  origin=(-10.0 + 1e-5, -12.0 - 2e-6, 30.0 + 3e-6))
    sitk.WriteImage(mask, str(mask_path(root, "sub-001", "AB")), useCompression=True)
    assert problems_of(root) == []


def test_mask_with_several_values(tmp_path):
    root = make_registry(tmp_path / "reg", n=1)
    labels = np.zeros((3, 10, 12), np.uint8)
    labels[0, :2] = 1
    labels[1, :2] = 2
    sitk.WriteImage(_image(labels), str(mask_path(root, "sub-001", "OS")))
    one_value = np.where(labels > 0, 255, 0).astype(np.uint8)
    sitk.WriteImage(_image(one_value), str(mask_path(root, "sub-001", "AB")))  # 0/255 is binary: fine
    problems = problems_of(root)
    assert problems == [f"sub-001: {mask_path(root, 'sub-001', 'OS')}: mask of rater OS has 2 different "
                        "non-zero values (1, 2); expected a binary mask"]


def test_4d_image(tmp_path):
    root = make_registry(tmp_path / "reg", n=1)
    path = root / "sub-001" / "anat" / "sub-001_T2w.nii.gz"
    volume = _image(np.zeros((3, 10, 12), np.int16))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path))  # two time points
    assert sitk.ReadImage(str(path)).GetDimension() == 4
    problems = problems_of(root)
    assert problems == [f"sub-001: {path}: image is 4D, expected a 3D image"]


def test_vector_image(tmp_path):
    root = make_registry(tmp_path / "reg", n=1)
    path = root / "sub-001" / "anat" / "sub-001_T2w.nii.gz"
    sitk.WriteImage(_image(np.zeros((3, 10, 12, 2), np.int16)), str(path))  # last axis = components
    assert problems_of(root) == [f"sub-001: {path}: image has 2 values per voxel (a 4D or vector image), "
                                 "expected one"]


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_nan_and_inf_intensities(tmp_path, suffix):
    # ITK's NIfTI reader silently reads NaN as 0: the check must still see them.
    root = make_registry(tmp_path / "reg", n=1)
    (root / "sub-001" / "anat" / "sub-001_T2w.nii.gz").unlink()
    path = root / "sub-001" / "anat" / f"sub-001_T2w{suffix}"
    image = np.ones((3, 10, 12), np.float32)
    image[0, 0, :3] = np.nan
    image[2, 5, 5] = np.inf
    sitk.WriteImage(_image(image), str(path))
    assert problems_of(root) == [f"sub-001: {path}: 4 NaN or infinite voxel values; expected finite numbers"]


def test_two_images_and_stray_mask_names(tmp_path):
    root = make_registry(tmp_path / "reg", n=1)
    sitk.WriteImage(_image(np.zeros((3, 10, 12), np.int16)), str(root / "sub-001" / "anat" / "sub-001_T2w.mha"))
    stray = root / "derivatives" / "labels" / "sub-001" / "anat" / "sub-001_T2w_desc-rater_O-S_mask.nii.gz"
    shutil.copy(mask_path(root, "sub-001", "OS"), stray)
    problems = problems_of(root)
    assert len(problems) == 2, problems
    assert problems[0].startswith("sub-001: ") and "several images (sub-001_T2w.mha, sub-001_T2w.nii.gz)" in problems[0]
    assert problems[1].startswith(f"sub-001: {stray}: not a rater mask name")


def test_dicom_folder_with_two_series(tmp_path):
    root = make_registry(tmp_path / "reg", n=1)
    (root / "sub-001" / "anat" / "sub-001_T2w.nii.gz").unlink()
    folder = root / "sub-001" / "anat" / "sub-001_T2w"
    folder.mkdir()
    for i in range(2):  # SimpleITK gives each written file its own series instance UID
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.int16)), str(folder / f"slice{i}.dcm"))
    problems = problems_of(root)
    assert problems == [f"sub-001: {folder}: folder holds 2 DICOM series, expected one"]


def test_every_problem_is_reported_at_once(tmp_path):
    root = make_registry(tmp_path / "reg")
    write_tsv(root, [("sub-001", "control", "distal", "1"), ("sub-002", "patient", "distal", "2"),
                     ("sub-003", "patient", "distal", "3")])
    (root / "sub-002" / "anat" / "sub-002_T2w.nii.gz").unlink()
    write_subject(root, "sub-004")
    with pytest.raises(NerveError) as caught:
        check_registry(root)
    assert len(caught.value.problems) == 3
    assert [p.split(":")[0] for p in caught.value.problems] == ["sub-001", "sub-002", "sub-004"]
    assert "nothing was written" in str(caught.value)


def test_missing_participants_tsv(tmp_path):
    root = make_registry(tmp_path / "reg", n=1)
    (root / "participants.tsv").unlink()
    with pytest.raises(NerveError, match="participants.tsv: no such file"):
        check_registry(root)


def test_check_cli_ok_and_errors(tmp_path):
    root = make_registry(tmp_path / "reg")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    ok = run([script("nnunet-nerve"), "check", str(root)])
    assert ok.stdout.splitlines()[0] == f"{root}: ok, 3 subjects (1 volunteers, 2 patients), raters AB, BW, OS"
    assert ok.stdout.splitlines()[2:] == [f"  rater {r}: mean 1.000 over 3 subject(s), lowest 1.000 (sub-001), "
                                          "0 outlier(s)" for r in RATERS]
    write_tsv(root, [("sub-001", "volunteer", "thigh", "1"), ("sub-002", "patient", "distal", "2")])
    bad = run([script("nnunet-nerve"), "check", str(root)], check=False)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 3, bad.stderr
    assert all(line.startswith("error: ") for line in lines)
    assert lines[0].startswith("error: sub-001: ") and "unknown location 'thigh'" in lines[0]
    assert lines[1].startswith("error: sub-003: ") and "not listed" in lines[1]
    assert lines[2] == f"error: {root}: 2 problem(s) in the registry; nothing was written"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


def test_spreadsheet_export_with_bom_and_crlf(tmp_path):
    root = make_registry(tmp_path / "reg", n=2)
    text = "participant_id\tcohort\tlocation\tage\r\nsub-001\tvolunteer\tn/a\t31\r\nsub-002\tpatient\tmedial\t44\r\n"
    (root / "participants.tsv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    registry = check_registry(root)
    assert registry.participant_ids == ["sub-001", "sub-002"]
    assert registry.participant("sub-002").extra == {"age": "44"}


# ---------------------------------------------------------------- raters.tsv (the reporting order)

def write_raters(root: Path, ids, header="rater_id\texperience") -> None:
    (root / "raters.tsv").write_text(header + "\n" + "".join(f"{r}\t{i}\n" for i, r in enumerate(ids)))


def test_raters_tsv_gives_the_order(tmp_path):
    root = make_registry(tmp_path / "reg")
    write_raters(root, ["OS", "BW", "AB"])
    registry = check_registry(root)
    assert registry.raters == ["OS", "BW", "AB"] and registry.rater_order == "raters.tsv"
    assert [r.extra for r in registry.rater_table] == [{"experience": "0"}, {"experience": "1"}, {"experience": "2"}]
    (root / "raters.tsv").unlink()
    registry = check_registry(root)
    assert registry.raters == ["AB", "BW", "OS"] and registry.rater_order == "sorted"


def test_raters_tsv_listed_rater_without_masks_and_masks_of_an_unlisted_rater(tmp_path):
    root = make_registry(tmp_path / "reg")
    write_raters(root, ["OS", "LG", "BW"])  # lists LG, who segmented nothing; omits AB, who segmented all
    problems = problems_of(root)
    tsv = root.resolve() / "raters.tsv"
    assert problems == [
        f"{tsv}: rater LG is listed but no subject has a mask sub-<id>_T2w_desc-raterLG_mask.nii.gz",
        f"{tsv}: rater AB is not listed but has 3 mask(s), e.g. {mask_path(root.resolve(), 'sub-001', 'AB')}; "
        "add the rater to raters.tsv or remove the masks"]


def test_raters_tsv_repeated_unsafe_and_empty(tmp_path):
    root = make_registry(tmp_path / "reg")
    write_raters(root, ["OS", "BW", "AB", "OS", "O-S"])
    problems = problems_of(root)
    assert any("rater OS listed 2 times" in p for p in problems)
    assert any("rater id 'O-S' is not letters and digits" in p for p in problems)
    assert len(problems) == 2
    write_raters(root, [])
    problems = problems_of(root)
    assert problems[0].endswith("raters.tsv: lists no raters; list one rater_id per line or remove the file")
    assert [p.split(": ")[1].split(" is ")[0] for p in problems[1:]] == ["rater AB", "rater BW", "rater OS"]


def test_raters_tsv_without_the_rater_id_column_is_one_error_line(tmp_path):
    root = make_registry(tmp_path / "reg")
    write_raters(root, ["OS", "BW", "AB"], header="rater\texperience")
    proc = run([script("nnunet-nerve"), "check", str(root)], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {root.resolve() / 'raters.tsv'}: header lacks column(s) rater_id"]


def _write_mask(root: Path, pid: str, rater: str, mask: np.ndarray) -> Path:
    path = mask_path(root, pid, rater)
    sitk.WriteImage(_image(mask.astype(np.uint8)), str(path))
    return path


def test_empty_and_all_nerve_rater_masks_are_errors_unless_allowed(tmp_path, nnunet_env):
    root = make_registry(tmp_path / "reg", n=2)
    empty = _write_mask(root, "sub-001", "BW", np.zeros((3, 10, 12)))
    full = _write_mask(root, "sub-002", "AB", np.ones((3, 10, 12)))
    assert problems_of(root) == [
        f"sub-001: {empty}: mask of rater BW is empty (no nerve voxel); pass --allow-uniform-masks to accept it",
        f"sub-002: {full}: mask of rater AB marks every voxel as nerve; pass --allow-uniform-masks to accept it"]
    assert registry_problems(scan_registry(root), allow_uniform_masks=True) == []
    proc = run([script("nnunet-nerve"), "check", str(root)], check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines()[0] == f"error: {problems_of(root)[0]}"
    run([script("nnunet-nerve"), "check", str(root), "--allow-uniform-masks"])
    convert = [script("nnunet-nerve"), "convert", str(root), "-d", "7", "--folds", "0"]
    proc = run(convert, env=nnunet_env, check=False)
    assert proc.returncode == 2 and "mask of rater BW is empty" in proc.stderr
    assert not any(Path(nnunet_env["nnUNet_raw"]).iterdir())
    run(convert + ["--allow-uniform-masks"], env=nnunet_env)
    label = next(Path(nnunet_env["nnUNet_raw"]).glob("Dataset007_*/raters/BW/sub-001.nii.gz"))
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(label))).any()


def test_an_inverted_rater_mask_is_an_error_even_where_uniform_masks_are_allowed(tmp_path):
    """A rater's mask with its labels swapped (nerve 0, background 1) marks nearly every voxel
    as nerve: refused by name with the likely cause, --allow-uniform-masks or not; a mask on
    exactly half of the voxels is not (a crop tight around a nerve)."""
    root = make_registry(tmp_path / "reg", n=2)
    nerve = np.zeros((3, 10, 12))
    nerve[:, 4:6, 5:7] = 1
    inverted = _write_mask(root, "sub-001", "BW", 1 - nerve)
    half = np.zeros((3, 10, 12))
    half[:, :5] = 1
    _write_mask(root, "sub-002", "AB", half)
    expected = [f"sub-001: {inverted}: mask of rater BW marks 96.7 % of the voxels as nerve (more than 50 %: "
                "inverted, nerve 0 and background 1?)"]
    assert problems_of(root) == expected
    assert registry_problems(scan_registry(root), allow_uniform_masks=True) == expected


def _dice_of_voxel_sets(a: np.ndarray, b: np.ndarray) -> float:
    """Dice from its definition over sets of voxel coordinates (independent of the package)."""
    sa, sb = set(zip(*np.nonzero(a))), set(zip(*np.nonzero(b)))
    return 2 * len(sa & sb) / (len(sa) + len(sb))


#: Coronal slices in ITK's LPS frame: columns run left-right, rows head-foot, the slices' normal anterior-posterior.
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)


def test_check_and_convert_note_a_scan_whose_slices_are_not_axial(tmp_path, nnunet_env):
    """A registry whose sub-002 is stored as coronal slices (image and masks on one grid) is
    valid for training, so `check` and `convert` pass, but each prints one `warning:` line naming
    the subject and the file and saying that the biomarkers will refuse it and how to reorient;
    the axial subjects get none."""
    root = make_registry(tmp_path / "reg")
    for path in [root / "sub-002" / "anat" / "sub-002_T2w.nii.gz"] + [mask_path(root, "sub-002", r) for r in RATERS]:
        image = sitk.ReadImage(str(path))
        image.SetDirection(CORONAL)
        sitk.WriteImage(image, str(path))
    image_path = root / "sub-002" / "anat" / "sub-002_T2w.nii.gz"
    expected = (f"warning: sub-002: {image_path}: the slices are coronal (their normal is 90 degrees from the head-foot "
                "axis, towards the anterior-posterior axis) and cut the nerve lengthwise; CSA per slice needs axial "
                "slices across the nerve: reorient the image and its masks to axial first "
                "(SimpleITK.DICOMOrient(image, 'LPS') permutes and flips the axes without resampling); training and "
                "evaluation work as they are, but `biomarkers`, `segment` and `evaluate --biomarkers` refuse this scan")
    checked = run([script("nnunet-nerve"), "check", str(root)])
    assert checked.stdout.startswith(f"{root}: ok, 3 subjects")
    assert [line for line in checked.stdout.splitlines() if line.startswith("warning:")] == [expected]
    converted = run([script("nnunet-nerve"), "convert", str(root), "-d", "46", "--folds", "0"], env=nnunet_env)
    assert [line for line in converted.stdout.splitlines() if line.startswith("warning:")] == [expected]
    assert (Path(nnunet_env["nnUNet_raw"]) / "Dataset046_Nerve" / "dataset.json").is_file()


def test_check_warns_about_an_image_without_geometry(tmp_path):
    """sub-003's image and masks written with SimpleITK's defaults (1 mm voxels at origin 0):
    valid, exit 0, one `warning:` line naming the subject and the file."""
    root = make_registry(tmp_path / "reg")
    for path in [root / "sub-003" / "anat" / "sub-003_T2w.nii.gz"] + [mask_path(root, "sub-003", r) for r in RATERS]:
        sitk.WriteImage(sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))), str(path))
    checked = run([script("nnunet-nerve"), "check", str(root)])
    warnings = [line for line in checked.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: sub-003: {root / 'sub-003' / 'anat' / 'sub-003_T2w.nii.gz'}: the header holds no "
                        "geometry (1 mm voxels at origin 0, the defaults of an array written without its scan's "
                        "geometry): areas, lengths and volumes are in voxel units unless the voxels really are 1 mm; "
                        "copy the scan's geometry into the file (SimpleITK: image.CopyInformation(scan))"]


def test_check_reports_each_raters_agreement_and_flags_an_outlier(tmp_path):
    root = make_registry(tmp_path / "reg", n=2)
    box = np.zeros((3, 10, 12), np.uint8)
    box[:, 3:6, 4:8] = 1  # every rater's mask in make_registry
    shifted = np.zeros_like(box)
    shifted[:, 3:6, 5:9] = 1  # one column to the side
    elsewhere = np.zeros_like(box)
    elsewhere[:, 7:9, 0:3] = 1  # no overlap: a wrong file
    _write_mask(root, "sub-001", "OS", shifted)
    _write_mask(root, "sub-002", "OS", elsewhere)
    d_shift, d_far = _dice_of_voxel_sets(box, shifted), _dice_of_voxel_sets(box, elsewhere)
    expected = {  # mean Dice of each rater with the two others
        ("sub-001", "AB"): (1 + d_shift) / 2, ("sub-001", "BW"): (1 + d_shift) / 2, ("sub-001", "OS"): d_shift,
        ("sub-002", "AB"): (1 + d_far) / 2, ("sub-002", "BW"): (1 + d_far) / 2, ("sub-002", "OS"): d_far}
    rows = rater_agreement(check_registry(root))
    assert {(r.participant_id, r.rater): r.mean_dice for r in rows} == pytest.approx(expected)
    assert [(r.participant_id, r.rater) for r in rows if r.outlier] == [("sub-002", "OS")]
    out = run([script("nnunet-nerve"), "check", str(root)]).stdout.splitlines()
    os_mean = (d_shift + d_far) / 2
    assert f"  rater OS: mean {os_mean:.3f} over 2 subject(s), lowest {d_far:.3f} (sub-002), 1 outlier(s)" in out
    assert out[-1] == (f"warning: sub-002: rater OS: mean Dice {d_far:.3f} with the other raters, below 0.5: "
                       "check this mask")
