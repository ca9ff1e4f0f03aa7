"""Reading a converted nnU-Net raw dataset folder (the contract between conversion and evaluation).

A dataset converted from a registry (``nnunet-nerve convert``) is
``$nnUNet_raw/Dataset<ID>_<NAME>/`` holding

- ``imagesTr/<case>_0000.nii.gz`` the T2 image, ``labelsTr/<case>.nii.gz`` the consensus (uint8 0/1);
- ``raters/<rater>/<case>.nii.gz`` every rater's own mask (uint8 0/1, on the image grid);
- ``participants.tsv`` (``participant_id  cohort  location`` then any further columns);
- ``dataset.json`` with nnU-Net's keys plus ``"nnunet_nerve": {"consensus", "raters", "rater_order", "version",
  "registry"}``; ``raters`` lists the rater ids in the order every output reports them
  (``rater_order``: ``raters.tsv`` when the registry's raters.tsv gave it, ``sorted`` otherwise;
  datasets converted before raters.tsv existed have no ``rater_order`` and sorted raters).

Evaluation needs nothing but this folder; ``load_dataset_info`` reads it.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_nerve.errors import NerveError

COHORTS = ("volunteer", "patient")
LOCATIONS = ("distal", "medial", "proximal", "n/a")
#: The columns every participants.tsv starts with, in this order.
REQUIRED_COLUMNS = ("participant_id", "cohort", "location")
FILE_ENDING = ".nii.gz"
CHANNEL_SUFFIX = "_0000"
#: nnU-Net's raw-dataset folders: training images, their labels (here the consensus), test images.
IMAGES_TR = "imagesTr"
LABELS_TR = "labelsTr"
IMAGES_TS = "imagesTs"
RATERS_FOLDER = "raters"
PARTICIPANTS_FILE = "participants.tsv"
#: A registry's optional list of raters, in the order comparisons are reported (column ``rater_id``).
RATERS_FILE = "raters.tsv"
RATER_ID_COLUMN = "rater_id"
PROVENANCE_KEY = "nnunet_nerve"
#: Values of the provenance's ``rater_order``: the registry's raters.tsv, or sorted rater ids.
RATER_ORDER_TABLE = RATERS_FILE
RATER_ORDER_SORTED = "sorted"

_DATASET_NAME = re.compile(r"^Dataset(\d{3})_(.+)$")


@dataclass(frozen=True)
class Participant:
    """One row of participants.tsv: the id, cohort (volunteer|patient), location
    (distal|medial|proximal|n/a) and every further column as text."""

    participant_id: str
    cohort: str
    location: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    """What evaluation needs to know about a converted dataset; paths are absolute."""

    folder: Path
    dataset_id: int
    name: str
    cases: tuple            # participant ids, sorted
    participants: dict      # case -> Participant
    raters: tuple           # rater ids in reporting order (dataset.json's provenance)
    consensus_method: str   # "majority" | "staple" (from dataset.json's provenance)
    dataset_json: dict
    rater_order: str = RATER_ORDER_SORTED   # where the order came from: "raters.tsv" | "sorted"

    @property
    def rater_order_note(self) -> str:
        """Where the rater order comes from, for reports."""
        return "order of the registry's raters.tsv" if self.rater_order == RATER_ORDER_TABLE else "sorted"

    @property
    def dataset_name(self) -> str:
        """``Dataset<ID>_<NAME>``, the folder name nnU-Net uses everywhere."""
        return self.folder.name

    def cohort(self, case: str) -> str:
        return self.participants[case].cohort

    def location(self, case: str) -> str:
        return self.participants[case].location

    def image_path(self, case: str) -> Path:
        return self.folder / IMAGES_TR / image_file_name(case)

    def consensus_path(self, case: str) -> Path:
        return self.folder / LABELS_TR / f"{case}{FILE_ENDING}"

    def rater_path(self, rater: str, case: str) -> Path:
        return self.folder / RATERS_FOLDER / rater / f"{case}{FILE_ENDING}"

    def rater_paths(self, case: str) -> dict:
        """rater id -> path of that rater's mask for ``case``."""
        return {r: self.rater_path(r, case) for r in self.raters}

    def cases_of_cohort(self, cohort: str) -> list:
        return [c for c in self.cases if self.participants[c].cohort == cohort]


