"""The Python API: one function per ``nnunet-nerve`` verb, with the verb's options as keyword
arguments and the same defaults (the CLI reads its defaults from these signatures).

Each function returns what the verb wrote or computed (paths, the existing result objects)
instead of printing it. Where the verb reports progress, ``progress`` is called with each
message (None, the default: silent; ``progress=print`` shows what the command shows). Bad
input raises ``nnunet_nerve.errors.NerveError`` with the one-line message the command prints
after ``error:`` (``.problems`` holds the itemised lines, e.g. every problem of a registry).

    from nnunet_nerve import api

    api.phantom("registry", volunteers=2, patients=2)
    api.convert("registry", dataset_id=42)
    result = api.evaluate("42", pred=["preds/"], out="eval/")

Domain modules are imported inside the functions, so that ``import nnunet_nerve.api`` (and the
CLI's ``--help``) stays light.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from nnunet_nerve.errors import NerveError
from nnunet_nerve.evaluation.columns import DEFAULT_HD95

PathLike = Union[str, os.PathLike]
Progress = Optional[Callable[[str], None]]

__all__ = ["phantom", "check", "convert", "evaluate", "biomarkers", "postprocess", "segment", "demo",
           "trainer_dir", "doctor", "CheckResult", "EvaluateResult", "DoctorResult", "NerveError"]


def _quiet(progress: Progress) -> Callable[[str], None]:
    return progress or (lambda message: None)


# --- registries ------------------------------------------------------------------------------

def phantom(out: PathLike, *, volunteers: int = 10, patients: int = 42, seed: int = 0, size: str = "small",
            overwrite: bool = False, progress: Progress = None) -> Path:
    """Write a synthetic registry to ``out`` (``size``: "small" or "paper"); returns its folder."""
    from nnunet_nerve.registry.phantom import write_phantom_registry

    return write_phantom_registry(out, volunteers=volunteers, patients=patients, seed=seed, size=size,
                                  overwrite=overwrite, log=_quiet(progress))


@dataclass(frozen=True)
class CheckResult:
    """A valid registry (``registry.reader.Registry``), the raters' agreement per subject
    (``RaterAgreement`` rows), the lines ``check`` prints about it, and its warnings (lines
    that are no error: ``registry.validation.image_warnings``)."""

    registry: object
    agreement: list
    agreement_lines: list
    warnings: list = field(default_factory=list)


def check(registry: PathLike, *, allow_uniform_masks: bool = False, progress: Progress = None) -> CheckResult:
    """Validate a registry without writing anything. Every problem found raises one NerveError
    whose ``problems`` lists them (subject and file); ``allow_uniform_masks`` accepts rater masks
    that are empty or all nerve."""
    from nnunet_nerve.evaluation.rater_agreement import agreement_summary, rater_agreement
    from nnunet_nerve.registry.validation import check_registry

    warnings: list = []
    checked = check_registry(registry, log=progress, allow_uniform_masks=allow_uniform_masks, warnings=warnings)
    agreement = rater_agreement(checked)
    return CheckResult(checked, agreement, agreement_summary(agreement, checked.raters), warnings)


def convert(registry: PathLike, dataset_id: int, *, name: str = "Nerve", consensus: str = "majority",
            folds: int = 4, seed: int = 0, overwrite: bool = False, allow_uniform_masks: bool = False,
            progress: Progress = None) -> Path:
    """Validate ``registry`` and write ``$nnUNet_raw/Dataset<ID>_<name>/`` and its split
    (``folds`` 0: no split); returns the dataset folder. ``consensus``: "majority" or "staple"."""
    from nnunet_nerve.registry.conversion import convert_registry

    return convert_registry(registry, dataset_id, name=name, consensus_method=consensus, n_folds=folds,
                            seed=seed, overwrite=overwrite, allow_uniform_masks=allow_uniform_masks,
                            log=_quiet(progress))


# --- evaluation --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate`` wrote: the output folder, the per-case rows (``evaluation.rows``, as
    in per_case.csv) and, with ``biomarkers=True``, the agreement summary rows (else None)."""

    out: Path
    evaluation: object
    agreement: "list | None" = None


