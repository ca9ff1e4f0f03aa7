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
  theta shows an area A / cos(theta) in the slice.
* Branches: 2D connected components of the slice (8-connectivity). A slice is ``split`` when
  its second-largest component holds at least ``min_branch_fraction`` (default 0.1) of the
  slice's nerve area; its two largest components are then the two branches and smaller
  fragments join the branch with the nearest centroid. Other nerve slices are ``sciatic``.
  Branches are tracked through each run of consecutive split slices by nearest centroids
  and named once per run: the peroneal is the branch lying more lateral on average when
  the imaged leg is known (``lateral_xy``), else the branch with the smaller mean area
  (the tibial division carries about two thirds of the sciatic nerve's fibres).
* Signal: the mean and median image intensity inside the nerve divided by the slice's
  reference, the median intensity of the slice's non-background voxels outside the nerve;
  non-background = intensity above the image's Otsu threshold (256-bin histogram). A slice
  without such voxels uses the same median over the whole image.

Per scan: ``volume_mm3`` = nerve voxels x voxel volume (``volume_ml`` = /1000);
``length_mm`` = (last - first nerve slice + 1) x spacing_z; ``centreline_length_mm`` =
sum over nerve slices of spacing_z / cos_theta; mean, median and max of the per-slice
CSAs over the nerve slices.

Lesions (``LesionRule``): a nerve slice is flagged when its corrected CSA or its
normalised mean signal exceeds ``median + max(k x 1.4826 x MAD, min_excess x median)``,
median and MAD (median absolute deviation; 1.4826 x MAD estimates the standard deviation)
taken over the subject's own nerve slices, or over the pooled nerve slices of a normative
reference (``NormativeReference``, e.g. the volunteers of a dataset). ``lesion_burden`` =
flagged nerve slices / nerve slices (the fraction of the nerve's length, every slice
standing for spacing_z of nerve). Contiguous flagged slices form the lesion segments.

An empty mask gives a result whose summary says ``nerve_found: false`` with zero volume,
no error.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from nnunet_nerve.errors import NerveError

#: Values of ``NerveBiomarkers.branch_labels``.
BRANCH_LABELS = {"sciatic": 1, "tibial": 2, "peroneal": 3}
SPLIT_BRANCHES = ("tibial", "peroneal")
#: 1.4826 x MAD estimates the standard deviation of normally distributed values.
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
    """Threshold = median + max(k x 1.4826 x MAD, min_excess x median) of a reference set of values."""

    k: float = 3.0
    min_excess: float = 0.2

    def threshold(self, median: float, scaled_mad: float) -> float:
        if not np.isfinite(median):
            return math.nan
        return float(median + max(self.k * scaled_mad, self.min_excess * abs(median)))


def robust_centre(values: Iterable[float]) -> tuple[float, float]:
    """(median, 1.4826 x MAD) of the finite values; (nan, nan) when there are none."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    med = float(np.median(v))
    return med, float(MAD_TO_SD * np.median(np.abs(v - med)))


@dataclass
class NormativeReference:
    """Pooled per-slice statistics of reference nerves (e.g. a dataset's volunteers).

    ``csa_*`` are over the corrected CSA (mm²), ``signal_*`` over the normalised mean signal.
    """

    source: str
    cases: list
    slices: int
    csa_median: float
    csa_scaled_mad: float
    signal_median: float
    signal_scaled_mad: float

    @classmethod
    def from_results(cls, source: str, results: "dict[str, NerveBiomarkers]") -> "NormativeReference":
        csa, signal = [], []
        for res in results.values():
            csa += res.nerve_values("csa_corrected_mm2")
            signal += res.nerve_values("signal_mean_norm")
        if not csa:
            raise NerveError(f"{source}: the reference cases hold no nerve voxels")
        csa_med, csa_mad = robust_centre(csa)
        sig_med, sig_mad = robust_centre(signal)
        return cls(str(source), sorted(results), len(csa), csa_med, csa_mad, sig_med, sig_mad)

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
    values = np.unique(mask)
    bad = [v for v in values.tolist() if v not in (0, 1)]
    if bad:
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
        raise NerveError(f"{name}: mask is not binary (values {shown}); expected 0 = background and 1 = nerve")
    return mask.astype(bool)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold over a ``bins``-bin histogram: maximises the between-class variance."""
    v = np.asarray(values, dtype=float).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    mu0 = s0 / np.maximum(w0, 1)
    mu1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


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
    """Per slice: the median intensity of the voxels above the image's Otsu threshold and
    outside the nerve; slices without any use the same median over the whole image."""
    image = np.asarray(image, dtype=float)
    foreground = (image > otsu_threshold(image)) & ~mask
    whole = float(np.median(image[foreground])) if foreground.any() else math.nan
    refs = np.full(image.shape[0], whole)
    for z in range(image.shape[0]):
        values = image[z][foreground[z]]
        if values.size:
            refs[z] = float(np.median(values))
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
        basis = {"csa": (reference.csa_median, reference.csa_scaled_mad),
                 "signal": (reference.signal_median, reference.signal_scaled_mad)}
        source = {"kind": "normative", "source": reference.source, "cases": list(reference.cases),
                  "slices": reference.slices}
    else:
        basis = {"csa": robust_centre(rows[z]["csa_corrected_mm2"] for z in nerve_z),
                 "signal": robust_centre(rows[z]["signal_mean_norm"] for z in nerve_z
                                         if rows[z]["signal_mean_norm"] is not None)}
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
        "rule": f"value > median + max({rule.k:g} x 1.4826 x MAD, {rule.min_excess:g} x median)",
        "k": rule.k, "min_excess": rule.min_excess,
        "csa_median_mm2": basis["csa"][0], "csa_scaled_mad_mm2": basis["csa"][1],
        "csa_threshold_mm2": thresholds["csa"],
        "signal_median": basis["signal"][0], "signal_scaled_mad": basis["signal"][1],
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
                     "signal_reference": "median of the slice's voxels above the image's Otsu threshold, "
                                         "outside the nerve" if has_image else None,
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
