"""Shared fixtures: nnU-Net folders under a temp dir, the real data in ../shared/data,
and running the real console scripts (nnunet-nerve, nnUNetv2_*) in subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHARED_DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of a console script installed next to this interpreter (nnUNetv2_train, nnunet-nerve)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"console script {name} is not installed next to {sys.executable}")
    return str(path)


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch) -> dict:
    """Point nnU-Net's folders (and nnUNet_extTrainer) at a fresh temp dir, in this process
    and in the returned environment for subprocesses. CPU-friendly worker counts."""
    from nnunet_nerve.training.trainer_dir import trainer_dir

    values = {
        "nnUNet_raw": str(tmp_path / "nnUNet_raw"),
        "nnUNet_preprocessed": str(tmp_path / "nnUNet_preprocessed"),
        "nnUNet_results": str(tmp_path / "nnUNet_results"),
        "nnUNet_extTrainer": trainer_dir(),
        "nnUNet_n_proc_DA": "1",  # 0 breaks nnU-Net's planner (torch.set_num_threads(0))
        "nnUNet_compile": "false",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "OMP_NUM_THREADS": "2",
    }
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "MPLCONFIGDIR"):
        Path(values[key]).mkdir(parents=True, exist_ok=True)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real MR images); tests that need it skip when it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MR test data not present at {SHARED_DATA} (only in the project's workspace)")
    return SHARED_DATA


def run(cmd: list[str], env: dict | None = None, timeout: float = 1800, check: bool = True,
        cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run a command, capturing output; on unexpected failure show its output in the assertion."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def read_csv(path: "str | os.PathLike") -> list:
    """The rows of a CSV file as dicts (header = keys), read with the standard csv module."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_array(path: "str | os.PathLike"):
    """The voxels of an image file (SimpleITK's (z, y, x) order)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def import_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, imported with benchmarks/ on sys.path for the
    import only (the scripts import ``bench_common`` and each other from there)."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
