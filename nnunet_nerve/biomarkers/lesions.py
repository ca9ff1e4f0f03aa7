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

References of a region:

* the subject's own (default): centre = the median of the region's values over the slices
  where it is present (robust while lesions cover less than half of the region), spread =
  the slice-to-slice noise 1.4826 x median |x[i+1] - x[i]| / sqrt(2) over those slices in
  order (segmentation jitter; a smooth swelling hardly changes it). A region present on
  fewer than ``MIN_REFERENCE_SLICES`` (5) slices has no reference of its own; its slices are
  not judged (listed in the summary).
* normative (``NormativeReference``, from volunteers), kept per thigh location (distal,
  medial, proximal, and ``all`` pooled): centre = the median of the volunteers' own medians,
  spread = sqrt(sd_between^2 + noise^2), sd_between the standard deviation (ddof 1) of the
  volunteers' medians and noise the median of their slice-to-slice noise. Only volunteers
  showing the region on at least ``MIN_REFERENCE_SLICES`` slices contribute. A location's
  region needs at least ``MIN_REFERENCE_VOLUNTEERS`` (3) contributing volunteers; below
  that it is refused, and the region falls back to the subject's own reference, said in
  the summary. A scan of unknown location is compared with ``all``, said in the summary.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nnunet_nerve.errors import NerveError
from nnunet_nerve.parameters import require_number

REGIONS = ("sciatic", "tibial", "peroneal")
#: 1.4826 x a median absolute value estimates the standard deviation of normal values.
MAD_TO_SD = 1.4826
MIN_REFERENCE_SLICES = 5
MIN_REFERENCE_VOLUNTEERS = 3
#: The pooled location of a normative reference, used for scans whose location is unknown.
ALL_LOCATIONS = "all"
REFERENCE_FORMAT = 2
#: What each slice region is judged as: (column prefix, reference region) per part.
_PARTS = {"sciatic": (("", "sciatic"),), "merged": (("", "merged"),),
          "split": (("tibial_", "tibial"), ("peroneal_", "peroneal")),
          "tibial": (("tibial_", "tibial"),), "peroneal": (("peroneal_", "peroneal"),)}


@dataclass(frozen=True)
class LesionRule:
    """Threshold = centre + max(k x spread, min_excess x centre); see the module docstring."""

    k: float = 3.0
    min_excess: float = 0.2
    min_slices: int = 2

    def __post_init__(self):
        """k > 0 (k <= 0 puts the threshold at or below the centre: half the nerve or all of it
        would be 'lesion'), min_excess >= 0, min_slices an integer >= 1."""
        require_number(self.k, "--k", above=0)
        require_number(self.min_excess, "--min-excess", minimum=0)
        require_number(self.min_slices, "--min-lesion-slices", minimum=1, integer=True)

    def threshold(self, centre: float, spread: float) -> float:
        if centre is None or not np.isfinite(centre):
            return math.nan
        spread = spread if spread is not None and np.isfinite(spread) else 0.0
        return float(centre + max(self.k * spread, self.min_excess * abs(centre)))

    def text(self) -> str:
        """The rule in words, as summaries report it."""
        return (f"value > centre + max({self.k:g} x spread, {self.min_excess:g} x centre) on at least "
                f"{self.min_slices} consecutive nerve slice(s)")


def finite(values: Iterable) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def slice_noise(values: Sequence[float]) -> float:
    """Slice-to-slice noise of a profile: 1.4826 x median |x[i+1] - x[i]| / sqrt(2); nan below 2 values."""
    v = finite(values)
    if v.size < 2:
        return math.nan
    return float(MAD_TO_SD * np.median(np.abs(np.diff(v))) / math.sqrt(2))


def subject_reference(values: Sequence[float]) -> tuple[float, float]:
    """(median, slice_noise) of a profile in slice order; (nan, nan) when empty."""
    v = finite(values)
    return (float(np.median(v)) if v.size else math.nan), slice_noise(v)


def region_profile(rows: list, region: str, column: str) -> list:
    """The values of ``column`` (``csa_corrected_mm2`` or ``signal_mean_norm``) of one region
    in slice order: a branch's own column wherever it is separate, the slice's on trunk slices."""
    if region == "sciatic":
        return [r[column] for r in rows if r["region"] == "sciatic"]
    return [r[f"{region}_{column}"] for r in rows if r[f"{region}_{column}"] is not None]