def image_file_name(case: str) -> str:
    """nnU-Net's name of a case's (only) image channel: ``<case>_0000.nii.gz``."""
    return f"{case}{CHANNEL_SUFFIX}{FILE_ENDING}"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name: ``Dataset`` + id zero-padded to 3 digits + ``_`` + name."""
    return f"Dataset{int(dataset_id):03d}_{name}"


def read_json(path: Path, missing_hint: str = ""):
    """The parsed JSON file; NerveError naming the file when it is missing or not valid JSON."""
    if not path.is_file():
        raise NerveError(f"{path}: no such file{missing_hint}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise NerveError(f"{path}: not valid JSON ({e})") from None


def nnunet_folder(variable: str) -> Path:
    """The folder in environment variable ``variable`` (nnUNet_raw, nnUNet_preprocessed,
    nnUNet_results); NerveError naming it when unset or when it names a file."""
    value = os.environ.get(variable)
    if not value:
        raise NerveError(f"{variable} is not set; export {variable}=/path/to/{variable} "
                         "(see nnU-Net's documentation/setting_up_paths.md)")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise NerveError(f"{variable}={value}: not a folder (it is a file); point {variable} at a folder")
    return path


def nnunet_raw() -> Path:
    """``$nnUNet_raw``; NerveError when unset."""
    return nnunet_folder("nnUNet_raw")


def nnunet_preprocessed() -> Path:
    """``$nnUNet_preprocessed``; NerveError when unset."""
    return nnunet_folder("nnUNet_preprocessed")


def find_dataset_dir(id_or_path: "str | int | os.PathLike") -> Path:
    """Resolve ``42``, ``"042"``, ``"Dataset042_Phantom"`` (against ``$nnUNet_raw``) or a folder path.

    An existing folder path wins; otherwise a bare number is matched against the folders
    ``Dataset<ID:03d>_*`` in ``$nnUNet_raw`` (exactly one must exist). NerveError otherwise.
    """
    text = str(id_or_path)
    as_path = Path(text).expanduser()
    if as_path.is_dir():
        return as_path.resolve()
    if text.isdigit():
        raw = nnunet_raw()
        prefix = f"Dataset{int(text):03d}_"
        found = sorted(p for p in raw.glob(prefix + "*") if p.is_dir()) if raw.is_dir() else []
        if not found:
            raise NerveError(f"{raw}: no dataset {prefix}* (dataset id {int(text)})")
        if len(found) > 1:
            raise NerveError(f"{raw}: several datasets with id {int(text)}: {', '.join(p.name for p in found)}")
        return found[0].resolve()
    if _DATASET_NAME.match(text):
        candidate = nnunet_raw() / text
        if candidate.is_dir():
            return candidate.resolve()
        raise NerveError(f"{candidate}: no such dataset folder")
    raise NerveError(f"{text}: not a dataset folder, a dataset id or a Dataset<ID>_<NAME> name")


#: Byte-order marks and the encodings they announce (spreadsheets write them: Excel's
#: "Unicode text" is UTF-16 with a BOM, "CSV UTF-8" is UTF-8 with one).
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
#: Tried in order for a file without a BOM: UTF-8, then Windows' cp1252 (Excel's "Text (Tab delimited)").
_FALLBACK_ENCODINGS = ("utf-8", "cp1252")


def read_text(path: Path) -> str:
    """The text of a file in the encodings a clinician's spreadsheet writes: UTF-8, UTF-8 or
    UTF-16 with a byte-order mark, else Windows cp1252. NerveError naming the file when it
    cannot be read or decoded (binary data, another encoding)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NerveError(f"{path}: cannot read ({e.strerror or e})") from None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as e:
                raise NerveError(f"{path}: not valid {encoding} text despite its byte-order mark ({e.reason} "
                                 f"at byte {e.start})") from None
    if b"\0" not in data:
        for encoding in _FALLBACK_ENCODINGS:
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                continue
    raise NerveError(f"{path}: not text in UTF-8, UTF-16 (with a byte-order mark) or Windows cp1252; "
                     "save it as tab-separated text (UTF-8)")


def read_tsv(path: "str | os.PathLike", required: tuple) -> list:
    """The rows of a tab-separated file with a header, as dicts of stripped values (file order).

    The header must hold every column of ``required`` (any order, others allowed); blank
    lines are skipped; the text is decoded by ``read_text`` (UTF-8, UTF-8/UTF-16 with a BOM,
    cp1252). NerveError naming the file: missing, unreadable, empty, comma-separated
    (a header without tabs but with commas), a required column absent, a line with another
    number of fields.
    """
    path = Path(path)
    if not path.is_file():
        raise NerveError(f"{path}: no such file")
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t")
    rows = [r for r in reader if any(cell.strip() for cell in r)]
    if not rows:
        raise NerveError(f"{path}: empty file, expected a header with {', '.join(required)}")
    if len(rows[0]) == 1 and ("," in rows[0][0] or ";" in rows[0][0]):
        separator = "commas" if "," in rows[0][0] else "semicolons"
        raise NerveError(f"{path}: not tab-separated (found {separator} in the header line, no tabs); "
                         "save it as tab-separated text")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise NerveError(f"{path}: header lacks column(s) {', '.join(missing)}")
    out = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise NerveError(f"{path}: line {line_no} has {len(row)} fields, the header has {len(header)}")
        out.append(dict(zip(header, (cell.strip() for cell in row))))
    return out


