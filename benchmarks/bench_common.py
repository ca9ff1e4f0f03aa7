"""Helpers shared by the benchmark scripts that run nnU-Net's commands in subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepare_workdir(path: "str | os.PathLike | None", prefix: str) -> Path:
    """A new temporary folder (named ``prefix...``), or ``path`` when it does not exist or is
    empty (never a non-empty one)."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    path = Path(path).resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SystemExit(f"error: --workdir {path} exists and is not empty; give a new or empty folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def add_workdir_arguments(parser) -> None:
    """--workdir and --keep, as both nnU-Net benchmarks take them (see `prepare_workdir`)."""
    parser.add_argument("--workdir", default=None, help="a new or empty folder (kept); default a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")


def bin_path(name: str) -> str:
    """A console script next to this interpreter (nnUNetv2_predict, ...)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def run_checked(cmd: list, env: dict) -> subprocess.CompletedProcess:
    """Run ``cmd``; RuntimeError with the command and the ends of its output when it fails."""
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def timed(cmd: list, env: dict) -> float:
    """Wall seconds of ``run_checked(cmd, env)``."""
    start = time.perf_counter()
    run_checked(cmd, env)
    return time.perf_counter() - start
