"""Reading a BIDS-style nerve registry: participants.tsv and the files of each subject.

Layout (see docs/registry.md)::

    <registry>/participants.tsv            participant_id, cohort, location (+ any further columns)
    <registry>/raters.tsv                  optional: rater_id (+ any further columns), one row per rater,
                                           in the order comparisons are reported (most experienced first)
    <registry>/sub-<id>/anat/sub-<id>_T2w.nii.gz      the image (.nii.gz, .nii, .mha or .nrrd)
    <registry>/sub-<id>/anat/sub-<id>_T2w/            ... or a folder holding one DICOM series
    <registry>/derivatives/labels/sub-<id>/anat/sub-<id>_T2w_desc-rater<R>_mask.nii.gz

This module only finds files; it reads no image. ``registry_validation`` checks contents.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_nerve.registry.dataset_info import (PARTICIPANTS_FILE, RATER_ID_COLUMN, RATER_ORDER_SORTED, RATER_ORDER_TABLE,
                                       RATERS_FILE, Participant, read_participants, read_tsv, write_tsv)
from nnunet_nerve.io.images import image_suffix

LABELS_FOLDER = Path("derivatives") / "labels"
#: A safe participant id: ``sub-`` then letters, digits and ``-`` (it becomes an nnU-Net case id and file names).
SAFE_ID = re.compile(r"^sub-[A-Za-z0-9][A-Za-z0-9-]*$")
#: A rater id: letters and digits (the ``<R>`` of ``desc-rater<R>_mask``).
RATER_ID = re.compile(r"^[A-Za-z0-9]+$")


@dataclass
class SubjectFiles:
    """The files found on disk for one subject id (not necessarily listed in participants.tsv).

    ``images`` lists every candidate image (a valid subject has exactly one: a file
    ``sub-<id>_T2w<suffix>`` or a folder ``sub-<id>_T2w/``); ``masks`` maps rater id to
    the mask file; ``stray`` lists files in the labels folder that look like masks but do
    not follow the ``sub-<id>_T2w_desc-rater<R>_mask<suffix>`` name; ``duplicate_masks``
    maps a rater with several mask files (``.nii`` and ``.nii.gz``) to all of them (``masks``
    holds the first).
    """

    participant_id: str
    images: list = field(default_factory=list)
    masks: dict = field(default_factory=dict)
    stray: list = field(default_factory=list)
    duplicate_masks: dict = field(default_factory=dict)

    @property
    def image(self) -> "Path | None":
        return self.images[0] if len(self.images) == 1 else None


@dataclass(frozen=True)
class RaterRow:
    """One row of raters.tsv: the rater id (the ``<R>`` of ``desc-rater<R>_mask``) and every
    further column (experience, ...) as text."""

    rater_id: str
    extra: dict = field(default_factory=dict)


@dataclass
class Registry:
    """A registry folder: its participants.tsv rows (file order), the files per subject id, and
    its raters.tsv rows (file order; None when the registry has no raters.tsv)."""

    root: Path
    participants: list
    files: dict  # subject id -> SubjectFiles, for every id listed or found on disk
    rater_table: "list | None" = None

    @property
    def participant_ids(self) -> list:
        return [p.participant_id for p in self.participants]

    def participant(self, pid: str) -> Participant:
        return next(p for p in self.participants if p.participant_id == pid)

    @property
    def mask_raters(self) -> list:
        """Every rater id that has a mask for any listed subject, sorted."""
        listed = set(self.participant_ids)
        return sorted({r for pid, f in self.files.items() if pid in listed for r in f.masks})

    @property
    def raters(self) -> list:
        """The rater ids in reporting order: raters.tsv's rows (first occurrence) when the
        registry has one, else ``mask_raters`` (sorted). Validation checks that both agree."""
        if self.rater_table is None:
            return self.mask_raters
        return list(dict.fromkeys(r.rater_id for r in self.rater_table))

    @property
    def rater_order(self) -> str:
        """Where ``raters``' order comes from: ``raters.tsv`` or ``sorted``."""
        return RATER_ORDER_SORTED if self.rater_table is None else RATER_ORDER_TABLE