def read_participants(path: "str | os.PathLike") -> list:
    """Read a participants.tsv into Participant rows (file order).

    The header must hold ``participant_id``, ``cohort``, ``location`` in any order among its
    columns; further columns go to ``Participant.extra``. Values are stripped (``read_tsv``).
    """
    out = []
    for values in read_tsv(path, REQUIRED_COLUMNS):
        extra = {k: v for k, v in values.items() if k not in REQUIRED_COLUMNS}
        out.append(Participant(values["participant_id"], values["cohort"], values["location"], extra))
    return out


def participants_header(participants: list) -> list:
    """The columns to write: the required three, then the further columns in first-seen order."""
    extra = []
    for p in participants:
        for k in p.extra:
            if k not in extra:
                extra.append(k)
    return list(REQUIRED_COLUMNS) + extra


def write_tsv(path: "str | os.PathLike", header: list, rows: list) -> None:
    """Write dict rows as a tab-separated file: the header, then each row's values in header
    order (a missing value as empty text)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for values in rows:
            writer.writerow([values.get(h, "") for h in header])


def write_participants(path: "str | os.PathLike", participants: list) -> None:
    """Write rows as participants.tsv (tab-separated, header first, required columns first)."""
    write_tsv(path, participants_header(participants),
              [{"participant_id": p.participant_id, "cohort": p.cohort, "location": p.location, **p.extra}
               for p in participants])


def load_dataset_info(dataset_dir: "str | int | os.PathLike") -> DatasetInfo:
    """Read a converted dataset folder (see module docstring); ``dataset_dir`` as for find_dataset_dir.

    Checks that dataset.json carries the provenance block with a list of distinct rater ids,
    that participants.tsv lists exactly the cases in labelsTr, and that every rater has a mask
    for every case. The raters keep the provenance's order (the order of every report).
    """
    folder = find_dataset_dir(dataset_dir)
    m = _DATASET_NAME.match(folder.name)
    if not m:
        raise NerveError(f"{folder}: folder name is not Dataset<ID>_<NAME>")
    json_path = folder / "dataset.json"
    dataset_json = read_json(json_path)
    provenance = dataset_json.get(PROVENANCE_KEY)
    if not isinstance(provenance, dict):
        raise NerveError(f"{json_path}: no '{PROVENANCE_KEY}' block; was this dataset made by `nnunet-nerve convert`?")
    raters = provenance.get("raters", [])
    if not isinstance(raters, list) or not all(isinstance(r, str) and r for r in raters):
        raise NerveError(f"{json_path}: '{PROVENANCE_KEY}.raters' must be a list of rater ids")
    repeated = sorted({r for r in raters if raters.count(r) > 1})
    if repeated:
        raise NerveError(f"{json_path}: '{PROVENANCE_KEY}.raters' lists rater(s) {', '.join(repeated)} more than once")
    participants = read_participants(folder / PARTICIPANTS_FILE)
    by_case = {p.participant_id: p for p in participants}
    labels = folder / LABELS_TR  # iterdir, not glob: an unreadable folder raises instead of looking empty
    label_cases = sorted(p.name[: -len(FILE_ENDING)] for p in (labels.iterdir() if labels.is_dir() else ())
                         if p.name.endswith(FILE_ENDING))
    problems = []
    for case in sorted(set(label_cases) - set(by_case)):
        problems.append(f"{folder / LABELS_TR / (case + FILE_ENDING)}: case {case} is not in {PARTICIPANTS_FILE}")
    for case in sorted(set(by_case) - set(label_cases)):
        problems.append(f"{folder / PARTICIPANTS_FILE}: case {case} has no consensus in labelsTr")
    info = DatasetInfo(folder=folder, dataset_id=int(m.group(1)), name=m.group(2), cases=tuple(sorted(by_case)),
                       participants=by_case, raters=tuple(raters),
                       consensus_method=str(provenance.get("consensus", "")), dataset_json=dataset_json,
                       rater_order=str(provenance.get("rater_order", RATER_ORDER_SORTED)))
    for case in info.cases:
        for rater, path in info.rater_paths(case).items():
            if not path.is_file():
                problems.append(f"{path}: rater {rater} has no mask for case {case}")
    if problems:
        raise NerveError(f"{folder}: {len(problems)} problem(s) in the converted dataset", problems)
    return info
