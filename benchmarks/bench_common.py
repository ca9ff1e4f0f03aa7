"""Helpers shared by the benchmark scripts that run nnU-Net's commands in subprocesses."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
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


@contextmanager
def work_folder(args, prefix: str):
    """``prepare_workdir(args.workdir, prefix)`` for the ``with`` block; afterwards a temporary
    folder is removed unless ``args.keep``, and a kept one is printed."""
    root = prepare_workdir(args.workdir, prefix)
    try:
        yield root
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


def add_scan_arguments(parser) -> None:
    """--slices, --rows, --cols of the timed scan; the defaults are the paper's grid (60 x 640 x 768)."""
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--cols", type=int, default=768)


def add_workdir_arguments(parser) -> None:
    """--workdir and --keep, as both nnU-Net benchmarks take them (see `prepare_workdir`)."""
    parser.add_argument("--workdir", default=None, help="a new or empty folder (kept); default a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")


def tiles_per_slice(rows: int, cols: int, patch_size, step_size: float) -> int:
    """Sliding-window tiles nnU-Net places on one slice of ``rows`` x ``cols`` pixels with a
    (rows, cols) ``patch_size`` (the slice is padded up to the patch first)."""
    import numpy as np
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    image = [max(rows, patch_size[0]), max(cols, patch_size[1])]
    steps = compute_steps_for_sliding_window(image, list(patch_size), step_size)
    return int(np.prod([len(s) for s in steps]))


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
