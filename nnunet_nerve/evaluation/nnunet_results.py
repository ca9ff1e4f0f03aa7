"""Gathering nnU-Net's cross-validation predictions for evaluation.

nnU-Net v2 writes the validation predictions of fold k of a trainer to
``$nnUNet_results/Dataset<ID>_<NAME>/<trainer>__<plans>__<configuration>/fold_<k>/validation/<case>.nii.gz``
and logs to ``fold_<k>/training_log_<date>.txt``; the folds are the entries of
``$nnUNet_preprocessed/Dataset<ID>_<NAME>/splits_final.json`` (a list of
{"train": [...], "val": [...]}). Each case's prediction comes from the fold whose ``val``
holds it, so gathering every fold gives one prediction per case, as in the paper's
four-fold cross-validation.
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from nnunet_nerve.registry.dataset_info import FILE_ENDING, DatasetInfo, nnunet_folder, nnunet_preprocessed, read_json
from nnunet_nerve.errors import NerveError
from nnunet_nerve.evaluation.evaluator import PredictionSet

#: nnU-Net's print_to_log_file line for each validation case: "<datetime>: predicting <case>".
_PREDICTING = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?): predicting (\S+)\s*$")
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?):")
#: The line nnU-Net logs right after "predicting <case>": "<datetime>: <case>, shape (...), rank 0".
_SHAPE = re.compile(r"^\S+ \S+: \S+, shape ")


def trainer_output_folder(dataset_name: str, trainer: str, plans: str = "nnUNetPlans",
                          configuration: str = "2d") -> Path:
    """``$nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``, nnU-Net's naming."""
    return nnunet_folder("nnUNet_results") / dataset_name / f"{trainer}__{plans}__{configuration}"


def read_splits(dataset_name: str) -> list:
    """The folds of ``$nnUNet_preprocessed/<dataset>/splits_final.json`` (NerveError when absent or malformed)."""
    path = nnunet_preprocessed() / dataset_name / "splits_final.json"
    splits = read_json(path, "; the folds come from it (written by `nnunet-nerve convert`)")
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "val" in s for s in splits):
        raise NerveError(f"{path}: expected a list of {{\"train\": [...], \"val\": [...]}}, one per fold")
    return splits


def gather_trainer_predictions(info: DatasetInfo, trainer: str, plans: str = "nnUNetPlans",
                               configuration: str = "2d", allow_missing: bool = False,
                               name: "str | None" = None) -> PredictionSet:
    """Every fold's validation predictions of one trainer, as one PredictionSet.

    A fold whose ``validation`` folder is missing, or a validation case without its file,
    is an error naming the fold (and case); with ``allow_missing`` those cases are left
    out and listed in ``left_out``. Cases of the dataset in no fold's ``val`` are left out
    too (and said so). Per-case prediction times come from the folds' training logs.
    """
    folder = trainer_output_folder(info.dataset_name, trainer, plans, configuration)
    if not folder.is_dir():
        raise NerveError(f"{folder}: no results of {trainer} ({plans}, {configuration}) for {info.dataset_name}")
    splits = read_splits(info.dataset_name)
    paths, problems, timing, timing_sources = {}, [], [], []
    for k, split in enumerate(splits):
        fold_dir = folder / f"fold_{k}"
        val_cases = [c for c in split["val"] if c in info.participants]
        validation = fold_dir / "validation"
        if not validation.is_dir():
            problems.append(f"fold {k} missing ({validation} does not exist): {len(val_cases)} case(s) "
                            f"{', '.join(val_cases)}")
            continue
        absent = [c for c in val_cases if not (validation / f"{c}{FILE_ENDING}").is_file()]
        if absent:
            problems.append(f"fold {k} incomplete ({validation}): no prediction for {', '.join(absent)}")
        paths.update({c: validation / f"{c}{FILE_ENDING}" for c in val_cases if c not in absent})
        fold_timing, log = validation_times(fold_dir)
        if fold_timing:
            timing += [t for t in fold_timing if t[0] in paths]
            timing_sources.append(str(log))
    if problems and not allow_missing:
        raise NerveError(f"{folder}: " + "; ".join(problems) + "; pass --allow-missing to evaluate the rest")
    in_folds = {c for s in splits for c in s["val"]}
    outside = [c for c in info.cases if c not in in_folds]
    left_out = list(problems)
    if outside:
        left_out.append(f"{len(outside)} case(s) in no fold's validation set of splits_final.json: {', '.join(outside)}")
    if not paths:
        raise NerveError(f"{folder}: no validation prediction found in any fold")
    return PredictionSet(name=name or trainer, paths=paths, source=str(folder), left_out=tuple(left_out),
                         timing=tuple(timing), timing_source="; ".join(timing_sources))


def validation_times(fold_dir: Path) -> tuple:
    """(case, seconds) per validation case from the newest training log of ``fold_dir``
    holding "predicting <case>" lines, and that log's path; ((), None) when none does.

    nnU-Net logs "<timestamp>: predicting <case>" (then "<case>, shape ...") before each
    validation case; a case's time is the gap to the next "predicting" line, the last
    case's to the next other timestamped line ("Validation complete"). It covers loading,
    sliding-window prediction and waiting for the export queue (the export itself runs in
    background workers). Logs are tried newest first (by modification time: nnU-Net's
    file names do not zero-pad month and day).
    """
    logs = sorted(Path(fold_dir).glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for log in logs:
        starts, end = [], None  # starts: (datetime, case); end: first other line after the last start
        for line in log.read_text(errors="replace").splitlines():
            m = _PREDICTING.match(line)
            if m:
                starts.append((_parse(m.group(1)), m.group(2)))
                end = None
            elif starts and end is None and not _SHAPE.match(line):
                t = _TIMESTAMP.match(line)
                if t:
                    end = _parse(t.group(1))
        bounds = [when for when, _ in starts[1:]] + ([end] if end is not None else [])
        times = [(case, (stop - when).total_seconds()) for (when, case), stop in zip(starts, bounds)]
        if times:
            return tuple(times), log
    return (), None


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