def image_candidates(root: Path, pid: str) -> list:
    """``<root>/<pid>/anat/<pid>_T2w<suffix>`` files and a ``<pid>_T2w/`` folder that exist."""
    anat = root / pid / "anat"
    if not anat.is_dir():
        return []
    stem = f"{pid}_T2w"
    found = []
    for entry in sorted(anat.iterdir()):
        if entry.name == stem and entry.is_dir():
            found.append(entry)
        elif entry.is_file() and (suffix := image_suffix(entry.name)) and entry.name[: -len(suffix)] == stem:
            found.append(entry)
    return found


def mask_files(root: Path, pid: str) -> tuple:
    """(rater id -> mask path, stray mask-like files, rater id -> every mask path of a rater
    with more than one) in ``derivatives/labels/<pid>/anat``."""
    anat = root / LABELS_FOLDER / pid / "anat"
    masks, stray, found = {}, [], {}
    if not anat.is_dir():
        return masks, stray, {}
    pattern = re.compile(rf"^{re.escape(pid)}_T2w_desc-rater(?P<rater>[A-Za-z0-9]+)_mask$")
    for entry in sorted(anat.iterdir()):
        suffix = image_suffix(entry.name)
        if not entry.is_file() or suffix is None:
            continue
        m = pattern.match(entry.name[: -len(suffix)])
        if m:
            found.setdefault(m.group("rater"), []).append(entry)
            masks.setdefault(m.group("rater"), entry)
        else:
            stray.append(entry)
    return masks, stray, {rater: paths for rater, paths in found.items() if len(paths) > 1}


def subject_folders(root: Path) -> list:
    """Subject ids that have a folder ``sub-*`` in the registry or in derivatives/labels."""
    ids = set()
    for parent in (root, root / LABELS_FOLDER):
        if parent.is_dir():
            ids.update(p.name for p in parent.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    return sorted(ids)


def read_rater_table(path: "str | os.PathLike") -> list:
    """raters.tsv as RaterRow rows in file order (column ``rater_id``, then any others).
    NerveError naming the file when it cannot be read as such (``read_tsv``); the ids
    themselves are checked by ``registry_validation``."""
    return [RaterRow(values[RATER_ID_COLUMN], {k: v for k, v in values.items() if k != RATER_ID_COLUMN})
            for values in read_tsv(path, (RATER_ID_COLUMN,))]


def write_rater_table(path: "str | os.PathLike", rows: list) -> None:
    """Write RaterRow rows as raters.tsv: ``rater_id`` then the further columns in first-seen order."""
    extra = list(dict.fromkeys(k for r in rows for k in r.extra))
    write_tsv(path, [RATER_ID_COLUMN] + extra, [{RATER_ID_COLUMN: r.rater_id, **r.extra} for r in rows])


def scan_registry(root: "str | os.PathLike") -> Registry:
    """Read participants.tsv (and raters.tsv when present) and find the image and the masks of
    every listed or present subject.

    NerveError only when participants.tsv or raters.tsv cannot be read (missing participants,
    no header columns, a line with another number of fields).
    """
    root = Path(root).expanduser().resolve()
    participants = read_participants(root / PARTICIPANTS_FILE)
    rater_table = read_rater_table(root / RATERS_FILE) if (root / RATERS_FILE).exists() else None
    ids = set(subject_folders(root)) | {p.participant_id for p in participants}
    files = {}
    for pid in sorted(ids):
        if not pid or "/" in pid or pid in (".", ".."):
            files[pid] = SubjectFiles(pid)
            continue
        masks, stray, duplicates = mask_files(root, pid)
        files[pid] = SubjectFiles(pid, image_candidates(root, pid), masks, stray, duplicates)
    return Registry(root, participants, files, rater_table)


def image_path(root: Path, pid: str, suffix: str = ".nii.gz") -> Path:
    """Where a subject's image file goes in the layout."""
    return root / pid / "anat" / f"{pid}_T2w{suffix}"


def mask_path(root: Path, pid: str, rater: str, suffix: str = ".nii.gz") -> Path:
    """Where a rater's mask of a subject goes in the layout."""
    return root / LABELS_FOLDER / pid / "anat" / f"{pid}_T2w_desc-rater{rater}_mask{suffix}"
