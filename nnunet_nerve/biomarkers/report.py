"""Writing biomarker results, for one scan or a batch: per-slice CSV, summary JSON and
Figure-5-like PNGs; and building a normative reference from a dataset's volunteers.

One scan's report folder holds

* ``slices.csv``: one row per slice of the stack (``biomarkers.SLICE_COLUMNS``); empty
  cells where a value does not exist (no nerve in the slice, no image, not split);
  ``nan``/``inf`` where a number is undefined or infinite; flags as 0/1
  (``io.tables.csv_cell``).
* ``summary.json``: the per-scan summary (``nerve_found``, volume, length, CSA statistics,
  branches, lesion thresholds, burden and segments, settings).
* ``profile.png``: CSA (raw and obliquity-corrected, and per branch) and normalised signal
  along the stack, each part's lesion threshold as a dashed line in its colour, lesion
  segments shaded red.
* ``mip.png``: maximum-intensity projections (coronal and sagittal) of the image inside
  the segmented nerve, coloured by part (sciatic blue, tibial green, peroneal orange,
  merged branches purple), lesion slices red.

A batch folder holds one such folder per case, ``cases.csv`` (one row per case) and, with
a normative reference, ``reference.json`` (reusable with ``--reference``). Masks are
post-processed first unless ``postprocess=False`` (``--no-postprocess``); every summary
says which mask was measured. Every folder is
built in a temporary sibling and renamed into place (``atomic.atomic_directory``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from scipy import ndimage

from nnunet_nerve.io.atomic import atomic_directory, atomic_file
from nnunet_nerve.io.tables import write_csv
from nnunet_nerve.biomarkers.measures import (BRANCH_LABELS, CSV_DIGITS, SLICE_COLUMNS, LesionRule, NerveBiomarkers,
                                     biomarkers_from_files, read_mask_for_image)
from nnunet_nerve.errors import NerveError, refuse_batch, refusals
from nnunet_nerve.biomarkers.sources import ImageSource, load_reference
from nnunet_nerve.biomarkers.summary import summary_line

CASE_FILES = ("slices.csv", "summary.json", "profile.png", "mip.png")
CASES_CSV_COLUMNS = ("case", "cohort", "location", "mask_used", "postprocess_removed_voxels", "nerve_found",
                     "volume_mm3", "volume_ml", "length_mm", "csa_corrected_mean_mm2", "csa_corrected_max_mm2",
                     "csa_mean_mm2", "csa_max_mm2", "signal_mean_norm", "split", "lesion_burden", "lesion_segments",
                     "lesion_reference")
BRANCH_COLOURS = {"sciatic": (0.12, 0.47, 0.71), "tibial": (0.17, 0.63, 0.17), "peroneal": (1.0, 0.5, 0.05),
                  "merged": (0.58, 0.4, 0.74)}
LESION_COLOUR = (0.84, 0.15, 0.16)
Log = Optional[Callable[[str], None]]


# ----------------------------------------------------------------------------- writers

def _json_safe(value):
    """NaN and inf become null; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_slices_csv(path, result: NerveBiomarkers, overwrite: bool = False) -> None:
    with atomic_file(path, overwrite) as tmp:
        write_csv(tmp, SLICE_COLUMNS, result.slices, CSV_DIGITS)


def write_json(path, data: dict, overwrite: bool = False) -> None:
    with atomic_file(path, overwrite) as tmp:
        Path(tmp).write_text(json.dumps(_json_safe(data), indent=2) + "\n")


def _figure(ncols: int, nrows: int, size):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _shade_lesions(ax, result: NerveBiomarkers) -> None:
    sz = result.spacing_zyx[0]
    for i, seg in enumerate(result.summary["lesion"]["segments"]):
        ax.axvspan(seg["start_mm"] - sz / 2, seg["end_mm"] + sz / 2, color=LESION_COLOUR, alpha=0.18,
                   label="lesion" if i == 0 else None)


def _column(result: NerveBiomarkers, name: str) -> np.ndarray:
    return np.array([np.nan if r[name] is None else float(r[name]) for r in result.slices])