def evaluate(dataset: "str | int | os.PathLike", *, out: PathLike, pred: Sequence[PathLike] = (),
             name: Sequence[str] = (), trainer: Sequence[str] = (), configuration: str = "2d",
             plans: str = "nnUNetPlans", hd95: str = DEFAULT_HD95, paper_reference: bool = False,
             allow_missing: bool = False, overwrite: bool = False, biomarkers: bool = False,
             progress: Progress = None) -> EvaluateResult:
    """The paper's Table 1, statistics and Figure 2 of prediction folders (``pred``, named by
    ``name`` in order, default the folders' names) and of nnU-Net trainers' cross-validation
    results (``trainer`` with ``plans`` and ``configuration``) against the consensus and the
    raters of a converted ``dataset`` (folder, id or Dataset<ID>_<NAME>), written to ``out``."""
    from nnunet_nerve.evaluation.evaluator import evaluate as evaluate_methods, gather_prediction_folder
    from nnunet_nerve.evaluation.nnunet_results import gather_trainer_predictions
    from nnunet_nerve.evaluation.report import write_report
    from nnunet_nerve.io.atomic import refuse_existing
    from nnunet_nerve.registry.dataset_info import load_dataset_info

    pred, name, trainer = list(pred), list(name), list(trainer)
    if not pred and not trainer:
        raise NerveError("nothing to evaluate: give --pred FOLDER or -tr TRAINER")
    if name and len(name) != len(pred):
        raise NerveError(f"{len(name)} --name for {len(pred)} --pred; give one name per --pred, in order")
    refuse_existing(Path(out), overwrite, "evaluation output folder")
    say = _quiet(progress)
    info = load_dataset_info(dataset)
    names = name or [Path(p).resolve().name for p in pred]
    methods = [gather_prediction_folder(folder, info, n, allow_missing) for folder, n in zip(pred, names)]
    methods += [gather_trainer_predictions(info, tr, plans, configuration, allow_missing) for tr in trainer]
    say(f"evaluating {len(info.cases)} case(s) of {info.dataset_name}: "
        f"{', '.join(m.name for m in methods)} against consensus and raters {', '.join(info.raters)} "
        f"({info.rater_order_note}); HD95: {hd95}")
    evaluation = evaluate_methods(info, methods, progress=say, hd95=hd95)
    extra = agreement = None
    if biomarkers:  # measured before anything is written: a case refused here leaves no output
        from nnunet_nerve.biomarkers.agreement import AGREEMENT_FOLDER, measure_cases, summarise, write_agreement

        warnings: list = []
        rows = measure_cases(info, methods, progress=say, warnings=warnings)
        agreement = summarise(rows)

        def extra(folder: Path) -> None:
            write_agreement(folder / AGREEMENT_FOLDER, rows, warnings=warnings, summary=agreement)
    written = write_report(evaluation, out, overwrite=overwrite, progress=say, paper_reference=paper_reference,
                           extra=extra)
    return EvaluateResult(Path(written), evaluation, agreement)


# --- biomarkers ----------------------------------------------------------------------------------

