"""Nerve biomarkers from a segmentation: cross-sectional area and signal along the stack,
per part of the nerve (sciatic trunk, tibial and peroneal branches), volume, length and
lesion burden (the paper's Figure 5).

Geometry. Arrays are in ``SimpleITK.GetArrayFromImage`` order (z, y, x) with ``spacing`` in
the same order, in mm. Position along the stack is ``z_mm = slice index x spacing_z`` (0 at
the first slice of the image). All directions are taken in the voxel grid scaled to mm,
so the slice normal is the grid's z axis (the images' direction cosines are orthonormal).

Parts. ``nerve_branches.nerve_parts`` assigns every nerve voxel to the sciatic trunk, the
tibial or the peroneal branch (each followed through the stack by 3D overlap and named
once per stack), or to ``merged`` (both branches in one piece after the split); every
slice gets a ``region``: sciatic, split, tibial, peroneal, merged or none.

Per slice (one row per slice of the stack; slices without nerve have zero area and empty
values elsewhere):

* ``csa_mm2`` = nerve voxels in the slice x spacing_y x spacing_x.
* ``interpolated``: the slice holds voxels that post-processing interpolated over a gap (a
  missed slice or branch); not a measurement, so never evidence for a lesion on its own.
* ``cos_theta``: theta is the angle between the local centreline and the slice normal.
  A centreline is a sequence of centroids (x_mm, y_mm, z_mm) over the slices holding a
  part; x and y are smoothed by a centred moving average over ``window`` of these slices
  (default 5, narrowed symmetrically at the ends so that a straight line stays exact); the
  direction at a slice is the difference of the smoothed centroids of its two neighbouring
  slices in the sequence (one-sided at the ends) and ``cos_theta = |dz| / |d|``; a single
  point has ``cos_theta = 1``. Trunk and merged slices use the centreline of the whole
  nerve (the centroid of all its voxels per slice); each branch uses its own centreline,
  over every slice where it is separate.
* ``csa_corrected_mm2 = csa_mm2 x cos_theta``: a tube of true cross-section A cut at angle
  theta shows an area A / cos(theta) in the slice (the exact correction for a cylinder; the
  Spinal Cord Toolbox's ``process_seg`` scales the two in-plane axes by the cosines of the
  two tilt angles instead, which agrees for a tilt in one plane). Where branches are
  separate the slice's corrected CSA is the sum of the branches' and ``cos_theta`` the
  ratio corrected / raw.
* ``<branch>_*`` (tibial, peroneal): the branch's CSA, cos theta, corrected CSA, centroid,
  normalised signal, lesion flag and CSA threshold, on the slices where it is separate.
* Signal: the mean and median image intensity inside the nerve (or part) divided by the
  slice's reference, the median intensity of the slice's voxels in the image's middle
  intensity class outside the nerve: a three-class Otsu split of the whole image (128-bin
  histogram) separates air and bone cortex | muscle-like tissue | fat and fluid, so that in
  a T2 TSE without fat suppression the reference is skeletal muscle and the normalised
  signal a nerve-to-muscle ratio. A slice without such voxels uses the median over the image.

Per scan: ``summary.scan_summary`` (volume, length, CSA statistics, per part).

Lesions: ``lesions.flag_lesions`` (each part against a reference of the same part: the
subject's own or a normative one per thigh location). ``lesion_burden`` = flagged nerve
slices / nerve slices (the fraction of the nerve's length, every slice standing for
spacing_z of nerve). Contiguous flagged slices form the lesion segments.

An empty mask gives a result whose summary says ``nerve_found: false`` with zero volume,
no error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_nerve.errors import NerveError
from nnunet_nerve.parameters import require_number
from nnunet_nerve.biomarkers.lesions import LesionRule, flag_lesions
from nnunet_nerve.biomarkers.references import NormativeReference
from nnunet_nerve.io.masks import binary_mask, inverted_mask_problem
from nnunet_nerve.biomarkers.branches import BRANCHES, DEFAULT_MIN_BRANCH_FRACTION, PART_LABELS, nerve_parts
from nnunet_nerve.biomarkers.postprocess import PostprocessRule, postprocess_nerve, rule_of
from nnunet_nerve.biomarkers.postprocess_record import interpolation_record
from nnunet_nerve.biomarkers.summary import scan_summary

#: Values of ``NerveBiomarkers.branch_labels``.
BRANCH_LABELS = PART_LABELS
SPLIT_BRANCHES = BRANCHES
DEFAULT_WINDOW = 5
#: How ``biomarkers_from_files`` names the mask it measured (``summary["mask_used"]``).
MASK_POSTPROCESSED, MASK_RAW = "post-processed", "raw (not post-processed)"

#: Significant digits of the biomarker CSV files (``io.tables.csv_cell``).
CSV_DIGITS = 6
BRANCH_COLUMNS = ("csa_mm2", "cos_theta", "csa_corrected_mm2", "centroid_x_mm", "centroid_y_mm",
                  "signal_mean_norm", "signal_median_norm", "lesion", "csa_threshold_mm2")
SLICE_COLUMNS = (
    "slice", "z_mm", "region", "components", "voxels", "interpolated", "csa_mm2", "theta_deg", "cos_theta",
    "csa_corrected_mm2", "centroid_x_mm", "centroid_y_mm", "signal_mean", "signal_median", "signal_reference",
    "signal_mean_norm", "signal_median_norm", "csa_lesion", "signal_lesion", "lesion", "lesion_reference",
    "csa_threshold_mm2",
) + tuple(f"{b}_{c}" for b in SPLIT_BRANCHES for c in BRANCH_COLUMNS)


@dataclass
class NerveBiomarkers:
    """The result: one dict per slice (``SLICE_COLUMNS``), the per-scan summary, and what
    the plots need (part label volume, per-slice lesion flags, the image)."""

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
                     reference: "NormativeReference | None" = None, location: "str | None" = None,
                     window: int = DEFAULT_WINDOW,
                     min_branch_fraction: float = DEFAULT_MIN_BRANCH_FRACTION,
                     interpolated: Sequence[int] = ()) -> NerveBiomarkers:
    """Biomarkers of a binary nerve mask (z, y, x) with ``spacing_zyx`` in mm.

    ``image`` (same shape) gives the signal columns (empty without it). ``lateral_xy`` is
    the unit vector (x, y), in the grid's in-plane mm axes, pointing laterally for the imaged
    leg (names the branches by position). ``reference`` (a NormativeReference) replaces the
    subject's own lesion reference where it has enough volunteers at the scan's thigh
    ``location`` (distal, medial, proximal; None or n/a: unknown). ``interpolated``: slices
    post-processing filled over a gap (``PostprocessResult.filled_slices``), marked in their
    rows and no evidence for a lesion (``lesions.flag_lesions``).
    """
    mask = binary_mask(np.asarray(mask))
    if mask.ndim != 3:
        raise NerveError(f"mask: expected a 3D mask (z, y, x), got {mask.ndim} dimensions")
    if image is not None and np.shape(image) != mask.shape:
        raise NerveError(f"image: shape {np.shape(image)} differs from the mask's {mask.shape}")
    if image is not None and np.asarray(image).dtype.kind in "fc" and not np.isfinite(image).all():
        raise NerveError(f"image: {int(np.size(image) - np.count_nonzero(np.isfinite(image)))} NaN or infinite "
                         "intensities")
    require_number(min_branch_fraction, "min_branch_fraction", above=0, maximum=1)
    require_number(window, "window", minimum=1, integer=True)
    spacing = tuple(float(s) for s in spacing_zyx)
    nz = mask.shape[0]
    nerve_z = [int(z) for z in np.flatnonzero(mask.reshape(nz, -1).any(axis=1))]
    labels, parts = _parts(mask, spacing, lateral_xy, min_branch_fraction)
    refs = slice_signal_references(image, mask) if image is not None else np.full(nz, math.nan)

    rows = [_empty_row(z, spacing[0]) for z in range(nz)]
    for z in set(map(int, interpolated)) & set(nerve_z):
        rows[z]["interpolated"] = True
    _measure_nerve(rows, mask, nerve_z, parts, spacing, image, refs, window)
    for name in SPLIT_BRANCHES:
        _measure_branch(rows, name, labels == BRANCH_LABELS[name], nerve_z, spacing, image, refs, window)
    _sum_separate_branches(rows, nerve_z)
    lesion_info, lesion_slices = flag_lesions(rows, nerve_z, rule, reference, location)
    summary = scan_summary(mask, rows, nerve_z, spacing, labels, parts, lesion_info, rule, window,
                           min_branch_fraction, image is not None)
    return NerveBiomarkers(rows, summary, spacing, labels, lesion_slices, image)


def _measure_nerve(rows: list, mask: np.ndarray, nerve_z: list, parts, spacing, image, refs, window: int) -> None:
    """Fill the whole nerve's columns of the nerve slices' rows (region, area, centroid,
    obliquity along the whole nerve's centreline, signal)."""
    sz, sy, sx = spacing
    pixel_area = sy * sx
    if not nerve_z:
        return
    centroid_mm = {z: _centroid(mask[z], sy, sx) for z in nerve_z}
    cosines = track_cosines(np.array([(*centroid_mm[z], z * sz) for z in nerve_z]), window)
    for z, cos in zip(nerve_z, cosines):
        voxels = int(mask[z].sum())
        rows[z].update(region=parts.regions[z], components=parts.components[z], voxels=voxels,
                       csa_mm2=voxels * pixel_area, centroid_x_mm=centroid_mm[z][0],
                       centroid_y_mm=centroid_mm[z][1])
        _set_cos(rows[z], "", float(cos))
        if image is not None and np.isfinite(refs[z]):
            mean, median, mean_n, median_n = _signal(image[z], mask[z], refs[z])
            rows[z].update(signal_mean=mean, signal_median=median, signal_reference=float(refs[z]),
                           signal_mean_norm=mean_n, signal_median_norm=median_n)


def _measure_branch(rows: list, name: str, where: np.ndarray, nerve_z: list, spacing, image, refs,
                    window: int) -> None:
    """Fill branch ``name``'s ``<name>_*`` columns on the slices where it is separate
    (``where``: its voxels), obliquity along its own centreline."""
    sz, sy, sx = spacing
    pixel_area = sy * sx
    zs = [z for z in nerve_z if where[z].any()]
    xy = {z: _centroid(where[z], sy, sx) for z in zs}
    cosines = track_cosines(np.array([(*xy[z], z * sz) for z in zs]), window) if zs else []
    for z, cos in zip(zs, cosines):
        row, area = rows[z], int(where[z].sum()) * pixel_area
        row.update({f"{name}_csa_mm2": area, f"{name}_centroid_x_mm": xy[z][0],
                    f"{name}_centroid_y_mm": xy[z][1]})
        _set_cos(row, f"{name}_", float(cos))
        if image is not None and np.isfinite(refs[z]):
            _, _, mean_n, median_n = _signal(image[z], where[z], refs[z])
            row.update({f"{name}_signal_mean_norm": mean_n, f"{name}_signal_median_norm": median_n})


def _sum_separate_branches(rows: list, nerve_z: list) -> None:
    """Where the branches are separate, the slice's corrected CSA is the sum of the branches'
    and ``cos_theta`` (and ``theta_deg``) the ratio corrected / raw."""
    for z in nerve_z:
        row = rows[z]
        if row["region"] in ("split", *SPLIT_BRANCHES):
            row["csa_corrected_mm2"] = sum(row[f"{b}_csa_corrected_mm2"] or 0.0 for b in SPLIT_BRANCHES)
            row["cos_theta"] = row["csa_corrected_mm2"] / row["csa_mm2"]
            row["theta_deg"] = float(np.degrees(np.arccos(np.clip(row["cos_theta"], 0, 1))))


def _parts(mask: np.ndarray, spacing, lateral_xy, min_branch_fraction):
    """(part labels of the whole grid, NerveParts) computed on the nerve's in-plane bounding box."""
    labels = np.zeros(mask.shape, dtype=np.uint8)
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found:
        return labels, nerve_parts(mask, spacing, lateral_xy, min_branch_fraction)
    box = (slice(None),) + tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in found[0][1:])
    border = np.ones(mask.shape[1:], dtype=bool)
    border[1:-1, 1:-1] = False
    parts = nerve_parts(mask[box], spacing, lateral_xy, min_branch_fraction, border[box[1:]])
    labels[box] = parts.labels
    parts.labels = labels
    return labels, parts