def plot_profile(path, result: NerveBiomarkers, title: str = "", overwrite: bool = False) -> None:
    """CSA and normalised signal along the stack with lesion segments shaded (Figure 5 style)."""
    fig, axes = _figure(1, 2, (8, 6))
    ax_csa, ax_sig = axes[0, 0], axes[1, 0]
    z = _column(result, "z_mm")
    nerve = _column(result, "voxels") > 0
    lesion = result.summary["lesion"]
    if not result.nerve_found:
        for ax in (ax_csa, ax_sig):
            ax.text(0.5, 0.5, "no nerve found", ha="center", va="center", transform=ax.transAxes, fontsize=14)
    else:
        for name, style, label in (("csa_mm2", ":", "CSA (in slice)"),
                                   ("csa_corrected_mm2", "-", "CSA (obliquity-corrected)")):
            ax_csa.plot(z[nerve], _column(result, name)[nerve], style, color="k", marker=".", label=label)
        for branch in ("tibial", "peroneal"):
            values = _column(result, f"{branch}_csa_corrected_mm2")
            if np.isfinite(values).any():
                ax_csa.plot(z, values, "-", color=BRANCH_COLOURS[branch], marker=".", label=f"{branch} (corrected)")
                ax_csa.plot(z, _column(result, f"{branch}_csa_threshold_mm2"), "--", color=BRANCH_COLOURS[branch],
                            lw=1, label=f"{branch} threshold")
        regions = np.array([r["region"] for r in result.slices])
        for part in ("sciatic", "merged"):
            threshold = np.where(regions == part, _column(result, "csa_threshold_mm2"), np.nan)
            if np.isfinite(threshold).any():
                ax_csa.plot(z, threshold, "--", color=BRANCH_COLOURS[part], lw=1, label=f"{part} threshold")
        signal = _column(result, "signal_mean_norm")
        if np.isfinite(signal).any():
            ax_sig.plot(z[nerve], signal[nerve], "-", color="k", marker=".", label="mean signal")
            ax_sig.plot(z[nerve], _column(result, "signal_median_norm")[nerve], ":", color="k", label="median signal")
            for part, ref in lesion["references"].items():
                if ref.get("signal_threshold") is not None and np.isfinite(ref["signal_threshold"]) \
                        and (part in regions or (part in ("tibial", "peroneal") and "split" in regions)):
                    ax_sig.axhline(ref["signal_threshold"], ls="--", color=BRANCH_COLOURS[part], lw=1,
                                   label=f"{part} signal threshold")
        else:
            no_signal = ("no reference tissue (the image's middle intensity class) for the signal"
                         if result.summary["settings"]["signal_reference"] else "no image: no signal")
            ax_sig.text(0.5, 0.5, no_signal, ha="center", va="center", transform=ax_sig.transAxes)
        for ax in (ax_csa, ax_sig):
            _shade_lesions(ax, result)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
            ax.grid(alpha=0.3)
    ax_csa.set_ylabel("CSA (mm²)")
    ax_sig.set_ylabel("signal / reference")
    ax_sig.set_xlabel("position along the stack (mm)")
    burden = lesion["burden"]
    used = result.summary.get("mask_used")
    fig.suptitle(f"{title}  lesion burden {100 * burden:.0f} % ({lesion['reference']['kind']} reference)"
                 + (f"\n{used} mask" if used else "") if result.nerve_found else title)
    _save(fig, path, overwrite)


def nerve_mip_rgb(result: NerveBiomarkers, axis: int) -> np.ndarray:
    """RGB maximum-intensity projection along array ``axis`` (1: y, coronal; 2: x, sagittal)
    of the image inside the nerve, coloured by branch and red on lesion slices; white
    where no nerve projects. Rows are slices (z)."""
    box = _nerve_box(result.branch_labels)
    labels = result.branch_labels[box]
    inside = labels > 0
    if result.image is not None:
        image = np.where(inside, result.image[box].astype(float), -np.inf)
        mip = image.max(axis=axis)
        finite = np.isfinite(mip)
        lo, hi = (np.percentile(mip[finite], [1, 99]) if finite.any() else (0.0, 1.0))
        shade = np.where(finite, np.clip((mip - lo) / max(hi - lo, 1e-9), 0, 1), 0.0)
    else:
        shade = np.ones(inside.max(axis=axis).shape)
    rgb = np.ones(shade.shape + (3,))
    for name, label in BRANCH_LABELS.items():
        present = (labels == label).any(axis=axis)
        rgb[present] = np.array(BRANCH_COLOURS[name])
    rgb[result.lesion_slices[:, None] & inside.any(axis=axis)] = np.array(LESION_COLOUR)
    projected = inside.any(axis=axis)
    brightness = 0.45 + 0.55 * shade
    rgb[projected] = rgb[projected] * brightness[projected][:, None]
    full = np.ones((labels.shape[0], result.branch_labels.shape[3 - axis], 3))
    full[:, box[3 - axis]] = rgb
    return full


