"""Every check a registry must pass before anything is converted (``nnunet-nerve check``).

``registry_problems`` returns all problems found, one line each, naming the subject and
the file. The rules (docs/registry.md):

- participants.tsv: cohort is volunteer|patient, location distal|medial|proximal|n/a;
  ids are unique and safe (``sub-`` then letters, digits, ``-``, as BIDS requires);
- raters.tsv (optional): at least one rater, ids unique, letters and digits; every listed
  rater has masks, and every rater with masks is listed;
- every listed subject has exactly one image (a file ``sub-<id>_T2w`` + .nii.gz/.nii/.mha/.nrrd
  or a folder ``sub-<id>_T2w/`` holding exactly one DICOM series) and a mask of every rater
  that appears in the registry; no files of unlisted subjects; no mask-like file with a
  name outside the ``_desc-rater<R>_mask`` pattern;
- the image is 3D, one value per voxel, with finite intensities;
- each mask is 3D, on its image's grid (``imageio.grid_mismatch``: exact size, spacing and
  direction to 1e-4, origin to 1e-3 of the smallest spacing, so a NIfTI mask written from
  a DICOM series passes), finite, with at most one non-zero value;
- each mask marks some voxels as nerve, but not all: an empty or all-nerve rater mask is
  an error unless ``allow_uniform_masks`` (``--allow-uniform-masks``) accepts it; one marking
  more than half of the voxels (``io.masks.inverted_mask_problem``: labels swapped) is an error.

Not errors but warnings (``image_warnings``): an image whose slices are coronal or sagittal
(``io.images.axial_slices_problem``; training and Table 1 work on any orientation, the
biomarkers (`biomarkers`, `segment`, `evaluate --biomarkers`) need axial slices and refuse
it), and an image whose header holds no geometry (``io.images.default_geometry_problem``).

How far each rater's mask is from the other raters' masks (printed by ``check``) is
``evaluation.rater_agreement``.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable

import SimpleITK as sitk

from nnunet_nerve.registry.dataset_info import COHORTS, LOCATIONS, PARTICIPANTS_FILE, RATERS_FILE
from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.images import (axial_slices_problem, default_geometry_warning, grid_mismatch, read_image,
                                    volume_problem)
from nnunet_nerve.io.masks import inverted_mask_problem, label_mask_problems, uniform_mask_problem
from nnunet_nerve.registry.reader import LABELS_FOLDER, RATER_ID, SAFE_ID, Registry, mask_path, scan_registry


def participant_problems(registry: Registry) -> list:
    """Problems in participants.tsv itself: unknown values, duplicate and unsafe ids."""
    tsv = registry.root / PARTICIPANTS_FILE
    problems = []
    if not registry.participants:
        problems.append(f"{tsv}: lists no participants")
    counts = Counter(registry.participant_ids)
    for pid, n in sorted(counts.items()):
        if n > 1:
            problems.append(f"{pid}: {tsv}: participant id listed {n} times")
    for p in registry.participants:
        if not SAFE_ID.match(p.participant_id):
            problems.append(f"{p.participant_id!r}: {tsv}: unsafe participant id; expected 'sub-' followed by "
                            "letters, digits and '-' (as BIDS requires), e.g. sub-001")
        if p.cohort not in COHORTS:
            problems.append(f"{p.participant_id}: {tsv}: unknown cohort {p.cohort!r}; expected one of "
                            f"{', '.join(COHORTS)}")
        if p.location not in LOCATIONS:
            problems.append(f"{p.participant_id}: {tsv}: unknown location {p.location!r}; expected one of "
                            f"{', '.join(LOCATIONS)}")
    return problems


def rater_problems(registry: Registry) -> list:
    """Problems of raters.tsv (none without one): no rows, unsafe or repeated ids, a listed
    rater without any mask, masks of a rater it does not list (one line per rater)."""
    if registry.rater_table is None:
        return []
    tsv = registry.root / RATERS_FILE
    ids = [r.rater_id for r in registry.rater_table]
    problems = [] if ids else [f"{tsv}: lists no raters; list one rater_id per line or remove the file"]
    for rater, n in sorted(Counter(ids).items()):
        if n > 1:
            problems.append(f"{tsv}: rater {rater} listed {n} times")
    for rater in dict.fromkeys(ids):
        if not RATER_ID.match(rater):
            problems.append(f"{tsv}: rater id {rater!r} is not letters and digits (the <R> of "
                            "sub-<id>_T2w_desc-rater<R>_mask.nii.gz)")
        elif rater not in registry.mask_raters:
            problems.append(f"{tsv}: rater {rater} is listed but no subject has a mask "
                            f"sub-<id>_T2w_desc-rater{rater}_mask.nii.gz")
    listed = set(registry.participant_ids)
    for rater in registry.mask_raters:
        if rater not in ids:
            paths = [f.masks[rater] for pid, f in sorted(registry.files.items()) if pid in listed and rater in f.masks]
            problems.append(f"{tsv}: rater {rater} is not listed but has {len(paths)} mask(s), e.g. {paths[0]}; "
                            "add the rater to raters.tsv or remove the masks")
    return problems


def layout_problems(registry: Registry) -> list:
    """Missing, ambiguous, stray and unlisted files (no image is read). Every subject needs a
    mask of every rater in ``registry.raters`` that has masks at all (a listed rater without
    any mask, or masks of an unlisted rater, are ``rater_problems``: one line each)."""
    problems = []
    listed = set(registry.participant_ids)
    raters = [r for r in registry.raters if r in registry.mask_raters]
    for pid, files in sorted(registry.files.items()):
        if pid not in listed:
            where = [p for p in (registry.root / pid, registry.root / LABELS_FOLDER / pid) if p.exists()]
            problems.append(f"{pid}: {where[0] if where else registry.root}: files of a subject not listed in "
                            f"{PARTICIPANTS_FILE}")
            continue
        if not SAFE_ID.match(pid):
            continue
        if not files.images:
            problems.append(f"{pid}: {registry.root / pid / 'anat'}: no image {pid}_T2w (.nii.gz, .nii, .mha, "
                            ".nrrd or a DICOM folder)")
        elif len(files.images) > 1:
            problems.append(f"{pid}: {files.images[0].parent}: several images "
                            f"({', '.join(p.name for p in files.images)}); keep one")
        for rater, paths in files.duplicate_masks.items():
            count = {2: "two", 3: "three"}.get(len(paths), str(len(paths)))
            problems.append(f"{pid}: {paths[0].parent}: {count} masks for rater {rater} of subject {pid}: "
                            f"{' and '.join(p.name for p in paths)}; keep one")
        if not files.masks:
            problems.append(f"{pid}: {registry.root / LABELS_FOLDER / pid / 'anat'}: no rater masks "
                            f"{pid}_T2w_desc-rater<R>_mask.nii.gz")
        else:
            for rater in raters:
                if rater not in files.masks:
                    problems.append(f"{pid}: {mask_path(registry.root, pid, rater)}: missing; rater {rater} "
                                    "segmented other subjects, every subject needs a mask of every rater")
        for path in files.stray:
            problems.append(f"{pid}: {path}: not a rater mask name; expected {pid}_T2w_desc-rater<R>_mask.nii.gz "
                            "with R letters and digits")
    return problems


def image_problems(pid: str, path: Path) -> "tuple[sitk.Image | None, list]":
    """Read a subject's image; (image or None, problems): unreadable (NaN or infinite voxels
    included: ``read_image`` refuses them), several DICOM series, 4D."""
    try:
        image = read_image(path)
    except NerveError as e:
        return None, [f"{pid}: {e}"]
    not_volume = volume_problem(image)
    problems = [f"{pid}: {path}: {not_volume}"] if not_volume else []
    return (image if not problems else None), problems


def mask_problems(pid: str, rater: str, path: Path, image: "sitk.Image | None",
                  allow_uniform_masks: bool = False) -> list:
    """A rater's mask: readable, 3D, on ``image``'s grid (when given), finite, at most one non-zero
    value, (unless ``allow_uniform_masks``) neither empty nor nerve everywhere, and not nerve
    in more than half of the voxels."""
    try:
        mask = read_image(path)
    except NerveError as e:
        return [f"{pid}: {e}"]
    problems = []
    not_volume = volume_problem(mask, f"mask of rater {rater}")
    if not_volume:
        return [f"{pid}: {path}: {not_volume}"]
    if image is not None:
        mismatch = grid_mismatch(image, mask)
        if mismatch:
            problems.append(f"{pid}: {path}: mask of rater {rater} is not on the image's grid: {mismatch}")
    array = sitk.GetArrayViewFromImage(mask)
    problems += [f"{pid}: {path}: mask of rater {rater} {problem}" for problem in label_mask_problems(array)]
    if not allow_uniform_masks and not problems:
        uniform = uniform_mask_problem(array)
        if uniform:
            problems.append(f"{pid}: {path}: mask of rater {rater} {uniform}; pass --allow-uniform-masks "
                            "to accept it")
    inverted = None if problems else inverted_mask_problem(array)
    if inverted:
        problems.append(f"{pid}: {path}: mask of rater {rater} {inverted}")
    return problems


def image_warnings(pid: str, path: Path, image: sitk.Image) -> list:
    """Lines naming the subject and the file: the image's slices are not axial (the biomarkers
    will refuse it; ``io.images.axial_slices_problem`` says why and how to reorient), or its
    header holds no geometry (``io.images.default_geometry_problem``)."""
    lines = []
    not_axial = axial_slices_problem(image)
    if not_axial:
        lines.append(f"{pid}: {path}: {not_axial}; training and evaluation work as they are, but `biomarkers`, "
                     "`segment` and `evaluate --biomarkers` refuse this scan")
    no_geometry = default_geometry_warning(image, path)
    if no_geometry:
        lines.append(f"{pid}: {no_geometry}")
    return lines


def registry_problems(registry: Registry, log: "Callable[[str], None] | None" = None,
                      allow_uniform_masks: bool = False, warnings: "list | None" = None) -> list:
    """Every problem of a scanned registry, one line each naming the subject and the file;
    ``warnings``, when given, receives the ``image_warnings`` of each readable image."""
    problems = participant_problems(registry) + rater_problems(registry) + layout_problems(registry)
    listed = [pid for pid in dict.fromkeys(registry.participant_ids) if SAFE_ID.match(pid)]
    for i, pid in enumerate(listed, start=1):
        files = registry.files[pid]
        if log:
            log(f"checking {pid} ({i}/{len(listed)})")
        image = None
        if files.image is not None:
            image, found = image_problems(pid, files.image)
            problems += found
            if image is not None and warnings is not None:
                warnings += image_warnings(pid, files.image, image)
        for rater, path in sorted(files.masks.items()):
            problems += mask_problems(pid, rater, path, image, allow_uniform_masks)
    return problems


def check_registry(root: "str | os.PathLike", log: "Callable[[str], None] | None" = None,
                   allow_uniform_masks: bool = False, warnings: "list | None" = None) -> Registry:
    """Scan and validate a registry; the Registry when it is fine, else NerveError listing every
    problem. ``warnings``, when given, receives the lines that are no error (``image_warnings``)."""
    registry = scan_registry(root)
    problems = registry_problems(registry, log, allow_uniform_masks, warnings)
    if problems:
        raise NerveError(f"{registry.root}: {len(problems)} problem(s) in the registry; nothing was written",
                         problems)
    return registry