def _set_cos(row: dict, prefix: str, cos: float) -> None:
    row[f"{prefix}cos_theta"] = cos
    row[f"{prefix}csa_corrected_mm2"] = row[f"{prefix}csa_mm2"] * cos
    if not prefix:
        row["theta_deg"] = float(np.degrees(np.arccos(np.clip(cos, 0, 1))))


def _empty_row(z: int, sz: float) -> dict:
    row = dict.fromkeys(SLICE_COLUMNS)
    row.update(slice=z, z_mm=z * sz, region="none", components=0, voxels=0, interpolated=False, csa_mm2=0.0,
               csa_corrected_mm2=0.0, csa_lesion=False, signal_lesion=False, lesion=False)
    return row


def _centroid(mask2d: np.ndarray, sy: float, sx: float) -> tuple[float, float]:
    ys, xs = np.nonzero(mask2d)
    return float(xs.mean() * sx), float(ys.mean() * sy)


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
    """(image array, mask as booleans, the SimpleITK image) after checking grids, values, that
    the slices are axial (``io.images.require_axial_slices``) and that the mask is no inverted
    one (``io.masks.inverted_mask_problem``)."""
    import SimpleITK as sitk

    from nnunet_nerve.io.images import grid_mismatch, read_volume, require_axial_slices

    image = read_volume(image_path)     # NaN or infinite voxels refused, in the image and the mask
    mask = read_volume(mask_path, "mask")
    why = grid_mismatch(image, mask)
    if why:
        raise NerveError(f"{mask_path}: mask is not on the image's grid ({image_path}): {why}")
    require_axial_slices(image, image_path)
    mask = binary_mask(sitk.GetArrayFromImage(mask), str(mask_path))
    inverted = inverted_mask_problem(mask)
    if inverted:
        raise NerveError(f"{mask_path}: mask {inverted}")
    return sitk.GetArrayFromImage(image), mask, image


