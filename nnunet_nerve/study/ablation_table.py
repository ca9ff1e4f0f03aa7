"""The ablation table: per method, Dice and HD95 on the held-out cases over several seeds,
and which differences from the paper's recipe exceed the run-to-run spread.

Definitions (docs/ablation.md states the same):

* per run (one method, one seed): the mean over the held-out cases of the evaluation's
  per-case Auto-GT values (``nnunet_nerve.evaluation.evaluator``); an infinite HD95 (an empty
  prediction) is left out of that mean and counted (``<metric>_n_inf``), as in Table 1;
* per method: the mean over seeds of the per-run means, and the run-to-run spread: their
  sample standard deviation over seeds (ddof=1; at least two seeds);
* a method's difference from the reference (the paper's recipe) is
  ``delta = mean(method) - mean(reference)``, and it is flagged as exceeding the spread
  when ``|delta| > sd(method) + sd(reference)``, i.e. when the two ``mean ± SD`` intervals
  do not overlap. Otherwise the table reports it as within the spread: a difference of that
  size is what reruns of one method with other seeds already show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnunet_nerve.evaluation.evaluator import finite_mean_sd


@dataclass(frozen=True)
class MetricSpec:
    """A per-case metric column of the evaluation, how it reads, and which way is better."""

    key: str
    label: str
    decimals: int
    higher_is_better: bool


def run_means(rows: list, metrics) -> dict:
    """Per-run summary of per-case rows: ``n_cases`` and, per metric, ``<key>_mean`` over the
    finite values and ``<key>_n_inf`` (see ``evaluation.evaluator.finite_mean_sd``)."""
    out = {"n_cases": len(rows)}
    for m in metrics:
        d = finite_mean_sd([float(r[m.key]) for r in rows])
        out[f"{m.key}_mean"] = d["mean"]
        out[f"{m.key}_n_inf"] = d["n_inf"]
    return out


def spread(values) -> dict:
    """``n`` finite per-seed values, their ``mean`` and sample SD ``sd`` (ddof=1; NaN below two)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
            "sd": float(v.std(ddof=1)) if v.size >= 2 else math.nan}


def exceeds_spread(delta: float, sd_method: float, sd_reference: float) -> bool:
    """The rule of the module docstring: ``|delta| > sd_method + sd_reference`` (False when
    any of them is undefined)."""
    values = (delta, sd_method, sd_reference)
    return all(math.isfinite(v) for v in values) and abs(delta) > sd_method + sd_reference


def method_summaries(runs: list, methods: list, reference: str, metrics) -> list:
    """One entry per method (in ``methods`` order) from per-run rows {method, seed, <key>_mean,
    <key>_n_inf}: seeds, and per metric mean, sd, n, n_inf (summed over runs), delta from the
    reference, and whether it exceeds the spread."""
    by_method = {m: [r for r in runs if r["method"] == m] for m in methods}
    summaries = {}
    for method in methods:
        entry = {"method": method, "seeds": sorted(r["seed"] for r in by_method[method])}
        for m in metrics:
            s = spread([r[f"{m.key}_mean"] for r in by_method[method]])
            entry.update({f"{m.key}_mean": s["mean"], f"{m.key}_sd": s["sd"], f"{m.key}_n": s["n"],
                          f"{m.key}_n_inf": sum(int(r[f"{m.key}_n_inf"]) for r in by_method[method])})
        summaries[method] = entry
    ref = summaries[reference]
    for entry in summaries.values():
        for m in metrics:
            delta = entry[f"{m.key}_mean"] - ref[f"{m.key}_mean"]
            entry[f"{m.key}_delta"] = delta
            entry[f"{m.key}_exceeds_spread"] = (entry is not ref
                                                and exceeds_spread(delta, entry[f"{m.key}_sd"], ref[f"{m.key}_sd"]))
    return [summaries[m] for m in methods]


def _number(value: float, decimals: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{decimals}f}"


def mean_sd_cell(entry: dict, m: MetricSpec) -> str:
    """``mean ± SD`` over seeds, with the number of infinite per-case values left out."""
    text = f"{_number(entry[f'{m.key}_mean'], m.decimals)} ± {_number(entry[f'{m.key}_sd'], m.decimals)}"
    if entry[f"{m.key}_n_inf"]:
        text += f" ({entry[f'{m.key}_n_inf']} empty predictions left out)"
    return text


def delta_cell(entry: dict, reference: dict, m: MetricSpec) -> str:
    """The difference from the reference; bold with 'better'/'worse' when it exceeds the spread."""
    if entry is reference:
        return "reference"
    delta = entry[f"{m.key}_delta"]
    if not math.isfinite(delta):
        return "n/a"
    limit = entry[f"{m.key}_sd"] + reference[f"{m.key}_sd"]
    text = f"{delta:+.{m.decimals}f}"
    if entry[f"{m.key}_exceeds_spread"]:
        better = (delta > 0) == m.higher_is_better
        return f"**{text}** ({'better' if better else 'worse'}; spread {limit:.{m.decimals}f})"
    return f"{text} (within spread {_number(limit, m.decimals)})"


def markdown_table(summaries: list, reference: str, metrics, describe_method) -> list:
    """The table's Markdown lines; ``describe_method(name)`` gives (trainer, what it changes)."""
    ref = next(e for e in summaries if e["method"] == reference)
    head = ["method", "trainer", "what differs from the paper's recipe", "seeds"]
    for m in metrics:
        head += [f"{m.label} (mean ± SD over seeds)", f"Δ {m.label}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in summaries:
        trainer, knob = describe_method(entry["method"])
        cells = [entry["method"], f"`{trainer}`", knob, str(len(entry["seeds"]))]
        for m in metrics:
            cells += [mean_sd_cell(entry, m), delta_cell(entry, ref, m)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_seed_table(runs: list, methods: list, metrics) -> list:
    """Markdown lines: each run's per-case means, one row per method, one column per seed and metric."""
    seeds = sorted({r["seed"] for r in runs})
    head = ["method"] + [f"{m.label}, seed {s}" for s in seeds for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        cells = [method]
        for s in seeds:
            run = next((r for r in runs if r["method"] == method and r["seed"] == s), None)
            for m in metrics:
                cells.append("not run" if run is None else _number(run[f"{m.key}_mean"], m.decimals))
        lines.append("| " + " | ".join(cells) + " |")
    return lines
