"""Writers for an ``Evaluation``: the per-case CSV, the paper's Table 1 (CSV and Markdown),
the statistics, a Figure-2-like boxplot and the per-scan prediction times.

``write_report`` builds every file in a temporary folder and renames it to ``out`` at the
end (``atomic.atomic_directory``): an interrupted run leaves nothing, an existing ``out`` is
kept unless ``overwrite``. Files written:

* ``per_case.csv``: one row per case, method and comparison (columns ``PER_CASE_COLUMNS``);
  distances in mm, ``inf`` where one mask is empty.
* ``table1.csv``: mean, SD (ddof=0) and n per method, comparison, cohort and location
  (``all`` = whole cohort; patients also per thigh location); ``<metric>_n_inf`` counts the
  infinite values left out of mean and SD.
* ``table1.md``: the same in the paper's layout, the methods side by side, the tests, what
  was left out, the prediction times, and footnotes for every infinite value left out.
* ``statistics.csv``: Mann-Whitney U (Auto-GT vs R-R) and, with several methods, Wilcoxon
  signed-rank (Auto-GT, method vs method) per cohort and metric.
* ``figure2.png``: boxplots of Dice, HD95 and VS for Auto-GT (per method) and R-R, cohorts
  side by side.
* ``timing.csv``: seconds per scan per method from nnU-Net's logs (header only when none).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import numpy as np

from nnunet_nerve.atomic import atomic_directory
from nnunet_nerve.evaluation import (ALPHA, AUTO_GT, METRIC_LABELS, METRICS, PAPER_METRICS, POOLED_RATERS,
                                     Evaluation, cohorts_present, describe, select, statistics_rows,
                                     summary_rows)

PER_CASE_COLUMNS = ("case", "cohort", "location", "method", "comparison", "kind",
                    "dice", "hd95_mm", "vs", "hd_mm", "assd_mm")
TABLE1_COLUMNS = ("method", "comparison", "cohort", "location", "n") + tuple(
    f"{key}_{stat}" for key, _ in METRICS for stat in ("mean", "sd", "n_inf"))
STATISTICS_COLUMNS = ("test", "metric", "cohort", "group_a", "group_b", "n_a", "n_b", "n_inf_a", "n_inf_b",
                      "statistic", "p_value", "note")
TIMING_COLUMNS = ("method", "case", "seconds", "source")
COHORT_TITLES = {"volunteer": "Volunteers", "patient": "Patients"}
#: Decimals in the tables: ratios as the paper (0.859), distances in mm with two.
DECIMALS = {"dice": 3, "vs": 3, "hd95_mm": 2, "hd_mm": 2, "assd_mm": 2}


def write_report(evaluation: Evaluation, out, overwrite: bool = False,
                 progress: Callable[[str], None] = lambda s: None) -> Path:
    """Write every output file of the module docstring to ``out`` (atomically)."""
    summaries = summary_rows(evaluation)
    statistics = statistics_rows(evaluation)
    with atomic_directory(out, overwrite=overwrite, what="evaluation output folder") as tmp:
        write_csv(tmp / "per_case.csv", PER_CASE_COLUMNS, evaluation.rows)
        write_csv(tmp / "table1.csv", TABLE1_COLUMNS, summaries)
        write_csv(tmp / "statistics.csv", STATISTICS_COLUMNS, statistics)
        write_csv(tmp / "timing.csv", TIMING_COLUMNS,
                  [{"method": m.name, "case": case, "seconds": seconds, "source": m.timing_source}
                   for m in evaluation.methods for case, seconds in m.timing])
        (tmp / "table1.md").write_text(table1_markdown(evaluation, summaries, statistics), encoding="utf-8")
        progress("drawing figure2.png")
        draw_boxplots(evaluation, tmp / "figure2.png")
    return Path(out)


def write_csv(path: Path, columns, rows) -> None:
    """Rows (dicts) as CSV with the given columns; floats at full precision (``inf`` as is)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------- Markdown

def mean_sd(entry: dict, key: str, footnotes: list) -> str:
    """``mean ± SD`` of a summary entry, with a footnote mark when infinite values were left out."""
    mean, sd, n_inf = entry[f"{key}_mean"], entry[f"{key}_sd"], entry[f"{key}_n_inf"]
    d = DECIMALS[key]
    text = "n/a" if math.isnan(mean) else f"{mean:.{d}f} ± {sd:.{d}f}"
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


