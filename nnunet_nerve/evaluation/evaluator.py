"""The paper's evaluation (Balsiger et al. 2018, Table 1): every comparison per case, their
summaries per cohort and thigh location, and the statistical tests.

Comparisons, named as the paper names them with the dataset's rater ids, **in the dataset's
rater order** (``DatasetInfo.raters``: the registry's raters.tsv, most experienced first in the
paper, else sorted):

* ``OS-BW``: a pair of raters (kind ``rater-pair``), each unordered pair once, the earlier
  rater first (raters OS, BW, LG give OS-BW, OS-LG, BW-LG);
* ``OS-GT``: a rater against the consensus (``rater-consensus``);
* ``Auto-OS``: a prediction against a rater (``auto-rater``);
* ``Auto-GT``: a prediction against the consensus (``auto-consensus``);
* ``R-R``: not computed per case but pooled in the summaries: every ``rater-pair`` row of
  the cases in the group (n = cases x pairs), the inter-rater baseline.

The first mask of a comparison name is passed as ``pred``, the second as ``ref`` (all
metrics are symmetric). Rater rows do not depend on a prediction; their ``method`` is
empty. The evaluator computes and returns plain rows (lists of dicts); the writers in
``evaluation_report`` write them.

Every row holds both HD95 definitions (``hd95_mm``: the paper's, EvaluateSegmentation's;
``hd95_surface_mm``: surface-based); ``Evaluation.hd95`` says which one Table 1, Figure 2 and
the statistics shown in table1.md use (``HD95_DEFINITIONS``).

Summaries: mean and population SD (``numpy.std``, ddof=0) over the finite values; an
infinite distance (one mask empty, the other not) is counted in ``<metric>_n_inf`` and left
out of mean and SD. Tests: two-sided Mann-Whitney U (``scipy.stats.mannwhitneyu``) of
Auto-GT against R-R per method, cohort and metric; with several methods a paired Wilcoxon
signed-rank test (``scipy.stats.wilcoxon``, two-sided, zero differences dropped) of Auto-GT
per pair of methods, cohort and metric over the cases both methods have. In both tests an
infinite distance enters as the worst value (larger than every finite value), which is
what a rank test needs; it is not dropped.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy import stats

from nnunet_nerve.io import images as imageio
from nnunet_nerve.io.masks import binary_mask

from nnunet_nerve.evaluation import metrics
from nnunet_nerve.registry.dataset_info import FILE_ENDING, LOCATIONS, DatasetInfo
from nnunet_nerve.errors import NerveError, refuse_batch, refusals
from nnunet_nerve.evaluation.columns import DEFAULT_HD95, HD95_DEFINITIONS, METRICS

AUTO = "Auto"
CONSENSUS = "GT"
POOLED_RATERS = "R-R"
KIND_RATER_PAIR = "rater-pair"
KIND_RATER_CONSENSUS = "rater-consensus"
KIND_AUTO_RATER = "auto-rater"
KIND_AUTO_CONSENSUS = "auto-consensus"
KIND_POOLED = "pooled-rater-pairs"
AUTO_GT = f"{AUTO}-{CONSENSUS}"
COHORT_ORDER = ("volunteer", "patient")
ALPHA = 0.05


@dataclass(frozen=True)
class PredictionSet:
    """One method's predictions: case -> mask path, with what is left out and where the
    per-scan prediction times come from (``timing`` holds (case, seconds) pairs read from
    nnU-Net's logs, empty when none were recorded)."""

    name: str
    paths: dict
    source: str
    left_out: tuple = ()
    timing: tuple = ()
    timing_source: str = ""


def paper_metrics(hd95: str = DEFAULT_HD95) -> tuple:
    """The paper's three metrics (Table 1, Figure 2): Dice, the chosen HD95's row key, VS."""
    if hd95 not in HD95_DEFINITIONS:
        raise NerveError(f"HD95 definition {hd95!r}: expected one of {', '.join(HD95_DEFINITIONS)}")
    return ("dice", HD95_DEFINITIONS[hd95], "vs")


#: The paper's three metrics with the paper's HD95: dice, hd95_mm, vs.
PAPER_METRICS = paper_metrics()


@dataclass
class Evaluation:
    """The per-case rows of every comparison, what they were computed from, and which HD95
    definition (a key of ``HD95_DEFINITIONS``) the reports show."""

    dataset: DatasetInfo
    methods: list
    rows: list = field(default_factory=list)
    hd95: str = DEFAULT_HD95
    #: Lines about the data that are no error (a consensus whose header holds no geometry).
    warnings: list = field(default_factory=list)

    @property
    def method_names(self) -> list:
        return [m.name for m in self.methods]

    @property
    def paper_metrics(self) -> tuple:
        return paper_metrics(self.hd95)


def comparison_name(first: str, second: str) -> str:
    return f"{first}-{second}"


def rater_pairs(raters) -> list:
    """Every unordered pair of rater ids in the given order: (a, b) with a before b
    (OS, BW, LG -> (OS, BW), (OS, LG), (BW, LG))."""
    return list(itertools.combinations(raters, 2))


def case_comparisons(consensus: np.ndarray, raters: dict, predictions: dict, spacing) -> list:
    """Every comparison of one case as rows {method, comparison, kind, <metrics>}.

    ``raters`` maps rater id -> mask in the rater order, ``predictions`` method name -> mask
    (a method without a prediction for this case is simply absent); ``spacing`` in the
    arrays' axis order (z, y, x), mm.
    """
    rows = []

    def add(method, first, second, kind, pred, ref):
        rows.append({"method": method, "comparison": comparison_name(first, second), "kind": kind,
                     **metrics.all_metrics(pred, ref, spacing)})

    for a, b in rater_pairs(raters):
        add("", a, b, KIND_RATER_PAIR, raters[a], raters[b])
    for r in raters:
        add("", r, CONSENSUS, KIND_RATER_CONSENSUS, raters[r], consensus)
    for method, pred in predictions.items():
        for r in raters:
            add(method, AUTO, r, KIND_AUTO_RATER, pred, raters[r])
        add(method, AUTO, CONSENSUS, KIND_AUTO_CONSENSUS, pred, consensus)
    return rows


def gather_prediction_folder(folder, info: DatasetInfo, name: str, allow_missing: bool = False) -> PredictionSet:
    """Predictions named ``<case>.nii.gz`` in ``folder`` (as nnUNetv2_predict writes them).

    A case of the dataset without a prediction is an error naming the case(s), unless
    ``allow_missing``; then it is left out and said so. Prediction times are not recorded
    in such a folder (nnUNetv2_predict logs none).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NerveError(f"{folder}: prediction folder does not exist")
    paths, missing = {}, []
    for case in info.cases:
        path = folder / f"{case}{FILE_ENDING}"
        if path.is_file():
            paths[case] = path
        else:
            missing.append(case)
    left_out = ()
    if missing:
        if not allow_missing:
            raise NerveError(f"{folder}: no prediction {missing[0]}{FILE_ENDING} for case {missing[0]}"
                             + (f" (nor for {', '.join(missing[1:])})" if len(missing) > 1 else "")
                             + "; pass --allow-missing to evaluate the others")
        left_out = (f"{len(missing)} case(s) without prediction in {folder}: {', '.join(missing)}",)
    if not paths:
        raise NerveError(f"{folder}: holds no prediction <case>{FILE_ENDING} for any case of {info.dataset_name}")
    return PredictionSet(name=name, paths=paths, source=str(folder), left_out=left_out)


def load_binary_mask(path, grid: sitk.Image, case: str, what: str) -> np.ndarray:
    """Read a 0/1 mask that must lie on ``grid`` (the case's consensus label).

    NerveError naming the case and the file when it is on another grid or holds a value
    other than 0 and 1.
    """
    image = imageio.read_image(path)
    mismatch = imageio.grid_mismatch(grid, image, "its label's")
    if mismatch:
        raise NerveError(f"case {case}: {what} {path} is not on its label's grid: {mismatch}")
    return binary_mask(sitk.GetArrayViewFromImage(image), f"case {case}: {what} {path}")


def load_case_masks(info: DatasetInfo, case: str, prediction_sets: list) -> tuple:
    """(the consensus label's SimpleITK image, consensus, {rater: mask}, {method: prediction}) of
    one case, every mask checked by ``load_binary_mask`` (complete, finite, 0/1, on the
    consensus's grid): NerveError naming the case and the file. ``evaluate`` runs it over every
    case before computing anything, so that each bad file is named in one run."""
    grid = imageio.read_image(info.consensus_path(case))
    consensus = load_binary_mask(info.consensus_path(case), grid, case, "consensus")
    raters = {r: load_binary_mask(p, grid, case, f"rater {r} mask") for r, p in info.rater_paths(case).items()}
    predictions = {p.name: load_binary_mask(p.paths[case], grid, case, f"prediction of {p.name}")
                   for p in prediction_sets if case in p.paths}
    return grid, consensus, raters, predictions


def method_name_problem(name: str) -> "str | None":
    """Why ``name`` cannot name a method in the reports, or None. Refused: an empty name, the
    raters' row ``R-R`` (Table 1 would hold two such rows), ``|`` (it splits a Markdown table
    cell of table1.md) and line breaks or other control characters (they split a CSV row)."""
    if not name.strip():
        return "empty"
    if name.strip() == POOLED_RATERS:
        return f"{POOLED_RATERS} is the raters' row of Table 1"
    if "|" in name:
        return "'|' would break the Markdown tables (table1.md)"
    if any(not ch.isprintable() for ch in name):
        return "holds a line break or another control character"
    return None


def evaluate(info: DatasetInfo, prediction_sets: list, progress: Callable[[str], None] = lambda s: None,
             hd95: str = DEFAULT_HD95) -> Evaluation:
    """Compute every comparison for every case of ``info``; returns the per-case rows.

    Row keys: case, cohort, location, method, comparison, kind, dice, hd95_mm,
    hd95_surface_mm, hd_mm, assd_mm, vs. ``hd95`` (a key of ``HD95_DEFINITIONS``) is the
    definition the reports show; both are computed. A case whose consensus header holds no
    geometry (``io.images.default_geometry_problem``) is evaluated in voxel units, and a
    ``warning:`` line goes to ``progress`` and ``Evaluation.warnings``.
    """
    names = [p.name for p in prediction_sets]
    for name in names:
        problem = method_name_problem(name)
        if problem:
            raise NerveError(f"method name {name!r}: {problem}; choose another with --name")
    if len(set(names)) != len(names):
        raise NerveError(f"method names must differ, got {', '.join(names)}; name them with --name")
    paper_metrics(hd95)  # refuses an unknown definition before any work
    evaluation = Evaluation(dataset=info, methods=list(prediction_sets), hd95=hd95)
    refuse_batch(info.folder, refusals(info.cases, lambda case: load_case_masks(info, case, prediction_sets)),
                 len(info.cases), "nothing was evaluated")
    for i, case in enumerate(info.cases, start=1):
        progress(f"[{i}/{len(info.cases)}] {case}")
        grid, consensus, raters, predictions = load_case_masks(info, case, prediction_sets)
        no_geometry = imageio.default_geometry_warning(grid, info.consensus_path(case))
        if no_geometry:  # the distances below would be voxel counts
            evaluation.warnings.append(no_geometry)
            progress(f"warning: {no_geometry}")
        for row in case_comparisons(consensus, raters, predictions, imageio.spacing_zyx(grid)):
            evaluation.rows.append({"case": case, "cohort": info.cohort(case), "location": info.location(case), **row})
    return evaluation


# ---------------------------------------------------------------- summaries and tests

def comparison_order(raters, method_names) -> list:
    """(method, comparison) in the paper's Table 1 layout, raters in the given order: the rater
    pairs, <rater>-GT, R-R, then per method Auto-<rater> and Auto-GT."""
    order = [("", comparison_name(a, b)) for a, b in rater_pairs(raters)]
    order += [("", comparison_name(r, CONSENSUS)) for r in raters]
    if rater_pairs(raters):
        order.append(("", POOLED_RATERS))
    for m in method_names:
        order += [(m, comparison_name(AUTO, r)) for r in raters]
        order.append((m, AUTO_GT))
    return order


def select(rows, method: str, comparison: str, cohort: "str | None" = None, location: "str | None" = None) -> list:
    """The rows of one comparison (``R-R``: every rater-pair row), optionally one cohort/location."""
    def keep(r):
        if comparison == POOLED_RATERS:
            hit = r["kind"] == KIND_RATER_PAIR
        else:
            hit = r["method"] == method and r["comparison"] == comparison
        return hit and (cohort is None or r["cohort"] == cohort) and (location is None or r["location"] == location)
    return [r for r in rows if keep(r)]


def finite_mean_sd(values) -> dict:
    """n, n_inf (infinite values), mean and population SD (ddof=0) of the finite values;
    mean/SD are NaN only when no finite value exists."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return {"n": int(values.size), "n_inf": int(np.count_nonzero(np.isinf(values))),
            "mean": float(finite.mean()) if finite.size else math.nan,
            "sd": float(finite.std()) if finite.size else math.nan}


def cohorts_present(rows) -> list:
    seen = {r["cohort"] for r in rows}
    return [c for c in COHORT_ORDER if c in seen] + sorted(seen - set(COHORT_ORDER))


def locations_present(rows, cohort: str) -> list:
    seen = {r["location"] for r in rows if r["cohort"] == cohort}
    return [loc for loc in LOCATIONS if loc in seen] + sorted(seen - set(LOCATIONS))


def summary_rows(evaluation: Evaluation, location_cohort: str = "patient") -> list:
    """Mean/SD/n per (method, comparison, cohort, location) in the paper's layout.

    ``location`` is ``all`` for the whole cohort; the cohort ``location_cohort`` is
    further broken down by thigh location (the paper's patients). Keys: method,
    comparison, cohort, location, n, and for every metric ``<m>_mean``, ``<m>_sd``,
    ``<m>_n_inf``.
    """
    rows = evaluation.rows
    groups = [(c, "all") for c in cohorts_present(rows)]
    if location_cohort in {r["cohort"] for r in rows}:
        groups += [(location_cohort, loc) for loc in locations_present(rows, location_cohort)]
    out = []
    for cohort, location in groups:
        for method, comparison in comparison_order(evaluation.dataset.raters, evaluation.method_names):
            chosen = select(rows, method, comparison, cohort, None if location == "all" else location)
            if not chosen:
                continue
            entry = {"method": method, "comparison": comparison, "cohort": cohort, "location": location,
                     "n": len(chosen)}
            for key, _ in METRICS:
                d = finite_mean_sd([r[key] for r in chosen])
                entry.update({f"{key}_mean": d["mean"], f"{key}_sd": d["sd"], f"{key}_n_inf": d["n_inf"]})
            out.append(entry)
    return out


def rank_safe(*groups) -> list:
    """The groups with +inf replaced by one value larger than every finite value of all
    groups (so that a rank test treats an infinite distance as the worst, consistently)."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays] + [np.zeros(1)])
    worst = 2.0 * float(np.abs(finite).max()) + 1.0
    return [np.where(np.isposinf(a), worst, a) for a in arrays]


def mann_whitney_rows(evaluation: Evaluation) -> list:
    """Two-sided Mann-Whitney U of Auto-GT (per method) against R-R per cohort and metric."""
    out = []
    for method in evaluation.method_names:
        for cohort in cohorts_present(evaluation.rows):
            auto = select(evaluation.rows, method, AUTO_GT, cohort)
            pooled = select(evaluation.rows, "", POOLED_RATERS, cohort)
            for key, _ in METRICS:
                a, b = [r[key] for r in auto], [r[key] for r in pooled]
                entry = {"test": "mann-whitney-u", "metric": key, "cohort": cohort,
                         "group_a": f"{AUTO_GT} ({method})", "group_b": POOLED_RATERS,
                         "n_a": len(a), "n_b": len(b), "n_inf_a": _n_inf(a), "n_inf_b": _n_inf(b)}
                if not a or not b:
                    entry.update(statistic=math.nan, p_value=math.nan,
                                 note="not computed: a group is empty" + ("" if b else " (fewer than two raters)"))
                else:
                    res = stats.mannwhitneyu(*rank_safe(a, b), alternative="two-sided")
                    entry.update(statistic=float(res.statistic), p_value=float(res.pvalue), note="")
                out.append(entry)
    return out


def wilcoxon_rows(evaluation: Evaluation) -> list:
    """Paired two-sided Wilcoxon signed-rank of Auto-GT between every pair of methods, per
    cohort and metric, over the cases both methods have."""
    out = []
    for first, second in itertools.combinations(evaluation.method_names, 2):
        for cohort in cohorts_present(evaluation.rows):
            a_rows = {r["case"]: r for r in select(evaluation.rows, first, AUTO_GT, cohort)}
            b_rows = {r["case"]: r for r in select(evaluation.rows, second, AUTO_GT, cohort)}
            cases = sorted(set(a_rows) & set(b_rows))
            for key, _ in METRICS:
                a, b = rank_safe([a_rows[c][key] for c in cases], [b_rows[c][key] for c in cases])
                entry = {"test": "wilcoxon-signed-rank", "metric": key, "cohort": cohort,
                         "group_a": f"{AUTO_GT} ({first})", "group_b": f"{AUTO_GT} ({second})",
                         "n_a": len(cases), "n_b": len(cases), "n_inf_a": _n_inf([a_rows[c][key] for c in cases]),
                         "n_inf_b": _n_inf([b_rows[c][key] for c in cases])}
                if not cases:
                    entry.update(statistic=math.nan, p_value=math.nan, note="not computed: no case in common")
                elif np.all(a == b):
                    entry.update(statistic=math.nan, p_value=1.0, note="all paired differences are zero")
                else:
                    res = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
                    entry.update(statistic=float(res.statistic), p_value=float(res.pvalue), note="")
                out.append(entry)
    return out


def statistics_rows(evaluation: Evaluation) -> list:
    return mann_whitney_rows(evaluation) + wilcoxon_rows(evaluation)


def _n_inf(values) -> int:
    return int(np.count_nonzero(np.isinf(np.asarray(values, dtype=np.float64))))
