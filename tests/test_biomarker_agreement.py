"""Biomarker agreement (Bland-Altman of volume and mean CSA against the consensus) through
`nnunet-nerve evaluate --biomarkers`, every number recomputed here with numpy from the masks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import read_csv, run, script
from nerve_tubes import SPACING, add_vein_blobs, tube, write

SHAPE = (12, 64, 64)
RATERS = ("AB", "BW", "OS")
CASES = {"sub-001": "volunteer", "sub-002": "volunteer", "sub-003": "patient", "sub-004": "patient"}


def straight(radius: float, x: float = 16.0) -> np.ndarray:
    """A straight tube along z: every slice's corrected CSA is its raw CSA (cos theta = 1)."""
    return tube((x, 16.0), radius, shape=SHAPE)


def write_dataset(root: Path) -> tuple[Path, dict]:
    """A converted dataset (contract layout) of straight tubes; the raters' radii differ."""
    folder = root / "Dataset044_Agree"
    rng = np.random.default_rng(3)
    masks = {}
    for case, cohort in CASES.items():
        raters = {r: straight(3.0 + rng.uniform(-0.4, 0.4)) for r in RATERS}
        consensus = np.sum([m.astype(int) for m in raters.values()], axis=0) >= 2
        masks[case] = {"GT": consensus, **raters}
        for sub in ("imagesTr", "labelsTr", *(f"raters/{r}" for r in RATERS)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        write(folder / "imagesTr" / f"{case}_0000.nii.gz", rng.normal(100, 5, SHAPE).astype(np.float32))
        write(folder / "labelsTr" / f"{case}.nii.gz", consensus)
        for r, m in raters.items():
            write(folder / "raters" / r / f"{case}.nii.gz", m)
    (folder / "participants.tsv").write_text("participant_id\tcohort\tlocation\n"
                                             + "".join(f"{c}\t{k}\tdistal\n" for c, k in CASES.items()))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "nerve": 1}, "numTraining": len(CASES),
        "file_ending": ".nii.gz", "nnunet_nerve": {"consensus": "majority", "raters": list(RATERS)}}))
    return folder, masks


def reference_bland_altman(values, consensus) -> dict:
    d = np.asarray(values, float) - np.asarray(consensus, float)
    pct = 100 * d / ((np.asarray(values, float) + np.asarray(consensus, float)) / 2)
    return {"bias": d.mean(), "loa_low": d.mean() - 1.96 * d.std(ddof=1), "loa_high": d.mean() + 1.96 * d.std(ddof=1),
            "bias_pct": pct.mean(), "loa_low_pct": pct.mean() - 1.96 * pct.std(ddof=1)}


def test_evaluate_biomarkers_gives_bland_altman_of_methods_and_raters(tmp_path, nnunet_env):
    dataset, masks = write_dataset(tmp_path)
    preds = tmp_path / "preds"
    preds.mkdir()
    rng = np.random.default_rng(5)
    predicted = {}
    for i, case in enumerate(CASES):
        truth = masks[case]["GT"]
        pred = straight(3.0 + 0.3 * (i - 1.5))          # a network over- and under-segmenting
        blobbed, _ = add_vein_blobs(pred, SPACING, rng, count=1, slices=(2, 3), distance_mm=(12, 14))
        predicted[case] = pred                          # post-processing removes the blob
        write(preds / f"{case}.nii.gz", blobbed)
        assert blobbed.sum() > pred.sum() and truth.any()
    out = tmp_path / "eval"
    proc = run([script("nnunet-nerve"), "evaluate", "-d", str(dataset), "--pred", str(preds), "--name", "Net",
                "--out", str(out), "--biomarkers"], env=nnunet_env)
    assert "biomarker agreement [4/4] sub-004" in proc.stdout
    folder = out / "biomarker_agreement"
    assert sorted(p.name for p in folder.iterdir()) == ["agreement.csv", "agreement.md", "agreement_per_case.csv",
                                                       "bland_altman.png"]
    assert (folder / "bland_altman.png").read_bytes()[:4] == b"\x89PNG"
    voxel_mm3, pixel_mm2 = float(np.prod(SPACING)), SPACING[1] * SPACING[2]
    summary = {(r["source"], r["quantity"]): r for r in read_csv(folder / "agreement.csv")}
    assert [k for k in summary][:2] == [("Net", "volume_mm3"), ("Net", "csa_corrected_mean_mm2")]
    for source in ("Net", *RATERS):
        segs = [predicted[c] if source == "Net" else masks[c][source] for c in CASES]
        truths = [masks[c]["GT"] for c in CASES]
        for quantity, measure in (("volume_mm3", lambda m: m.sum() * voxel_mm3),
                                  ("csa_corrected_mean_mm2", lambda m: m.sum() / m.any(axis=(1, 2)).sum() * pixel_mm2)):
            expected = reference_bland_altman([measure(m) for m in segs], [measure(t) for t in truths])
            row = summary[(source, quantity)]
            assert row["kind"] == ("automatic" if source == "Net" else "rater") and row["n"] == "4"
            assert row["mask"] == ("post-processed" if source == "Net" else "as drawn")
            for key, value in expected.items():
                assert float(row[key]) == pytest.approx(value, rel=1e-4, abs=1e-6), (source, quantity, key)
    per_case = read_csv(folder / "agreement_per_case.csv")
    assert len(per_case) == len(CASES) * 4 * 2
    md = (folder / "agreement.md").read_text()
    assert "| nerve volume (mm³) | Net (automatic) | post-processed | 4 |" in md and "| OS (rater) |" in md
    assert "warning:" not in proc.stdout and "Warning" not in md


