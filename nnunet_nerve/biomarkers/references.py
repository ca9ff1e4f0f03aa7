"""The references a nerve's parts are compared with: centre and spread of the obliquity-
corrected CSA (mm²) and of the normalised mean signal, per region (``sciatic`` trunk,
``tibial`` and ``peroneal`` branch; ``merged`` derived from both branches).

* The subject's own (default, ``subject_references``): centre = the median of the region's
  values over the slices where it is present, leaving out the slices of the lesion
  segments found so far (``lesions.flag_lesions`` passes them) while at least
  ``MIN_REFERENCE_SLICES`` (5) remain. Spread = the region's slice-to-slice noise from
  second differences, 1.4826 x median |x[i-1] - 2 x[i] + x[i+1]| / sqrt(6) (a steady trend,
  such as a lesion's flank or the thigh's taper, is not noise), over the same slices in
  order, when the region shows on at least ``OWN_NOISE_SLICES`` (8) of them; a shorter
  region, whose few values would mostly measure its own shape, takes the segmentation
  jitter pooled over the whole nerve (``jitter_noise``) times the square root of its
  centre. A branch is never wider than the trunk it leaves (it holds a part of the trunk's
  fascicles): a branch shown on fewer than ``MIN_REFERENCE_SLICES`` slices is compared with
  the trunk's reference, and a branch whose own CSA centre exceeds the trunk's (swollen over
  most of its length) takes the trunk's CSA centre and spread; the label says so. The trunk
  holds both branches' fascicles in one sheath: a trunk whose own CSA centre exceeds
  ``TRUNK_OVER_BRANCHES_MAX`` (1.2) times the sum of both branches' own centres (swollen over
  most of a short trunk) takes that product as its CSA centre, keeping its spread; the label
  says so. It is applied before the branches' cap, and only when both branches have
  references of their own. Without
  a trunk reference, a region on fewer than ``MIN_REFERENCE_SLICES`` slices has none; its
  slices are not judged (listed in the summary).
* ``merged``: CSA centre = the sum of the branches' centres, spread = the root sum of
  squares of their spreads; signal centre = the mean of the branches' centres, spread =
  the larger of their spreads.
* Normative (``NormativeReference``, from volunteers), kept per thigh location (distal,
  medial, proximal, and ``all`` pooled): centre = the median of the volunteers' own medians,
  spread = sqrt(sd_between^2 + noise^2), sd_between the standard deviation (ddof 1) of the
  volunteers' medians and noise the median of their slice-to-slice noise (second
  differences, as above). Only volunteers showing the region on at least
  ``MIN_REFERENCE_SLICES`` slices contribute. A location's region needs at least
  ``MIN_REFERENCE_VOLUNTEERS`` (3) contributing volunteers; below that it is refused, and
  the region falls back to the subject's own reference, said in the summary. A scan of
  unknown location is compared with ``all``, said in the summary.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from nnunet_nerve.errors import NerveError

if TYPE_CHECKING:
    from nnunet_nerve.biomarkers.lesions import LesionRule

REGIONS = ("sciatic", "tibial", "peroneal")
BRANCHES = ("tibial", "peroneal")
#: At most this many passes of the subject's own references (each without the segments found by the last).
MAX_REFERENCE_PASSES = 5
#: A region shown on fewer slices than this takes the noise pooled over the whole nerve (``jitter_noise``).
OWN_NOISE_SLICES = 8
#: 1.4826 x a median absolute value estimates the standard deviation of normal values.
MAD_TO_SD = 1.4826
MIN_REFERENCE_SLICES = 5
#: The trunk's CSA centre is at most this times the sum of its branches' (``subject_references``).
TRUNK_OVER_BRANCHES_MAX = 1.2
MIN_REFERENCE_VOLUNTEERS = 3
#: The pooled location of a normative reference, used for scans whose location is unknown.
ALL_LOCATIONS = "all"
REFERENCE_FORMAT = 2


def finite(values: Iterable) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def slice_noise(values: Sequence[float]) -> float:
    """Slice-to-slice noise of a profile in slice order, from its second differences:
    1.4826 x median |x[i-1] - 2 x[i] + x[i+1]| / sqrt(6), so that a steady trend along the
    nerve (a lesion's flank, the thigh's taper) is not counted as noise; with two values
    1.4826 x |x[1] - x[0]| / sqrt(2); nan below two values."""
    v = finite(values)
    if v.size < 2:
        return math.nan
    if v.size == 2:
        return float(MAD_TO_SD * abs(v[1] - v[0]) / math.sqrt(2))
    return float(MAD_TO_SD * np.median(np.abs(np.diff(v, n=2))) / math.sqrt(6))


def subject_reference(values: Sequence[float]) -> tuple[float, float]:
    """(median, slice_noise) of a profile in slice order; (nan, nan) when empty."""
    v = finite(values)
    return (float(np.median(v)) if v.size else math.nan), slice_noise(v)


def region_profile(rows: list, region: str, column: str, skip: "set | frozenset" = frozenset()) -> list:
    """The values of ``column`` (``csa_corrected_mm2`` or ``signal_mean_norm``) of one region
    in slice order: a branch's own column wherever it is separate, the slice's on trunk
    slices; slices whose index is in ``skip`` are left out."""
    if region == "sciatic":
        return [r[column] for z, r in enumerate(rows) if r["region"] == "sciatic" and z not in skip]
    return [r[f"{region}_{column}"] for z, r in enumerate(rows)
            if r[f"{region}_{column}"] is not None and z not in skip]


@dataclass
class RegionReference:
    """Centre and spread of the corrected CSA (mm²) and of the normalised mean signal of one region."""

    label: str
    slices: int
    csa_centre_mm2: float
    csa_spread_mm2: float
    signal_centre: float
    signal_spread: float

    def with_thresholds(self, rule: "LesionRule") -> dict:
        """The fields as a dict plus the CSA and signal thresholds ``rule`` derives from them."""
        return {**asdict(self), "csa_threshold_mm2": rule.threshold(self.csa_centre_mm2, self.csa_spread_mm2),
                "signal_threshold": rule.threshold(self.signal_centre, self.signal_spread)}


def jitter_noise(profiles: Iterable[Sequence[float]]) -> float:
    """Segmentation jitter per square root of area, pooled over several profiles (each in
    slice order): 1.4826 x median |x[i-1] - 2 x[i] + x[i+1]| / sqrt(x[i]) / sqrt(6) over
    every three consecutive values of every profile (a pixel of jitter moves the area in
    proportion to the perimeter, which grows with the square root of the area); nan
    without three values in any profile."""
    ratios = []
    for values in profiles:
        v = finite(values)
        if v.size >= 3:
            ratios.extend(np.abs(np.diff(v, n=2)) / np.sqrt(np.abs(v[1:-1])))
    if not ratios:
        return math.nan
    return float(MAD_TO_SD * np.median(ratios) / math.sqrt(6))


def subject_references(rows: list, skip: "set | frozenset" = frozenset()) -> dict:
    """{region: RegionReference or None}: the subject's own nerve as the reference (module
    docstring): centre = the median of the region's values outside ``skip`` (the slices of
    the lesion segments found so far) while MIN_REFERENCE_SLICES remain, else of all of them;
    spread = their ``slice_noise`` on OWN_NOISE_SLICES values or more, else ``jitter_noise``
    pooled over all regions x sqrt(centre); the trunk's CSA centre at most
    TRUNK_OVER_BRANCHES_MAX x the branches' together; a branch never above the trunk."""
    values = {}
    for region in REGIONS:
        csa = region_profile(rows, region, "csa_corrected_mm2")
        kept = region_profile(rows, region, "csa_corrected_mm2", skip)
        use = skip if len(finite(kept)) >= MIN_REFERENCE_SLICES else frozenset()
        values[region] = (len(finite(csa)), kept if use else csa, region_profile(rows, region, "signal_mean_norm", use))
    pooled = [jitter_noise(v[index] for v in values.values()) for index in (1, 2)]
    refs = {}
    for region, (slices, csa, signal) in values.items():
        if slices < MIN_REFERENCE_SLICES:
            refs[region] = None
            continue
        (csa_centre, csa_noise), (signal_centre, signal_noise) = subject_reference(csa), subject_reference(signal)
        if len(finite(csa)) < OWN_NOISE_SLICES:
            csa_noise, signal_noise = pooled[0] * math.sqrt(csa_centre), pooled[1] * math.sqrt(signal_centre)
        refs[region] = RegionReference(f"subject {region}", slices, csa_centre, csa_noise, signal_centre, signal_noise)
    trunk = refs["sciatic"]
    if trunk is not None and refs["tibial"] is not None and refs["peroneal"] is not None:
        cap = TRUNK_OVER_BRANCHES_MAX * (refs["tibial"].csa_centre_mm2 + refs["peroneal"].csa_centre_mm2)
        if trunk.csa_centre_mm2 > cap:
            trunk = refs["sciatic"] = replace(
                trunk, label=f"{trunk.label} (CSA centre capped at {TRUNK_OVER_BRANCHES_MAX:g} x the branches' together)",
                csa_centre_mm2=cap)
    for branch in BRANCHES:
        ref = refs[branch]
        if trunk is None or values[branch][0] == 0:
            continue
        if ref is None:
            refs[branch] = replace(trunk, label=f"subject sciatic ({branch}: fewer than {MIN_REFERENCE_SLICES} "
                                                "slices of its own; a branch is never wider than the trunk)")
        elif ref.csa_centre_mm2 > trunk.csa_centre_mm2:
            refs[branch] = replace(ref, label=f"{ref.label} (CSA centre capped at the trunk's)",
                                   csa_centre_mm2=trunk.csa_centre_mm2, csa_spread_mm2=trunk.csa_spread_mm2)
    return refs


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
