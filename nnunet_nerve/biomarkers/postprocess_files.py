"""Post-processing of mask files: a file into a file with its report beside it, a folder
(such as nnUNetv2_predict's output) into a folder with one report (``postprocess_record``);
the rule itself is ``postprocess``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunet_nerve.biomarkers.postprocess import PostprocessResult, PostprocessRule, postprocess_nerve
from nnunet_nerve.biomarkers.postprocess_record import (REPORT_NAME, folder_report, interpolation_record,
                                                        report_entry, sidecar_path)
from nnunet_nerve.errors import NerveError, refuse_batch, refusals
from nnunet_nerve.io.atomic import atomic_directory, atomic_file, refuse_output_overlap
from nnunet_nerve.io.images import (IMAGE_SUFFIXES, default_geometry_warning, has_image_suffix, read_volume,
                                    spacing_zyx, write_image)
from nnunet_nerve.io.masks import binary_mask


def read_mask_file(path: Path):
    """(SimpleITK image, binary mask array, ``postprocess_record.interpolation_record``) of one
    mask file, after every check post-processing makes before it works (a complete, finite, 3D,
    binary mask; a readable report beside it): NerveError naming the file and the problem."""
    image = read_volume(path, "mask")
    mask = binary_mask(sitk.GetArrayFromImage(image), str(path))
    return image, mask, interpolation_record(path, mask)


def _postprocess_image(path: Path, rule: PostprocessRule, log: "Callable[[str], None] | None" = None):
    """(output SimpleITK image, result, the input's ``postprocess_record.interpolation_record``)
    for one mask file; ``log`` gets a ``warning:`` line when its header holds no geometry (the
    rule's distances in mm would be voxel counts: ``io.images.default_geometry_problem``)."""
    image, mask, record = read_mask_file(path)
    no_geometry = default_geometry_warning(image, path)
    if no_geometry and log:
        log(f"warning: {no_geometry}")
    result = postprocess_nerve(mask, spacing_zyx(image), rule)
    out = sitk.GetImageFromArray(result.mask.astype(np.uint8))
    out.CopyInformation(image)
    return out, result, record


def postprocess_file(in_path, out_path, rule: PostprocessRule = PostprocessRule(), overwrite: bool = False,
                     log: "Callable[[str], None] | None" = None) -> PostprocessResult:
    """Post-process one mask file into ``out_path`` (uint8 0/1, the input's grid) and record
    what changed in ``postprocess_record.sidecar_path(out_path)`` (a report in
    ``REPORT_NAME``'s format with one entry, which carries on the slices an earlier
    post-processing recorded for the input), both atomically; the report is moved into place
    first, so an interruption never leaves the mask without it. ``log``: as ``_postprocess_image``."""

    refuse_output_overlap(out_path, {"input mask": in_path})
    if not has_image_suffix(out_path) or Path(out_path).is_dir():
        raise NerveError(f"{out_path}: the output must be a file ending in {', '.join(IMAGE_SUFFIXES)} (formats that "
                         "hold a 3D mask with its spacing)")
    sidecar = sidecar_path(out_path)
    refuse_output_overlap(sidecar, {"input mask": in_path, "input's report": sidecar_path(in_path)})
    out, result, earlier = _postprocess_image(Path(in_path), rule, log)
    report = folder_report(asdict(rule), {Path(out_path).name: report_entry(result, earlier)})
    with atomic_file(out_path, overwrite) as tmp, atomic_file(sidecar, overwrite) as tmp_report:
        write_image(out, tmp)
        tmp_report.write_text(json.dumps(report, indent=2) + "\n")
    return result


def postprocess_folder(in_dir, out_dir, rule: PostprocessRule = PostprocessRule(), overwrite: bool = False,
                       log: "Callable[[str], None] | None" = None) -> dict:
    """Post-process every mask file directly in ``in_dir`` (e.g. nnUNetv2_predict's output)
    into ``out_dir``, built atomically. The folder's .json files (dataset.json, plans.json,
    ...) are copied so that the result is a drop-in prediction folder; ``REPORT_NAME``
    records per file what changed, the digest of the mask written and its interpolated slices,
    also those an earlier post-processing recorded beside the input (``postprocess_record``).
    Every file is checked before any is post-processed (``read_mask_file``), so that each bad
    one is named in one run. Returns that report."""

    in_dir = Path(in_dir)
    refuse_output_overlap(out_dir, {"input folder": in_dir})
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and has_image_suffix(p.name))
    if not files:
        raise NerveError(f"{in_dir}: no mask files (.nii.gz, .nii, .mha, .nrrd) in the folder")
    refuse_batch(in_dir, refusals(files, read_mask_file), len(files), "nothing was written",
                 "mask file(s)")
    report = folder_report(asdict(rule), {})
    with atomic_directory(out_dir, overwrite) as tmp:
        for i, path in enumerate(files, 1):
            out, result, earlier = _postprocess_image(path, rule, log)
            write_image(out, tmp / path.name)
            report["files"][path.name] = report_entry(result, earlier)
            if log:
                log(f"[{i}/{len(files)}] {path.name}: {summary_line(result)}")
        for extra in sorted(in_dir.glob("*.json")):
            if not extra.name.endswith(REPORT_NAME):  # reports describe the input's masks
                shutil.copyfile(extra, tmp / extra.name)  # the mode from the umask, as cp gives
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report


def postprocess_path(in_path, out_path, rule: PostprocessRule = PostprocessRule(), overwrite: bool = False,
                     log: "Callable[[str], None] | None" = None):
    """A file to a file, or a folder to a folder."""
    in_path = Path(in_path)
    if in_path.is_dir():
        return postprocess_folder(in_path, out_path, rule, overwrite, log)
    if not in_path.is_file():
        raise NerveError(f"{in_path}: no such file or folder")
    result = postprocess_file(in_path, out_path, rule, overwrite, log)
    if log:
        log(f"{in_path.name}: {summary_line(result)}")
    return result


def summary_line(result: PostprocessResult) -> str:
    """One line: components kept/found, voxels removed, slices filled."""
    filled = f", filled slice(s) {', '.join(map(str, result.filled_slices))} (+{result.filled_voxels} voxels)" \
        if result.filled_slices else ""
    return (f"kept {result.kept_components} of {result.components} component(s), "
            f"removed {result.removed_voxels} voxel(s){filled}")
