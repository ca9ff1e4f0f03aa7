"""Writers for an ``Evaluation``: the per-case CSV, the paper's Table 1 (CSV and Markdown),
the statistics, a Figure-2-like boxplot and the per-scan prediction times.

``write_report`` builds every file in a temporary folder and renames it to ``out`` at the
end (``atomic.atomic_directory``): an interrupted run leaves nothing, an existing ``out`` is
kept unless ``overwrite``. Files written:

* ``per_case.csv``: one row per case, method and comparison (columns ``PER_CASE_COLUMNS``);
  distances in mm, ``inf`` where one mask is empty; ``hd95_mm`` is the paper's HD95
  (EvaluateSegmentation's), ``hd95_surface_mm`` the surface-based one.
* ``table1.csv``: mean, SD (ddof=0) and n per method, comparison, cohort and location
  (``all`` = whole cohort; patients also per thigh location); ``<metric>_n_inf`` counts the
  infinite values left out of mean and SD.
* ``table1.md``: the same in the paper's layout (rows in the paper's order, raters in the
  dataset's order; means to the paper's precision), the methods side by side, the tests,
  what was left out, the prediction times, footnotes for every infinite value left out and,
  with ``paper_reference``, the published values beside ours (``paper_reference``).
* ``statistics.csv``: Mann-Whitney U (Auto-GT vs R-R) and, with several methods, Wilcoxon
  signed-rank (Auto-GT, method vs method) per cohort and metric.
* ``figure2.png``: boxplots of Dice, HD95 (``Evaluation.hd95``'s definition) and VS for
  Auto-GT (per method) and R-R, cohorts side by side.
* ``timing.csv``: seconds per scan per method from nnU-Net's logs (header only when none).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from nnunet_nerve.evaluation import paper_reference as published
from nnunet_nerve.io.atomic import atomic_directory, refuse_output_overlap
from nnunet_nerve.io.tables import write_csv
from nnunet_nerve.evaluation.evaluator import (ALPHA, AUTO, AUTO_GT, POOLED_RATERS, Evaluation, cohorts_present,
                                               finite_mean_sd, select, statistics_rows, summary_rows)
from nnunet_nerve.evaluation.columns import HD95_DEFINITIONS, METRIC_LABELS, METRICS

PER_CASE_COLUMNS = ("case", "cohort", "location", "method", "comparison", "kind") + tuple(key for key, _ in METRICS)
TABLE1_COLUMNS = ("method", "comparison", "cohort", "location", "n") + tuple(
    f"{key}_{stat}" for key, _ in METRICS for stat in ("mean", "sd", "n_inf"))
STATISTICS_COLUMNS = ("test", "metric", "cohort", "group_a", "group_b", "n_a", "n_b", "n_inf_a", "n_inf_b",
                      "statistic", "p_value", "note")
TIMING_COLUMNS = ("method", "case", "seconds", "source")
COHORT_TITLES = {"volunteer": "Volunteers", "patient": "Patients"}
#: Ratios are shown with three decimals, as the paper shows them (0.859 ± 0.061).
RATIO_METRICS = ("dice", "vs")
#: Distances: the mean to this many significant digits, the SD to the mean's decimals, as the
#: paper shows them (13.9 ± 26.6 mm).
DISTANCE_SIGNIFICANT_DIGITS = 3
#: What each HD95 definition is, in one line for table1.md.
HD95_DESCRIPTIONS = {
    "evaluatesegmentation": "the paper's: EvaluateSegmentation's HDRFDST@0.95@ (every voxel that differs, "
                            "to the nearest voxel of the other mask, both directions pooled, no interpolation)",
    "surface": "surface-based: the larger directed 95th percentile of surface-voxel distances (not the paper's)",
}


def decimals(key: str, mean: float) -> int:
    """Decimals of a table cell: 3 for ratios; for distances enough for three significant
    digits of the mean (13.9, 0.521, 126), at least 0."""
    if key in RATIO_METRICS:
        return 3
    if not math.isfinite(mean) or mean == 0:
        return DISTANCE_SIGNIFICANT_DIGITS
    return max(0, DISTANCE_SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(mean))))


def format_mean_sd(key: str, mean: float, sd: float) -> str:
    """``mean ± SD`` at the paper's precision (``decimals``); ``n/a`` for a NaN mean."""
    if math.isnan(mean):
        return "n/a"
    d = decimals(key, mean)
    return f"{mean:.{d}f} ± {sd:.{d}f}"


