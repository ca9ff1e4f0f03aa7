"""Nothing a user has is lost: an output that is, contains or lies inside an input is refused
(with or without --overwrite), SIGTERM/SIGHUP clean up as Ctrl-C does, temporaries of killed
runs are removed by later runs (never a live run's), and outputs honour the umask.

Each case runs the real ``nnunet-nerve`` in a subprocess on tiny files."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run, script
from nerve_tubes import t2_image, tube, write
from test_evaluation import single_error_line, write_dataset, write_predictions

from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.atomic import HOST


def cli(*args, env=None, umask: "int | None" = None):
    """``nnunet-nerve ARGS`` (under ``umask`` when given); never raises on failure."""
    cmd = [script("nnunet-nerve"), *map(str, args)]
    if umask is not None:
        cmd = ["sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', *cmd]
    return run(cmd, env=env, check=False, timeout=600)


def digest(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder``: proof that nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(proc, *names):
    assert proc.returncode == 2, proc.stderr
    line = single_error_line(proc)
    for name in names:
        assert str(name) in line, line
    return line


def mask_folder(folder: Path) -> Path:
    """A prediction folder as nnUNetv2_predict leaves it: masks, probabilities and plans."""
    folder.mkdir(parents=True)
    for i in range(2):
        write(folder / f"case{i}.nii.gz", tube((20 + i, 24), 3.0))
        np.savez_compressed(folder / f"case{i}.npz", probabilities=np.zeros((2, 2)))
        (folder / f"case{i}.pkl").write_bytes(b"\x80\x04N.")
    (folder / "plans.json").write_text("{}")
    return folder


# --- outputs that are inputs ------------------------------------------------------------

def test_postprocess_into_its_own_input_is_refused_and_keeps_everything(tmp_path):
    preds = mask_folder(tmp_path / "preds")
    before = digest(preds)
    assert_refused(cli("postprocess", preds, preds, "--overwrite"), preds, "is the input folder")
    assert_refused(cli("postprocess", preds, preds / "clean", "--overwrite"), "lies inside the input folder")
    assert_refused(cli("postprocess", preds / "case0.nii.gz", preds / "case0.nii.gz", "--overwrite"),
                   "is the input mask")
    link = tmp_path / "link"
    link.symlink_to(preds, target_is_directory=True)   # the same folder under another name
    assert_refused(cli("postprocess", preds, link, "--overwrite"), "is the input folder")
    assert digest(preds) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "preds"]


def test_postprocess_library_refuses_too(tmp_path):
    from nnunet_nerve.biomarkers.postprocess_files import postprocess_folder

    preds = mask_folder(tmp_path / "preds")
    before = digest(preds)
    with pytest.raises(NerveError, match="is the input folder"):
        postprocess_folder(preds, preds, overwrite=True)
    with pytest.raises(NerveError, match="contains the input folder"):
        postprocess_folder(preds, tmp_path, overwrite=True)
    assert digest(preds) == before


def test_evaluate_out_onto_predictions_or_dataset_is_refused(tmp_path, nnunet_env):
    dataset = write_dataset(tmp_path / "raw")
    preds = write_predictions(dataset, tmp_path / "preds", seed=1)
    before_preds, before_dataset = digest(preds), digest(dataset)
    base = ["evaluate", "--dataset", dataset, "--pred", preds, "--overwrite", "--out"]
    assert_refused(cli(*base, preds, env=nnunet_env), preds, "predictions of preds")
    assert_refused(cli(*base, dataset, env=nnunet_env), dataset, "the dataset")
    assert_refused(cli(*base, tmp_path, env=nnunet_env), "contains the dataset")
    assert digest(preds) == before_preds and digest(dataset) == before_dataset


def test_biomarkers_out_onto_its_masks_or_image_is_refused(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    nerve = tube((24, 24), 3.0)
    image = write(masks / "case_t2.nii.gz", t2_image(nerve))
    mask = write(masks / "case.nii.gz", nerve)
    before = digest(masks)
    assert_refused(cli("biomarkers", "--image", image, "--mask", mask, "--out", masks, "--overwrite"),
                   masks, "contains the image")
    assert_refused(cli("biomarkers", "--masks", masks, "--dataset", tmp_path, "--out", masks, "--overwrite"),
                   "is the masks folder")
    assert digest(masks) == before


def test_convert_into_the_registry_is_refused(tmp_path, nnunet_env, monkeypatch):
    from nnunet_nerve.registry.conversion import convert_registry
    from nnunet_nerve.registry.phantom import write_phantom_registry

    registry = write_phantom_registry(tmp_path / "reg", volunteers=2, patients=2, seed=1, log=None)
    before = digest(registry)
    env = dict(nnunet_env, nnUNet_raw=str(registry / "nnUNet_raw"))
    assert_refused(cli("convert", registry, "-d", 77, "--folds", 2, env=env), "lies inside the registry")
    monkeypatch.setenv("nnUNet_raw", env["nnUNet_raw"])
    with pytest.raises(NerveError, match="lies inside the registry"):
        convert_registry(registry, 77, n_folds=2, overwrite=True, log=None)
    assert digest(registry) == before


# --- signals and stale temporaries ------------------------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """Eight small phantom subjects: a conversion takes a few seconds."""
    from nnunet_nerve.registry.phantom import write_phantom_registry

    return write_phantom_registry(tmp_path_factory.mktemp("reg") / "reg", volunteers=4, patients=4, seed=1, log=None)


def start_convert_and_wait_for_its_temporary(registry: Path, env: dict) -> "tuple[subprocess.Popen, Path]":
    """Start a real ``nnunet-nerve convert`` and return once it writes its first case into the
    temporary dataset folder (so a signal now interrupts the conversion itself)."""
    raw = Path(env["nnUNet_raw"])
    proc = subprocess.Popen([script("nnunet-nerve"), "convert", str(registry), "-d", "77"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        temporaries = [p for p in raw.glob(".Dataset077_*.tmp-*") if any((p / "imagesTr").glob("*.nii.gz"))]
        if temporaries:
            return proc, temporaries[0]
        assert proc.poll() is None, f"convert ended ({proc.returncode}) before it wrote a case: {proc.stderr.read()}"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("convert never wrote its temporary dataset folder")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_termination_signal_removes_the_temporary(registry, nnunet_env, signum):
    proc, temporary = start_convert_and_wait_for_its_temporary(registry, nnunet_env)
    assert f"-{HOST}-{proc.pid}-" in temporary.name      # the owner's pid is in the name
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("error:")] == \
        [f"error: interrupted ({signal.Signals(signum).name})"]
    raw, pre = Path(nnunet_env["nnUNet_raw"]), Path(nnunet_env["nnUNet_preprocessed"])
    assert list(raw.iterdir()) == [] and list(pre.rglob("*")) == []


def test_a_killed_runs_temporary_is_removed_by_the_next_run_and_a_live_one_kept(registry, nnunet_env):
    raw = Path(nnunet_env["nnUNet_raw"])
    proc, stale = start_convert_and_wait_for_its_temporary(registry, nnunet_env)
    proc.kill()                                  # SIGKILL: no cleanup possible
    proc.communicate(timeout=60)
    assert stale.is_dir()
    live = raw / f".Dataset077_Nerve.tmp-{HOST}-{os.getpid()}-live"      # this test process is alive
    live.mkdir()
    other_host = raw / f".Dataset077_Nerve.tmp-otherhost{HOST}-{proc.pid}-x"   # maybe alive elsewhere
    other_host.mkdir()
    users_own = raw / ".notes.tmp"
    users_own.write_text("mine")
    run([script("nnunet-nerve"), "convert", str(registry), "-d", "77"], env=nnunet_env)
    assert not stale.exists()
    assert live.is_dir() and other_host.is_dir() and users_own.read_text() == "mine"
    assert (raw / "Dataset077_Nerve" / "dataset.json").is_file()


# --- permissions ----------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_honour_the_umask(tmp_path, umask):
    preds = mask_folder(tmp_path / "preds")
    folder_mode, file_mode = 0o777 & ~umask, 0o666 & ~umask
    out_dir, out_file = tmp_path / "clean", tmp_path / "clean_case0.nii.gz"
    assert cli("postprocess", preds, out_dir, umask=umask).returncode == 0
    assert cli("postprocess", preds / "case0.nii.gz", out_file, umask=umask).returncode == 0
    assert stat.S_IMODE(out_dir.stat().st_mode) == folder_mode
    assert stat.S_IMODE(out_file.stat().st_mode) == file_mode
    assert {stat.S_IMODE(p.stat().st_mode) for p in out_dir.iterdir()} == {file_mode}
    # replacing keeps honouring it
    assert cli("postprocess", preds, out_dir, "--overwrite", umask=umask).returncode == 0
    assert stat.S_IMODE(out_dir.stat().st_mode) == folder_mode
    shutil.rmtree(out_dir)
