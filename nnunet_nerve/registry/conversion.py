"""Registry -> nnU-Net raw dataset (``nnunet-nerve convert``), in the spirit of nnunetv2/dataset_conversion.

Writes ``$nnUNet_raw/Dataset<ID>_<NAME>/`` (imagesTr, labelsTr = consensus, raters/<R>/,
participants.tsv, dataset.json with provenance; see nnunet_nerve.registry.dataset_info) and the
fixed split ``$nnUNet_preprocessed/Dataset<ID>_<NAME>/splits_final.json``.

The registry is validated first (every problem reported, nothing written). The dataset is
built in a temporary sibling folder and renamed into place at the end; a failure leaves
nothing behind, and an existing dataset (or split) is replaced only with ``overwrite``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunet_nerve import __version__
from nnunet_nerve.parameters import require_number
from nnunet_nerve.io.atomic import atomic_directory, atomic_file, refuse_existing, refuse_output_overlap
from nnunet_nerve.registry.consensus import METHODS, consensus
from nnunet_nerve.registry.dataset_info import (FILE_ENDING, IMAGES_TR, LABELS_TR, PARTICIPANTS_FILE, PROVENANCE_KEY,
                                       RATERS_FOLDER, dataset_folder_name, image_file_name, nnunet_preprocessed,
                                       nnunet_raw,
                                       write_participants)
from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.images import read_image, write_image
from nnunet_nerve.registry.reader import Registry
from nnunet_nerve.registry.validation import check_registry
from nnunet_nerve.registry.splits import nnunet_splits

DEFAULT_NAME = "Nerve"
SPLITS_FILE = "splits_final.json"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def _print(message: str) -> None:
    print(message, flush=True)


def dataset_json(registry: Registry, raters: list, method: str) -> dict:
    """nnU-Net's dataset.json keys plus the ``nnunet_nerve`` provenance block; ``raters`` keeps
    the registry's order (raters.tsv, else sorted), the order of every evaluation output."""
    return {
        "channel_names": {"0": "T2"},
        "labels": {"background": 0, "nerve": 1},
        "numTraining": len(registry.participants),
        "file_ending": FILE_ENDING,
        "name": "peripheral nerves (MR neurography), converted by nnunet-nerve",
        "description": "Axial T2w thigh MRN; labelsTr is the raters' consensus, raters/<R>/ each rater's own mask.",
        PROVENANCE_KEY: {
            "consensus": method,
            "raters": list(raters),
            "rater_order": registry.rater_order,
            "version": __version__,
            "registry": str(registry.root),
        },
    }


def check_target(dataset_id: int, name: str, overwrite: bool) -> "tuple[Path, Path]":
    """(raw dataset folder, splits_final.json path); NerveError when they exist without ``overwrite``
    or when another dataset already uses the id."""
    if not 1 <= int(dataset_id) <= 999:
        raise NerveError(f"dataset id {dataset_id}: expected 1 to 999 (nnU-Net's three-digit ids)")
    if not _SAFE_NAME.match(name):
        raise NerveError(f"dataset name {name!r}: use letters, digits and '-' only")
    folder_name = dataset_folder_name(dataset_id, name)
    raw, preprocessed = nnunet_raw(), nnunet_preprocessed()
    target = raw / folder_name
    for root in (raw, preprocessed):
        others = sorted(p.name for p in root.glob(f"Dataset{int(dataset_id):03d}_*")
                        if p.name != folder_name) if root.is_dir() else []
        if others:
            raise NerveError(f"{root / others[0]}: dataset id {int(dataset_id)} is already used by another "
                             "dataset; pick another -d ID or remove that folder")
    splits = preprocessed / folder_name / SPLITS_FILE
    refuse_existing(target, overwrite, "dataset")
    refuse_existing(splits, overwrite, "split file")
    return target, splits


