"""`nnunet-nerve demo --ablation`: the table's arithmetic against Python's statistics module, and
the command end to end at a tiny size (real nnUNetv2_train / nnUNetv2_predict runs, 2 seeds,
2 methods), its numbers checked against Dice computed here from the prediction files."""
from __future__ import annotations

import csv
import math
import os
import re
import statistics

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run, script


def _specs():
    from nnunet_nerve.study.ablation import METRICS

    return METRICS


def _runs(values: dict) -> list:
    """Per-run rows {method, seed, dice_mean, dice_n_inf, hd95_mm_mean, hd95_mm_n_inf} from
    method -> [(dice, hd95), ...] per seed."""
    return [{"method": m, "seed": s, "dice_mean": d, "dice_n_inf": 0, "hd95_mm_mean": h, "hd95_mm_n_inf": 0}
            for m, per_seed in values.items() for s, (d, h) in enumerate(per_seed)]


def test_summary_mean_spread_and_flag_rule():
    from nnunet_nerve.study.ablation_table import method_summaries

    values = {"ref": [(0.6, 10.0), (0.7, 12.0), (0.8, 14.0)],
              "far": [(0.9, 11.0), (0.95, 12.5), (0.85, 12.0)],    # Dice +0.2 > 0.1 + 0.05: flagged
              "near": [(0.75, 3.0), (0.8, 3.5), (0.7, 4.0)]}       # Dice +0.05 < 0.15: within; HD95 -8.5 > 2.5: flagged
    out = {e["method"]: e for e in method_summaries(_runs(values), list(values), "ref", _specs())}
    for method, per_seed in values.items():
        for i, key in enumerate(("dice", "hd95_mm")):
            column = [v[i] for v in per_seed]
            assert out[method][f"{key}_mean"] == pytest.approx(statistics.mean(column))
            assert out[method][f"{key}_sd"] == pytest.approx(statistics.stdev(column))   # sample SD over seeds
            ref = [v[i] for v in values["ref"]]
            delta = statistics.mean(column) - statistics.mean(ref)
            assert out[method][f"{key}_delta"] == pytest.approx(delta)
            expected_flag = method != "ref" and abs(delta) > statistics.stdev(column) + statistics.stdev(ref)
            assert out[method][f"{key}_exceeds_spread"] is expected_flag
    assert out["far"]["dice_exceeds_spread"] and not out["near"]["dice_exceeds_spread"]
    assert out["near"]["hd95_mm_exceeds_spread"] and not out["far"]["hd95_mm_exceeds_spread"]


def test_markdown_marks_only_differences_beyond_the_spread():
    from nnunet_nerve.study.ablation_table import markdown_table, method_summaries

    values = {"ref": [(0.6, 10.0), (0.7, 12.0)], "better": [(0.95, 2.0), (0.96, 2.2)],
              "same": [(0.66, 11.0), (0.64, 12.0)]}
    summaries = method_summaries(_runs(values), list(values), "ref", _specs())
    lines = markdown_table(summaries, "ref", _specs(), lambda name: (f"T_{name}", "knob"))
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert "**+0.305** (better" in rows["better"] and "**-8.90** (better" in rows["better"]
    assert "**" not in rows["same"] and "within spread" in rows["same"]
    assert "reference" in rows["ref"]


def test_run_means_leave_out_and_count_empty_predictions():
    from nnunet_nerve.study.ablation_table import run_means

    rows = [{"dice": 0.8, "hd95_mm": 4.0}, {"dice": 0.0, "hd95_mm": math.inf}, {"dice": 0.6, "hd95_mm": 6.0}]
    out = run_means(rows, _specs())
    assert out["n_cases"] == 3 and out["dice_mean"] == pytest.approx(statistics.mean([0.8, 0.0, 0.6]))
    assert out["hd95_mm_mean"] == pytest.approx(5.0) and out["hd95_mm_n_inf"] == 1