def biomarkers(out: PathLike, *, image: "PathLike | None" = None, mask: "PathLike | None" = None,
               masks: "PathLike | None" = None, dataset: "str | int | os.PathLike | None" = None,
               reference=None, location: "str | None" = None, side: "str | None" = None, k: float = 3.0,
               min_excess: float = 0.2, min_lesion_slices: int = 2, lesion_extent: str = "half-maximum",
               min_lesion_separation: int = 4, postprocess: bool = True, min_extent: float = 0.5,
               max_branch_distance: float = 20.0, max_gap: int = 2, side_fraction: float = 0.2,
               overwrite: bool = False, progress: Progress = None):
    """Nerve biomarkers of one scan (``image`` + ``mask``; returns its ``NerveBiomarkers``) or of
    a batch (``masks`` folder + ``dataset``; returns {case: NerveBiomarkers}) into ``out``.

    Lesion rule: a part of a slice is above threshold when its corrected CSA or its normalised
    signal exceeds centre + max(``k`` x spread, ``min_excess`` x centre); a lesion spans at least
    ``min_lesion_slices`` measured slices above threshold; ``lesion_extent``: where it lies, its
    full width at half maximum against the subject's own nerve (``half-maximum``) or its run
    above threshold (``threshold``); with the half maximum, segments fewer than
    ``min_lesion_separation`` nerve slices apart are one lesion (the longer; 1: every segment
    its own). ``postprocess``: post-process the mask first, as
    ``postprocess`` does with ``min_extent``, ``max_branch_distance``, ``max_gap`` and
    ``side_fraction`` (options that only apply when post-processing)."""
    from nnunet_nerve.biomarkers.measures import LesionRule
    from nnunet_nerve.biomarkers.report import report_batch, report_scan

    single = image or mask
    if single and (masks or dataset):
        raise NerveError("give either --image/--mask (one scan) or --masks/--dataset (a batch), not both")
    if single and not (image and mask):
        raise NerveError("one scan needs both --image and --mask")
    if not single and not (masks and dataset):
        raise NerveError("give --image and --mask, or --masks and --dataset")
    if location and not single:
        raise NerveError("--location is for one scan; a batch takes each case's location from participants.tsv")
    rule = LesionRule(k=k, min_excess=min_excess, min_slices=min_lesion_slices, extent=lesion_extent,
                      min_separation=min_lesion_separation)
    cleaning = _postprocess_rule(postprocess, min_extent=min_extent, max_branch_distance=max_branch_distance,
                                 max_gap=max_gap, side_fraction=side_fraction)
    options = dict(side=side, rule=rule, postprocess=cleaning or False, overwrite=overwrite, reference=reference,
                   log=progress)
    if single:
        return report_scan(image, mask, out, location=location, **options)
    return report_batch(masks, dataset, out, **options)


def postprocess(input: PathLike, output: PathLike, *, min_extent: float = 0.5, max_branch_distance: float = 20.0,
                max_gap: int = 2, side_fraction: float = 0.2, overwrite: bool = False, progress: Progress = None):
    """Keep the physiological nerve tube of a mask file (returns its ``PostprocessResult``;
    ``<name>.postprocessing_nerve.json`` beside the output records it) or of every mask in a
    folder (returns the report written into it as postprocessing_nerve.json).

    A component not bridged to the main tube is kept only if its z-extent is at least
    ``min_extent`` of the tube's and it lies within ``max_branch_distance`` mm of it; gaps of up
    to ``max_gap`` missed slices are filled; side pieces under ``side_fraction`` of their
    slice's largest piece over two slices or more (a vessel touching the nerve) are removed
    (0: kept), with what they alone held to the nerve. The output post-processed again is
    unchanged."""
    from nnunet_nerve.biomarkers.postprocess_files import postprocess_path

    rule = _postprocess_rule(True, min_extent=min_extent, max_branch_distance=max_branch_distance, max_gap=max_gap,
                             side_fraction=side_fraction)
    return postprocess_path(input, output, rule, overwrite=overwrite, log=progress)


def _postprocess_rule(enabled: bool, **options):
    """The ``PostprocessRule`` of ``postprocess``'s options (min_extent, max_branch_distance,
    max_gap, side_fraction), or None when post-processing is off; an option set away from its
    default while post-processing is off is refused (it would silently do nothing)."""
    import inspect

    from nnunet_nerve.biomarkers.postprocess import PostprocessRule

    if not enabled:
        defaults = inspect.signature(postprocess).parameters
        changed = [name for name, value in options.items() if value != defaults[name].default]
        if changed:
            flags = ", ".join(f"--{name.replace('_', '-')} {options[name]}" for name in changed)
            raise NerveError(f"{flags}: post-processing option(s) given with --no-postprocess; drop them, or drop "
                             "--no-postprocess")
        return None
    return PostprocessRule(min_extent_fraction=options["min_extent"],
                           max_branch_distance_mm=options["max_branch_distance"], max_gap_slices=options["max_gap"],
                           side_piece_fraction=options["side_fraction"])