def convert_case(registry: Registry, pid: str, raters: list, method: str, out: Path) -> None:
    """Write one case: image as .nii.gz (voxels and geometry unchanged), each rater's mask as uint8 0/1
    and the consensus, both with exactly the image's geometry."""
    files = registry.files[pid]
    image = read_image(files.image)
    write_image(image, out / IMAGES_TR / image_file_name(pid))
    arrays = []
    for rater in raters:
        mask = (sitk.GetArrayFromImage(read_image(files.masks[rater])) != 0).astype(np.uint8)
        arrays.append(mask)
        write_mask(mask, image, out / RATERS_FOLDER / rater / f"{pid}{FILE_ENDING}")
    write_mask(consensus(arrays, method), image, out / LABELS_TR / f"{pid}{FILE_ENDING}")


def write_mask(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """Write a uint8 array with ``reference``'s spacing, origin and direction."""
    mask = sitk.GetImageFromArray(array.astype(np.uint8))
    mask.CopyInformation(reference)
    write_image(mask, path)


def convert_registry(registry_root: "str | os.PathLike", dataset_id: int, name: str = DEFAULT_NAME,
                     consensus_method: str = "majority", n_folds: int = 4, seed: int = 0,
                     overwrite: bool = False, log: "Callable[[str], None] | None" = _print,
                     allow_uniform_masks: bool = False) -> Path:
    """Validate a registry and convert it; returns the dataset folder. See the module docstring.

    ``n_folds`` 0 writes no split (a dataset for evaluation or prediction only);
    ``allow_uniform_masks`` accepts empty and all-nerve rater masks."""
    log = log or (lambda message: None)
    if consensus_method not in METHODS:
        raise NerveError(f"consensus {consensus_method!r}: expected one of {', '.join(METHODS)}")
    require_number(seed, "--seed", minimum=0, integer=True)
    if n_folds == 1 or n_folds < 0:
        raise NerveError(f"--folds {n_folds}: expected 0 (no split) or at least 2")
    target, splits_path = check_target(dataset_id, name, overwrite)
    refuse_output_overlap(target, {"registry": registry_root})
    refuse_output_overlap(splits_path, {"registry": registry_root})
    warnings: list = []
    registry = check_registry(registry_root, log, allow_uniform_masks, warnings)
    for warning in warnings:
        log(f"warning: {warning}")
    cases = sorted(registry.participant_ids)
    if len(cases) < n_folds:
        raise NerveError(f"{registry.root}: {len(cases)} subjects cannot be split into {n_folds} folds; "
                         f"pass --folds {len(cases)} or fewer, or --folds 0 for no split")
    raters = registry.raters
    splits = nnunet_splits({p.participant_id: p.cohort for p in registry.participants}, n_folds, seed) \
        if n_folds else None
    log(f"converting {len(cases)} subjects ({len(raters)} raters, {registry.rater_order} order: {', '.join(raters)}; "
        f"consensus {consensus_method}) to {target}")
    with atomic_directory(target, overwrite=overwrite, what="dataset") as tmp:
        for sub in [IMAGES_TR, LABELS_TR] + [f"{RATERS_FOLDER}/{r}" for r in raters]:
            (tmp / sub).mkdir(parents=True)
        for i, pid in enumerate(cases, start=1):
            log(f"  {pid} ({i}/{len(cases)})")
            convert_case(registry, pid, raters, consensus_method, tmp)
        rows = sorted(registry.participants, key=lambda p: p.participant_id)
        write_participants(tmp / PARTICIPANTS_FILE, rows)
        (tmp / "dataset.json").write_text(json.dumps(dataset_json(registry, raters, consensus_method), indent=2))
        if splits is not None:
            with atomic_file(splits_path, overwrite=overwrite) as tmp_splits:
                tmp_splits.write_text(json.dumps(splits, indent=2))
        elif splits_path.exists():
            splits_path.unlink()  # the split of the dataset being replaced (only reached with overwrite)
    log(f"wrote {target}")
    if splits is not None:
        log(f"wrote {splits_path} ({n_folds} folds, stratified by cohort, seed {seed})")
    else:
        log("no split written (--folds 0): nnU-Net would make its own folds if this dataset were trained on")
    return target
