"""Lesion flags along the nerve, each part compared with a reference of the same part.

Regions (``nerve_branches``): the sciatic trunk, the tibial and the peroneal branch. A
slice is judged part by part: a trunk slice against the ``sciatic`` reference, each branch
of a split slice (or a branch alone) against the reference of the same branch, a slice
where both branches are merged in one piece against the ``merged`` reference derived from
the two branches' (CSA centre = the sum of the branches' centres, spread = the root sum of
squares of their spreads; signal centre = the mean of the branches' centres, spread = the
larger of their spreads).

Rule (``LesionRule``): a part is above threshold when its obliquity-corrected CSA or its
normalised mean signal exceeds ``centre + max(k x spread, min_excess x centre)``
(defaults k = 3, min_excess = 0.2: at least 20 % above the centre); a slice is above
threshold when any of its parts is. Runs of at least ``min_slices`` (default 2)
consecutive nerve slices above threshold are lesion segments and their slices are flagged;
shorter runs are isolated outliers (a one-slice segmentation error is as large as a
lesion), listed in the summary but not flagged. At the paper's 4 mm slices, 2 slices are
8 mm: the focal lesions of interest span 1-4 cm.

Interpolated slices (rows marked ``interpolated``: post-processing filled voxels there over
a missed slice or branch) are not measurements: they are judged like any slice, but only
measured slices count towards ``min_slices``. So a run of flagged slices is a segment when
at least ``min_slices`` of its slices are measured; interpolated slices alone, or one
measured slice with interpolated ones beside it, make no lesion, while an interpolated
slice inside or at the edge of a lesion found from measured slices keeps it in one piece.

Extent (``LesionRule.extent``): the threshold decides that there is a lesion; against the
subject's own nerve (the default) where it lies is reported as its full width at half
maximum, the way the registry's truth ``lesion_first_slice`` / ``lesion_last_slice`` is
defined. For each region and criterion above threshold somewhere in a segment, the
run of consecutive nerve slices showing that region around its largest value in the
segment (its peak) where the value is at least centre + (peak - centre) / 2; the segment
becomes the slices from the first to the last slice of these runs (each region against its
own peak: the trunk just above its division is wider than the branches' scale). The slices
flagged ``lesion`` are those; a part or criterion is flagged there when its value is at or
above its half maximum. The half-maximum crossing sits on the steepest part of a flank, where
slice-to-slice noise moves it least, whereas the threshold crossing sits on the flank's
foot, 20 % above the centre: a lesion's extent no longer depends on how far its flank's foot
reaches over the threshold. Against a normative reference the extent stays the run above
threshold: the volunteers' centre is not this subject's normal nerve, so half of (peak -
centre) is not half of the lesion's swelling. ``extent="threshold"``: the run above
threshold always.

One swelling, one lesion (``LesionRule.min_separation``, half-maximum extents only): two
segments with fewer than ``min_separation`` nerve slices between them (default 4: a gap of
up to 3 slices, 12 mm at the paper's 4 mm slices) are one swelling whose values rose over
the threshold twice; its extent is the full width at half maximum of the longer segment
(ties: the one with the larger excess over its reference, in units of the rule's margin),
and the other's slices are unflagged and listed in ``secondary_segments``. The full width
at half maximum of one swelling lies around its main peak; a second, shorter run beside it
is the swelling's tail crossing the threshold again, typically where the trunk just above
the division is wider than its own reference (the trunk holds both branches' fascicles)
and a branch lesion's tail adds to it. Segments separated by a slice without nerve stay
separate. ``min_separation=1`` keeps every segment.

References (``references.py``): the subject's own nerve by default, or the volunteers of a
normative reference at the scan's thigh location. The subject's own references are
computed again without the slices of the segments found, until the segments no longer
change (at most MAX_REFERENCE_PASSES passes): a lesion covering a good part of a region
otherwise lifts the region's centre and hides its own flanks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnunet_nerve.biomarkers.references import (BRANCHES, MAX_REFERENCE_PASSES, NormativeReference,
                                                merged_reference, subject_references)
from nnunet_nerve.errors import NerveError
from nnunet_nerve.parameters import require_number

#: How a segment's extent is reported: its run above threshold, or its full width at half maximum.
EXTENTS = ("half-maximum", "threshold")

#: What each slice region is judged as: (column prefix, reference region) per part.
_PARTS = {"sciatic": (("", "sciatic"),), "merged": (("", "merged"),),
          "split": (("tibial_", "tibial"), ("peroneal_", "peroneal")),
          "tibial": (("tibial_", "tibial"),), "peroneal": (("peroneal_", "peroneal"),)}


@dataclass(frozen=True)
class LesionRule:
    """Threshold = centre + max(k x spread, min_excess x centre); extent ``half-maximum`` or
    ``threshold``; see the module docstring."""

    k: float = 3.0
    min_excess: float = 0.2
    min_slices: int = 2
    extent: str = "half-maximum"
    min_separation: int = 4

    def __post_init__(self):
        """k > 0 (k <= 0 puts the threshold at or below the centre: half the nerve or all of it
        would be 'lesion'), min_excess >= 0, min_slices and min_separation integers >= 1,
        extent one of EXTENTS; NerveError otherwise."""
        require_number(self.k, "--k", above=0)
        require_number(self.min_excess, "--min-excess", minimum=0)
        require_number(self.min_slices, "--min-lesion-slices", minimum=1, integer=True)
        require_number(self.min_separation, "--min-lesion-separation", minimum=1, integer=True)
        if self.extent not in EXTENTS:
            raise NerveError(f"--lesion-extent {self.extent!r}: expected one of {', '.join(EXTENTS)}")

    def threshold(self, centre: float, spread: float) -> float:
        if centre is None or not np.isfinite(centre):
            return math.nan
        spread = spread if spread is not None and np.isfinite(spread) else 0.0
        return float(centre + max(self.k * spread, self.min_excess * abs(centre)))

    def text(self) -> str:
        """The rule in words, as summaries report it."""
        return (f"value > centre + max({self.k:g} x spread, {self.min_excess:g} x centre) on at least "
                f"{self.min_slices} consecutive nerve slice(s), interpolated slices not counted; extent: "
                + (f"full width at half maximum against the subject's own nerve, segments fewer than "
                   f"{self.min_separation} nerve slice(s) apart one lesion (the longer)" if self.extent == "half-maximum"
                   else "the slices above threshold"))


def flag_lesions(rows: list, nerve_z: list, rule: LesionRule, reference: "NormativeReference | None" = None,
                 location: "str | None" = None) -> tuple[dict, np.ndarray]:
    """Flag every nerve slice part by part (module docstring), writing ``csa_lesion``,
    ``signal_lesion``, ``lesion``, ``lesion_reference``, ``csa_threshold_mm2`` and the
    branches' ``<branch>_lesion`` / ``<branch>_csa_threshold_mm2`` into ``rows``.
    Returns (the summary's ``lesion`` entry, flags per slice)."""
    notes, normative, source = [], {}, {"kind": "subject"}
    if reference is not None:
        normative, refused = reference.for_location(location)
        present = {region for z in nerve_z for _, region in _PARTS[rows[z]["region"]]}
        if "merged" in present:
            present |= set(BRANCHES)
        notes = [text for region, text in refused if region is None or region in present]
        source = {"kind": "normative", "source": reference.source, "location": location}
    skip, passes = frozenset(), 0
    while True:
        passes += 1
        refs = {**subject_references(rows, skip), **normative}
        refs["merged"] = merged_reference(refs["tibial"], refs["peroneal"])
        flags, unjudged = _judge(rows, nerve_z, refs, rule)
        isolated = _drop_short_runs(rows, nerve_z, flags, rule.min_slices)
        found = frozenset(int(z) for z in np.flatnonzero(flags))
        if found == skip or passes == MAX_REFERENCE_PASSES:
            break
        skip = found
    secondary = []
    if rule.extent == "half-maximum" and reference is None:
        _half_maximum_extent(rows, nerve_z, flags, refs, rule)
        secondary = _drop_secondary_segments(rows, nerve_z, flags, refs, rule)
    counts = {"csa": 0, "signal": 0}
    for z in nerve_z:
        counts["csa"] += bool(rows[z]["csa_lesion"])
        counts["signal"] += bool(rows[z]["signal_lesion"])
    n = len(nerve_z)
    info = {
        "reference": {**source, "notes": notes},
        "rule": rule.text(), "k": rule.k, "min_excess": rule.min_excess,
        "references": {region: ref.with_thresholds(rule) for region, ref in refs.items() if ref is not None},
        "unjudged_slices": sorted(set(unjudged)),
        "isolated_slices": isolated,
        "secondary_segments": secondary,
        "reference_passes": passes,
        "burden": float(flags.sum() / n) if n else 0.0,
        "burden_csa": counts["csa"] / n if n else 0.0,
        "burden_signal": counts["signal"] / n if n else 0.0,
        "segments": lesion_segments(rows, flags),
    }
    return info, flags


def _judge(rows: list, nerve_z: list, refs: dict, rule: LesionRule) -> tuple[np.ndarray, list]:
    """Each nerve slice's parts against their references (module docstring); writes the
    per-slice fields of ``flag_lesions`` and returns (flags per slice, unjudged slices)."""
    flags = np.zeros(len(rows), dtype=bool)
    unjudged = []
    for z in nerve_z:
        row = rows[z]
        hits, labels = {"csa": False, "signal": False}, []
        for prefix, region in _PARTS[row["region"]]:
            ref = refs.get(region)
            if ref is None:
                unjudged.append(z)
                labels.append(f"none ({region}: no reference)")
                continue
            labels.append(ref.label)
            thresholds = {"csa": rule.threshold(ref.csa_centre_mm2, ref.csa_spread_mm2),
                          "signal": rule.threshold(ref.signal_centre, ref.signal_spread)}
            part_hit = False
            for key, column in (("csa", "csa_corrected_mm2"), ("signal", "signal_mean_norm")):
                value = row[f"{prefix}{column}"]
                hit = value is not None and np.isfinite(thresholds[key]) and value > thresholds[key]
                hits[key] |= bool(hit)
                part_hit |= bool(hit)
            row[f"{prefix}csa_threshold_mm2"] = thresholds["csa"]
            if prefix:
                row[f"{prefix}lesion"] = part_hit
        row["csa_lesion"], row["signal_lesion"] = hits["csa"], hits["signal"]
        row["lesion"] = hits["csa"] or hits["signal"]
        row["lesion_reference"] = "; ".join(labels)
        flags[z] = row["lesion"]
    return flags, unjudged



def _excesses(row: dict, refs: dict, rule: LesionRule) -> dict:
    """{(reference region, criterion): (value - centre) / (threshold - centre)} of a slice's
    parts: each value's excess over its reference's centre in units of the rule's margin
    (1 at the threshold); parts or criteria without a reference or value are left out."""
    out = {}
    for prefix, region in _PARTS[row["region"]]:
        ref = refs.get(region)
        if ref is None:
            continue
        for key, column, centre, spread in (("csa", "csa_corrected_mm2", ref.csa_centre_mm2, ref.csa_spread_mm2),
                                            ("signal", "signal_mean_norm", ref.signal_centre, ref.signal_spread)):
            value = row[f"{prefix}{column}"]
            margin = rule.threshold(centre, spread) - centre if centre is not None else math.nan
            if value is not None and np.isfinite(value) and np.isfinite(margin) and margin > 0:
                out[(region, key)] = (value - centre) / margin
    return out


def _half_maximum_extent(rows: list, nerve_z: list, flags: np.ndarray, refs: dict, rule: LesionRule) -> None:
    """Replace each segment found by the threshold with the span of its regions' full widths
    at half maximum (module docstring), in ``flags`` and the rows' flags."""
    on_nerve = set(int(z) for z in nerve_z)
    excess = {z: _excesses(rows[z], refs, rule) for z in on_nerve}
    levels = {}  # slice -> {(region, criterion): half-maximum level in margin units}
    for run in flagged_runs(flags):
        first, last, keyed = run.stop, run.start, {}
        for key in {k for i in run for k, v in excess[i].items() if v > 1}:
            peak = max((i for i in run if key in excess[i]), key=lambda i: excess[i][key])
            level = excess[peak][key] / 2
            lo = hi = peak
            while lo - 1 in on_nerve and excess[lo - 1].get(key, -math.inf) >= level:
                lo -= 1
            while hi + 1 in on_nerve and excess[hi + 1].get(key, -math.inf) >= level:
                hi += 1
            first, last, keyed[key] = min(first, lo), max(last, hi), level
        for i in range(first, last + 1):
            for key, level in keyed.items():
                levels.setdefault(i, {})[key] = min(level, levels.get(i, {}).get(key, math.inf))
    for z in on_nerve:
        row, level = rows[z], levels.get(z)
        flags[z] = level is not None
        above = {k for k, v in excess[z].items() if level is not None and v >= level.get(k, 1.0)}
        row["csa_lesion"] = any(c == "csa" for _, c in above)
        row["signal_lesion"] = any(c == "signal" for _, c in above)
        row["lesion"] = bool(flags[z])
        for prefix, region in _PARTS[row["region"]]:
            if prefix:
                row[f"{prefix}lesion"] = any(r == region for r, _ in above)


def _drop_secondary_segments(rows: list, nerve_z: list, flags: np.ndarray, refs: dict, rule: LesionRule) -> list:
    """Of two segments fewer than ``rule.min_separation`` nerve slices apart, unflag the shorter
    (ties: the smaller peak excess in margin units; then the later); module docstring. Returns
    the unflagged segments as [first slice, last slice]."""
    on_nerve = set(int(z) for z in nerve_z)

    def rank(run: range) -> tuple:
        peak = max((v for i in run for v in _excesses(rows[i], refs, rule).values()), default=-math.inf)
        return len(run), peak

    dropped = []
    while True:
        runs = flagged_runs(flags)
        close = [(a, b) for a, b in zip(runs, runs[1:])
                 if b.start - a.stop < rule.min_separation and all(z in on_nerve for z in range(a.stop, b.start))]
        if not close:
            return sorted(dropped)
        a, b = close[0]
        shorter = b if rank(a) >= rank(b) else a
        _unflag(rows, flags, shorter)
        dropped.append([shorter.start, shorter.stop - 1])


def _unflag(rows: list, flags: np.ndarray, slices) -> None:
    """Clear every lesion flag of these slices (the slice's and its parts')."""
    for z in slices:
        flags[z] = False
        row = rows[z]
        row["csa_lesion"] = row["signal_lesion"] = row["lesion"] = False
        for branch in ("tibial", "peroneal"):
            if row.get(f"{branch}_lesion"):
                row[f"{branch}_lesion"] = False


def slice_parts(row: dict) -> tuple:
    """(column prefix, reference region) of each part a slice is judged as (module docstring)."""
    return _PARTS[row["region"]]


def normative_csa_ranges(reference: "NormativeReference", location: "str | None", rule: LesionRule) -> dict:
    """{region: (low, high)} of the obliquity-corrected CSA (mm²) for a scan at ``location``:
    centre -/+ the lesion rule's margin max(k x spread, min_excess x centre), for every region
    the normative reference holds there (``merged`` derived from both branches); regions it
    refuses are missing."""
    refs, _ = reference.for_location(location)
    refs["merged"] = merged_reference(refs.get("tibial"), refs.get("peroneal"))
    ranges = {}
    for region, ref in refs.items():
        if ref is None or not np.isfinite(ref.csa_centre_mm2):
            continue
        margin = rule.threshold(ref.csa_centre_mm2, ref.csa_spread_mm2) - ref.csa_centre_mm2
        ranges[region] = (ref.csa_centre_mm2 - margin, ref.csa_centre_mm2 + margin)
    return ranges


def _drop_short_runs(rows: list, nerve_z: list, flags: np.ndarray, min_slices: int) -> list:
    """Unflag runs of consecutive flagged nerve slices holding fewer than ``min_slices``
    measured (not interpolated) slices (all flags of their rows); returns those slices."""
    dropped, run = [], []
    for z in [*nerve_z, None]:
        if z is not None and flags[z] and (not run or z == run[-1] + 1):
            run.append(z)
            continue
        if run and sum(not rows[r].get("interpolated") for r in run) < min_slices:
            dropped += run
        run = [z] if z is not None and flags[z] else []
    _unflag(rows, flags, dropped)
    return dropped


def flagged_runs(flags) -> list:
    """The runs of consecutive flagged slices, as ranges of slice indices."""
    runs, z, n = [], 0, len(flags)
    while z < n:
        if not flags[z]:
            z += 1
            continue
        start = z
        while z < n and flags[z]:
            z += 1
        runs.append(range(start, z))
    return runs


def lesion_segments(rows: list, flags: np.ndarray) -> list:
    """Runs of consecutive flagged slices: extent in slices and mm, criteria and regions that fired."""
    out, n = [], len(flags)
    sz = rows[1]["z_mm"] - rows[0]["z_mm"] if n > 1 else 0.0
    for run in flagged_runs(flags):
        start, z = run.start, run.stop
        seg = rows[start:z]
        regions = set()
        for r in seg:
            for prefix, region in _PARTS[r["region"]]:
                if (r.get(f"{prefix}lesion") if prefix else r["lesion"]):
                    regions.add(region)
        out.append({"first_slice": start, "last_slice": z - 1, "start_mm": seg[0]["z_mm"],
                    "end_mm": seg[-1]["z_mm"], "length_mm": (z - start) * sz,
                    "criteria": sorted({c for r in seg for c in ("csa", "signal") if r[f"{c}_lesion"]}),
                    "regions": sorted(regions),
                    "max_csa_corrected_mm2": max(r["csa_corrected_mm2"] for r in seg)})
    return out
