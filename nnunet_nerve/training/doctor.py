"""Checks of what makes nnU-Net fail on a new machine, each with how to fix it.

Every check returns a ``Check``: ``ok`` True/False, or None for information that does not
stop training (no GPU). Import-sensitive checks run in a fresh interpreter, so that a broken
torch/torchvision pair or a stale ``sys.modules`` cannot hide or cause a failure here.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nnunet_nerve.training.trainer_dir import ext_trainer_line, ext_trainer_paths, trainer_dir

NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
TORCH_PAIR_FIX = ("install a matching pair from one source, e.g. "
                  "`pip install --force-reinstall torch torchvision` (PyPI's builds match each other); "
                  "a CPU-only torch needs the torchvision built for it")


@dataclass
class Check:
    name: str
    ok: bool | None  # None: information only
    detail: str
    fix: str = ""


def check_nnunet_paths(environ=os.environ) -> list[Check]:
    """Each nnU-Net folder variable is set and names an existing folder we can write to (a
    missing folder FAILs with the ``mkdir -p`` that fixes it; a file FAILs)."""
    checks = []
    for var in NNUNET_PATH_VARIABLES:
        value = environ.get(var)
        if not value:
            checks.append(Check(var, False, "not set",
                                f'export {var}="/path/to/{var}" (see nnU-Net\'s documentation/setting_up_paths.md)'))
            continue
        folder = Path(value).expanduser()
        if not folder.exists():
            checks.append(Check(var, False, f"{value}: no such folder", f'mkdir -p "{folder}"'))
            continue
        if not folder.is_dir():
            checks.append(Check(var, False, f"{value}: a file, not a folder",
                                f"point {var} at a folder (`mkdir -p` a new one)"))
            continue
        problem = _unwritable(folder)
        if problem:
            checks.append(Check(var, False, f"{value}: {problem}", f"point {var} at a folder you can write to"))
        else:
            checks.append(Check(var, True, value))
    return checks


def check_ext_trainer(environ=os.environ) -> Check:
    """nnUNet_extTrainer lists this package's trainer folder."""
    folder = trainer_dir()
    listed = [os.path.realpath(p) for p in ext_trainer_paths(environ)]
    if os.path.realpath(folder) in listed:
        return Check("nnUNet_extTrainer", True, folder)
    detail = "not set" if not listed else f"does not list {folder}"
    return Check("nnUNet_extTrainer", False, detail, ext_trainer_line())


def check_torch_pair() -> Check:
    """torch and torchvision import together and torchvision's C++ operators are registered."""
    code = ("import torch, torchvision, torchvision.ops;"
            "torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5);"
            "print(torch.__version__, torchvision.__version__)")
    ok, out = _python(code)
    if ok:
        torch_v, tv_v = out.split()[-2:]
        return Check("torch/torchvision", True, f"torch {torch_v} with torchvision {tv_v}")
    return Check("torch/torchvision", False, f"cannot load together: {_last_line(out)}", TORCH_PAIR_FIX)


def check_trainer_lookup(environ=os.environ, trainer: str = "FCDenseNetTrainer") -> Check:
    """nnU-Net's own trainer lookup (what nnUNetv2_train and nnUNetv2_predict do) finds ``trainer``."""
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
            f"c = f({trainer!r}); print('FOUND', c.__module__)")
    ok, out = _python(code, env=dict(environ))
    if ok and "FOUND" in out:
        return Check(f"nnU-Net finds {trainer}", True, out.split("FOUND", 1)[1].strip())
    fix = ext_trainer_line()
    if "torchvision" in out or "nms" in out:
        fix = TORCH_PAIR_FIX
    cause = trainer_import_problem(environ)
    if cause:
        return Check(f"nnU-Net finds {trainer}", False, cause,
                     "reinstall nnunet-nerve (pip install --force-reinstall nnunet-nerve, or pip install . in a clone)"
                     if fix != TORCH_PAIR_FIX else fix)
    return Check(f"nnU-Net finds {trainer}", False, _last_line(out), fix)