def test_evaluate_biomarkers_warns_about_a_consensus_cut_lengthwise(tmp_path, nnunet_env):
    """sub-003's masks are a nerve lying in the slices (a 40 x 3 mm streak on 2 slices: coronal
    slices stored without their orientation); the agreement is still computed, with one
    ``warning:`` line naming that consensus and the warning under agreement.md's table."""
    dataset, masks = write_dataset(tmp_path)
    streak = np.zeros(SHAPE, dtype=bool)
    streak[5:7, 10:50, 30:33] = True
    for path in [dataset / "labelsTr" / "sub-003.nii.gz", *(dataset / "raters" / r / "sub-003.nii.gz" for r in RATERS)]:
        write(path, streak)
    preds = tmp_path / "preds"
    preds.mkdir()
    for case in CASES:
        write(preds / f"{case}.nii.gz", streak if case == "sub-003" else masks[case]["GT"])
    out = tmp_path / "eval"
    proc = run([script("nnunet-nerve"), "evaluate", "-d", str(dataset), "--pred", str(preds), "--name", "Net",
                "--out", str(out), "--biomarkers"], env=nnunet_env)
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    consensus = dataset / "labelsTr" / "sub-003.nii.gz"
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {consensus}: the nerve looks cut lengthwise: ")
    md = (out / "biomarker_agreement" / "agreement.md").read_text()
    assert ("**Warning: 1 consensus mask(s) look cut lengthwise; their CSA is not a cross-section:**\n\n- "
            + warnings[0][len("warning: "):]) in md
    assert len(read_csv(out / "biomarker_agreement" / "agreement_per_case.csv")) == len(CASES) * 4 * 2


def test_evaluate_biomarkers_refusing_a_case_writes_nothing(tmp_path, nnunet_env):
    """sub-004's consensus, rater masks and prediction are stored as coronal slices (the same
    voxels, axes permuted): Table 1 can be computed, the agreement cannot (CSA per slice needs
    axial slices). One error line naming the consensus, exit 2, and no output folder: before,
    Table 1's folder was moved into place first and stayed there without its agreement."""
    import SimpleITK as sitk

    dataset, masks = write_dataset(tmp_path)
    preds = tmp_path / "preds"
    preds.mkdir()
    for case in CASES:
        write(preds / f"{case}.nii.gz", masks[case]["GT"])
    consensus = dataset / "labelsTr" / "sub-004.nii.gz"
    for path in [consensus, preds / "sub-004.nii.gz", *(dataset / "raters" / r / "sub-004.nii.gz" for r in RATERS)]:
        sitk.WriteImage(sitk.PermuteAxes(sitk.ReadImage(str(path)), [0, 2, 1]), str(path))
    out = tmp_path / "eval"
    proc = run([script("nnunet-nerve"), "evaluate", "-d", str(dataset), "--pred", str(preds), "--name", "Net",
                "--out", str(out), "--biomarkers"], env=nnunet_env, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: {consensus}: the slices are coronal")
    assert not out.exists() and not list(tmp_path.glob(".eval*"))
    run([script("nnunet-nerve"), "evaluate", "-d", str(dataset), "--pred", str(preds), "--name", "Net",
         "--out", str(out)], env=nnunet_env)               # without --biomarkers: Table 1 as before
    assert (out / "table1.md").is_file() and not (out / "biomarker_agreement").exists()


def test_bland_altman_of_one_case_has_no_limits():
    from nnunet_nerve.biomarkers.agreement import bland_altman

    one = bland_altman([110.0], [100.0])
    assert one["n"] == 1 and one["bias"] == 10.0 and np.isnan(one["sd"]) and np.isnan(one["loa_high"])
    assert one["bias_pct"] == pytest.approx(100 * 10 / 105)

