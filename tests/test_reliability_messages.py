"""Issue 13's remaining cases: inputs that gave a traceback or an unclear message now give a
correct result or ONE ``error:`` line naming the file and the problem, and write nothing."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run, script
from nerve_tubes import t2_image, tube, write
from test_evaluation import single_error_line, write_dataset, write_predictions
from test_registry_validation import make_registry

from nnunet_nerve.registry.reader import mask_path, scan_registry

NOTE_HEADER = "participant_id\tcohort\tlocation\tnote"
NOTE_ROWS = ("sub-001\tvolunteer\tdistal\tcafé 5 µl", "sub-002\tpatient\tmedial\tRöntgen", "sub-003\tpatient\tdistal\t")


def cli(*args, prefix=(), **kwargs):
    return run([*prefix, script("nnunet-nerve"), *map(str, args)], check=False, timeout=300, **kwargs)


def unprivileged() -> list:
    """A command prefix under which chmod denies access: none for a normal user; for root
    (CI, containers), setpriv dropping the capabilities that let root ignore file modes."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): chmod cannot deny root access")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]


def one_error(proc, *words) -> str:
    """The only ``error:`` line of a failed run without traceback, holding every word."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = single_error_line(proc)
    for word in words:
        assert str(word) in line, line
    return line


def tree(root: Path) -> list:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


# 1. participants.tsv as a spreadsheet saves it

@pytest.mark.parametrize("encoding, bom, newline", [
    ("utf-8", b"", "\n"),
    ("utf-8", b"\xef\xbb\xbf", "\r\n"),          # Excel "CSV UTF-8"
    ("utf-16-le", b"\xff\xfe", "\r\n"),          # Excel "Unicode text"
    ("utf-16-be", b"\xfe\xff", "\r\n"),
    ("cp1252", b"", "\r\n"),                     # Excel "Text (Tab delimited)" on Windows
])
def test_participants_in_every_spreadsheet_encoding_read_as_utf8(tmp_path, encoding, bom, newline):
    root = make_registry(tmp_path / "reg")
    text = newline.join((NOTE_HEADER,) + NOTE_ROWS) + newline
    (root / "participants.tsv").write_bytes(bom + text.encode(encoding))
    participants = scan_registry(root).participants
    assert [(p.participant_id, p.cohort, p.location, p.extra["note"]) for p in participants] == [
        tuple(row.split("\t")) for row in NOTE_ROWS]
    proc = cli("check", root)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"{root}: ok, 3 subjects")


def test_undecodable_participants_is_one_line(tmp_path):
    root = make_registry(tmp_path / "reg")
    (root / "participants.tsv").write_bytes(b"participant_id\tcohort\tlocation\n\x00\x81\x8d\x00")
    one_error(cli("check", root), root / "participants.tsv", "UTF-8")


@pytest.mark.parametrize("separator, word", [(",", "commas"), (";", "semicolons")])
def test_comma_separated_participants_is_named_as_such(tmp_path, separator, word):
    root = make_registry(tmp_path / "reg")
    rows = ["participant_id,cohort,location", "sub-001,volunteer,distal"]
    (root / "participants.tsv").write_text("\n".join(r.replace(",", separator) for r in rows) + "\n")
    one_error(cli("check", root), root / "participants.tsv", f"not tab-separated (found {word}")


# 2. read-only and unreadable folders, folders that are files

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed")


@pytest.mark.parametrize("variable", NNUNET_FOLDERS)
def test_nnunet_folder_that_is_a_file(tmp_path, nnunet_env, variable):
    registry = make_registry(tmp_path / "reg")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    env = {**nnunet_env, variable: str(a_file)}
    one_error(cli("convert", registry, "-d", 42, "--folds", 2, env=env), f"{variable}={a_file}", "not a folder")
    assert a_file.read_text() == "not a folder"
    assert all(not any(Path(nnunet_env[v]).iterdir()) for v in NNUNET_FOLDERS)


def test_output_below_a_file(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    one_error(cli("phantom", a_file / "reg", "--volunteers", 1, "--patients", 0), a_file, "not a folder")
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("variable", NNUNET_FOLDERS)
def test_read_only_nnunet_folder(tmp_path, nnunet_env, variable):
    prefix = unprivileged()
    registry = make_registry(tmp_path / "reg")
    folder = Path(nnunet_env[variable])
    folder.chmod(0o555)
    try:
        proc = cli("convert", registry, "-d", 42, "--folds", 2, prefix=prefix, env=nnunet_env)
    finally:
        folder.chmod(0o755)
    one_error(proc, folder, "permission denied")
    assert all(not any(Path(nnunet_env[v]).iterdir()) for v in NNUNET_FOLDERS)


def test_read_only_output_folder(tmp_path):
    prefix = unprivileged()
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = cli("phantom", folder / "reg", "--volunteers", 1, "--patients", 0, prefix=prefix)
    finally:
        folder.chmod(0o755)
    one_error(proc, f"{folder}: permission denied", "cannot write reg")
    assert not any(folder.iterdir())


@pytest.mark.parametrize("unreadable", [".", "sub-002/anat"])
def test_unreadable_registry(tmp_path, unreadable):
    prefix = unprivileged()
    registry = make_registry(tmp_path / "reg")
    folder = (registry / unreadable).resolve()
    folder.chmod(0o000)
    try:
        proc = cli("check", registry, prefix=prefix)
    finally:
        folder.chmod(0o755)
    one_error(proc, folder, "permission denied")


@pytest.mark.parametrize("unreadable", [".", "labelsTr", "raters"])
def test_unreadable_dataset(tmp_path, nnunet_env, unreadable):
    prefix = unprivileged()
    run([script("nnunet-nerve"), "convert", str(make_registry(tmp_path / "reg")), "-d", "42", "--folds", "0"],
        env=nnunet_env)
    dataset = next(Path(nnunet_env["nnUNet_raw"]).glob("Dataset042_*"))
    folder = (dataset / unreadable).resolve()
    out = tmp_path / "eval"
    folder.chmod(0o000)
    try:
        proc = cli("evaluate", "--dataset", 42, "--pred", tmp_path / "reg", "--out", out, prefix=prefix,
                   env=nnunet_env)
    finally:
        folder.chmod(0o755)
    one_error(proc, folder, "permission denied")
    assert not out.exists()


# 3. replacing the folder one stands in

@pytest.mark.parametrize("out, cwd", [(".", "."), ("../..", "sub-001/anat"), ("{registry}", ".")])
def test_phantom_onto_the_current_folder_is_refused(tmp_path, monkeypatch, out, cwd):
    registry = make_registry(tmp_path / "reg")
    here = registry / cwd
    out = out.format(registry=registry)
    monkeypatch.chdir(tmp_path)  # keep the test process out of the folder the command might remove
    before = tree(tmp_path)
    proc = cli("phantom", out, "--overwrite", "--volunteers", 1, "--patients", 0, cwd=here)
    one_error(proc, f"{registry}: the registry folder is the current folder or contains it", "--overwrite")
    assert tree(tmp_path) == before


# 4. the same rater's mask twice

def test_duplicate_nii_and_nii_gz_mask_is_named_as_such(tmp_path):
    registry = make_registry(tmp_path / "reg")
    mask = mask_path(registry, "sub-002", "BW")
    twin = mask.with_name(mask.name[: -len(".nii.gz")] + ".nii")
    sitk.WriteImage(sitk.ReadImage(str(mask)), str(twin))
    proc = cli("check", registry)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"error: sub-002: {mask.parent}: two masks for rater BW of subject sub-002: {twin.name} and {mask.name}; " \
           "keep one" in proc.stderr.splitlines()
    assert "not a rater mask name" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == f"error: {registry}: 1 problem(s) in the registry; nothing was written"


# 6. "no nerve found" once

def test_no_nerve_found_is_said_once(tmp_path):
    nerve = tube((24, 24), 3.0)
    image = write(tmp_path / "t2.nii.gz", t2_image(nerve))
    empty = write(tmp_path / "empty.nii.gz", np.zeros_like(nerve, dtype=np.uint8))
    proc = cli("biomarkers", "--image", image, "--mask", empty, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "no nerve found" in line]
    assert len(said) == 1 and said[0].startswith(f"warning: {empty}: "), proc.stdout + proc.stderr


# 7. method names that would break Table 1

@pytest.mark.parametrize("name, problem", [
    ("R-R", "R-R is the raters' row of Table 1"),
    ("FCD|v2", "'|' would break the Markdown tables"),
    ("two\nlines", "holds a line break"),
])
def test_method_name_that_breaks_table1_is_refused(tmp_path, name, problem):
    dataset = write_dataset(tmp_path / "raw")
    predictions = write_predictions(dataset, tmp_path / "pred", seed=1)
    out = tmp_path / "eval"
    proc = cli("evaluate", "--dataset", dataset, "--pred", predictions, "--name", name, "--out", out)
    one_error(proc, f"method name {name!r}: {problem}", "--name")
    assert not out.exists() and not list(tmp_path.glob(".eval*"))


# 8. doctor and nnU-Net's folders

def test_doctor_fails_a_missing_folder_and_a_file(tmp_path, nnunet_env):
    missing = tmp_path / "not yet" / "nnUNet_raw"
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    env = {**nnunet_env, "nnUNet_raw": str(missing), "nnUNet_preprocessed": str(a_file)}
    proc = run([script("nnunet-nerve"), "doctor"], env=env, check=False, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    at = lines.index(f"[FAIL] nnUNet_raw: {missing}: no such folder")
    assert lines[at + 1] == f'       fix: mkdir -p "{missing}"'
    assert f"[FAIL] nnUNet_preprocessed: {a_file}: a file, not a folder" in lines
    assert f"[ok  ] nnUNet_results: {nnunet_env['nnUNet_results']}" in lines
    assert not missing.exists() and a_file.read_text() == "not a folder"


# 5. ITK's raw warnings stay off the terminal where our own checks judge the problem

def test_no_raw_itk_warning_for_slice_jitter_our_check_accepts(tmp_path):
    import pydicom

    from nnunet_nerve.dicom.synthetic import write_dicom_series

    registry = make_registry(tmp_path / "reg")
    nifti = registry / "sub-001" / "anat" / "sub-001_T2w.nii.gz"
    files = write_dicom_series(sitk.ReadImage(str(nifti)), nifti.parent / "sub-001_T2w")
    nifti.unlink()
    ds = pydicom.dcmread(files[1])  # 0.01 mm off along z: ITK prints "Non uniform sampling" on stderr
    ds.ImagePositionPatient = [*map(float, ds.ImagePositionPatient[:2]), float(ds.ImagePositionPatient[2]) + 0.01]
    ds.save_as(files[1])
    proc = cli("check", registry)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_output_piped_into_a_reader_that_stops_ends_quietly(tmp_path):
    """``nnunet-nerve postprocess IN OUT | head -c 1``: the reader leaves after one byte, the
    next progress line finds the pipe closed. The command stops as SIGPIPE stops a program
    (exit 141), with no traceback, and leaves OUT whole or absent and no temporary (it printed
    a BrokenPipeError traceback before)."""
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(6):
        write(masks / f"case{i}.nii.gz", tube((24, 24), 3.0))
    out = tmp_path / "out"
    proc = run(["bash", "-c", '"$0" postprocess "$1" "$2" | head -c 1; exit "${PIPESTATUS[0]}"',
                script("nnunet-nerve"), str(masks), str(out)], check=False, timeout=300)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) in (["masks"], ["masks", "out"])
    if out.exists():
        assert len(list(out.glob("*.nii.gz"))) == 6