# --- a trained model on a new scan ---------------------------------------------------------------

def segment(input: PathLike, output: PathLike, *, model: PathLike, folds: "Sequence | None" = None,
            device: str = "cpu", postprocess: bool = True, min_extent: float = 0.5, max_branch_distance: float = 20.0,
            max_gap: int = 2, side_fraction: float = 0.2, series: "str | None" = None, reference=None,
            side: "str | None" = None, disable_tta: bool = False, overwrite: bool = False,
            progress: Progress = None, progress_bar: bool = False):
    """Segment one scan (a DICOM series folder or an image file) with a trained nnU-Net model
    folder into ``output``; returns the ``SegmentResult`` (paths written, stage times, quality
    flags). ``folds``: default every fold with checkpoint_final.pth; ``series``: the Series
    Instance UID when the folder holds several; ``progress_bar``: nnU-Net's bar on stderr;
    ``postprocess`` and its options as for ``biomarkers``."""
    from nnunet_nerve.segmentation.segment import segment as segment_scan

    cleaning = _postprocess_rule(postprocess, min_extent=min_extent, max_branch_distance=max_branch_distance,
                                 max_gap=max_gap, side_fraction=side_fraction)
    return segment_scan(input, output, model, folds=folds, device=device, postprocess=cleaning or False,
                        series_uid=series, reference=reference, side=side, mirroring=not disable_tta,
                        overwrite=overwrite, log=progress, progress_bar=progress_bar)


# --- the study on the synthetic registry ---------------------------------------------------------

def demo(out: PathLike, *, full: bool = False, volunteers: "int | None" = None, patients: "int | None" = None,
         seed: int = 0, device: "str | None" = None, epochs: "int | None" = None, iterations: "int | None" = None,
         ablation: bool = False, seeds: "int | None" = None, methods: "Sequence[str] | None" = None) -> Path:
    """Run (or resume) the demo in ``out``; returns the path of report.md (with ``ablation``:
    of ablation/ablation.md). Unlike the other functions it prints its stage progress, as the
    command does (the stages run nnU-Net's commands for minutes)."""
    if ablation:
        from nnunet_nerve.study.ablation import run_ablation

        if full:
            raise NerveError("--ablation runs on the demo budget; --full is not supported with it "
                             "(docs/ablation.md gives the full-schedule commands)")
        return run_ablation(out, seeds=seeds, methods=methods, volunteers=volunteers, patients=patients,
                            seed=seed, device=device, epochs=epochs, iterations=iterations)
    if methods or seeds is not None:
        raise NerveError("--seeds and --methods belong to --ablation")
    from nnunet_nerve.study.demo import run_demo

    return run_demo(out, full=full, volunteers=volunteers, patients=patients, seed=seed, device=device,
                    epochs=epochs, iterations=iterations)


# --- the installation ----------------------------------------------------------------------------

def trainer_dir() -> str:
    """The folder that nnU-Net's ``nnUNet_extTrainer`` must list to find FCDenseNetTrainer."""
    from nnunet_nerve.training.trainer_dir import trainer_dir as folder

    return folder()


@dataclass(frozen=True)
class DoctorResult:
    """Every check (``training.doctor.Check``: name, ok True/False/None = information, detail,
    fix) and whether nnU-Net can train FCDenseNetTrainer here (no check failed)."""

    checks: list
    training_can_work: bool


def doctor() -> DoctorResult:
    """Check nnU-Net's folder variables, nnUNet_extTrainer, nnU-Net's lookup of
    FCDenseNetTrainer, torch with torchvision, and the GPU."""
    from nnunet_nerve.training.doctor import run_all, training_can_work

    checks = run_all()
    return DoctorResult(checks, training_can_work(checks))