def write_report(evaluation: Evaluation, out, overwrite: bool = False,
                 progress: Callable[[str], None] = lambda s: None, paper_reference: bool = False,
                 extra: "Callable[[Path], None] | None" = None) -> Path:
    """Write every output file of the module docstring to ``out`` (atomically); with
    ``paper_reference`` table1.md also shows the published values beside ours. ``extra`` writes
    more into the folder being built (its path given), inside the same atomic step, so that an
    output it adds (``evaluate --biomarkers``' agreement) is there in full or not at all."""
    refuse_output_overlap(out, evaluation_inputs(evaluation))
    summaries = summary_rows(evaluation)
    statistics = statistics_rows(evaluation)
    with atomic_directory(out, overwrite=overwrite, what="evaluation output folder") as tmp:
        write_csv(tmp / "per_case.csv", PER_CASE_COLUMNS, evaluation.rows)
        write_csv(tmp / "table1.csv", TABLE1_COLUMNS, summaries)
        write_csv(tmp / "statistics.csv", STATISTICS_COLUMNS, statistics)
        write_csv(tmp / "timing.csv", TIMING_COLUMNS,
                  [{"method": m.name, "case": case, "seconds": seconds, "source": m.timing_source}
                   for m in evaluation.methods for case, seconds in m.timing])
        (tmp / "table1.md").write_text(table1_markdown(evaluation, summaries, statistics, paper_reference),
                                       encoding="utf-8")
        progress("drawing figure2.png")
        draw_boxplots(evaluation, tmp / "figure2.png")
        if extra is not None:
            extra(tmp)
    return Path(out)


def evaluation_inputs(evaluation: Evaluation) -> dict:
    """{what: folder} of everything an evaluation read: the dataset and the folder of every
    method's predictions; an output may be none of them, nor lie inside or contain one."""
    inputs = {"dataset": evaluation.dataset.folder}
    for method in evaluation.methods:
        for folder in sorted({Path(p).parent for p in method.paths.values()}):
            inputs[f"predictions of {method.name} ({folder.name})"] = folder
    return inputs


# ---------------------------------------------------------------- Markdown

def mean_sd(entry: dict, key: str, footnotes: list) -> str:
    """``mean ± SD`` of a summary entry, with a footnote mark when infinite values were left out."""
    mean, sd, n_inf = entry[f"{key}_mean"], entry[f"{key}_sd"], entry[f"{key}_n_inf"]
    text = format_mean_sd(key, mean, sd)
    if n_inf:
        note = (f"{n_inf} of {entry['n']} {METRIC_LABELS[key]} values of {_label(entry)} "
                f"({entry['cohort']}{'' if entry['location'] == 'all' else ', ' + entry['location']}) "
                "are infinite (one mask empty) and are left out of mean ± SD")
        if note not in footnotes:
            footnotes.append(note)
        text += f" [^{footnotes.index(note) + 1}]"
    return text


def _label(entry: dict) -> str:
    return entry["comparison"] + (f" ({entry['method']})" if entry["method"] else "")