def test_unknown_method_and_too_few_seeds_are_refused(tmp_path):
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"))
    for extra, message in ((["--methods", "Adam"], "unknown method 'Adam'"), (["--seeds", "1"], "at least 2 seeds"),
                           (["--full"], "--full is not supported")):
        proc = run([script("nnunet-nerve"), "demo", str(tmp_path / "out"), "--ablation", *extra], env=env, check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and message in proc.stderr
    assert not (tmp_path / "out" / "ablation").exists()


# ---------------------------------------------------------------- end to end

TINY = ["--volunteers", "4", "--patients", "4", "--epochs", "1", "--iterations", "2"]
ABLATION = ["--ablation", "--seeds", "2", "--methods", "DiceCE"]


def _read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|); 1 when both are empty."""
    a, b = pred > 0, ref > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


@pytest.mark.integration
def test_ablation_table_from_real_runs(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    # nnUNet_def_n_proc=1: one thread for nnUNetv2_predict's sliding window (64 x 64 tiles), several
    # times faster than two when other jobs load the 2 cores
    env.update(MPLCONFIGDIR=str(tmp_path / "mpl"), nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1")
    first = run([script("nnunet-nerve"), "demo", str(out), *TINY, *ABLATION], env=env, timeout=3600)
    assert "[11/12]" in first.stdout and "(seed 1)" in first.stdout, first.stdout

    ablation = out / "ablation"
    dataset = out / "nnUNet_raw" / "Dataset900_NervePhantom"
    heldout = sorted(p.name[: -len("_0000.nii.gz")] for p in (out / "heldout_images").iterdir())
    trainers = {"FC-DenseNet": "FCDenseNetTrainer_demo", "DiceCE": "FCDenseNetTrainer_DiceCE_demo"}
    runs = list(csv.DictReader(open(ablation / "runs.csv")))
    assert sorted((r["method"], r["seed"]) for r in runs) == [(m, s) for m in sorted(trainers) for s in ("0", "1")]

    dice = {}   # method -> per-seed mean Dice over the held-out cases, computed here from the files
    for r in runs:
        seed, method = int(r["seed"]), r["method"]
        fold = (ablation / f"seed_{seed}" / "nnUNet_results" / dataset.name / f"{trainers[method]}__nnUNetPlans__2d"
                / "fold_0")
        checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert checkpoint["trainer_name"] == trainers[method] and checkpoint["current_epoch"] == 1
        assert f"seed {seed} (from NNUNET_NERVE_SEED)" in "".join(p.read_text() for p in fold.glob("training_log_*"))
        predictions = ablation / f"seed_{seed}" / "predictions" / method
        per_case = [_dice(_read(predictions / f"{c}.nii.gz"), _read(dataset / "labelsTr" / f"{c}.nii.gz"))
                    for c in heldout]
        assert float(r["dice_mean"]) == pytest.approx(statistics.mean(per_case), abs=1e-9)
        assert int(r["n_cases"]) == len(heldout)
        dice.setdefault(method, []).append(statistics.mean(per_case))

    weights = [torch.load(ablation / f"seed_{s}" / "nnUNet_results" / dataset.name
                          / "FCDenseNetTrainer_demo__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth",
                          map_location="cpu", weights_only=False)["network_weights"] for s in (0, 1)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])   # the seeds differ

    table = (ablation / "ablation.md").read_text()
    assert "synthetic" in table and "DEMO-SIZED" in table
    for method, per_seed in dice.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        mean_sd = f"{statistics.mean(per_seed):.3f} ± {statistics.stdev(per_seed):.3f}"
        assert mean_sd in row, (mean_sd, row)
    per_case_rows = list(csv.DictReader(open(ablation / "per_case.csv")))
    assert len(per_case_rows) == 4 * len(heldout) and {r["comparison"] for r in per_case_rows} == {"Auto-GT"}

    again = run([script("nnunet-nerve"), "demo", str(out), *TINY, *ABLATION], env=env, timeout=900).stdout
    assert again.count("(done earlier, skipped)") == 3 + 2 * 4, again
    assert (ablation / "ablation.md").read_text() == table

    other_budget = [a if a != "1" else "2" for a in TINY]   # --epochs 2
    proc = run([script("nnunet-nerve"), "demo", str(out), *other_budget, *ABLATION], env=env, check=False)
    assert proc.returncode == 2 and re.search(r"^error: .*budget\.json: the runs here", proc.stderr, re.M), proc.stderr
