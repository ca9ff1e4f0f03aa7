"""Quality flags of one automatic segmentation, for the reader of `segment`'s report.

Each flag is raised (a warning to look at the images) or not, with one line saying why:

* ``no_nerve``: the final segmentation is empty.
* ``field_of_view_edge``: nerve voxels in the outermost row or column of a slice (in-plane
  edge): the nerve may continue outside the image and its CSA there is cut. (The nerve runs
  through the stack, so touching the first or last slice is expected and not flagged.)
* ``postprocessing``: post-processing removed components (how many, voxels and mm³) or
  filled missed slices; not raised when it changed nothing or was off.
* ``csa_reference``: with a normative reference, the nerve slices whose obliquity-corrected
  CSA lies outside the reference range centre ± max(k x spread, min_excess x centre) (the
  lesion rule's margin, ``biomarkers.LesionRule``, on both sides); raised when any does.
  Without a reference it is not evaluated.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from nnunet_nerve.biomarkers.measures import LesionRule


#: The heading of each flag in the report.
TITLES = {"no_nerve": "no nerve found", "field_of_view_edge": "nerve at the edge of the field of view",
          "postprocessing": "post-processing changed the segmentation",
          "csa_reference": "CSA outside the reference range"}


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
                  rule: LesionRule = LesionRule()) -> list[QualityFlag]:
    """The flags of the module docstring, in that order. ``postprocessing``: the
    ``PostprocessResult`` (None when it was off); ``biomarkers``: the ``NerveBiomarkers`` of
    ``mask``; ``reference``: a ``NormativeReference`` or None."""
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
            parts.append(f"removed {removed} of {pp.components} component(s) ({pp.removed_voxels} voxels, "
                         f"{pp.removed_voxels * voxel_mm3:.0f} mm³)")
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
        centre, spread = reference.csa_median, reference.csa_spread
        margin = rule.threshold(centre, spread) - centre
        low, high = centre - margin, centre + margin
        rows = [r for r in (biomarkers.slices if biomarkers is not None else []) if r["voxels"] > 0
                and r["csa_corrected_mm2"] is not None and np.isfinite(r["csa_corrected_mm2"])]
        above = [r["slice"] for r in rows if r["csa_corrected_mm2"] > high]
        below = [r["slice"] for r in rows if r["csa_corrected_mm2"] < low]
        median = float(np.median([r["csa_corrected_mm2"] for r in rows])) if rows else float("nan")
        if not rows:
            message = f"reference range {low:.1f}-{high:.1f} mm²: no nerve slices to compare"
        else:
            message = (f"{len(above)} nerve slice(s) above and {len(below)} below the reference range "
                       f"{low:.1f}-{high:.1f} mm² (obliquity-corrected CSA; this scan's median {median:.1f} mm², "
                       f"{len(rows)} nerve slices)")
        flags.append(QualityFlag("csa_reference", bool(above or below), message))
    return flags
