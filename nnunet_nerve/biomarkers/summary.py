"""The per-scan summary of a nerve's biomarkers (``measures.NerveBiomarkers.summary``).

Per scan: ``volume_mm3`` = nerve voxels x voxel volume (``volume_ml`` = /1000);
``length_mm`` = (last - first nerve slice + 1) x spacing_z; ``centreline_length_mm`` =
sum over nerve slices of spacing_z / cos_theta; mean, median and max of the per-slice
CSAs over the nerve slices; per part: slices, voxels, volume, CSA statistics, first and
last slice, and each branch's events (merging, missing slices, leaving the field of view).
A part's CSA statistics are over the slices of that part (a branch's: where it is separate).
Statistics of no value are None.
"""
from __future__ import annotations

import numpy as np

from nnunet_nerve.biomarkers.branches import BRANCHES as SPLIT_BRANCHES
from nnunet_nerve.biomarkers.branches import PART_LABELS as BRANCH_LABELS
from nnunet_nerve.biomarkers.postprocess import vessel_tracks, vessel_tracks_phrase


def _stats(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "median": None, "max": None}
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "max": float(v.max())}


def _part_summary(name: str, rows: list, labels: np.ndarray, voxel_mm3: float, events: dict) -> "dict | None":
    count = int((labels == BRANCH_LABELS[name]).sum())
    if count == 0:
        return None
    if name in SPLIT_BRANCHES:
        zs = [r["slice"] for r in rows if r[f"{name}_csa_mm2"] is not None]
        csa = [rows[z][f"{name}_csa_corrected_mm2"] for z in zs]
    else:
        zs = [r["slice"] for r in rows if r["region"] == name]
        csa = [rows[z]["csa_corrected_mm2"] for z in zs]
    out = {"slices": len(zs), "first_slice": min(zs), "last_slice": max(zs), "voxels": count,
           "volume_mm3": count * voxel_mm3, "csa_corrected_mm2": _stats(csa)}
    if name in events:
        out["events"] = events[name]
    return out


def scan_summary(mask, rows, nerve_z, spacing, labels, parts, lesion, rule, window, min_branch_fraction,
                 has_image) -> dict:
    """The per-scan summary of the module docstring from the per-slice ``rows``."""
    sz, sy, sx = spacing
    voxel_mm3 = sz * sy * sx
    voxels = int(mask.sum())
    nerve_rows = [rows[z] for z in nerve_z]
    branch_z = [z for z in nerve_z if rows[z]["region"] not in ("sciatic", "none")]
    branches = {name: s for name in BRANCH_LABELS
                if (s := _part_summary(name, rows, labels, voxel_mm3, parts.events)) is not None}
    return {
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
        "signal_mean_norm": _stats([r["signal_mean_norm"] for r in nerve_rows]),
        "split": {"found": bool(branch_z), "first_slice": branch_z[0] if branch_z else None,
                  "last_slice": branch_z[-1] if branch_z else None, "naming": parts.naming,
                  "trunk": parts.trunk, "merged_slices": [z for z in nerve_z if rows[z]["region"] == "merged"]},
        "branches": branches,
        "lesion": lesion,
        "settings": {"centreline_window_slices": window, "min_branch_fraction": min_branch_fraction,
                     "signal_reference": "median of the slice's voxels in the middle class of a three-class "
                                         "Otsu split of the image (muscle-like tissue), outside the nerve"
                     if has_image else None,
                     "lesion_k": rule.k, "lesion_min_excess": rule.min_excess},
    }


def summary_line(result) -> str:
    """One line of a ``NerveBiomarkers`` result for progress output: which mask was measured, then the main numbers."""
    s = result.summary
    used = ""
    if s.get("mask_used"):
        used = s["mask_used"] + " mask"
        pp = s.get("postprocessing")
        if pp:
            groups = len(pp["removed"]) - vessel_tracks(pp["removed"])
            used += (f" (removed {pp['removed_voxels']} voxel(s) in {groups} component group(s)"
                     f"{vessel_tracks_phrase(pp['removed'])}, filled {len(pp['filled_slices'])} slice(s))")
        earlier = s.get("earlier_postprocessing")
        if earlier:
            used += "; " + (earlier["note"] or f"{len(earlier['slices'])} slice(s) interpolated by an earlier "
                                               "post-processing")
        used += ": "
    if not s["nerve_found"]:
        return used + s["message"]
    return (f"{used}volume {s['volume_ml']:.3f} ml, length {s['length_mm']:.0f} mm, "
            f"CSA mean {s['csa_corrected_mm2']['mean']:.1f} / max {s['csa_corrected_mm2']['max']:.1f} mm², "
            f"lesion burden {100 * s['lesion']['burden']:.0f} %")
