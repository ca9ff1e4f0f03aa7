"""nnU-Net's traps: the trainer lookup from a clone's root, doctor naming the real cause of a
failed lookup and an nnunetv2 outside the tested range, and a fold beyond splits_final.json
refused before training (nnU-Net would silently train on a random 80:20 split)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run, script
from tiny_dataset import write_raw_dataset

DATASET_ID = 903


def python_at_root(code: str, env: "dict | None" = None):
    """``python -c CODE`` started in the repository's root, as a notebook or script there is."""
    return run([sys.executable, "-c", code], env=env, cwd=REPO, timeout=600)


def test_trainer_lookup_from_the_clones_root(nnunet_env):
    env = {k: v for k, v in nnunet_env.items() if k != "nnUNet_extTrainer"}
    folder = python_at_root("from nnunet_nerve.training.trainer_dir import trainer_dir; print(trainer_dir())",
                            env).stdout.strip().splitlines()[-1]
    assert (Path(folder) / "fcdensenet_trainer.py").is_file()
    found = python_at_root(
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
        "from nnunet_nerve.training.fcdensenet_trainer import FCDenseNetTrainer\n"
        "c = f('FCDenseNetTrainer'); print('FOUND', c.__name__, issubclass(c, FCDenseNetTrainer))",
        dict(env, nnUNet_extTrainer=folder))
    assert "FOUND FCDenseNetTrainer True" in found.stdout
    doctor = run([script("nnunet-nerve"), "doctor"], env=dict(env, nnUNet_extTrainer=folder), cwd=REPO, timeout=600)
    assert "[ok  ] nnU-Net finds FCDenseNetTrainer" in doctor.stdout
    assert "[ok  ] nnunetv2 version" in doctor.stdout and "FAIL" not in doctor.stdout


def test_doctor_names_the_import_error_behind_a_failed_lookup(nnunet_env, tmp_path):
    """A trainer folder whose module cannot import (a broken or partial install) makes nnU-Net's
    lookup fail; doctor names the file and its ImportError, and does not offer the
    nnUNet_extTrainer line as the fix (it is already set)."""
    from nnunet_nerve.training.doctor import check_trainer_lookup

    folder = tmp_path / "trainers"
    folder.mkdir()
    module = folder / "fcdensenet_trainer.py"
    module.write_text("from nnunet_nerve.training.part_not_installed import FCDenseNetTrainer  # noqa\n")
    check = check_trainer_lookup(dict(nnunet_env, nnUNet_extTrainer=str(folder)))
    assert check.ok is False
    assert check.detail == (f"{module}: ModuleNotFoundError: No module named "
                            "'nnunet_nerve.training.part_not_installed'")
    assert "nnUNet_extTrainer" not in check.fix and "reinstall" in check.fix


def test_doctor_fails_an_nnunetv2_outside_the_tested_range(nnunet_env, tmp_path):
    """An nnunetv2 2.9.0 distribution first on the path (its metadata only) is what
    importlib.metadata reports; doctor's check is a FAIL naming the declared range."""
    dist = tmp_path / "meta" / "nnunetv2-2.9.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nnunetv2\nVersion: 2.9.0\n")
    code = ("from nnunet_nerve.training.doctor import check_nnunet_version as c; r = c(); "
            "print(r.ok, r.detail, '|', r.fix, sep='\\n')")
    out = run([sys.executable, "-c", code], env=dict(nnunet_env, PYTHONPATH=str(dist.parent))).stdout.splitlines()
    assert out[0] == "False", out
    assert out[1].startswith("2.9.0 is outside the range nnunet-nerve is tested with") and "<2.9" in out[1] \
        and ">=2.8" in out[1]
    assert out[3].startswith('pip install "nnunetv2')
    from nnunet_nerve.training.doctor import check_nnunet_version

    assert check_nnunet_version().ok is True      # the installed one is inside


@pytest.mark.integration
def test_fold_beyond_the_split_file_is_refused_before_training(nnunet_env):
    env = nnunet_env
    write_raw_dataset(Path(env["nnUNet_raw"]), DATASET_ID, name="Folds", n_train=4, n_test=0)
    run([script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
        env=env)
    splits_file = Path(env["nnUNet_preprocessed"]) / "Dataset903_Folds" / "splits_final.json"
    cases = [f"sub-{i:03d}" for i in range(4)]
    splits_file.write_text(json.dumps([{"train": [c for c in cases if c != v], "val": [v]} for v in cases]))
    started = time.monotonic()
    proc = run([script("nnUNetv2_train"), str(DATASET_ID), "2d", "4", "-tr", "FCDenseNetTrainer_cpuSmoke",
                "-device", "cpu"], env=env, check=False, timeout=900)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: fold 4: {splits_file} holds 4 folds (0 to 3); nnU-Net would silently train on a "
                      "random 80:20 split instead. Train fold 0 to 3, or 'all'"], proc.stderr[-3000:]
    fold_dir = Path(env["nnUNet_results"]) / "Dataset903_Folds" / "FCDenseNetTrainer_cpuSmoke__nnUNetPlans__2d" / "fold_4"
    assert not list(fold_dir.glob("checkpoint_*.pth"))
    assert "Epoch 0" not in proc.stdout
    print(f"refused after {time.monotonic() - started:.0f} s")