def _grouped_table(summaries, groups, group_title, metric_keys, footnotes) -> list:
    """Markdown rows: one per (method, comparison), per group n then the metrics' mean ± SD."""
    header = ["Method", "Comparison"]
    for g in groups:
        header += [f"{group_title(g)} n"] + [f"{group_title(g)} {METRIC_LABELS[k]}" for k in metric_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = []
    for s in summaries:
        if (s["method"], s["comparison"]) not in keys:
            keys.append((s["method"], s["comparison"]))
    index = {(s["method"], s["comparison"], s["cohort"], s["location"]): s for s in summaries}
    for method, comparison in keys:
        cells = [method or "raters", comparison]
        for g in groups:
            entry = index.get((method, comparison) + g)
            if entry is None:
                cells += ["0"] + ["–"] * len(metric_keys)
            else:
                cells += [str(entry["n"])] + [mean_sd(entry, k, footnotes) for k in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _p(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def table1_markdown(evaluation: Evaluation, summaries: list, statistics: list, paper_reference: bool = False) -> str:
    info = evaluation.dataset
    paper_metrics = evaluation.paper_metrics
    other_distances = tuple(k for k in HD95_DEFINITIONS.values() if k not in paper_metrics) + ("hd_mm", "assd_mm")
    footnotes: list = []
    lines = [f"# Evaluation of {info.dataset_name}", "",
             f"Consensus (GT): {info.consensus_method or 'as in labelsTr'}; raters ({info.rater_order_note}): "
             f"{', '.join(info.raters)}; cases: {len(info.cases)}.", ""]
    for m in evaluation.methods:
        lines.append(f"- **{m.name}**: {len(m.paths)} case(s) from `{m.source}`")
    if evaluation.warnings:
        lines += ["", f"**Warning: {len(evaluation.warnings)} case(s) without geometry; their distances (mm) are "
                      "voxel counts:**", ""] + [f"- {w}" for w in evaluation.warnings]
    cohorts = cohorts_present(evaluation.rows)
    cohort_groups = [(c, "all") for c in cohorts]
    lines += ["", "## Table 1: mean ± SD per cohort (paper layout)", "",
              "Dice and VS are ratios, HD95 in mm. R-R pools every pair of raters (n = cases x pairs). "
              f"HD95 here is {HD95_DESCRIPTIONS[evaluation.hd95]}.", ""]
    lines += _grouped_table([s for s in summaries if s["location"] == "all"], cohort_groups,
                            lambda g: COHORT_TITLES.get(g[0], g[0]), paper_metrics, footnotes)
    location_groups = [(s["cohort"], s["location"]) for s in summaries if s["location"] != "all"]
    location_groups = list(dict.fromkeys(location_groups))
    if location_groups:
        lines += ["", f"## {COHORT_TITLES.get(location_groups[0][0], location_groups[0][0])} by thigh location", ""]
        lines += _grouped_table([s for s in summaries if s["location"] != "all"], location_groups,
                                lambda g: g[1], paper_metrics, footnotes)
    if len(evaluation.methods) > 1:
        lines += ["", "## Methods side by side (Auto-GT)", ""] + _side_by_side(evaluation, statistics, footnotes)
    if paper_reference:
        lines += ["", "## Published values beside ours (Balsiger et al. 2018)", ""]
        lines += _paper_reference_lines(evaluation, footnotes)
    lines += ["", "## Other distances: " + ", ".join(METRIC_LABELS[k] for k in other_distances), ""]
    lines += _grouped_table([s for s in summaries if s["location"] == "all"], cohort_groups,
                            lambda g: COHORT_TITLES.get(g[0], g[0]), other_distances, footnotes)
    lines += ["", f"## Statistics (two-sided, α = {ALPHA})", "",
              "Mann-Whitney U: Auto-GT against R-R (unpaired), as in the paper."
              + (" Wilcoxon signed-rank: Auto-GT of one method against another, paired by case." if len(
                  evaluation.methods) > 1 else "")
              + " An infinite distance enters a rank test as the worst value.", "",
              "| Test | Cohort | Metric | Group A | Group B | n A | n B | Statistic | p | p < α |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in statistics:
        if s["metric"] not in paper_metrics:
            continue
        significant = "n/a" if math.isnan(s["p_value"]) else ("yes" if s["p_value"] < ALPHA else "no")
        stat = "n/a" if math.isnan(s["statistic"]) else f"{s['statistic']:.1f}"
        lines.append(f"| {s['test']} | {s['cohort']} | {METRIC_LABELS[s['metric']]} | {s['group_a']} | {s['group_b']} "
                     f"| {s['n_a']} | {s['n_b']} | {stat} | {_p(s['p_value'])} | {significant} |"
                     + (f" {s['note']}" if s["note"] else ""))
    lines += ["", "(The tests of the other distances are in statistics.csv.)", "", "## Left out", ""]
    left = [f"- {m.name}: {note}" for m in evaluation.methods for note in m.left_out]
    lines += left or ["Nothing: every case has a prediction from every method."]
    lines += ["", "## Prediction time per scan", ""] + _timing_lines(evaluation)
    if footnotes:
        lines += ["", "---", ""] + [f"[^{i}]: {text}" for i, text in enumerate(footnotes, start=1)]
    return "\n".join(lines) + "\n"


def _side_by_side(evaluation: Evaluation, statistics: list, footnotes: list) -> list:
    names = evaluation.method_names
    wilcoxon = {(s["group_a"], s["group_b"], s["cohort"], s["metric"]): s["p_value"]
                for s in statistics if s["test"] == "wilcoxon-signed-rank"}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    header = ["Cohort", "Metric"] + [f"{n} Auto-GT" for n in names] + [POOLED_RATERS] + [
        f"Wilcoxon p {a} vs {b}" for a, b in pairs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cohort in cohorts_present(evaluation.rows):
        for key in evaluation.paper_metrics:
            cells = [COHORT_TITLES.get(cohort, cohort), METRIC_LABELS[key]]
            for method, comparison in [(n, AUTO_GT) for n in names] + [("", POOLED_RATERS)]:
                cells.append(_described_cell(evaluation, method, comparison, cohort, key, footnotes))
            cells += [_p(wilcoxon.get((f"{AUTO_GT} ({a})", f"{AUTO_GT} ({b})", cohort, key), math.nan))
                      for a, b in pairs]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _described_cell(evaluation: Evaluation, method: str, comparison: str, cohort: str, key: str,
                    footnotes: list) -> str:
    """``mean ± SD (n=..)`` of one comparison's values in a cohort, footnoted as in Table 1."""
    d = finite_mean_sd([r[key] for r in select(evaluation.rows, method, comparison, cohort)])
    entry = {"method": method, "comparison": comparison, "cohort": cohort, "location": "all",
             "n": d["n"], f"{key}_mean": d["mean"], f"{key}_sd": d["sd"], f"{key}_n_inf": d["n_inf"]}
    return mean_sd(entry, key, footnotes) + f" (n={d['n']})"


def _paper_reference_lines(evaluation: Evaluation, footnotes: list) -> list:
    """The published values (``paper_reference.PUBLISHED``) next to ours, same comparison,
    cohort and metric, clearly labelled, with their source. HD95 is always compared with
    the paper's definition (``hd95_mm``), whatever ``evaluation.hd95`` shows elsewhere."""
    lines = [published.CAVEAT, ""]
    if evaluation.hd95 != "evaluatesegmentation":
        lines += ["HD95 in this section is the paper's definition (`hd95_mm`), as the published values are; "
                  "the rest of this file shows the surface HD95 (`--hd95 surface`).", ""]
    names = evaluation.method_names
    header = ["Cohort", "Comparison", "Metric", "Published (paper)"] + [f"Ours: {n}" for n in names]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cohorts = cohorts_present(evaluation.rows)
    sources = []
    for value in published.PUBLISHED:
        if value.cohort not in cohorts:
            continue
        key = HD95_DEFINITIONS["evaluatesegmentation"] if value.metric == "hd95" else value.metric
        if value.source not in sources:
            sources.append(value.source)
        cells = [COHORT_TITLES.get(value.cohort, value.cohort), value.comparison, METRIC_LABELS[key],
                 f"{format_mean_sd(key, value.mean, value.sd)} (n={value.n}) [{sources.index(value.source) + 1}]"]
        rater_row = not value.comparison.startswith(AUTO)  # the same for every method
        ours = [_described_cell(evaluation, "" if rater_row else n, value.comparison, value.cohort, key, footnotes)
                for n in names]
        lines.append("| " + " | ".join(cells + ours) + " |")
    lines += [""] + [f"[{i}] {source}" for i, source in enumerate(sources, start=1)]
    return lines


def _timing_lines(evaluation: Evaluation) -> list:
    lines = []
    for m in evaluation.methods:
        if not m.timing:
            lines.append(f"- {m.name}: not recorded (no nnU-Net validation log with per-case lines for these "
                         "predictions)")
            continue
        seconds = np.array([t for _, t in m.timing], dtype=np.float64)
        lines.append(f"- {m.name}: median {np.median(seconds):.2f} s, mean {seconds.mean():.2f} ± "
                     f"{seconds.std():.2f} s, range {seconds.min():.2f}–{seconds.max():.2f} s over {seconds.size} "
                     f"scans, from the gaps between nnU-Net's 'predicting <case>' log lines in {m.timing_source}")
    return lines


# ---------------------------------------------------------------- Figure 2

def draw_boxplots(evaluation: Evaluation, path: Path) -> None:
    """One panel per paper metric (HD95: ``evaluation.hd95``'s definition); per cohort a box for
    Auto-GT of each method and for R-R. Infinite HD95 values cannot be drawn; they are left
    out and counted in the panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    series = [(n, AUTO_GT, f"Auto-GT ({n})" if len(evaluation.methods) > 1 else "Auto-GT")
              for n in evaluation.method_names] + [("", POOLED_RATERS, POOLED_RATERS)]
    cohorts = cohorts_present(evaluation.rows)
    colours = plt.get_cmap("tab10").colors
    paper_metrics = evaluation.paper_metrics
    fig, axes = plt.subplots(1, len(paper_metrics), figsize=(4.5 * len(paper_metrics), 4.2), squeeze=False)
    for ax, key in zip(axes[0], paper_metrics):
        n_inf = 0
        width = 0.8 / len(series)
        for c_index, cohort in enumerate(cohorts):
            for s_index, (method, comparison, _) in enumerate(series):
                values = np.array([r[key] for r in select(evaluation.rows, method, comparison, cohort)], dtype=float)
                n_inf += int(np.count_nonzero(np.isinf(values)))
                values = values[np.isfinite(values)]
                if values.size == 0:
                    continue
                position = c_index + (s_index - (len(series) - 1) / 2) * width
                box = ax.boxplot(values, positions=[position], widths=width * 0.9, patch_artist=True,
                                 showfliers=True, medianprops={"color": "black"})
                for patch in box["boxes"]:
                    patch.set_facecolor(colours[s_index % len(colours)])
                    patch.set_alpha(0.7)
        ax.set_xticks(range(len(cohorts)))
        ax.set_xticklabels([COHORT_TITLES.get(c, c) for c in cohorts])
        ax.set_xlim(-0.6, len(cohorts) - 0.4)
        ax.set_title(METRIC_LABELS[key] + (f" ({n_inf} infinite left out)" if n_inf else ""))
        ax.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=colours[i % len(colours)], alpha=0.7, label=label)
               for i, (_, _, label) in enumerate(series)]
    fig.legend(handles=handles, loc="lower center", ncol=len(series), frameon=False)
    fig.suptitle(f"{evaluation.dataset.dataset_name}: automatic vs inter-rater")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