def biomarkers_from_files(image_path, mask_path, *, side: "str | None" = None, rule: LesionRule = LesionRule(),
                          reference: "NormativeReference | None" = None, location: "str | None" = None,
                          postprocess: "bool | PostprocessRule" = True, **options) -> NerveBiomarkers:
    """``nerve_biomarkers`` of a mask file over its image file (same grid, binary mask).

    ``postprocess``: True (default) first applies ``postprocess.postprocess_nerve`` with the
    default ``PostprocessRule``, a ``PostprocessRule`` applies that rule, False measures the
    mask as it is. The summary records both paths, ``mask_used`` (``MASK_POSTPROCESSED`` or
    ``MASK_RAW``), what post-processing changed and removed and its rule, the imaged ``side``
    and the thigh ``location``, and ``warnings`` (lines: the image's header holding no geometry,
    ``io.images.default_geometry_problem``; the mask looking cut lengthwise although the header
    says axial, ``io.masks.lengthwise_nerve_problem``). A mask written by ``postprocess`` into a folder keeps the
    slices that run interpolated: ``earlier_postprocessing`` (``postprocess_record``) holds
    them, marked ``interpolated`` like the slices this run fills.
    """
    from nnunet_nerve.io.images import default_geometry_warning, spacing_zyx
    from nnunet_nerve.io.masks import lengthwise_nerve_warning

    array, mask, image = read_mask_for_image(image_path, mask_path)
    spacing = spacing_zyx(image)
    warnings = [w for w in (default_geometry_warning(image, image_path),
                            lengthwise_nerve_warning(mask, spacing, mask_path)) if w]
    earlier = interpolation_record(mask_path, mask)
    pp, cleaning = None, rule_of(postprocess)
    if cleaning:
        pp = postprocess_nerve(mask, spacing, cleaning)
        mask = pp.mask
    interpolated = set(earlier["slices"] if earlier else ()) | set(pp.filled_slices if pp else ())
    result = nerve_biomarkers(mask, spacing, array, lateral_xy=lateral_vector(image.GetDirection(), side),
                              rule=rule, reference=reference, location=location,
                              interpolated=sorted(interpolated), **options)
    result.summary = {"image": str(Path(image_path).resolve()), "mask": str(Path(mask_path).resolve()),
                      "mask_used": MASK_POSTPROCESSED if pp else MASK_RAW,
                      "postprocessing": pp.as_dict() if pp else None, "earlier_postprocessing": earlier,
                      "side": side, "location": location,
                      "warnings": warnings, **result.summary}
    return result
