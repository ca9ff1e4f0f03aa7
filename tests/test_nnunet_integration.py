"""The real nnU-Net commands, in subprocesses, with FCDenseNetTrainer's CPU smoke variant:
plan and preprocess, train, interrupt and resume with --c, predict; predictions on the input grid."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run, script
from tiny_dataset import write_raw_dataset

pytestmark = pytest.mark.integration
DATASET_ID = 902
TRAINER = "FCDenseNetTrainer_cpuSmoke"


def _train_cmd(*extra):
    return [script("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu", *extra]


def test_plan_train_resume_predict(nnunet_env, tmp_path):
    env = nnunet_env
    raw = write_raw_dataset(Path(env["nnUNet_raw"]), DATASET_ID, name="Smoke", n_train=5, n_test=2)
    run([script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], env=env)

    out_dir = Path(env["nnUNet_results"]) / "Dataset902_Smoke" / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    latest = out_dir / "checkpoint_latest.pth"

    # First run: stop it as soon as the first epoch's checkpoint is on disk.
    proc = subprocess.Popen(_train_cmd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 900
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if proc.poll() is None:
        time.sleep(0.5)  # let torch.save finish its file
        os.killpg(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0]
    assert latest.exists(), output[-4000:]
    interrupted_epoch = torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"]
    assert not (out_dir / "checkpoint_final.pth").exists(), "training finished before it could be interrupted"

    # Resume: continues from the saved epoch, not from 0, and finishes.
    resumed = run(_train_cmd("--c"), env=env)
    assert (out_dir / "checkpoint_final.pth").exists()
    final = torch.load(out_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3
    assert interrupted_epoch >= 1
    assert "Epoch 0\n" not in resumed.stdout
    assert f"Epoch {interrupted_epoch}" in resumed.stdout
    assert (out_dir.parent / "plans.json").exists()

    # Predict the test images with nnU-Net's own command.
    pred_dir = tmp_path / "pred"
    run([script("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred_dir), "-d", str(DATASET_ID),
         "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env=env)
    for image_file in sorted((raw / "imagesTs").glob("*_0000.nii.gz")):
        case = image_file.name.replace("_0000.nii.gz", "")
        image = sitk.ReadImage(str(image_file))
        pred = sitk.ReadImage(str(pred_dir / f"{case}.nii.gz"))
        assert pred.GetSize() == image.GetSize()
        assert np.allclose(pred.GetSpacing(), image.GetSpacing(), atol=1e-5)
        assert np.allclose(pred.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.allclose(pred.GetDirection(), image.GetDirection(), atol=1e-6)
        assert set(np.unique(sitk.GetArrayViewFromImage(pred)).tolist()) <= {0, 1}
