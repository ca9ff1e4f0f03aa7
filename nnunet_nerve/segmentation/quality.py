"""Quality flags of one automatic segmentation, for the reader of `segment`'s report.

Each flag is raised (a warning to look at the images) or not, with one line saying why:

* ``no_nerve``: the final segmentation is empty.
* ``field_of_view_edge``: nerve voxels in the outermost row or column of a slice (in-plane
  edge): the nerve may continue outside the image and its CSA there is cut. (The nerve runs
  through the stack, so touching the first or last slice is expected and not flagged.)
* ``postprocessing``: post-processing removed components or vessel tracks (how many,
  voxels and mm³) or filled missed slices; not raised when it changed nothing or was off.
* ``csa_reference``: with a normative reference, the nerve slices with a part (the sciatic
  trunk, a branch, both branches merged: ``biomarkers.lesions``) whose obliquity-corrected
  CSA lies outside that region's normative range centre ± max(k x spread, min_excess x
  centre) (the lesion rule's margin, ``LesionRule``, on both sides), at the scan's thigh
  location (unknown: all locations pooled); raised when any does. Parts of a region the
  reference refuses (too few volunteers) are not compared. Without a reference it is not
  evaluated.
* ``cut_lengthwise``: the final segmentation looks cut lengthwise although the header calls the
  slices axial (``io.masks.lengthwise_nerve_problem``: pieces long and thin on the few slices the
  nerve covers): the orientation was lost and CSA per slice is not a cross-section.
* ``geometry``: the input's header holds no geometry (``io.images.default_geometry_problem``:
  1 mm voxels at origin 0, an array written without its scan's geometry), so every mm² and
  mm³ is a voxel count; otherwise it states the voxel size measured with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from nnunet_nerve.biomarkers.lesions import LesionRule, normative_csa_ranges, slice_parts
from nnunet_nerve.biomarkers.postprocess import vessel_tracks_phrase
from nnunet_nerve.io.masks import lengthwise_nerve_problem


#: The heading of each flag in the report.
TITLES = {"no_nerve": "no nerve found", "field_of_view_edge": "nerve at the edge of the field of view",
          "postprocessing": "post-processing changed the segmentation",
          "csa_reference": "CSA outside the reference range", "cut_lengthwise": "nerve looks cut lengthwise",
          "geometry": "header without geometry"}


@dataclass(frozen=True)
class QualityFlag:
    name: str
    raised: bool
    message: str

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)

    def as_dict(self) -> dict:
        return {**asdict(self), "title": self.title}


def _list(indices, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


def edge_slices(mask: np.ndarray) -> np.ndarray:
    """Indices of the slices (axis 0) with mask voxels in their first or last row or column."""
    edge = mask[:, 0, :].any(axis=1) | mask[:, -1, :].any(axis=1) | mask[:, :, 0].any(axis=1) | mask[:, :, -1].any(axis=1)
    return np.flatnonzero(edge)


def quality_flags(mask: np.ndarray, spacing_zyx, postprocessing=None, biomarkers=None, reference=None,
                  rule: LesionRule = LesionRule(), geometry_problem: "str | None" = None) -> list[QualityFlag]:
    """The flags of the module docstring, in that order. ``postprocessing``: the
    ``PostprocessResult`` (None when it was off); ``biomarkers``: the ``NerveBiomarkers`` of
    ``mask``; ``reference``: a ``NormativeReference`` or None; ``geometry_problem``: what
    ``io.images.default_geometry_problem`` says of the input (None: it has a geometry)."""
    mask = np.asarray(mask, dtype=bool)
    voxel_mm3 = float(np.prod(spacing_zyx))
    flags = []
    found = bool(mask.any())
    flags.append(QualityFlag("no_nerve", not found, "no nerve found: the segmentation is empty" if not found
                             else f"nerve found in {int(mask.reshape(mask.shape[0], -1).any(axis=1).sum())} of "
                                  f"{mask.shape[0]} slices"))
    edges = edge_slices(mask)
    flags.append(QualityFlag(
        "field_of_view_edge", edges.size > 0,
        f"the nerve touches the in-plane edge of the field of view in {edges.size} slice(s) ({_list(edges)}): "
        f"it may continue outside the image" if edges.size else "the nerve stays inside the field of view"))
    if postprocessing is None:
        flags.append(QualityFlag("postprocessing", False, "post-processing off (--no-postprocess)"))
    else:
        pp = postprocessing
        removed = pp.components - pp.kept_components
        parts = []
        if pp.removed_voxels:
            parts.append(f"removed {removed} of {pp.components} component(s){vessel_tracks_phrase(pp.removed)} "
                         f"({pp.removed_voxels} voxels, {pp.removed_voxels * voxel_mm3:.0f} mm³)")
        if pp.filled_slices:
            parts.append(f"filled {len(pp.filled_slices)} missed slice(s) ({_list(pp.filled_slices)}; "
                         f"+{pp.filled_voxels} voxels)")
        flags.append(QualityFlag("postprocessing", bool(parts),
                                 "post-processing " + "; ".join(parts) if parts
                                 else f"post-processing kept all {pp.components} component(s) and filled nothing"))
    if reference is None:
        flags.append(QualityFlag("csa_reference", False, "no normative reference given (--reference): CSA not "
                                                         "compared with a reference range"))
    else:
        flags.append(csa_reference_flag(biomarkers, reference, rule))
    lengthwise = lengthwise_nerve_problem(mask, spacing_zyx)
    flags.append(QualityFlag("cut_lengthwise", bool(lengthwise),
                             lengthwise or ("no nerve to judge" if not found
                                            else "the nerve's pieces are compact on the slices it crosses")))
    voxel = " x ".join(f"{v:g}" for v in reversed(spacing_zyx))
    flags.append(QualityFlag("geometry", bool(geometry_problem),
                             geometry_problem or f"measured in voxels of {voxel} mm (x, y, z) from the header"))
    return flags


def csa_reference_flag(biomarkers, reference, rule: LesionRule) -> QualityFlag:
    """The ``csa_reference`` flag (module docstring) from the biomarkers' per-slice rows."""
    lesion = (biomarkers.summary.get("lesion") or {}) if biomarkers is not None else {}
    location = (lesion.get("reference") or {}).get("location")
    ranges = normative_csa_ranges(reference, location, rule)
    above, below, compared, values = [], [], 0, []
    for row in (biomarkers.slices if biomarkers is not None else []):
        if row["voxels"] == 0 or row.get("region") in (None, "none"):
            continue
        parts = [(row.get(f"{prefix}csa_corrected_mm2"), ranges[region])
                 for prefix, region in slice_parts(row) if region in ranges]
        parts = [(v, r) for v, r in parts if v is not None and np.isfinite(v)]
        if not parts:
            continue
        compared += 1
        values += [v for v, _ in parts]
        if any(v > high for v, (_, high) in parts):
            above.append(row["slice"])
        if any(v < low for v, (low, _) in parts):
            below.append(row["slice"])
    where = location or "all locations"
    shown = "; ".join(f"{region} {low:.1f}-{high:.1f}" for region, (low, high) in sorted(ranges.items()))
    if not compared:
        message = (f"normative CSA ranges ({where}: {shown or 'none usable'} mm²): no nerve slice part to compare")
    else:
        message = (f"{len(above)} nerve slice(s) with a part above and {len(below)} with a part below the normative "
                   f"CSA range ({where}: {shown} mm²; obliquity-corrected CSA; this scan's median "
                   f"{float(np.median(values)):.1f} mm² over {compared} compared slices)")
    return QualityFlag("csa_reference", bool(above or below), message)
