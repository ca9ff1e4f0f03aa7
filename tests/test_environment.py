"""`nnunet-nerve trainer-dir` and `doctor`, and the trainers folder shipped in a normal install."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import REPO, run, script


def test_trainer_dir_points_at_the_trainer_modules():
    out = run([script("nnunet-nerve"), "trainer-dir"]).stdout.strip()
    assert Path(out).is_dir()
    assert (Path(out) / "fcdensenet_trainer.py").is_file()


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")}
    env.update(extra)
    return env


def test_doctor_names_each_problem_and_its_fix(tmp_path):
    proc = run([script("nnunet-nerve"), "doctor"], env=_clean_env(), check=False)
    assert proc.returncode == 1
    out = proc.stdout
    assert "[FAIL] nnUNet_raw: not set" in out
    assert "[FAIL] nnUNet_extTrainer: not set" in out
    assert 'export nnUNet_extTrainer="' in out
    assert "[FAIL] nnU-Net finds FCDenseNetTrainer" in out


def test_doctor_passes_when_set_up(nnunet_env):
    proc = run([script("nnunet-nerve"), "doctor"], env=nnunet_env)
    assert "can train FCDenseNetTrainer here" in proc.stdout
    assert "[FAIL]" not in proc.stdout


def test_doctor_detects_broken_torch_torchvision_pair(nnunet_env, tmp_path):
    """A CPU torch with PyPI's torchvision fails on import with this error; doctor must say how to fix it."""
    fake = tmp_path / "fake_site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = dict(nnunet_env, PYTHONPATH=str(tmp_path / "fake_site"))
    proc = run([script("nnunet-nerve"), "doctor"], env=env, check=False)
    assert proc.returncode == 1
    assert "[FAIL] torch/torchvision: cannot load together" in proc.stdout
    assert "torchvision::nms" in proc.stdout
    assert "pip install --force-reinstall torch torchvision" in proc.stdout


def test_normal_install_ships_the_trainer_folder(tmp_path, nnunet_env):
    """`pip install .` (not editable) puts trainers/ inside the package, and nnU-Net finds the trainer there."""
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)], timeout=600)
    shipped = target / "nnunet_nerve" / "trainers" / "fcdensenet_trainer.py"
    assert shipped.is_file()
    assert (target / "nnunet_nerve" / "dataset_conversion" / "convert_registry.py").is_file()
    env = dict(nnunet_env, PYTHONPATH=str(target))
    # cwd outside the repository, or `python -c` would import the source tree's nnunet_nerve
    folder = run([sys.executable, "-c", "from nnunet_nerve.training.trainer_dir import trainer_dir; print(trainer_dir())"],
                 env=env, cwd=tmp_path).stdout.strip()
    assert Path(folder) == (target / "nnunet_nerve" / "trainers").resolve()
    env["nnUNet_extTrainer"] = folder
    found = run([sys.executable, "-c",
                 "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
                 "print(f('FCDenseNetTrainer').__init__.__code__.co_filename)"], env=env, cwd=tmp_path).stdout
    assert str(target) in found