def table1_markdown(evaluation: Evaluation, summaries: list, statistics: list) -> str:
    info = evaluation.dataset
    footnotes: list = []
    lines = [f"# Evaluation of {info.dataset_name}", "",
             f"Consensus (GT): {info.consensus_method or 'as in labelsTr'}; raters: {', '.join(info.raters)}; "
             f"cases: {len(info.cases)}.", ""]
    for m in evaluation.methods:
        lines.append(f"- **{m.name}**: {len(m.paths)} case(s) from `{m.source}`")
    cohorts = cohorts_present(evaluation.rows)
    cohort_groups = [(c, "all") for c in cohorts]
    lines += ["", "## Table 1: mean ± SD per cohort (paper layout)", "",
              "Dice and VS are ratios, HD95 in mm. R-R pools every pair of raters (n = cases x pairs).", ""]
    lines += _grouped_table([s for s in summaries if s["location"] == "all"], cohort_groups,
                            lambda g: COHORT_TITLES.get(g[0], g[0]), PAPER_METRICS, footnotes)
    location_groups = [(s["cohort"], s["location"]) for s in summaries if s["location"] != "all"]
    location_groups = list(dict.fromkeys(location_groups))
    if location_groups:
        lines += ["", f"## {COHORT_TITLES.get(location_groups[0][0], location_groups[0][0])} by thigh location", ""]
        lines += _grouped_table([s for s in summaries if s["location"] != "all"], location_groups,
                                lambda g: g[1], PAPER_METRICS, footnotes)
    if len(evaluation.methods) > 1:
        lines += ["", "## Methods side by side (Auto-GT)", ""] + _side_by_side(evaluation, statistics, footnotes)
    lines += ["", "## Surface distances: maximum Hausdorff and ASSD", ""]
    lines += _grouped_table([s for s in summaries if s["location"] == "all"], cohort_groups,
                            lambda g: COHORT_TITLES.get(g[0], g[0]), ("hd_mm", "assd_mm"), footnotes)
    lines += ["", f"## Statistics (two-sided, α = {ALPHA})", "",
              "Mann-Whitney U: Auto-GT against R-R (unpaired), as in the paper."
              + (" Wilcoxon signed-rank: Auto-GT of one method against another, paired by case." if len(
                  evaluation.methods) > 1 else "")
              + " An infinite distance enters a rank test as the worst value.", "",
              "| Test | Cohort | Metric | Group A | Group B | n A | n B | Statistic | p | p < α |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in statistics:
        if s["metric"] not in PAPER_METRICS:
            continue
        significant = "n/a" if math.isnan(s["p_value"]) else ("yes" if s["p_value"] < ALPHA else "no")
        stat = "n/a" if math.isnan(s["statistic"]) else f"{s['statistic']:.1f}"
        lines.append(f"| {s['test']} | {s['cohort']} | {METRIC_LABELS[s['metric']]} | {s['group_a']} | {s['group_b']} "
                     f"| {s['n_a']} | {s['n_b']} | {stat} | {_p(s['p_value'])} | {significant} |"
                     + (f" {s['note']}" if s["note"] else ""))
    lines += ["", "(HD and ASSD tests are in statistics.csv.)", "", "## Left out", ""]
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
        for key in PAPER_METRICS:
            cells = [COHORT_TITLES.get(cohort, cohort), METRIC_LABELS[key]]
            for method, comparison in [(n, AUTO_GT) for n in names] + [("", POOLED_RATERS)]:
                values = [r[key] for r in select(evaluation.rows, method, comparison, cohort)]
                d = describe(values)
                entry = {"method": method, "comparison": comparison, "cohort": cohort, "location": "all",
                         "n": d["n"], f"{key}_mean": d["mean"], f"{key}_sd": d["sd"], f"{key}_n_inf": d["n_inf"]}
                cells.append(mean_sd(entry, key, footnotes) + f" (n={d['n']})")
            cells += [_p(wilcoxon.get((f"{AUTO_GT} ({a})", f"{AUTO_GT} ({b})", cohort, key), math.nan))
                      for a, b in pairs]
            lines.append("| " + " | ".join(cells) + " |")
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
    """One panel per paper metric; per cohort a box for Auto-GT of each method and for R-R.
    Infinite HD95 values cannot be drawn; they are left out and counted in the panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    series = [(n, AUTO_GT, f"Auto-GT ({n})" if len(evaluation.methods) > 1 else "Auto-GT")
              for n in evaluation.method_names] + [("", POOLED_RATERS, POOLED_RATERS)]
    cohorts = cohorts_present(evaluation.rows)
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(PAPER_METRICS), figsize=(4.5 * len(PAPER_METRICS), 4.2), squeeze=False)
    for ax, key in zip(axes[0], PAPER_METRICS):
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