def trainer_import_problem(environ=os.environ) -> "str | None":
    """Why the trainer folders of nnUNet_extTrainer do not import (the real cause behind
    nnU-Net's generic 'Unable to locate trainer class'): ``nnunet_nerve.training`` or one of
    the folders' modules raising on import, as 'FILE: ExceptionType: message'; None if all import."""
    code = (
        "import importlib, importlib.util, os, sys, traceback\n"
        "def fail(where, e):\n"
        "    print('CAUSE ' + where + ': ' + type(e).__name__ + ': ' + str(e)); sys.exit(0)\n"
        "try:\n"
        "    importlib.import_module('nnunet_nerve.training')\n"
        "except Exception as e:\n"
        "    fail('import nnunet_nerve.training', e)\n"
        "for folder in [p for p in os.environ.get('nnUNet_extTrainer', '').split(os.pathsep) if p.strip()]:\n"
        "    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:\n"
        "        if name.endswith('.py'):\n"
        "            path = os.path.join(folder, name)\n"
        "            spec = importlib.util.spec_from_file_location('_doctor_' + name[:-3], path)\n"
        "            try:\n"
        "                spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "            except Exception as e:\n"
        "                fail(path, e)\n")
    ok, out = _python(code, env=dict(environ))
    lines = [ln for ln in out.splitlines() if ln.startswith("CAUSE ")]
    return lines[-1][len("CAUSE "):][:400] if lines else None


def check_nnunet_version() -> Check:
    """The installed nnunetv2 lies in the range this package declares (its trainer API changes
    between minor versions): FAIL outside it."""
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        installed = version("nnunetv2")
    except PackageNotFoundError:
        return Check("nnunetv2 version", False, "nnunetv2 is not installed", "pip install nnunet-nerve")
    try:
        from packaging.requirements import Requirement

        declared = next(Requirement(r) for r in requires("nnunet-nerve") or []
                        if Requirement(r).name == "nnunetv2")
    except (PackageNotFoundError, StopIteration, ImportError):
        return Check("nnunetv2 version", None, f"{installed} (the range nnunet-nerve declares is unknown: not "
                                               "installed as a distribution)")
    if declared.specifier.contains(installed, prereleases=True):
        return Check("nnunetv2 version", True, f"{installed} (tested range {declared.specifier})")
    return Check("nnunetv2 version", False,
                 f"{installed} is outside the range nnunet-nerve is tested with ({declared.specifier}); its trainer "
                 "API may differ", f'pip install "nnunetv2{declared.specifier}"')


def check_gpu() -> Check:
    """Whether CUDA is usable (information: nnU-Net trains on the CPU too, slowly)."""
    code = ("import torch; ok = torch.cuda.is_available();"
            "print(('cuda ' + torch.cuda.get_device_name(0) + ' ' + str((torch.ones(2, device='cuda') * 2).sum().item()))"
            " if ok else 'none')")
    ok, out = _python(code)
    if ok and out.strip().startswith("cuda"):
        return Check("GPU", None, out.strip()[5:].rsplit(" ", 1)[0] + " is usable")
    if ok:
        return Check("GPU", None, "no CUDA GPU usable: training runs on the CPU (pass -device cpu to nnUNetv2_train), "
                                  "slowly")
    return Check("GPU", None, f"CUDA check failed: {_last_line(out)}")


def run_all(environ=os.environ) -> list[Check]:
    return [*check_nnunet_paths(environ), check_nnunet_version(), check_ext_trainer(environ), check_torch_pair(),
            check_trainer_lookup(environ), check_gpu()]


def training_can_work(checks: list[Check]) -> bool:
    return all(c.ok is not False for c in checks)


def _python(code: str, env: dict | None = None, timeout: float = 300) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def _unwritable(folder: Path) -> str | None:
    """Why nnU-Net could not write into the existing ``folder``, or None."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"not writable ({e.strerror or e})"
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
