"""`nnunet-nerve evaluate` end to end: a converted-dataset folder written with SimpleITK in the
layout of the conversion contract, predictions as NIfTI files, the CLI in a subprocess, and
every number it writes checked against medpy / scipy / numpy called here."""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medpy.metric import binary as medpy_binary
from scipy import stats

from conftest import read_csv, run, script
from evaluatesegmentation_reference import paper_hd95_brute_force

SPACING_XYZ = (0.52, 0.52, 4.0)
SHAPE_ZYX = (6, 30, 36)
RATERS = ("AB", "BW", "OS")
# case -> (cohort, location)
CASES = {
    "sub-001": ("volunteer", "distal"), "sub-002": ("volunteer", "distal"), "sub-003": ("volunteer", "n/a"),
    "sub-004": ("patient", "distal"), "sub-005": ("patient", "medial"), "sub-006": ("patient", "proximal"),
    "sub-007": ("patient", "proximal"),
}
METRIC_KEYS = ("dice", "hd95_mm", "vs", "hd95_surface_mm", "hd_mm", "assd_mm")
medpy_surface_distances = vars(medpy_binary)["__surface_distances"]


def tube(rng, centre_jitter: float, radius: float, shape=SHAPE_ZYX) -> np.ndarray:
    """A nerve-like tube running along z, its centre drifting slice by slice."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cy = 15 + 0.6 * z + rng.normal(0, centre_jitter, (shape[0], 1, 1))
    cx = 18 - 0.4 * z + rng.normal(0, centre_jitter, (shape[0], 1, 1))
    return ((y - cy) ** 2 + ((x - cx) * 0.9) ** 2) < radius ** 2


def write_mask(array: np.ndarray, path: Path, spacing=SPACING_XYZ, dtype=np.uint8) -> None:
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def read_mask(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) != 0


def write_dataset(root: Path, name: str = "Dataset042_Evaltest") -> Path:
    """A converted dataset in the contract's layout (consensus = majority of three raters)."""
    folder = root / name
    rng = np.random.default_rng(7)
    for case in CASES:
        raters = {r: tube(rng, 0.6, 4.0 + rng.normal(0, 0.5)) for r in RATERS}
        consensus = np.sum([m.astype(int) for m in raters.values()], axis=0) >= 2
        write_mask(rng.normal(100, 20, SHAPE_ZYX), folder / "imagesTr" / f"{case}_0000.nii.gz", dtype=np.float32)
        write_mask(consensus, folder / "labelsTr" / f"{case}.nii.gz")
        for r, m in raters.items():
            write_mask(m, folder / "raters" / r / f"{case}.nii.gz")
    lines = ["participant_id\tcohort\tlocation\tage"] + [f"{c}\t{co}\t{lo}\t40" for c, (co, lo) in CASES.items()]
    (folder / "participants.tsv").write_text("\n".join(lines) + "\n")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "nerve": 1}, "numTraining": len(CASES),
        "file_ending": ".nii.gz",
        "nnunet_nerve": {"consensus": "majority", "raters": sorted(RATERS), "version": "test", "registry": str(root)}}))
    return folder


def write_predictions(dataset: Path, folder: Path, seed: int, empty_case: "str | None" = None) -> Path:
    """Consensus perturbed (shifted a voxel on some slices, grown or shrunk), as a model would err."""
    rng = np.random.default_rng(seed)
    for case in CASES:
        label = read_mask(dataset / "labelsTr" / f"{case}.nii.gz")
        pred = np.roll(label, int(rng.integers(-1, 2)), axis=2)
        pred[int(rng.integers(0, SHAPE_ZYX[0]))] = False  # a missed slice
        if rng.random() < 0.5:
            pred |= np.roll(pred, 1, axis=1)
        if case == empty_case:
            pred[:] = False
        write_mask(pred, folder / f"{case}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("raw"))


def file_spacing_zyx(path: Path) -> tuple:
    """The spacing as stored in the file (NIfTI keeps float32: 0.52 reads as 0.51999998)."""
    return tuple(reversed(sitk.ReadImage(str(path)).GetSpacing()))


def reference_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple) -> dict:
    """The metrics computed by medpy (surface with its default face connectivity), and the
    paper's HD95 by brute force from its definition (evaluatesegmentation_reference)."""
    if not pred.any() or not ref.any():
        inf = math.inf if pred.any() != ref.any() else 0.0
        return {"dice": medpy_binary.dc(pred, ref), "hd95_mm": inf, "hd95_surface_mm": inf, "hd_mm": inf,
                "assd_mm": inf, "vs": 0.0 if pred.any() != ref.any() else 1.0}
    d1 = medpy_surface_distances(pred, ref, spacing, 1)
    d2 = medpy_surface_distances(ref, pred, spacing, 1)
    a, b = int(pred.sum()), int(ref.sum())
    return {"dice": medpy_binary.dc(pred, ref), "hd95_mm": paper_hd95_brute_force(pred, ref, spacing),
            "hd95_surface_mm": max(np.percentile(d1, 95), np.percentile(d2, 95)),
            "hd_mm": medpy_binary.hd(pred, ref, spacing), "assd_mm": medpy_binary.assd(pred, ref, spacing),
            "vs": 1 - abs(a - b) / (a + b)}


