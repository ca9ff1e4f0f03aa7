"""Agreement of the biomarkers of automatic segmentations with the consensus, beside the
raters' own agreement with it (Bland-Altman), so that a user sees whether the network's
CSA and volume lie within the raters' spread.

Per case, on the consensus, on each rater's mask and on each method's segmentation
(post-processed first, as ``nnunet-nerve biomarkers`` does by default; the raters' masks
and the consensus as they are), ``biomarkers.nerve_biomarkers`` gives

* ``volume_mm3``: nerve voxels x voxel volume;
* ``csa_corrected_mean_mm2``: the mean obliquity-corrected CSA over the slices holding nerve
  (0 without nerve).

Per source (a method or a rater) and quantity, over the cases: the differences
d_i = source_i - consensus_i, their mean (the bias), their standard deviation s (ddof 1),
and the 95 % limits of agreement bias +- 1.96 s (Bland & Altman, Lancet 1986); the same in
percent of the pair's mean, 100 d_i / ((source_i + consensus_i) / 2) (cases where both are
0 left out). With one case the SD and the limits are undefined (empty). The raters are
measured on the cases that any method has, so both sit on the same scans. A consensus that
looks cut lengthwise although its header says axial (``io.masks.lengthwise_nerve_problem``:
its CSA is not a cross-section) gives a ``warning:`` line and a warning under the table.

Outputs (``write_agreement``, one folder built atomically): ``agreement_per_case.csv``,
``agreement.csv`` (the summary), ``agreement.md`` (the summary as a table) and
``bland_altman.png`` (difference against mean per quantity, bias and limits per source).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from nnunet_nerve.io.atomic import atomic_directory
from nnunet_nerve.biomarkers.measures import CSV_DIGITS, nerve_biomarkers
from nnunet_nerve.io.tables import write_csv

#: The sub-folder of ``evaluate --biomarkers``' output that holds the agreement.
AGREEMENT_FOLDER = "biomarker_agreement"
QUANTITIES = {"volume_mm3": "nerve volume (mm³)", "csa_corrected_mean_mm2": "mean corrected CSA (mm²)"}
KIND_AUTO, KIND_RATER = "automatic", "rater"
#: 1.96: the two-sided 95 % quantile of the normal distribution.
LOA_Z = 1.96
PER_CASE_COLUMNS = ("case", "cohort", "location", "source", "kind", "mask", "quantity", "value", "consensus",
                    "difference", "difference_pct")
SUMMARY_COLUMNS = ("source", "kind", "mask", "quantity", "n", "bias", "sd", "loa_low", "loa_high", "bias_pct",
                   "loa_low_pct", "loa_high_pct")
MASK_AUTO_PP, MASK_AUTO_RAW, MASK_RATER = "post-processed", "raw", "as drawn"
_RATER_COLOURS = ("#555555", "#8c8c8c", "#b5b5b5", "#333333", "#a0a0a0")
_METHOD_COLOURS = ("#e8463a", "#3a8ee8", "#f0c419", "#b04ae8")


def measures(mask: np.ndarray, spacing_zyx) -> dict:
    """The QUANTITIES of one binary mask (z, y, x)."""
    summary = nerve_biomarkers(mask, spacing_zyx).summary
    return {"volume_mm3": summary["volume_mm3"],
            "csa_corrected_mean_mm2": summary["csa_corrected_mm2"]["mean"] or 0.0}


def bland_altman(values, reference) -> dict:
    """Bias, SD (ddof 1) and 95 % limits of agreement of ``values - reference``, absolute and in
    percent of the pairs' means (module docstring); NaN where undefined."""
    a, b = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    d = a - b
    mean = (a + b) / 2
    pct = 100 * d[mean != 0] / mean[mean != 0]
    out = {"n": int(d.size)}
    for suffix, diffs in (("", d), ("_pct", pct)):
        bias = float(diffs.mean()) if diffs.size else math.nan
        sd = float(diffs.std(ddof=1)) if diffs.size > 1 else math.nan
        out.update({f"bias{suffix}": bias, f"loa_low{suffix}": bias - LOA_Z * sd,
                    f"loa_high{suffix}": bias + LOA_Z * sd})
        if not suffix:
            out["sd"] = sd
    return out


def measure_cases(info, methods: list, postprocess: bool = True,
                  progress: "Callable[[str], None]" = lambda s: None, warnings: "list | None" = None) -> list:
    """Per-case rows (PER_CASE_COLUMNS) for every method of ``methods`` (objects with ``name``
    and ``paths``: case -> mask file, e.g. ``evaluation.PredictionSet``) and every rater of the
    converted dataset ``info``, against its consensus, on the cases any method has. A consensus
    that looks cut lengthwise is appended to ``warnings`` ("<path>: <why>") and said to
    ``progress`` as a ``warning:`` line."""
    from nnunet_nerve.evaluation.evaluator import load_binary_mask
    from nnunet_nerve.io.images import read_image, require_axial_slices, spacing_zyx
    from nnunet_nerve.io.masks import lengthwise_nerve_warning
    from nnunet_nerve.biomarkers.postprocess import postprocess_nerve

    cases = [c for c in info.cases if any(c in m.paths for m in methods)]
    rows = []
    for i, case in enumerate(cases, 1):
        progress(f"biomarker agreement [{i}/{len(cases)}] {case}")
        grid = read_image(info.consensus_path(case))
        require_axial_slices(grid, info.consensus_path(case))  # the mean CSA is per slice
        spacing = spacing_zyx(grid)
        consensus_mask = load_binary_mask(info.consensus_path(case), grid, case, "consensus")
        lengthwise = lengthwise_nerve_warning(consensus_mask, spacing, info.consensus_path(case))
        if lengthwise:
            progress(f"warning: {lengthwise}")
            if warnings is not None:
                warnings.append(lengthwise)
        consensus = measures(consensus_mask, spacing)
        sources = []
        for method in methods:
            if case in method.paths:
                mask = load_binary_mask(method.paths[case], grid, case, f"prediction of {method.name}")
                if postprocess:
                    mask = postprocess_nerve(mask, spacing).mask
                sources.append((method.name, KIND_AUTO, MASK_AUTO_PP if postprocess else MASK_AUTO_RAW, mask))
        for rater, path in sorted(info.rater_paths(case).items()):
            sources.append((rater, KIND_RATER, MASK_RATER, load_binary_mask(path, grid, case, f"rater {rater} mask")))
        for name, kind, used, mask in sources:
            values = measures(mask, spacing)
            for quantity in QUANTITIES:
                value, ref = values[quantity], consensus[quantity]
                mean = (value + ref) / 2
                rows.append({"case": case, "cohort": info.cohort(case), "location": info.location(case),
                             "source": name, "kind": kind, "mask": used, "quantity": quantity, "value": value,
                             "consensus": ref, "difference": value - ref,
                             "difference_pct": 100 * (value - ref) / mean if mean else math.nan})
    return rows


