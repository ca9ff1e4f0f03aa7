"""`nnunet-nerve demo` end to end on a tiny budget: killed during training, run again (it resumes
and finishes), run a third time (every stage skipped). Real nnU-Net commands throughout."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import run, script

pytestmark = pytest.mark.integration
TINY = ["--volunteers", "4", "--patients", "4", "--epochs", "3", "--iterations", "2"]


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_") and k != "NNUNET_NERVE_SEED"}
    env.update(MPLCONFIGDIR=str(tmp_path / "mpl"), nnUNet_n_proc_DA="1")
    return env


def test_demo_interrupted_resumed_and_skipped(tmp_path):
    out = tmp_path / "demo"
    env = _env(tmp_path)
    fold = out / "nnUNet_results" / "Dataset900_NervePhantom" / "FCDenseNetTrainer_demo__nnUNetPlans__2d" / "fold_0"

    proc = subprocess.Popen([script("nnunet-nerve"), "demo", str(out), *TINY], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 1200
    while not (fold / "checkpoint_latest.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if proc.poll() is None:
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
    first = proc.communicate()[0]
    assert (fold / "checkpoint_latest.pth").exists(), first[-4000:]
    assert not (out / "report.md").exists()

    second = run([script("nnunet-nerve"), "demo", str(out), *TINY], env=env, timeout=1800).stdout
    for stage in ("synthetic registry", "convert to", "nnUNetv2_plan_and_preprocess"):
        assert re.search(re.escape(stage) + r".*\(done earlier, skipped\)", second), second
    logs = sorted(fold.glob("training_log_*.txt"))
    assert len(logs) == 2 and "Epoch 0 " not in logs[-1].read_text(), "training restarted instead of resuming"
    assert (fold / "checkpoint_final.pth").exists()

    report = (out / "report.md").read_text()
    assert "DEMO-SIZED" in report and "synthetic" in report
    assert "Auto-GT" in report and "FC-DenseNet" in report and "nnU-Net" in report
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    assert (out / "evaluation" / "per_case.csv").is_file()
    # the biomarkers come from the post-processed mask, and the report shows what post-processing did
    summary = json.loads((out / "biomarkers" / "summary.json").read_text())
    assert summary["mask_used"] == "post-processed" and summary["side"] == "right"
    heldout = len(json.loads((out / "nnUNet_preprocessed" / "Dataset900_NervePhantom" / "splits_final.json")
                             .read_text())[0]["val"])
    assert "## Post-processing: Dice and HD95" in report and f"| FC-DenseNet | HD95 (mm) | {heldout} |" in report
    assert "## Biomarker agreement with the consensus" in report
    assert f"| nerve volume (mm³) | FC-DenseNet (automatic) | post-processed | {heldout} |" in report
    assert f"| nerve volume (mm³) | OS (rater) | as drawn | {heldout} |" in report
    assert (out / "evaluation" / "biomarker_agreement" / "bland_altman.png").is_file()
    assert sorted(p.name for p in (out / "predictions_postprocessed").iterdir()) == ["FC-DenseNet", "nnU-Net"]
    # the demo timed its own nnUNetv2_predict runs, where evaluate of prediction folders has no time
    times = json.loads((out / "logs" / "prediction_seconds.json").read_text())
    assert sorted(times) == ["FCDenseNetTrainer_demo", "nnUNetTrainer_demo"]
    for name, trainer in (("FC-DenseNet", "FCDenseNetTrainer_demo"), ("nnU-Net", "nnUNetTrainer_demo")):
        t = times[trainer]
        assert t["cases"] == heldout and t["seconds"] > 0 and t["device"] == "cpu"
        assert f"- {name}: {heldout} scans in {t['seconds']:.1f} s of `nnUNetv2_predict`" in report
    assert "not recorded" not in report
    # both trainings drew from the demo's seed; FC-DenseNet's was killed and resumed
    assert "- training: FC-DenseNet seed 0, resumed 1 time(s); nnU-Net seed 0 (`NNUNET_NERVE_SEED`" in report
    removed = summary["postprocessing"]["removed"]
    assert (f"- post-processing removed {len(removed)} group(s), {sum(r['voxels'] for r in removed)} voxels"
            if removed else "- post-processing removed nothing") in report

    third = run([script("nnunet-nerve"), "demo", str(out), *TINY], env=env, timeout=600).stdout
    assert third.count("(done earlier, skipped)") == 10, third


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    proc = run([script("nnunet-nerve"), "demo", str(out)], env=_env(tmp_path), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {out}")
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_demo_run_twice_from_scratch_trains_and_scores_the_same(tmp_path):
    """Both trainings draw from the demo's seed (0, NNUNET_NERVE_SEED unset): on the CPU, with
    one augmentation worker as the demo runs, two demos from scratch train bit-identical
    networks and score the same Table 1, case by case."""
    import torch

    env = _env(tmp_path)
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        run([script("nnunet-nerve"), "demo", str(out), *TINY], env=env, timeout=1800)
    for trainer in ("FCDenseNetTrainer_demo", "nnUNetTrainer_demo"):
        weights = [torch.load(out / "nnUNet_results" / "Dataset900_NervePhantom" / f"{trainer}__nnUNetPlans__2d"
                              / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                              weights_only=False)["network_weights"] for out in outs]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), trainer
    assert (outs[0] / "evaluation" / "per_case.csv").read_text() == (outs[1] / "evaluation" / "per_case.csv").read_text()
    assert "- training: FC-DenseNet seed 0; nnU-Net seed 0 (" in (outs[0] / "report.md").read_text()
