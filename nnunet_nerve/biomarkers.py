"""Nerve biomarkers from a segmentation: cross-sectional area and signal along the stack,
branches, volume, length and lesion burden (the paper's Figure 5).

Geometry. Arrays are in ``SimpleITK.GetArrayFromImage`` order (z, y, x) with ``spacing`` in
the same order, in mm. Position along the stack is ``z_mm = slice index x spacing_z`` (0 at
the first slice of the image). All directions are taken in the voxel grid scaled to mm,
so the slice normal is the grid's z axis (the images' direction cosines are orthonormal).

Per slice (one row per slice of the stack; slices without nerve have zero area and empty
values elsewhere):

* ``csa_mm2`` = nerve voxels in the slice x spacing_y x spacing_x.
* ``cos_theta``: theta is the angle between the local centreline and the slice normal.
  The centreline is the sequence of nerve centroids (x_mm, y_mm, z_mm) of the slices that
  hold nerve; x and y are smoothed by a centred moving average over ``window`` of these
  slices (default 5, narrowed symmetrically at the ends so that a straight line stays
  exact); the direction at a slice is the difference of the smoothed centroids of its two
  neighbouring nerve slices (one-sided at the ends) and ``cos_theta = |dz| / |d|``. A nerve
  in a single slice has ``cos_theta = 1``.
* ``csa_corrected_mm2 = csa_mm2 x cos_theta``: a tube of true cross-section A cut at angle
  theta shows an area A / cos(theta) in the slice. On split slices each branch is corrected
  with its own centreline (below) and the slice's corrected CSA is the sum of the branches';
  ``cos_theta`` there is the ratio corrected / raw.
* Branches: 2D connected components of the slice (8-connectivity). A slice is ``split`` when
  its second-largest component holds at least ``min_branch_fraction`` (default 0.1) of the
  slice's nerve area; its two largest components are then the two branches and smaller
  fragments join the branch with the nearest centroid. Other nerve slices are ``sciatic``.
  Branches are tracked through each run of consecutive split slices by nearest centroids
  and named once per run: the peroneal is the branch lying more lateral on average when
  the imaged leg is known (``lateral_xy``), else the branch with the smaller mean area
  (the tibial division carries about two thirds of the sciatic nerve's fibres).
* Signal: the mean and median image intensity inside the nerve divided by the slice's
  reference, the median intensity of the slice's voxels in the image's middle intensity
  class outside the nerve: a three-class Otsu split of the whole image (128-bin histogram)
  separates air and bone cortex | muscle-like tissue | fat and fluid, so that in a T2 TSE
  without fat suppression the reference is skeletal muscle and the normalised signal a
  nerve-to-muscle ratio. A slice without such voxels uses the median over the image.

Per scan: ``volume_mm3`` = nerve voxels x voxel volume (``volume_ml`` = /1000);
``length_mm`` = (last - first nerve slice + 1) x spacing_z; ``centreline_length_mm`` =
sum over nerve slices of spacing_z / cos_theta; mean, median and max of the per-slice
CSAs over the nerve slices.

Lesions (``LesionRule``): a nerve slice is flagged when its corrected CSA or its
normalised mean signal exceeds ``centre + max(k x spread, min_excess x centre)`` (defaults
k = 3, min_excess = 0.2: at least 20 % above the centre). Against the subject's own nerve
(default): centre = the median over its nerve slices (robust while lesions cover less than
half of the nerve), spread = the slice-to-slice noise 1.4826 x median |x[i+1] - x[i]| / sqrt(2)
over consecutive nerve slices (segmentation jitter; a smooth swelling hardly changes it, so
it does not inflate the threshold the way a standard deviation would). Against a normative
reference (``NormativeReference``, e.g. a dataset's volunteers): centre = the median of the
volunteers' own medians, spread = sqrt(sd_between^2 + noise^2), sd_between the standard
deviation of the volunteers' medians and noise the median of their slice-to-slice noise.
``lesion_burden`` = flagged nerve slices / nerve slices (the fraction of the nerve's length,
every slice standing for spacing_z of nerve). Contiguous flagged slices form the lesion
segments.

An empty mask gives a result whose summary says ``nerve_found: false`` with zero volume,
no error.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from nnunet_nerve.errors import NerveError

#: Values of ``NerveBiomarkers.branch_labels``.
BRANCH_LABELS = {"sciatic": 1, "tibial": 2, "peroneal": 3}
SPLIT_BRANCHES = ("tibial", "peroneal")
#: 1.4826 x a median absolute value estimates the standard deviation of normal values.
MAD_TO_SD = 1.4826
DEFAULT_WINDOW = 5
DEFAULT_MIN_BRANCH_FRACTION = 0.1

SLICE_COLUMNS = (
    "slice", "z_mm", "region", "components", "voxels", "csa_mm2", "theta_deg", "cos_theta", "csa_corrected_mm2",
    "centroid_x_mm", "centroid_y_mm", "signal_mean", "signal_median", "signal_reference",
    "signal_mean_norm", "signal_median_norm", "csa_lesion", "signal_lesion", "lesion",
) + tuple(f"{b}_{c}" for b in SPLIT_BRANCHES
          for c in ("csa_mm2", "cos_theta", "csa_corrected_mm2", "signal_mean_norm", "signal_median_norm"))


@dataclass(frozen=True)
class LesionRule:
    """Threshold = centre + max(k x spread, min_excess x centre); see the module docstring."""

    k: float = 3.0
    min_excess: float = 0.2

    def threshold(self, centre: float, spread: float) -> float:
        if not np.isfinite(centre):
            return math.nan
        spread = spread if np.isfinite(spread) else 0.0
        return float(centre + max(self.k * spread, self.min_excess * abs(centre)))

    def describe(self) -> str:
        return f"value > centre + max({self.k:g} x spread, {self.min_excess:g} x centre)"


def _finite(values: Iterable) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def slice_noise(values: Sequence[float]) -> float:
    """Slice-to-slice noise of a profile: 1.4826 x median |x[i+1] - x[i]| / sqrt(2); nan below 2 values."""
    v = _finite(values)
    if v.size < 2:
        return math.nan
    return float(MAD_TO_SD * np.median(np.abs(np.diff(v))) / math.sqrt(2))


def subject_reference(values: Sequence[float]) -> tuple[float, float]:
    """(median, slice_noise) of a profile in slice order; (nan, nan) when empty."""
    v = _finite(values)
    return (float(np.median(v)) if v.size else math.nan), slice_noise(v)


@dataclass
class NormativeReference:
    """The lesion reference of a group of normal nerves (e.g. a dataset's volunteers):
    centre and spread of the corrected CSA (mm²) and of the normalised mean signal, built by
    ``from_results`` as the module docstring says."""

    source: str
    cases: list
    slices: int
    csa_median: float
    csa_spread: float
    signal_median: float
    signal_spread: float

    @classmethod
    def from_results(cls, source: str, results: "dict[str, NerveBiomarkers]") -> "NormativeReference":
        found = {case: res for case, res in results.items() if res.nerve_found}
        if not found:
            raise NerveError(f"{source}: the reference cases hold no nerve voxels")
        stats = {}
        for key, column in (("csa", "csa_corrected_mm2"), ("signal", "signal_mean_norm")):
            own = [subject_reference(res.nerve_values(column)) for res in found.values()]
            medians = _finite(m for m, _ in own)
            noise = _finite(n for _, n in own)
            between = float(np.std(medians, ddof=1)) if medians.size > 1 else 0.0
            within = float(np.median(noise)) if noise.size else 0.0
            centre = float(np.median(medians)) if medians.size else math.nan
            stats[key] = (centre, math.hypot(between, within))
        slices = sum(len(res.nerve_values("csa_corrected_mm2")) for res in found.values())
        return cls(str(source), sorted(found), slices, *stats["csa"], *stats["signal"])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json_file(cls, path: "str | os.PathLike") -> "NormativeReference":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise NerveError(f"{path}: not a normative reference written by `nnunet-nerve biomarkers` ({e})") from None


@dataclass
class NerveBiomarkers:
    """The result: one dict per slice (``SLICE_COLUMNS``), the per-scan summary, and what
    the plots need (branch label volume, per-slice lesion flags, the image)."""

    slices: list
    summary: dict
    spacing_zyx: tuple
    branch_labels: np.ndarray
    lesion_slices: np.ndarray
    image: "np.ndarray | None" = field(default=None, repr=False)

    @property
    def nerve_found(self) -> bool:
        return bool(self.summary["nerve_found"])

    def nerve_values(self, column: str) -> list:
        """The column's finite values over the slices that hold nerve."""
        return [r[column] for r in self.slices
                if r["voxels"] > 0 and r[column] is not None and np.isfinite(r[column])]


# ----------------------------------------------------------------------------- inputs

def binary_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """The mask as booleans; NerveError naming ``name`` unless every value is 0 or 1."""
    if ((mask != 0) & (mask != 1)).any():
        values = np.unique(mask)
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
        raise NerveError(f"{name}: mask is not binary (values {shown}); expected 0 = background and 1 = nerve")
    return mask.astype(bool)


def otsu_thresholds(values: np.ndarray, classes: int = 3, bins: int = 128) -> tuple:
    """Otsu's thresholds splitting ``values`` into 2 or 3 classes (maximal between-class
    variance over a ``bins``-bin histogram), ascending."""
    v = np.asarray(values)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return (lo,) * (classes - 1)
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w = np.r_[0, np.cumsum(hist)].astype(float)            # w[i] = count of bins < i
    m = np.r_[0, np.cumsum(hist * centres)]

    def score(a, b):  # sum over classes of (class sum)^2 / class count, bins a..b-1
        n, s_ = w[b] - w[a], m[b] - m[a]
        return np.where(n > 0, s_ ** 2 / np.maximum(n, 1), 0.0)

    i = np.arange(1, bins)
    if classes == 2:
        best = i[int(np.argmax(score(0, i) + score(i, bins)))]
        return (float(edges[best]),)
    a, b = np.meshgrid(i, i, indexing="ij")
    total = np.where(a < b, score(0, a) + score(a, b) + score(b, bins), -np.inf)
    ia, ib = np.unravel_index(int(np.argmax(total)), total.shape)
    return float(edges[i[ia]]), float(edges[i[ib]])


# ----------------------------------------------------------------------------- centreline

def smooth_track(points: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Centred moving average of an (n, d) track over ``window`` rows, narrowed symmetrically
    at the ends (a straight, evenly sampled track is returned unchanged)."""
    points = np.asarray(points, dtype=float)
    n, half = len(points), max(int(window) // 2, 0)
    out = np.empty_like(points)
    for i in range(n):
        h = min(half, i, n - 1 - i)
        out[i] = points[i - h:i + h + 1].mean(axis=0)
    return out


def track_cosines(xyz_mm: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """|cos(theta)| between the smoothed track's local direction and the z axis, per point.

    ``xyz_mm`` is (n, 3) with z increasing; x and y are smoothed (``smooth_track``), z is
    kept; the direction at i is point[i+1] - point[i-1] (one-sided at the ends). One point: 1.
    """
    xyz = np.asarray(xyz_mm, dtype=float)
    n = len(xyz)
    if n < 2:
        return np.ones(n)
    smoothed = xyz.copy()
    smoothed[:, :2] = smooth_track(xyz[:, :2], window)
    ahead = np.r_[1:n, n - 1]
    behind = np.r_[0, 0:n - 1]
    d = smoothed[ahead] - smoothed[behind]
    return np.abs(d[:, 2]) / np.linalg.norm(d, axis=1)


# ----------------------------------------------------------------------------- branches

@dataclass
class _SlicePieces:
    """The nerve in one slice: part labels (1, or 1 and 2 when split), part areas (voxels)
    and part centroids (x_mm, y_mm)."""

    labels: np.ndarray
    areas: list
    centroids: list
    components: int

    @property
    def split(self) -> bool:
        return len(self.areas) == 2


def slice_pieces(mask2d: np.ndarray, spacing_yx: Sequence[float], min_branch_fraction: float) -> _SlicePieces:
    """Split one slice into one part or two branch parts (see the module docstring)."""
    sy, sx = spacing_yx
    comp, n = ndimage.label(mask2d, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(comp.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-areas, kind="stable")
    if n >= 2 and areas[order[1]] >= min_branch_fraction * areas.sum():
        cy_cx = ndimage.center_of_mass(mask2d, comp, index=np.arange(1, n + 1))
        mm = np.array([(cx * sx, cy * sy) for cy, cx in cy_cx])
        lookup = np.zeros(n + 1, dtype=np.uint8)
        main = order[:2]
        for i in range(n):
            nearest = main[int(np.argmin(np.linalg.norm(mm[main] - mm[i], axis=1)))]
            lookup[i + 1] = 1 if nearest == main[0] else 2
        parts = lookup[comp]
    else:
        parts = mask2d.astype(np.uint8)
    labels = [1, 2] if parts.max() == 2 else [1]
    part_areas = [int((parts == p).sum()) for p in labels]
    centroids = [(cx * sx, cy * sy) for cy, cx in ndimage.center_of_mass(parts > 0, parts, index=labels)]
    return _SlicePieces(parts, part_areas, centroids, int(n))


def _split_runs(nerve_z: list, pieces: dict) -> list:
    """Runs (lists of slice indices) of consecutive nerve slices that are split."""
    runs, current = [], []
    for z in nerve_z:
        if pieces[z].split:
            current.append(z)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _track_run(run: list, pieces: dict) -> dict:
    """slice -> (part label of track A, part label of track B), by nearest centroids."""
    order = {run[0]: (1, 2)}
    prev = pieces[run[0]].centroids
    for z in run[1:]:
        c = np.array(pieces[z].centroids)
        p = np.array(prev)
        keep = np.linalg.norm(c[0] - p[0]) + np.linalg.norm(c[1] - p[1])
        swap = np.linalg.norm(c[1] - p[0]) + np.linalg.norm(c[0] - p[1])
        order[z] = (1, 2) if keep <= swap else (2, 1)
        prev = [pieces[z].centroids[order[z][0] - 1], pieces[z].centroids[order[z][1] - 1]]
    return order


def _name_tracks(run: list, order: dict, pieces: dict, lateral_xy) -> tuple[int, int]:
    """(track index of the tibial, of the peroneal) for a run; see the module docstring."""
    if lateral_xy is not None:
        lat = np.asarray(lateral_xy, dtype=float)
        score = [np.mean([np.dot(pieces[z].centroids[order[z][t] - 1], lat) for z in run]) for t in (0, 1)]
        peroneal = int(np.argmax(score))
    else:
        area = [np.mean([pieces[z].areas[order[z][t] - 1] for z in run]) for t in (0, 1)]
        peroneal = int(np.argmin(area))
    return 1 - peroneal, peroneal


# ----------------------------------------------------------------------------- signal

def slice_signal_references(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per slice: the median intensity of the image's middle intensity class outside the
    nerve. The classes come from a three-class Otsu split of the whole image (air and
    cortical bone | muscle-like intermediate tissue | fat and fluid); in a T2-weighted TSE
    without fat suppression the middle class is skeletal muscle, so the normalised signal
    is a nerve-to-muscle ratio. Slices without such voxels use the median over the image."""
    image = np.asarray(image)
    low, high = otsu_thresholds(image, classes=3)
    refs = np.full(image.shape[0], math.nan)
    for z in range(image.shape[0]):
        middle = (image[z] > low) & (image[z] <= high) & ~mask[z]
        if middle.any():
            refs[z] = float(np.median(image[z][middle]))
    if np.isnan(refs).any():
        middle = (image > low) & (image <= high) & ~mask
        refs[np.isnan(refs)] = float(np.median(image[middle])) if middle.any() else math.nan
    refs[~(refs > 0)] = math.nan
    return refs


def _signal(image2d: np.ndarray, where: np.ndarray, reference: float) -> tuple:
    values = image2d[where].astype(float)
    mean, median = float(values.mean()), float(np.median(values))
    return mean, median, mean / reference, median / reference


# ----------------------------------------------------------------------------- main entry

def nerve_biomarkers(mask: np.ndarray, spacing_zyx: Sequence[float], image: "np.ndarray | None" = None, *,
                     lateral_xy: "Sequence[float] | None" = None, rule: LesionRule = LesionRule(),
                     reference: "NormativeReference | None" = None, window: int = DEFAULT_WINDOW,
                     min_branch_fraction: float = DEFAULT_MIN_BRANCH_FRACTION) -> NerveBiomarkers:
    """Biomarkers of a binary nerve mask (z, y, x) with ``spacing_zyx`` in mm.

    ``image`` (same shape) gives the signal columns (empty without it). ``lateral_xy`` is
    the unit vector (x, y), in the grid's in-plane mm axes, pointing laterally for the imaged
    leg (names the branches; see the module docstring). ``reference`` replaces the
    subject's own reference for lesion thresholds.
    """
    mask = binary_mask(np.asarray(mask))
    if mask.ndim != 3:
        raise NerveError(f"mask: expected a 3D mask (z, y, x), got {mask.ndim} dimensions")
    if image is not None and np.shape(image) != mask.shape:
        raise NerveError(f"image: shape {np.shape(image)} differs from the mask's {mask.shape}")
    sz, sy, sx = (float(s) for s in spacing_zyx)
    pixel_area = sy * sx
    nz = mask.shape[0]
    nerve_z = [int(z) for z in np.flatnonzero(mask.reshape(nz, -1).any(axis=1))]
    pieces = {z: slice_pieces(mask[z], (sy, sx), min_branch_fraction) for z in nerve_z}
    refs = slice_signal_references(image, mask) if image is not None else np.full(nz, math.nan)

    rows = [_empty_row(z, sz) for z in range(nz)]
    if nerve_z:
        centroid_mm = {z: _centroid(mask[z], sy, sx) for z in nerve_z}
        cosines = track_cosines(np.array([(*centroid_mm[z], z * sz) for z in nerve_z]), window)
        for z, cos in zip(nerve_z, cosines):
            row = rows[z]
            voxels = int(mask[z].sum())
            row.update(region="split" if pieces[z].split else "sciatic", components=pieces[z].components,
                       voxels=voxels, csa_mm2=voxels * pixel_area, cos_theta=float(cos),
                       theta_deg=float(np.degrees(np.arccos(np.clip(cos, 0, 1)))),
                       csa_corrected_mm2=voxels * pixel_area * float(cos),
                       centroid_x_mm=centroid_mm[z][0], centroid_y_mm=centroid_mm[z][1])
            if image is not None and np.isfinite(refs[z]):
                mean, median, mean_n, median_n = _signal(image[z], mask[z], refs[z])
                row.update(signal_mean=mean, signal_median=median, signal_reference=float(refs[z]),
                           signal_mean_norm=mean_n, signal_median_norm=median_n)

    branch_labels = np.zeros(mask.shape, dtype=np.uint8)
    for z in nerve_z:
        if not pieces[z].split:
            branch_labels[z][mask[z]] = BRANCH_LABELS["sciatic"]
    naming = "lateral" if lateral_xy is not None else "size"
    for run in _split_runs(nerve_z, pieces):
        order = _track_run(run, pieces)
        tracks = _name_tracks(run, order, pieces, lateral_xy)
        for name, track in zip(SPLIT_BRANCHES, tracks):
            parts = [order[z][track] for z in run]
            xyz = np.array([(*pieces[z].centroids[p - 1], z * sz) for z, p in zip(run, parts)])
            cosines = track_cosines(xyz, window) if len(run) > 1 else [rows[run[0]]["cos_theta"]]
            for z, part, cos in zip(run, parts, cosines):
                where = pieces[z].labels == part
                branch_labels[z][where] = BRANCH_LABELS[name]
                area = pieces[z].areas[part - 1] * pixel_area
                rows[z].update({f"{name}_csa_mm2": area, f"{name}_cos_theta": float(cos),
                                f"{name}_csa_corrected_mm2": area * float(cos)})
                if image is not None and np.isfinite(refs[z]):
                    _, _, mean_n, median_n = _signal(image[z], where, refs[z])
                    rows[z].update({f"{name}_signal_mean_norm": mean_n, f"{name}_signal_median_norm": median_n})

    for z in nerve_z:
        row = rows[z]
        if row["region"] == "split":
            row["csa_corrected_mm2"] = sum(row[f"{b}_csa_corrected_mm2"] for b in SPLIT_BRANCHES)
            row["cos_theta"] = row["csa_corrected_mm2"] / row["csa_mm2"]
            row["theta_deg"] = float(np.degrees(np.arccos(np.clip(row["cos_theta"], 0, 1))))
    lesion_info, lesion_slices = _flag_lesions(rows, nerve_z, rule, reference)
    summary = _summary(mask, rows, nerve_z, (sz, sy, sx), branch_labels, lesion_info, naming, rule, window,
                       min_branch_fraction, image is not None)
    return NerveBiomarkers(rows, summary, (sz, sy, sx), branch_labels, lesion_slices, image)


def _empty_row(z: int, sz: float) -> dict:
    row = dict.fromkeys(SLICE_COLUMNS)
    row.update(slice=z, z_mm=z * sz, region="none", components=0, voxels=0, csa_mm2=0.0,
               csa_corrected_mm2=0.0, csa_lesion=False, signal_lesion=False, lesion=False)
    return row


def _centroid(mask2d: np.ndarray, sy: float, sx: float) -> tuple[float, float]:
    ys, xs = np.nonzero(mask2d)
    return float(xs.mean() * sx), float(ys.mean() * sy)


def _flag_lesions(rows: list, nerve_z: list, rule: LesionRule, reference) -> tuple[dict, np.ndarray]:
    """Per-slice flags (written into ``rows``), thresholds and segments."""
    flags = np.zeros(len(rows), dtype=bool)
    if reference is not None:
        basis = {"csa": (reference.csa_median, reference.csa_spread),
                 "signal": (reference.signal_median, reference.signal_spread)}
        source = {"kind": "normative", "source": reference.source, "cases": list(reference.cases),
                  "slices": reference.slices}
    else:
        basis = {"csa": subject_reference([rows[z]["csa_corrected_mm2"] for z in nerve_z]),
                 "signal": subject_reference([rows[z]["signal_mean_norm"] for z in nerve_z])}
        source = {"kind": "subject", "slices": len(nerve_z)}
    thresholds = {key: rule.threshold(*basis[key]) for key in basis}
    column = {"csa": "csa_corrected_mm2", "signal": "signal_mean_norm"}
    counts = {"csa": 0, "signal": 0}
    for z in nerve_z:
        row = rows[z]
        for key in ("csa", "signal"):
            value = row[column[key]]
            hit = value is not None and np.isfinite(thresholds[key]) and value > thresholds[key]
            row[f"{key}_lesion"] = bool(hit)
            counts[key] += bool(hit)
        row["lesion"] = row["csa_lesion"] or row["signal_lesion"]
        flags[z] = row["lesion"]
    n = len(nerve_z)
    info = {
        "reference": source,
        "rule": rule.describe(),
        "k": rule.k, "min_excess": rule.min_excess,
        "csa_centre_mm2": basis["csa"][0], "csa_spread_mm2": basis["csa"][1],
        "csa_threshold_mm2": thresholds["csa"],
        "signal_centre": basis["signal"][0], "signal_spread": basis["signal"][1],
        "signal_threshold": thresholds["signal"],
        "burden": float(flags.sum() / n) if n else 0.0,
        "burden_csa": counts["csa"] / n if n else 0.0,
        "burden_signal": counts["signal"] / n if n else 0.0,
        "segments": _segments(rows, flags),
    }
    return info, flags


def _segments(rows: list, flags: np.ndarray) -> list:
    """Runs of consecutive flagged slices, with their extent in mm and the criteria that fired."""
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
        out.append({"first_slice": start, "last_slice": z - 1, "start_mm": seg[0]["z_mm"],
                    "end_mm": seg[-1]["z_mm"], "length_mm": (z - start) * sz,
                    "criteria": sorted({c for r in seg for c in ("csa", "signal") if r[f"{c}_lesion"]}),
                    "max_csa_corrected_mm2": max(r["csa_corrected_mm2"] for r in seg)})
    return out


def _stats(values: list) -> dict:
    if not values:
        return {"mean": None, "median": None, "max": None}
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "max": float(v.max())}


def _summary(mask, rows, nerve_z, spacing, branch_labels, lesion, naming, rule, window, min_branch_fraction,
             has_image) -> dict:
    sz, sy, sx = spacing
    voxel_mm3 = sz * sy * sx
    voxels = int(mask.sum())
    nerve_rows = [rows[z] for z in nerve_z]
    split_z = [z for z in nerve_z if rows[z]["region"] == "split"]
    branches = {}
    for name, label in BRANCH_LABELS.items():
        count = int((branch_labels == label).sum())
        if count == 0:
            continue
        col = "csa_corrected_mm2" if name == "sciatic" else f"{name}_csa_corrected_mm2"
        region = "sciatic" if name == "sciatic" else "split"
        branches[name] = {"slices": sum(r["region"] == region for r in nerve_rows), "voxels": count,
                          "volume_mm3": count * voxel_mm3,
                          "csa_corrected_mm2": _stats([r[col] for r in nerve_rows if r["region"] == region])}
    summary = {
        "nerve_found": bool(nerve_z),
        "message": (f"nerve found in {len(nerve_z)} of {len(rows)} slices" if nerve_z
                    else "no nerve found: the mask holds no nerve voxels"),
        "shape_zyx": list(mask.shape),
        "spacing_zyx_mm": [sz, sy, sx],
        "voxels": voxels,
        "volume_mm3": voxels * voxel_mm3,
        "volume_ml": voxels * voxel_mm3 / 1000.0,
        "slices_with_nerve": len(nerve_z),
        "first_slice": nerve_z[0] if nerve_z else None,
        "last_slice": nerve_z[-1] if nerve_z else None,
        "length_mm": (nerve_z[-1] - nerve_z[0] + 1) * sz if nerve_z else 0.0,
        "centreline_length_mm": float(sum(sz / r["cos_theta"] for r in nerve_rows)),
        "csa_mm2": _stats([r["csa_mm2"] for r in nerve_rows]),
        "csa_corrected_mm2": _stats([r["csa_corrected_mm2"] for r in nerve_rows]),
        "signal_mean_norm": _stats([r["signal_mean_norm"] for r in nerve_rows if r["signal_mean_norm"] is not None]),
        "split": {"found": bool(split_z), "first_slice": split_z[0] if split_z else None,
                  "last_slice": split_z[-1] if split_z else None, "naming": naming},
        "branches": branches,
        "lesion": lesion,
        "settings": {"centreline_window_slices": window, "min_branch_fraction": min_branch_fraction,
                     "signal_reference": "median of the slice's voxels in the middle class of a three-class "
                                         "Otsu split of the image (muscle-like tissue), outside the nerve"
                     if has_image else None,
                     "lesion_k": rule.k, "lesion_min_excess": rule.min_excess},
    }
    return summary


# ----------------------------------------------------------------------------- files

def lateral_vector(direction: Sequence[float], side: "str | None") -> "tuple[float, float] | None":
    """The lateral unit direction in the grid's in-plane (x, y) mm axes for the imaged leg.

    ITK's physical frame is LPS: +x points to the patient's left, so lateral is +x for a
    left leg and -x for a right leg; its in-plane grid components are the first row of the
    direction matrix (sign flipped for a right leg). None when ``side`` is None.
    """
    if side is None:
        return None
    if side not in ("left", "right"):
        raise NerveError(f"side must be 'left' or 'right', not {side!r}")
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    sign = 1.0 if side == "left" else -1.0
    v = sign * d[0, :2]
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:
        raise NerveError("the slices do not contain the left-right axis; --side cannot name the branches")
    return float(v[0] / norm), float(v[1] / norm)


def read_mask_for_image(image_path, mask_path):
    """(image array, mask as booleans, the SimpleITK image) after checking grids and values."""
    import SimpleITK as sitk

    from nnunet_nerve.imageio import grid_mismatch, read_image

    image = read_image(image_path)
    mask = read_image(mask_path)
    for path, img in ((image_path, image), (mask_path, mask)):
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise NerveError(f"{path}: expected a 3D single-channel image, got {img.GetDimension()}D with "
                             f"{img.GetNumberOfComponentsPerPixel()} component(s)")
    why = grid_mismatch(image, mask)
    if why:
        raise NerveError(f"{mask_path}: mask is not on the image's grid ({image_path}): {why}")
    return sitk.GetArrayFromImage(image), binary_mask(sitk.GetArrayFromImage(mask), str(mask_path)), image


def biomarkers_from_files(image_path, mask_path, *, side: "str | None" = None, rule: LesionRule = LesionRule(),
                          reference: "NormativeReference | None" = None, postprocess: bool = False,
                          **options) -> NerveBiomarkers:
    """``nerve_biomarkers`` of a mask file over its image file (same grid, binary mask).

    ``postprocess`` first applies ``postprocess.postprocess_nerve`` to the mask.
    The summary records both paths and, with ``postprocess``, what it changed.
    """
    from nnunet_nerve.imageio import spacing_zyx

    array, mask, image = read_mask_for_image(image_path, mask_path)
    spacing = spacing_zyx(image)
    pp = None
    if postprocess:
        from nnunet_nerve.postprocess import postprocess_nerve

        pp = postprocess_nerve(mask, spacing)
        mask = pp.mask
    result = nerve_biomarkers(mask, spacing, array, lateral_xy=lateral_vector(image.GetDirection(), side),
                              rule=rule, reference=reference, **options)
    result.summary = {"image": str(Path(image_path).resolve()), "mask": str(Path(mask_path).resolve()),
                      "side": side, "postprocessing": pp.as_dict() if pp else None, **result.summary}
    return result