def summarise(rows: list) -> list:
    """SUMMARY_COLUMNS per (source, quantity): methods first, then raters, in order of appearance."""
    keys = list(dict.fromkeys((r["source"], r["kind"], r["mask"], r["quantity"]) for r in rows))
    keys.sort(key=lambda k: (k[1] != KIND_AUTO, list(QUANTITIES).index(k[3])))
    out = []
    for source, kind, used, quantity in keys:
        chosen = [r for r in rows if r["source"] == source and r["quantity"] == quantity]
        out.append({"source": source, "kind": kind, "mask": used, "quantity": quantity,
                    **bland_altman([r["value"] for r in chosen], [r["consensus"] for r in chosen])})
    return out


def _fmt(value, digits: int = 1) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def agreement_markdown(summary: list, warnings=()) -> str:
    """The summary as a Markdown table, one block per quantity, then the ``warnings`` (lines)."""
    lines = ["| quantity | source | mask | n | bias | 95 % limits of agreement | bias (%) | limits (%) |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        limits = f"{_fmt(s['loa_low'])} to {_fmt(s['loa_high'])}" if np.isfinite(s["sd"]) else "n < 2"
        limits_pct = (f"{_fmt(s['loa_low_pct'])} to {_fmt(s['loa_high_pct'])}"
                      if np.isfinite(s["loa_low_pct"]) else "n < 2")
        lines.append(f"| {QUANTITIES[s['quantity']]} | {s['source']} ({s['kind']}) | {s['mask']} | {s['n']} | "
                     f"{_fmt(s['bias'])} | {limits} | {_fmt(s['bias_pct'])} | {limits_pct} |")
    if warnings:
        lines += ["", f"**Warning: {len(warnings)} consensus mask(s) look cut lengthwise; their CSA is not a "
                      "cross-section:**", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def plot_bland_altman(path, rows: list, summary: list) -> None:
    """Difference against mean per quantity; per source its points, bias (solid) and limits (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=110)
    axes = fig.subplots(1, len(QUANTITIES), squeeze=False)[0]
    sources = list(dict.fromkeys((s["source"], s["kind"]) for s in summary))
    colours, n_auto, n_rater = {}, 0, 0
    for source, kind in sources:
        if kind == KIND_AUTO:
            colours[source] = _METHOD_COLOURS[n_auto % len(_METHOD_COLOURS)]
            n_auto += 1
        else:
            colours[source] = _RATER_COLOURS[n_rater % len(_RATER_COLOURS)]
            n_rater += 1
    for ax, (quantity, label) in zip(axes, QUANTITIES.items()):
        for source, kind in sources:
            chosen = [r for r in rows if r["source"] == source and r["quantity"] == quantity]
            x = [(r["value"] + r["consensus"]) / 2 for r in chosen]
            y = [r["difference"] for r in chosen]
            style = dict(color=colours[source], marker="o" if kind == KIND_AUTO else "s",
                         s=30 if kind == KIND_AUTO else 18, alpha=0.85)
            ax.scatter(x, y, label=f"{source} ({kind})", **style)
            stats = next(s for s in summary if s["source"] == source and s["quantity"] == quantity)
            ax.axhline(stats["bias"], color=colours[source], lw=1.2 if kind == KIND_AUTO else 0.8)
            if np.isfinite(stats["sd"]):
                for limit in (stats["loa_low"], stats["loa_high"]):
                    ax.axhline(limit, color=colours[source], lw=0.8, ls="--")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel(f"mean of segmentation and consensus: {label}")
        ax.set_ylabel("segmentation - consensus")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Bland-Altman against the consensus: bias (solid) and 95 % limits of agreement (dashed)")
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_agreement(out, rows: list, overwrite: bool = False, warnings=(), summary: "list | None" = None) -> list:
    """The four files of the module docstring into the folder ``out`` (``warnings``, lines, under
    agreement.md's table); returns the summary (``summarise(rows)`` unless given)."""
    summary = summarise(rows) if summary is None else summary
    with atomic_directory(out, overwrite, "biomarker agreement folder") as tmp:
        write_csv(tmp / "agreement_per_case.csv", PER_CASE_COLUMNS, rows, CSV_DIGITS)
        write_csv(tmp / "agreement.csv", SUMMARY_COLUMNS, summary, CSV_DIGITS)
        (tmp / "agreement.md").write_text(agreement_markdown(summary, warnings))
        plot_bland_altman(tmp / "bland_altman.png", rows, summary)
    return summary