def _nerve_box(labels: np.ndarray) -> tuple:
    """All slices, and the in-plane bounding box of the nerve (everything when empty)."""
    found = ndimage.find_objects((labels > 0).astype(np.uint8))
    if not found:
        return (slice(None),) * 3
    return (slice(None),) + found[0][1:]


#: In-plane margin (mm) around the nerve in the MIP rendering.
MIP_MARGIN_MM = 15.0


def _mip_window(result: NerveBiomarkers, axis: int) -> tuple[slice, float, float]:
    """The in-plane index range of the projection (nerve bounding box + MIP_MARGIN_MM), and
    its start and end in mm."""
    sz, sy, sx = result.spacing_zyx
    other = 2 if axis == 1 else 1
    spacing = (sx if other == 2 else sy)
    n = result.branch_labels.shape[other]
    present = np.flatnonzero((result.branch_labels > 0).any(axis=(0, axis)))
    if present.size == 0:
        return slice(0, n), 0.0, n * spacing
    margin = int(np.ceil(MIP_MARGIN_MM / spacing))
    lo, hi = max(present[0] - margin, 0), min(present[-1] + margin + 1, n)
    return slice(lo, hi), lo * spacing, hi * spacing


def plot_mip(path, result: NerveBiomarkers, title: str = "", overwrite: bool = False) -> None:
    """Coronal and sagittal MIPs of the nerve (``nerve_mip_rgb``) around the nerve, in mm, z upwards."""
    from matplotlib.patches import Patch

    fig, axes = _figure(2, 1, (7, 7))
    sz = result.spacing_zyx[0]
    nz = result.branch_labels.shape[0]
    for ax, axis, label in ((axes[0, 0], 1, "x (mm)"), (axes[0, 1], 2, "y (mm)")):
        window, start, end = _mip_window(result, axis)
        ax.imshow(nerve_mip_rgb(result, axis)[:, window], origin="lower",
                  extent=(start, end, -sz / 2, (nz - 0.5) * sz), aspect="equal", interpolation="nearest")
        ax.set_xlabel(label)
        ax.set_ylabel("z (mm)")
        ax.set_title("coronal MIP" if axis == 1 else "sagittal MIP", fontsize=9)
        if not result.nerve_found:
            ax.text(0.5, 0.5, "no nerve found", ha="center", va="center", transform=ax.transAxes, fontsize=12)
    handles = [Patch(color=c, label=n) for n, c in BRANCH_COLOURS.items()] + [Patch(color=LESION_COLOUR,
                                                                                    label="lesion")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(title)
    _save(fig, path, overwrite)


def _save(fig, path, overwrite: bool) -> None:
    with atomic_file(path, overwrite) as tmp:
        fig.savefig(tmp, format="png")


def write_case_report(folder, result: NerveBiomarkers, title: str = "") -> None:
    """The four files of ``CASE_FILES`` into an existing (temporary) folder."""
    folder = Path(folder)
    write_slices_csv(folder / "slices.csv", result)
    write_json(folder / "summary.json", result.summary)
    plot_profile(folder / "profile.png", result, title)
    plot_mip(folder / "mip.png", result, title)


# ----------------------------------------------------------------------------- entry points

def report_scan(image, mask, out, *, overwrite: bool = False, reference=None, log: Log = None,
                **options) -> NerveBiomarkers:
    """Biomarkers of one scan into the report folder ``out`` (see the module docstring).

    ``reference``: None (subject's own), a NormativeReference, or anything ``load_reference``
    accepts. ``options`` go to ``biomarkers_from_files`` (side, rule, postprocess, location).
    ``log`` gets one line for the scan, starting ``warning:`` when the mask holds no nerve, and a
    ``warning:`` line for each of the summary's ``warnings``.
    """
    from nnunet_nerve.io.atomic import refuse_existing, refuse_output_overlap

    refuse_output_overlap(out, {"image": image, "mask": mask})
    refuse_existing(Path(out), overwrite, "output folder")
    reference = load_reference(reference, options.get("rule", LesionRule()), log, options.get("side"))
    result = biomarkers_from_files(image, mask, reference=reference, **options)
    if log:  # once: an empty mask's line is the warning ("no nerve found"), not a second line
        log(f"{'' if result.nerve_found else 'warning: '}{mask}: {summary_line(result)}")
        for warning in result.summary["warnings"]:
            log(f"warning: {warning}")
    with atomic_directory(out, overwrite) as tmp:
        write_case_report(tmp, result, Path(mask).name)
        if reference is not None:
            write_json(tmp / "reference.json", reference.to_json())
    return result


def report_batch(masks_dir, images_from, out, *, overwrite: bool = False, reference=None, log: Log = None,
                 **options) -> dict:
    """Biomarkers of every mask file in ``masks_dir`` (named ``<case>.nii.gz`` as nnU-Net
    writes them) over the images of ``images_from``: a converted dataset (folder, id or
    name; ``imagesTr/<case>_0000.nii.gz``, else ``imagesTs``) or a registry folder
    (``sub-<id>/anat/sub-<id>_T2w.*``), whose participants.tsv gives each case's thigh
    location for the normative reference. Every case's files are checked before any work
    (``check_case_files``): a batch with damaged or mismatched files names each of them and
    measures none."""
    from nnunet_nerve.io.atomic import refuse_existing, refuse_output_overlap
    from nnunet_nerve.io.images import has_image_suffix, image_stem

    refuse_output_overlap(out, {"masks folder": masks_dir})
    refuse_existing(Path(out), overwrite, "output folder")
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise NerveError(f"{masks_dir}: no such folder")
    masks = {image_stem(p.name): p for p in sorted(masks_dir.iterdir())
             if p.is_file() and has_image_suffix(p.name)}
    if not masks:
        raise NerveError(f"{masks_dir}: no mask files (.nii.gz, .nii, .mha, .nrrd) in the folder")
    source = ImageSource(images_from)
    refuse_output_overlap(out, {"images' folder": source.folder})
    refuse_batch(masks_dir, refusals(masks, lambda case: check_case_files(source, case, masks[case])), len(masks),
                 "nothing was measured")
    reference = load_reference(reference, options.get("rule", LesionRule()), log, options.get("side"))
    results, rows = {}, []
    with atomic_directory(out, overwrite) as tmp:
        for i, (case, mask) in enumerate(masks.items(), 1):
            participant = source.participant(case)
            result = biomarkers_from_files(source.image(case), mask, reference=reference,
                                           location=participant.location if participant else None, **options)
            (tmp / case).mkdir()
            write_case_report(tmp / case, result, case)
            results[case] = result
            rows.append(_case_row(case, source.participant(case), result.summary))
            if log:
                log(f"[{i}/{len(masks)}] {case}: {summary_line(result)}")
                for warning in result.summary["warnings"]:
                    log(f"warning: {warning}")
        write_csv(tmp / "cases.csv", CASES_CSV_COLUMNS, rows, CSV_DIGITS)
        if reference is not None:
            write_json(tmp / "reference.json", reference.to_json())
    return results


def check_case_files(source: ImageSource, case: str, mask) -> None:
    """Every check ``biomarkers_from_files`` makes before measuring, on one case's mask file and
    its image in ``source`` (there is one; ``read_mask_for_image``: complete, finite, 3D files
    on one grid, axial slices, a binary mask that is not inverted; ``interpolation_record``: a
    readable post-processing report beside the mask): NerveError naming the file and the
    problem. A batch runs it over every case first (``errors.refusals``), reading the files here
    and again when measuring, so that it never stops halfway on a bad case."""
    from nnunet_nerve.biomarkers.postprocess_record import interpolation_record

    image = source.image(case)
    if image is None:
        raise NerveError(f"{mask}: no image for case {case} in {source.folder}")
    interpolation_record(mask, read_mask_for_image(image, mask)[1])


def _case_row(case: str, participant, s: dict) -> dict:
    found = s["nerve_found"]
    pp = s.get("postprocessing")
    return {"case": case, "cohort": participant.cohort if participant else None,
            "location": participant.location if participant else None, "mask_used": s.get("mask_used"),
            "postprocess_removed_voxels": pp["removed_voxels"] if pp else None, "nerve_found": found,
            "volume_mm3": s["volume_mm3"], "volume_ml": s["volume_ml"], "length_mm": s["length_mm"],
            "csa_corrected_mean_mm2": s["csa_corrected_mm2"]["mean"],
            "csa_corrected_max_mm2": s["csa_corrected_mm2"]["max"],
            "csa_mean_mm2": s["csa_mm2"]["mean"], "csa_max_mm2": s["csa_mm2"]["max"],
            "signal_mean_norm": s["signal_mean_norm"]["mean"], "split": s["split"]["found"],
            "lesion_burden": s["lesion"]["burden"] if found else None,
            "lesion_segments": len(s["lesion"]["segments"]), "lesion_reference": s["lesion"]["reference"]["kind"]}