@dataclass
class RegionReference:
    """Centre and spread of the corrected CSA (mm²) and of the normalised mean signal of one region."""

    label: str
    slices: int
    csa_centre_mm2: float
    csa_spread_mm2: float
    signal_centre: float
    signal_spread: float

    def with_thresholds(self, rule: LesionRule) -> dict:
        """The fields as a dict plus the CSA and signal thresholds ``rule`` derives from them."""
        return {**asdict(self), "csa_threshold_mm2": rule.threshold(self.csa_centre_mm2, self.csa_spread_mm2),
                "signal_threshold": rule.threshold(self.signal_centre, self.signal_spread)}


def subject_region_reference(rows: list, region: str) -> "RegionReference | None":
    """The subject's own reference of a region; None below MIN_REFERENCE_SLICES slices."""
    csa = region_profile(rows, region, "csa_corrected_mm2")
    if len(finite(csa)) < MIN_REFERENCE_SLICES:
        return None
    signal = region_profile(rows, region, "signal_mean_norm")
    return RegionReference(f"subject {region}", len(csa), *subject_reference(csa), *subject_reference(signal))


def merged_reference(tibial: "RegionReference | None", peroneal: "RegionReference | None"
                     ) -> "RegionReference | None":
    """Both branches in one piece (module docstring); None unless both branches have a reference."""
    if tibial is None or peroneal is None:
        return None
    signal = [v for v in (tibial.signal_centre, peroneal.signal_centre)]
    spreads = finite([tibial.signal_spread, peroneal.signal_spread])
    return RegionReference(f"{tibial.label} + {peroneal.label}", 0,
                           tibial.csa_centre_mm2 + peroneal.csa_centre_mm2,
                           math.hypot(tibial.csa_spread_mm2, peroneal.csa_spread_mm2),
                           float(np.mean(signal)), float(spreads.max()) if spreads.size else math.nan)


@dataclass
class NormativeReference:
    """Per thigh location (and ``all``) and region: the volunteers' reference (module docstring).

    ``regions[location][region]`` holds the centre and spread fields of RegionReference and
    the contributing ``cases``; ``volunteers[location]`` lists every volunteer of the location.
    """

    source: str
    volunteers: dict
    regions: dict
    min_volunteers: int = MIN_REFERENCE_VOLUNTEERS

    @classmethod
    def from_results(cls, source: str, results: dict, locations: "dict | None" = None,
                     min_volunteers: int = MIN_REFERENCE_VOLUNTEERS) -> "NormativeReference":
        """``results``: case -> NerveBiomarkers of the volunteers' normal nerves;
        ``locations``: case -> thigh location (missing or ``n/a``: only in ``all``)."""
        found = {case: res for case, res in results.items() if res.nerve_found}
        if not found:
            raise NerveError(f"{source}: the reference cases hold no nerve voxels")
        locations = locations or {}
        groups = {ALL_LOCATIONS: sorted(found)}
        for case in sorted(found):
            location = locations.get(case)
            if location and location != "n/a":
                groups.setdefault(location, []).append(case)
        regions = {}
        for location, cases in groups.items():
            regions[location] = {}
            for region in REGIONS:
                stats = _pooled(region, {c: found[c] for c in cases})
                if stats is not None:
                    regions[location][region] = stats
        return cls(str(source), groups, regions, min_volunteers)

    def for_location(self, location: "str | None") -> tuple[dict, list]:
        """({region: RegionReference} usable for a scan at ``location``, notes on what was
        refused as (region or None, text))."""
        notes = []
        key = location if location and location != "n/a" else None
        if key is None:
            key = ALL_LOCATIONS
            notes.append((None, f"location unknown: compared with the volunteers of every location ({self.source})"))
        elif key not in self.volunteers:
            notes.append((None, f"the normative reference has no volunteer at the {key} thigh; "
                                "every region is compared with the subject's own nerve"))
            return {}, notes
        out = {}
        for region in REGIONS:
            stats = self.regions.get(key, {}).get(region)
            n = len(stats["cases"]) if stats else 0
            if n < self.min_volunteers:
                notes.append((region, f"{key} {region}: normative reference refused, {n} volunteer(s) show it on at "
                                      f"least {MIN_REFERENCE_SLICES} slices (minimum {self.min_volunteers}); "
                                      "compared with the subject's own nerve"))
                continue
            out[region] = RegionReference(f"normative {key} {region} ({n} volunteers)", stats["slices"],
                                          stats["csa_centre_mm2"], stats["csa_spread_mm2"],
                                          stats["signal_centre"], stats["signal_spread"])
        return out, notes

    def to_json(self) -> dict:
        return {"format": REFERENCE_FORMAT, **asdict(self)}

    @classmethod
    def from_json_file(cls, path: "str | os.PathLike") -> "NormativeReference":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise NerveError(f"{path}: not a normative reference written by `nnunet-nerve biomarkers` ({e})") from None
        if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
            raise NerveError(f"{path}: not a normative reference of format {REFERENCE_FORMAT} (per location and "
                             "region); build it again with --reference DATASET_OR_REGISTRY")
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as e:
            raise NerveError(f"{path}: normative reference lacks {e}") from None


