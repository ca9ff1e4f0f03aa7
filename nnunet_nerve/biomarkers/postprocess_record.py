"""What a post-processing report tells a later step about the masks it wrote.

``postprocess`` on a folder writes one report, ``postprocessing_nerve.json``, into the output
folder; on a single file, ``<name>.postprocessing_nerve.json`` beside it (``sidecar_path``:
``b.nii.gz`` -> ``b.postprocessing_nerve.json``), in the same format. Each records per file
(``report_entry``) the slices it interpolated over a gap (``filled_slices``), the digest of the
mask it wrote (``mask_sha256``, ``mask_digest``) and ``interpolated_slices``: the written mask's
slices holding voxels interpolated by this run or by an earlier one recorded beside its input.
Post-processing is idempotent, so a mask measured again (``biomarkers --mask``) is not filled
again, and without the report its interpolated slices would count as measured ones, evidence
for a lesion. ``interpolation_record`` carries them over when the mask is the one a report
describes (same digest); a mask changed since, or a report that does not identify its masks,
carries nothing over and says why.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.images import image_stem

#: A post-processed folder's report; a single file's is ``<name>.`` + this (``sidecar_path``).
REPORT_NAME = "postprocessing_nerve.json"

#: Why nothing was carried over, per case.
CHANGED = ("the mask differs from the one post-processing wrote (changed since); the slices it interpolated are "
           "not known and count as measured")
UNIDENTIFIED = ("the report does not identify its masks (no mask_sha256 and interpolated_slices: an older "
                "nnunet-nerve); the slices it interpolated are not carried over")


def mask_digest(mask: np.ndarray) -> str:
    """sha256 of a binary mask: its shape (z, y, x) and its voxels (nonzero = 1, C order,
    bit-packed). The same for the same voxels in any file format or data type."""
    mask = np.asarray(mask)
    digest = hashlib.sha256(("x".join(map(str, mask.shape)) + ";").encode())
    digest.update(np.packbits(mask != 0, axis=None).tobytes())
    return digest.hexdigest()


def folder_report(rule: dict, files: dict) -> dict:
    """The document written as ``REPORT_NAME``: the post-processing rule (``PostprocessRule``'s
    fields) and {file name: ``report_entry``}."""
    return {"rule": rule, "files": files}


def report_entry(result, earlier: "dict | None") -> dict:
    """A folder report's entry for one written mask: ``result.as_dict()`` (a
    ``PostprocessResult``), ``mask_sha256`` of its mask, ``interpolated_slices`` (this run's
    ``filled_slices`` and ``earlier``'s slices that still hold mask) and ``earlier_postprocessing``
    (``earlier``: ``interpolation_record`` of the input)."""
    mask = result.mask
    still = {z for z in (earlier["slices"] if earlier else ()) if mask[z].any()}
    return {**result.as_dict(), "mask_sha256": mask_digest(mask),
            "interpolated_slices": sorted(still | set(result.filled_slices)), "earlier_postprocessing": earlier}


def sidecar_path(mask_path) -> Path:
    """The report of a single post-processed file: ``<name without its image suffix>`` +
    ``"." + REPORT_NAME`` in the same folder (``b.nii.gz`` -> ``b.postprocessing_nerve.json``)."""
    path = Path(mask_path)
    return path.with_name(f"{image_stem(path.name)}.{REPORT_NAME}")


def interpolation_record(mask_path, mask: np.ndarray) -> "dict | None":
    """What the reports beside ``mask_path`` (its ``sidecar_path``, then the folder's
    ``REPORT_NAME``) say about it: None without a report holding an entry for the file; else
    {"report": path, "slices": interpolated slices carried over, "note": None, or why none
    were}, from the first entry whose digest is the mask's, else from the first entry. A report
    that is not valid JSON, or whose entry's ``interpolated_slices`` are not slice indices of
    this mask, is refused (NerveError)."""
    records = [r for r in (_record(report, mask_path, mask) for report in
                           (sidecar_path(mask_path), Path(mask_path).parent / REPORT_NAME)) if r is not None]
    return next((r for r in records if r["note"] is None), records[0] if records else None)


def _record(report: Path, mask_path, mask: np.ndarray) -> "dict | None":
    """``interpolation_record`` from one report file (None: no such file or no entry)."""
    if not report.is_file():
        return None
    stat = report.stat()
    entry = _report_files(str(report), stat.st_mtime_ns, stat.st_size).get(Path(mask_path).name)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise NerveError(f"{report}: the entry for {Path(mask_path).name} is not an object; restore the report or "
                         "remove it")
    record = {"report": str(report.resolve()), "slices": [], "note": None}
    if "mask_sha256" not in entry or "interpolated_slices" not in entry:
        record["note"] = UNIDENTIFIED
        return record
    slices = entry["interpolated_slices"]
    if not isinstance(slices, list) or not all(isinstance(z, int) and not isinstance(z, bool)
                                               and 0 <= z < mask.shape[0] for z in slices):
        raise NerveError(f"{report}: {Path(mask_path).name}: interpolated_slices {slices!r} are not slice indices "
                         f"of the mask (0-{mask.shape[0] - 1}); restore the report or remove it")
    if entry["mask_sha256"] != mask_digest(mask):
        record["note"] = CHANGED
    else:
        record["slices"] = sorted(set(slices))
    return record


@lru_cache(maxsize=4)
def _report_files(report: str, mtime_ns: int, size: int) -> dict:
    """The ``files`` of a report, parsed once per version of the file (a batch reads the same
    report for every case; ``mtime_ns`` and ``size`` key the version). NerveError when it is
    not a readable report."""
    try:
        files = json.loads(Path(report).read_text())["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise NerveError(f"{report}: not a readable post-processing report ({type(exc).__name__}: {exc}); "
                         "restore it or remove it") from None
    return files if isinstance(files, dict) else {}