def mask_of(dataset: Path, preds: dict, name: str, case: str) -> np.ndarray:
    if name == "GT":
        return read_mask(dataset / "labelsTr" / f"{case}.nii.gz")
    if name == "Auto":
        raise AssertionError("resolve Auto through the method")
    return read_mask(dataset / "raters" / name / f"{case}.nii.gz")


def single_error_line(proc) -> str:
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_evaluate_two_methods_numbers_checked_independently(dataset, tmp_path, nnunet_env):
    preds = {"FCDenseNet": write_predictions(dataset, tmp_path / "fcd", seed=1),
             "nnU-Net": write_predictions(dataset, tmp_path / "nnunet", seed=2, empty_case="sub-005")}
    out = tmp_path / "eval"
    proc = run([script("nnunet-nerve"), "evaluate", "--dataset", str(dataset),
                "--pred", str(preds["FCDenseNet"]), "--name", "FCDenseNet",
                "--pred", str(preds["nnU-Net"]), "--name", "nnU-Net", "--out", str(out)], env=nnunet_env)
    assert "sub-007" in proc.stdout  # progress per case
    for f in ("per_case.csv", "table1.csv", "table1.md", "statistics.csv", "figure2.png", "timing.csv"):
        assert (out / f).is_file(), f
    assert (out / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # per_case.csv: every comparison of the paper, each number against medpy
    rows = read_csv(out / "per_case.csv")
    pairs = [f"{a}-{b}" for a, b in itertools.combinations(sorted(RATERS), 2)]
    expected = {(c, "", p) for c in CASES for p in pairs} | {(c, "", f"{r}-GT") for c in CASES for r in RATERS}
    expected |= {(c, m, comp) for c in CASES for m in preds for comp in ["Auto-GT"] + [f"Auto-{r}" for r in RATERS]}
    assert {(r["case"], r["method"], r["comparison"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for r in rows:
        assert (r["cohort"], r["location"]) == CASES[r["case"]]
        first, second = r["comparison"].split("-")
        a = read_mask(preds[r["method"]] / f"{r['case']}.nii.gz") if first == "Auto" else mask_of(dataset, preds, first, r["case"])
        b = mask_of(dataset, preds, second, r["case"])
        ref = reference_metrics(a, b, file_spacing_zyx(dataset / "labelsTr" / f"{r['case']}.nii.gz"))
        for key in METRIC_KEYS:
            assert float(r[key]) == pytest.approx(ref[key], rel=1e-9, abs=1e-12), (r["case"], r["comparison"], key)
    empty = [r for r in rows if r["case"] == "sub-005" and r["method"] == "nnU-Net"]
    assert empty and all(r["hd95_mm"] == "inf" and float(r["dice"]) == 0 for r in empty)

    # table1.csv: mean/SD/n recomputed here from the per-case values
    table = read_csv(out / "table1.csv")
    def values(method, comparison, cohort, location, key):
        chosen = [r for r in rows if r["cohort"] == cohort and (location == "all" or r["location"] == location)
                  and ((comparison == "R-R" and r["comparison"] in pairs)
                       or (r["method"] == method and r["comparison"] == comparison))]
        return np.array([float(r[key]) for r in chosen])
    assert {(t["cohort"], t["location"]) for t in table} == {
        ("volunteer", "all"), ("patient", "all"), ("patient", "distal"), ("patient", "medial"), ("patient", "proximal")}
    rr = [t for t in table if t["comparison"] == "R-R" and t["location"] == "all"]
    assert {int(t["n"]) for t in rr} == {3 * 3, 4 * 3}  # cases x pairs per cohort
    for t in table:
        for key in METRIC_KEYS:
            v = values(t["method"], t["comparison"], t["cohort"], t["location"], key)
            assert int(t["n"]) == v.size
            finite = v[np.isfinite(v)]
            assert int(t[f"{key}_n_inf"]) == v.size - finite.size
            if finite.size == 0:  # e.g. the one medial patient, empty in nnU-Net's prediction
                assert math.isnan(float(t[f"{key}_mean"])) and key not in ("dice", "vs")
                continue
            assert float(t[f"{key}_mean"]) == pytest.approx(finite.mean(), rel=1e-9)
            assert float(t[f"{key}_sd"]) == pytest.approx(finite.std(), rel=1e-9, abs=1e-12)
    inf_row = [t for t in table if t["method"] == "nnU-Net" and t["comparison"] == "Auto-GT"
               and t["cohort"] == "patient" and t["location"] == "all"][0]
    assert int(inf_row["hd95_mm_n_inf"]) == 1 and math.isfinite(float(inf_row["hd95_mm_mean"]))

    # statistics.csv: Mann-Whitney U and Wilcoxon recomputed with scipy on the per-case values
    statistics = read_csv(out / "statistics.csv")
    for s in statistics:
        cohort, key = s["cohort"], s["metric"]
        if s["test"] == "mann-whitney-u":
            method = s["group_a"].split("(")[1].rstrip(")")
            a, b = values(method, "Auto-GT", cohort, "all", key), values("", "R-R", cohort, "all", key)
            a, b = np.where(np.isinf(a), 1e9, a), np.where(np.isinf(b), 1e9, b)
            expected_p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
        else:
            a = values("FCDenseNet", "Auto-GT", cohort, "all", key)
            b = values("nnU-Net", "Auto-GT", cohort, "all", key)
            a, b = np.where(np.isinf(a), 1e9, a), np.where(np.isinf(b), 1e9, b)
            expected_p = 1.0 if np.all(a == b) else stats.wilcoxon(a, b).pvalue
        assert float(s["p_value"]) == pytest.approx(expected_p, rel=1e-9), (s["test"], cohort, key)
    assert {s["test"] for s in statistics} == {"mann-whitney-u", "wilcoxon-signed-rank"}
    assert len([s for s in statistics if s["test"] == "mann-whitney-u"]) == 2 * 2 * len(METRIC_KEYS)

    md = (out / "table1.md").read_text()
    assert "Methods side by side" in md and "Wilcoxon p FCDenseNet vs nnU-Net" in md
    assert "are infinite (one mask empty) and are left out of mean ± SD" in md
    assert "by thigh location" in md and "| proximal n |" in md.replace("proximal n", "proximal n")
    assert md.count("not recorded") == 2  # prediction folders carry no timing
    assert len(read_csv(out / "timing.csv")) == 0


def test_bad_predictions_give_one_error_line_and_no_output(dataset, tmp_path, nnunet_env):
    cli = [script("nnunet-nerve"), "evaluate", "--dataset", str(dataset)]

    off_grid = write_predictions(dataset, tmp_path / "offgrid", seed=3)
    write_mask(read_mask(off_grid / "sub-004.nii.gz"), off_grid / "sub-004.nii.gz", spacing=(0.6, 0.52, 4.0))
    proc = run(cli + ["--pred", str(off_grid), "--out", str(tmp_path / "o1")], env=nnunet_env, check=False)
    assert proc.returncode != 0
    line = single_error_line(proc)
    assert "sub-004" in line and "grid" in line and "spacing" in line
    assert not (tmp_path / "o1").exists() and not list(tmp_path.glob(".o1*"))

    non_binary = write_predictions(dataset, tmp_path / "nonbinary", seed=3)
    arr = read_mask(non_binary / "sub-002.nii.gz").astype(np.uint8)
    arr[arr == 1] = 2
    write_mask(arr, non_binary / "sub-002.nii.gz")
    proc = run(cli + ["--pred", str(non_binary), "--out", str(tmp_path / "o2")], env=nnunet_env, check=False)
    line = single_error_line(proc)
    assert proc.returncode != 0 and "sub-002" in line and "not binary" in line
    assert not (tmp_path / "o2").exists()

    # two bad predictions: both named, each in its own line, then the count; nothing computed
    both = write_predictions(dataset, tmp_path / "both", seed=3)
    write_mask(read_mask(both / "sub-004.nii.gz"), both / "sub-004.nii.gz", spacing=(0.6, 0.52, 4.0))
    write_mask(arr, both / "sub-002.nii.gz")
    proc = run(cli + ["--pred", str(both), "--out", str(tmp_path / "o4")], env=nnunet_env, check=False)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 3, proc.stderr
    assert "sub-002" in errors[0] and "not binary" in errors[0] and "sub-004" in errors[1] and "grid" in errors[1]
    assert "2 of" in errors[2] and "case(s) refused (above); nothing was evaluated" in errors[2]
    assert "[1/" not in proc.stdout and not (tmp_path / "o4").exists()

    missing = write_predictions(dataset, tmp_path / "missing", seed=3)
    (missing / "sub-006.nii.gz").unlink()
    proc = run(cli + ["--pred", str(missing), "--out", str(tmp_path / "o3")], env=nnunet_env, check=False)
    line = single_error_line(proc)
    assert proc.returncode != 0 and "sub-006" in line and "--allow-missing" in line
    assert not (tmp_path / "o3").exists()

    run(cli + ["--pred", str(missing), "--out", str(tmp_path / "o3"), "--allow-missing"], env=nnunet_env)
    rows = read_csv(tmp_path / "o3" / "per_case.csv")
    assert not [r for r in rows if r["case"] == "sub-006" and r["method"]]
    assert [r for r in rows if r["case"] == "sub-006" and r["comparison"] == "AB-BW"]  # raters still evaluated
    md = (tmp_path / "o3" / "table1.md").read_text()
    assert "1 case(s) without prediction" in md and "sub-006" in md.split("## Left out")[1]

    # an existing output is refused without --overwrite, and kept as it was
    before = (tmp_path / "o3" / "per_case.csv").read_bytes()
    proc = run(cli + ["--pred", str(missing), "--out", str(tmp_path / "o3"), "--allow-missing"], env=nnunet_env,
               check=False)
    assert proc.returncode != 0 and "--overwrite" in single_error_line(proc)
    assert (tmp_path / "o3" / "per_case.csv").read_bytes() == before

    proc = run([script("nnunet-nerve"), "evaluate", "--dataset", "977", "--pred", str(missing),
                "--out", str(tmp_path / "o4")], env=nnunet_env, check=False)
    line = single_error_line(proc)
    assert proc.returncode != 0 and "977" in line
    assert not (tmp_path / "o4").exists()


def write_fold_results(dataset: Path, env: dict, trainer: str, folds: list, skip_fold: "int | None" = None,
                       seed: int = 5) -> tuple:
    """nnU-Net's layout: fold_<k>/validation/<case>.nii.gz and a training log holding nnU-Net's
    validation lines; returns the trainer folder and the seconds logged per case."""
    from datetime import datetime, timedelta

    results = Path(env["nnUNet_results"]) / dataset.name / f"{trainer}__nnUNetPlans__2d"
    seconds = {}
    for k, val in enumerate(folds):
        if k == skip_fold:
            continue
        fold = results / f"fold_{k}"
        every = write_predictions(dataset, fold / "every_case", seed=seed + k)
        (fold / "validation").mkdir(parents=True)
        for case in val:
            os.replace(every / f"{case}.nii.gz", fold / "validation" / f"{case}.nii.gz")
        when = datetime(2026, 11, 23, 11, 59, 58, 250000)
        log = [f"{when - timedelta(hours=1)}: Epoch 0", f"{when}: Training done."]
        for i, case in enumerate(val):
            seconds[case] = 1.25 + i + k
            log += [f"{when}: predicting {case}", f"{when + timedelta(seconds=0.1)}: {case}, shape (1, 6, 30, 36), rank 0"]
            when += timedelta(seconds=seconds[case])
        log += [f"{when}: Validation complete", f"{when + timedelta(seconds=3)}: Mean Validation Dice:  0.8"]
        (fold / "training_log_2026_11_23_10_59_58.txt").write_text("\n".join(log) + "\n")
    return results, seconds


def test_evaluate_trainers_from_nnunet_results(dataset, tmp_path, nnunet_env):
    folds = [["sub-001", "sub-004"], ["sub-002", "sub-005"], ["sub-003", "sub-006", "sub-007"]]
    split_dir = Path(nnunet_env["nnUNet_preprocessed"]) / dataset.name
    split_dir.mkdir(parents=True)
    (split_dir / "splits_final.json").write_text(json.dumps(
        [{"train": sorted(set(CASES) - set(v)), "val": v} for v in folds]))
    raw = Path(nnunet_env["nnUNet_raw"])
    os.symlink(dataset, raw / dataset.name)
    fcd, fcd_seconds = write_fold_results(dataset, nnunet_env, "FCDenseNetTrainer", folds)
    unet, _ = write_fold_results(dataset, nnunet_env, "nnUNetTrainer", folds, skip_fold=1, seed=11)
    cli = [script("nnunet-nerve"), "evaluate", "-d", "42", "-tr", "FCDenseNetTrainer", "-tr", "nnUNetTrainer",
           "-c", "2d"]

    proc = run(cli + ["--out", str(tmp_path / "e1")], env=nnunet_env, check=False)
    line = single_error_line(proc)
    assert proc.returncode != 0 and "fold 1 missing" in line and "sub-005" in line
    assert not (tmp_path / "e1").exists()

    out = tmp_path / "e2"
    run(cli + ["--out", str(out), "--allow-missing"], env=nnunet_env)
    rows = read_csv(out / "per_case.csv")
    auto = [r for r in rows if r["comparison"] == "Auto-GT"]
    assert {r["case"] for r in auto if r["method"] == "FCDenseNetTrainer"} == set(CASES)
    assert {r["case"] for r in auto if r["method"] == "nnUNetTrainer"} == set(CASES) - {"sub-002", "sub-005"}
    for r in auto:  # each case's prediction comes from the fold that validated it
        fold = next(k for k, v in enumerate(folds) if r["case"] in v)
        base = fcd if r["method"] == "FCDenseNetTrainer" else unet
        pred = read_mask(base / f"fold_{fold}" / "validation" / f"{r['case']}.nii.gz")
        label = dataset / "labelsTr" / f"{r['case']}.nii.gz"
        ref = reference_metrics(pred, read_mask(label), file_spacing_zyx(label))
        assert float(r["dice"]) == pytest.approx(ref["dice"], rel=1e-9)
        assert float(r["hd95_mm"]) == pytest.approx(ref["hd95_mm"], rel=1e-9)
    md = (out / "table1.md").read_text()
    left_out = md.split("## Left out")[1].split("##")[0]
    assert "nnUNetTrainer: fold 1 missing" in left_out and "sub-002, sub-005" in left_out
    timing = read_csv(out / "timing.csv")
    logged = {r["case"]: float(r["seconds"]) for r in timing if r["method"] == "FCDenseNetTrainer"}
    assert logged == pytest.approx(fcd_seconds)
    expected = np.array(list(fcd_seconds.values()))
    assert f"FCDenseNetTrainer: median {np.median(expected):.2f} s" in md
    assert {r["case"] for r in timing if r["method"] == "nnUNetTrainer"} == set(CASES) - {"sub-002", "sub-005"}


def md_section_rows(md: str, title: str) -> list:
    """The (method, comparison) of each row of the Markdown table under heading ``title``."""
    section = md.split(title, 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [(m.strip(), c.strip()) for m, c in rows[1:]]  # without the header


def test_rater_order_of_raters_tsv_through_convert_and_evaluate(tmp_path, nnunet_env):
    """The real chain: `phantom` -> raters.tsv in an order that is neither sorted nor the
    phantom's -> `check` -> `convert` -> `evaluate -d ID`, with rater OS's own masks as the
    "prediction". Every output names and orders the raters as raters.tsv does (BW, OS, AB:
    pairs BW-OS, BW-AB, OS-AB), and Auto-OS is perfect while Auto-GT / Auto-AB / Auto-BW
    equal OS-GT / OS-AB / BW-OS."""
    import shutil

    registry = tmp_path / "registry"
    run([script("nnunet-nerve"), "phantom", str(registry), "--volunteers", "2", "--patients", "3", "--seed", "1"],
        env=nnunet_env)
    assert (registry / "raters.tsv").read_text().splitlines()[:2] == ["rater_id\texperience_rank", "OS\t1"]
    order = ("BW", "OS", "AB")
    (registry / "raters.tsv").write_text("rater_id\tyears\n" + "".join(f"{r}\t{9 - i}\n" for i, r in enumerate(order)))
    check = run([script("nnunet-nerve"), "check", str(registry)], env=nnunet_env)
    assert check.stdout.splitlines()[0].endswith("raters BW, OS, AB (order of raters.tsv)")  # then the agreement
    run([script("nnunet-nerve"), "convert", str(registry), "-d", "43", "--name", "Phantom"], env=nnunet_env)
    dataset = Path(nnunet_env["nnUNet_raw"]) / "Dataset043_Phantom"
    provenance = json.loads((dataset / "dataset.json").read_text())["nnunet_nerve"]
    assert provenance["raters"] == list(order) and provenance["rater_order"] == "raters.tsv"
    preds = tmp_path / "preds"
    shutil.copytree(dataset / "raters" / "OS", preds)
    out = tmp_path / "eval"
    run([script("nnunet-nerve"), "evaluate", "-d", "43", "--pred", str(preds), "--name", "rater-OS",
         "--out", str(out)], env=nnunet_env)
    rows = read_csv(out / "per_case.csv")
    cases = sorted({r["case"] for r in rows})
    assert len(cases) == 5
    expected_order = ["BW-OS", "BW-AB", "OS-AB", "BW-GT", "OS-GT", "AB-GT", "Auto-BW", "Auto-OS", "Auto-AB", "Auto-GT"]
    for case in cases:
        assert [r["comparison"] for r in rows if r["case"] == case] == expected_order
    by = {(r["case"], r["comparison"]): r for r in rows}
    for case in cases:
        assert float(by[case, "Auto-OS"]["dice"]) == 1.0 and float(by[case, "Auto-OS"]["hd95_mm"]) == 0.0
        for auto, rater in (("Auto-GT", "OS-GT"), ("Auto-AB", "OS-AB"), ("Auto-BW", "BW-OS")):
            for key in METRIC_KEYS:
                assert float(by[case, auto][key]) == float(by[case, rater][key]), (case, auto, key)
        label = dataset / "labelsTr" / f"{case}.nii.gz"
        ref = reference_metrics(read_mask(preds / f"{case}.nii.gz"), read_mask(label), file_spacing_zyx(label))
        for key in METRIC_KEYS:
            assert float(by[case, "Auto-GT"][key]) == pytest.approx(ref[key], rel=1e-9)
    table_order = expected_order[:6] + ["R-R"] + expected_order[6:]
    table = read_csv(out / "table1.csv")
    for cohort, location in {(t["cohort"], t["location"]) for t in table}:
        assert [t["comparison"] for t in table if (t["cohort"], t["location"]) == (cohort, location)] == table_order
    md = (out / "table1.md").read_text()
    assert "raters (order of the registry's raters.tsv): BW, OS, AB" in md
    assert [c for _, c in md_section_rows(md, "## Table 1")] == table_order
    assert [m for m, _ in md_section_rows(md, "## Table 1")] == ["raters"] * 7 + ["rater-OS"] * 4
    assert "OS-BW" not in md and "AB-OS" not in md


def test_hd95_choice_and_the_published_values(dataset, tmp_path, nnunet_env):
    """Table 1 shows the paper's HD95 by default and the surface HD95 with --hd95 surface, each
    to the paper's precision (three significant digits, numpy's positional formatting here);
    --paper-reference puts the abstract's values (typed here from the article's abstract)
    beside ours."""
    preds = write_predictions(dataset, tmp_path / "fcd", seed=1)
    cli = [script("nnunet-nerve"), "evaluate", "--dataset", str(dataset), "--pred", str(preds), "--name", "FCD"]
    run(cli + ["--out", str(tmp_path / "paper"), "--paper-reference"], env=nnunet_env)
    run(cli + ["--out", str(tmp_path / "surface"), "--hd95", "surface", "--paper-reference"], env=nnunet_env)

    def cell(key, values):
        values = np.array(values, dtype=float)
        mean = np.format_float_positional(values.mean(), precision=3, unique=False, fractional=False, trim="k")
        decimals = len(mean.split(".")[1]) if "." in mean else 0
        return f"{mean.rstrip('.')} ± {values.std():.{decimals}f}"

    for folder, key in (("paper", "hd95_mm"), ("surface", "hd95_surface_mm")):
        rows = read_csv(tmp_path / folder / "per_case.csv")
        md = (tmp_path / folder / "table1.md").read_text()
        auto_gt = [float(r[key]) for r in rows if r["comparison"] == "Auto-GT" and r["cohort"] == "volunteer"]
        dice = [float(r["dice"]) for r in rows if r["comparison"] == "Auto-GT" and r["cohort"] == "volunteer"]
        table = md.split("## Table 1", 1)[1].split("\n## ", 1)[0]
        line = next(ln for ln in table.splitlines() if ln.startswith("| FCD | Auto-GT |"))
        assert f"| {cell(key, auto_gt)} |" in line and f"| {np.mean(dice):.3f} ± {np.std(dice):.3f} |" in line
        published = md.split("## Published values beside ours", 1)[1].split("\n## ", 1)[0]
        volunteers_hd95 = next(ln for ln in published.splitlines() if ln.startswith("| Volunteers | Auto-GT | HD95 (mm)"))
        paper_hd95 = [float(r["hd95_mm"]) for r in rows if r["comparison"] == "Auto-GT" and r["cohort"] == "volunteer"]
        assert "13.9 ± 26.6 (n=10)" in volunteers_hd95  # always against the paper's definition
        assert f"{cell('hd95_mm', paper_hd95)} (n={len(paper_hd95)})" in volunteers_hd95
        for text in ("0.859 ± 0.061 (n=10)", "0.930 ± 0.054 (n=10)", "0.719 ± 0.128 (n=42)", "12.4 ± 12.1 (n=42)",
                     "0.897 ± 0.109 (n=42)", "doi:10.3389/fneur.2018.00777"):
            assert text in published, text
        assert ("HD95 in this section is the paper's definition" in published) == (folder == "surface")
        assert ("HD95 here is surface-based" in md) == (folder == "surface")
        assert "HD95 surface (mm)" in md.split("## Other distances", 1)[1] or folder == "surface"

    proc = run(cli + ["--out", str(tmp_path / "bad"), "--hd95", "median"], env=nnunet_env, check=False)
    assert proc.returncode == 2 and "invalid choice: 'median'" in proc.stderr and not (tmp_path / "bad").exists()


def test_a_case_without_geometry_is_evaluated_in_voxels_and_said_so(tmp_path, nnunet_env):
    """sub-001's image, consensus, rater masks and prediction rewritten with SimpleITK's defaults
    (1 mm voxels at origin 0: arrays saved without their scan's geometry): evaluate runs (its
    distances for that case are voxel counts), prints one `warning:` line naming the consensus,
    and table1.md says so under its heading, for whoever reads it later."""
    dataset = write_dataset(tmp_path / "raw")
    preds = write_predictions(dataset, tmp_path / "preds", seed=1)
    bare = [dataset / "imagesTr" / "sub-001_0000.nii.gz", dataset / "labelsTr" / "sub-001.nii.gz",
            preds / "sub-001.nii.gz"] + [dataset / "raters" / r / "sub-001.nii.gz" for r in RATERS]
    for path in bare:
        sitk.WriteImage(sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))), str(path), True)
    out = tmp_path / "eval"
    proc = run([script("nnunet-nerve"), "evaluate", "--dataset", str(dataset), "--pred", str(preds), "--out", str(out)],
               env=nnunet_env)
    label = dataset / "labelsTr" / "sub-001.nii.gz"
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {label}: the header holds no geometry (1 mm voxels")
    table = (out / "table1.md").read_text()
    assert "**Warning: 1 case(s) without geometry; their distances (mm) are voxel counts:**" in table
    assert f"- {warnings[0][len('warning: '):]}" in table.splitlines()