def _pooled(region: str, results: dict) -> "dict | None":
    """Centre/spread of a region over volunteers showing it on MIN_REFERENCE_SLICES slices or more."""
    own = {}
    for case, res in results.items():
        csa = finite(region_profile(res.slices, region, "csa_corrected_mm2"))
        if csa.size >= MIN_REFERENCE_SLICES:
            own[case] = (csa, finite(region_profile(res.slices, region, "signal_mean_norm")))
    if not own:
        return None
    out = {"cases": sorted(own), "slices": int(sum(csa.size for csa, _ in own.values()))}
    for key, index in (("csa", 0), ("signal", 1)):
        refs = [subject_reference(values[index]) for values in own.values()]
        medians, noise = finite(m for m, _ in refs), finite(s for _, s in refs)
        between = float(np.std(medians, ddof=1)) if medians.size > 1 else 0.0
        within = float(np.median(noise)) if noise.size else 0.0
        centre = float(np.median(medians)) if medians.size else math.nan
        suffix = "_mm2" if key == "csa" else ""
        out[f"{key}_centre{suffix}"] = centre
        out[f"{key}_spread{suffix}"] = math.hypot(between, within) if medians.size else math.nan
    return out


def flag_lesions(rows: list, nerve_z: list, rule: LesionRule, reference: "NormativeReference | None" = None,
                 location: "str | None" = None) -> tuple[dict, np.ndarray]:
    """Flag every nerve slice part by part (module docstring), writing ``csa_lesion``,
    ``signal_lesion``, ``lesion``, ``lesion_reference``, ``csa_threshold_mm2`` and the
    branches' ``<branch>_lesion`` / ``<branch>_csa_threshold_mm2`` into ``rows``.
    Returns (the summary's ``lesion`` entry, flags per slice)."""
    own = {region: subject_region_reference(rows, region) for region in REGIONS}
    refs, notes = dict(own), []
    if reference is not None:
        normative, refused = reference.for_location(location)
        present = {region for z in nerve_z for _, region in _PARTS[rows[z]["region"]]}
        if "merged" in present:
            present |= {"tibial", "peroneal"}
        notes = [text for region, text in refused if region is None or region in present]
        refs.update(normative)
        source = {"kind": "normative", "source": reference.source, "location": location}
    else:
        source = {"kind": "subject"}
    refs["merged"] = merged_reference(refs["tibial"], refs["peroneal"])
    flags = np.zeros(len(rows), dtype=bool)
    unjudged, counts = [], {"csa": 0, "signal": 0}
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
    isolated = _drop_short_runs(rows, nerve_z, flags, rule.min_slices)
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
        "burden": float(flags.sum() / n) if n else 0.0,
        "burden_csa": counts["csa"] / n if n else 0.0,
        "burden_signal": counts["signal"] / n if n else 0.0,
        "segments": lesion_segments(rows, flags),
    }
    return info, flags


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
    """Unflag runs of fewer than ``min_slices`` consecutive flagged nerve slices (all flags of
    their rows); returns those slices."""
    dropped, run = [], []
    for z in [*nerve_z, None]:
        if z is not None and flags[z] and (not run or z == run[-1] + 1):
            run.append(z)
            continue
        if 0 < len(run) < min_slices:
            dropped += run
        run = [z] if z is not None and flags[z] else []
    for z in dropped:
        flags[z] = False
        row = rows[z]
        row["csa_lesion"] = row["signal_lesion"] = row["lesion"] = False
        for branch in ("tibial", "peroneal"):
            if row.get(f"{branch}_lesion"):
                row[f"{branch}_lesion"] = False
    return dropped


def lesion_segments(rows: list, flags: np.ndarray) -> list:
    """Runs of consecutive flagged slices: extent in slices and mm, criteria and regions that fired."""
    out, z, n = [], 0, len(flags)
    sz = rows[1]["z_mm"] - rows[0]["z_mm"] if n > 1 else 0.0
    while z < n:
        if not flags[z]:
            z += 1
            continue
        start = z
        while z < n and flags[z]:
            z += 1
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
