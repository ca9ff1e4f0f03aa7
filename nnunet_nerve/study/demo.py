"""`nnunet-nerve demo`: the whole study on the embedded synthetic registry, with nnU-Net's own commands.

Stages (each skipped when its output exists, so an interrupted demo continues when run again):
phantom registry -> convert (with the fixed split) -> nnUNetv2_plan_and_preprocess ->
nnUNetv2_train FC-DenseNet and nnU-Net's default U-Net on fold 0 (demo-sized schedule, resumed
with --c after an interruption) -> nnUNetv2_predict the held-out fold with both ->
nnunet-nerve postprocess of both -> nnunet-nerve evaluate --biomarkers (Table 1 side by side,
biomarker agreement) -> nnunet-nerve biomarkers of one patient (post-processed mask) ->
report.md with the figures.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nnunet_nerve.study.console_scripts import console_script
from nnunet_nerve.errors import NerveError
from nnunet_nerve.registry.dataset_info import IMAGES_TR, image_file_name
from nnunet_nerve.training.seeding import SEED_VARIABLE
from nnunet_nerve.training.trainer_dir import trainer_dir

DEMO_MARKER = ".nnunet-nerve-demo"
DATASET_ID = 900
DATASET_NAME = "NervePhantom"
FOLD = 0
METHODS = {"FC-DenseNet": "FCDenseNetTrainer_demo", "nnU-Net": "nnUNetTrainer_demo"}
FULL_METHODS = {"FC-DenseNet": "FCDenseNetTrainer", "nnU-Net": "nnUNetTrainer"}
#: Both methods predict without test-time mirroring, as the paper did (nnU-Net would mirror by
#: default, at four times the cost on 2D data).
NO_TTA = ["--disable_tta"]
#: Both trainings draw from this seed (``NNUNET_NERVE_SEED``, training/seeding.py) unless the
#: variable is set: on the CPU a demo run again from scratch trains the same networks.
DEMO_SEED = 0


@dataclass
class DemoLayout:
    """Where every stage of the demo writes, under one output folder."""
    out: Path
    full: bool = False

    @property
    def registry(self) -> Path: return self.out / "registry"
    @property
    def raw(self) -> Path: return self.out / "nnUNet_raw"
    @property
    def preprocessed(self) -> Path: return self.out / "nnUNet_preprocessed"
    @property
    def results(self) -> Path: return self.out / "nnUNet_results"
    @property
    def dataset(self) -> Path: return self.raw / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    @property
    def splits(self) -> Path: return self.preprocessed / self.dataset.name / "splits_final.json"
    @property
    def heldout_images(self) -> Path: return self.out / "heldout_images"
    @property
    def predictions(self) -> Path: return self.out / "predictions"
    @property
    def postprocessed(self) -> Path: return self.out / "predictions_postprocessed"
    @property
    def evaluation(self) -> Path: return self.out / "evaluation"
    @property
    def biomarkers(self) -> Path: return self.out / "biomarkers"
    @property
    def logs(self) -> Path: return self.out / "logs"
    @property
    def stages(self) -> Path: return self.out / ".stages"
    @property
    def report(self) -> Path: return self.out / "report.md"
    @property
    def prediction_times(self) -> Path: return self.logs / "prediction_seconds.json"

    @property
    def methods(self) -> dict[str, str]:
        return FULL_METHODS if self.full else METHODS

    def fold_dir(self, trainer: str) -> Path:
        return self.results / self.dataset.name / f"{trainer}__nnUNetPlans__2d" / f"fold_{FOLD}"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(nnUNet_raw=str(self.raw), nnUNet_preprocessed=str(self.preprocessed),
                   nnUNet_results=str(self.results), nnUNet_extTrainer=trainer_dir())
        env.setdefault("nnUNet_n_proc_DA", "1" if not self.full else "8")
        env.setdefault(SEED_VARIABLE, str(DEMO_SEED))
        env.setdefault("MPLCONFIGDIR", str(self.out / ".matplotlib"))
        env["PYTHONUNBUFFERED"] = "1"  # stream nnU-Net's epoch lines to the progress bar
        return env


def prepare_output(out: Path) -> DemoLayout:
    """Use ``out`` for the demo: new, empty, or an earlier demo's folder (resumed); never anything else."""
    out = Path(out).resolve()
    if out.exists() and not (out / DEMO_MARKER).exists() and any(out.iterdir()):
        raise NerveError(f"{out}: folder exists and is not an nnunet-nerve demo folder; choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).touch()
    return DemoLayout(out)


class Progress:
    """Stage messages on stdout, a bar for training epochs on stderr."""

    def __init__(self, total_stages: int):
        self.total = total_stages
        self.index = 0
        self.started = time.time()

    def stage(self, title: str, skipped: bool = False) -> None:
        self.index += 1
        state = "done earlier, skipped" if skipped else "running"
        print(f"[{self.index}/{self.total}] {title} ({state})", flush=True)

    def bar(self, label: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r      {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        sys.stderr.flush()
        if done >= total:
            sys.stderr.write("\n")

    def elapsed(self) -> str:
        return f"{(time.time() - self.started) / 60:.1f} min"


def run_logged(cmd: list[str], log: Path, env: dict, on_line: Callable[[str], None] | None = None) -> None:
    """Run ``cmd``, appending its output to ``log``; NerveError with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            fh.write(line)
            if on_line:
                on_line(line)
        code = proc.wait()
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise NerveError(f"{cmd[0]} failed (exit {code}); see {log}: {tail[0][:200]}")


def run_demo(out: str | os.PathLike, full: bool = False, volunteers: int | None = None,
             patients: int | None = None, seed: int = 0, device: str | None = None,
             epochs: int | None = None, iterations: int | None = None) -> Path:
    """Run (or resume) the demo; returns the path of report.md.

    ``epochs``/``iterations`` change the demo trainers' budget (passed to nnUNetv2_train
    through nnunet_nerve.training.demo_budget's environment variables)."""
    layout, env = open_demo_folder(out, full, epochs, iterations)
    device = device or ("cuda" if full else "cpu")
    progress = Progress(total_stages=6 + 2 * len(layout.methods) + 1)
    prepare_dataset(layout, progress, env, volunteers, patients, seed)
    train_methods(layout, progress, env, device)
    heldout = predict_methods(layout, progress, env, device)
    postprocess_predictions(layout, progress, env)
    evaluate_methods(layout, progress, env)
    case = biomarkers_of_one_case(layout, progress, env, heldout)

    # 9. The report.
    progress.stage("report.md", False)
    from nnunet_nerve.study.demo_report import write_report

    write_report(layout, heldout, case)
    print_outputs(layout, progress)
    return layout.report


def train_methods(layout: DemoLayout, progress: Progress, env: dict, device: str) -> None:
    """Stage 4: training, one method after the other, same fold, same budget (skipped per
    method when its final checkpoint exists)."""
    for name, trainer in layout.methods.items():
        final = layout.fold_dir(trainer) / "checkpoint_final.pth"
        progress.stage(f"nnUNetv2_train {DATASET_ID} 2d {FOLD} -tr {trainer} ({name})", final.exists())
        if not final.exists():
            train_fold(trainer, device, env, progress, layout.logs / f"4_train_{trainer}.log", layout.full)


def predict_methods(layout: DemoLayout, progress: Progress, env: dict, device: str) -> list:
    """Stage 5: prediction of the held-out fold with nnU-Net's own command, per method;
    returns the held-out cases."""
    heldout = heldout_cases(layout)
    link_heldout_images(layout, heldout)
    for name, trainer in layout.methods.items():
        target = layout.predictions / name
        progress.stage(f"nnUNetv2_predict held-out fold {FOLD} ({len(heldout)} cases) with {trainer}",
                       target.exists())
        if not target.exists():
            predict_heldout(layout, trainer, target, device, env, layout.logs / f"5_predict_{trainer}.log")
    return heldout


def postprocess_predictions(layout: DemoLayout, progress: Progress, env: dict) -> None:
    """Stage 6: physiological post-processing of every method's predictions (the report
    compares before and after)."""
    done = all((layout.postprocessed / name).exists() for name in layout.methods)
    progress.stage("nnunet-nerve postprocess of both methods' predictions", done)
    if not done:
        for name in layout.methods:
            if not (layout.postprocessed / name).exists():
                run_logged([console_script("nnunet-nerve"), "postprocess", str(layout.predictions / name),
                            str(layout.postprocessed / name)], layout.logs / "6_postprocess.log", env)


def evaluate_methods(layout: DemoLayout, progress: Progress, env: dict) -> None:
    """Stage 7: the paper's Table 1, the methods side by side, and the biomarker agreement."""
    done = (layout.evaluation / "table1.md").exists()
    progress.stage("nnunet-nerve evaluate --biomarkers (Table 1, statistics, boxplots, biomarker agreement)", done)
    if not done:
        cmd = [console_script("nnunet-nerve"), "evaluate", "--dataset", str(layout.dataset),
               "--out", str(layout.evaluation), "--allow-missing", "--biomarkers"]
        for name in layout.methods:
            cmd += ["--pred", str(layout.predictions / name), "--name", name]
        run_logged(cmd, layout.logs / "7_evaluate.log", env)


def biomarkers_of_one_case(layout: DemoLayout, progress: Progress, env: dict, heldout: list) -> str:
    """Stage 8: biomarkers of one held-out patient from the first method's segmentation,
    post-processed (the default; the summary lists what post-processing removed). The
    phantom's stacks are right legs. Returns the case."""
    case = _biomarker_case(layout, heldout)
    done = layout.biomarkers.exists()
    progress.stage(f"nnunet-nerve biomarkers of {case} (post-processed FC-DenseNet mask)", done)
    if not done:
        first = next(iter(layout.methods))
        run_logged([console_script("nnunet-nerve"), "biomarkers",
                    "--image", str(layout.dataset / IMAGES_TR / image_file_name(case)),
                    "--mask", str(layout.predictions / first / f"{case}.nii.gz"), "--side", "right",
                    "--out", str(layout.biomarkers)], layout.logs / "8_biomarkers.log", env)
    return case


def print_outputs(layout: DemoLayout, progress: Progress) -> None:
    """The closing lines: the elapsed time and where each output is."""
    print(f"\nDone in {progress.elapsed()}. Everything is under {layout.out}:")
    for label, path in [("report", layout.report), ("registry", layout.registry), ("nnU-Net dataset", layout.dataset),
                        ("trained models", layout.results / layout.dataset.name),
                        ("predictions", layout.predictions), ("post-processed", layout.postprocessed),
                        ("evaluation", layout.evaluation),
                        ("biomarkers", layout.biomarkers), ("logs", layout.logs)]:
        print(f"  {label:16s} {path}")


def open_demo_folder(out: str | os.PathLike, full: bool = False, epochs: int | None = None,
                     iterations: int | None = None) -> tuple[DemoLayout, dict]:
    """The demo folder (new, or an earlier demo's) and the environment of its commands.

    ``epochs``/``iterations`` change the demo trainers' budget (passed to nnUNetv2_train
    through nnunet_nerve.training.demo_budget's environment variables)."""
    from nnunet_nerve.training import demo_budget

    layout = prepare_output(Path(out))
    layout.full = full
    if epochs is not None:
        os.environ[demo_budget.EPOCHS_VARIABLE] = str(epochs)
    if iterations is not None:
        os.environ[demo_budget.ITERATIONS_VARIABLE] = str(iterations)
    layout.stages.mkdir(exist_ok=True)
    return layout, layout.env()


def prepare_dataset(layout: DemoLayout, progress: Progress, env: dict, volunteers: int | None = None,
                    patients: int | None = None, seed: int = 0) -> None:
    """Stages 1-3, shared by the demo and its ablation: the phantom registry, its conversion
    with the fixed split, and nnU-Net's planning and preprocessing (each skipped when done)."""
    full = layout.full
    # 1. The synthetic registry.
    done = (layout.registry / "participants.tsv").exists()
    progress.stage("synthetic registry (nnunet-nerve phantom)", done)
    if not done:
        size = "paper" if full else "small"
        n_vol = volunteers if volunteers is not None else 10 if full else 8
        n_pat = patients if patients is not None else 42 if full else 8
        run_logged([console_script("nnunet-nerve"), "phantom", str(layout.registry), "--volunteers", str(n_vol),
                    "--patients", str(n_pat), "--seed", str(seed), "--size", size],
                   layout.logs / "1_phantom.log", env)

    # 2. Registry -> nnU-Net raw dataset and the fixed four-fold split.
    done = (layout.dataset / "dataset.json").exists() and layout.splits.exists()
    progress.stage(f"convert to {layout.dataset.name} with the fixed 4-fold split (nnunet-nerve convert)", done)
    if not done:
        run_logged([console_script("nnunet-nerve"), "convert", str(layout.registry), "-d", str(DATASET_ID),
                    "--name", DATASET_NAME, "--seed", str(seed), "--overwrite"],
                   layout.logs / "2_convert.log", env)

    # 3. nnU-Net's planning and preprocessing.
    marker = layout.stages / "preprocess.done"
    progress.stage("nnUNetv2_plan_and_preprocess -c 2d", marker.exists())
    if not marker.exists():
        run_logged([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d",
                    "--verify_dataset_integrity", "-np", "2", "-npfp", "2"], layout.logs / "3_preprocess.log", env)
        marker.touch()


def train_fold(trainer: str, device: str, env: dict, progress: Progress, log: Path, full: bool = False) -> None:
    """nnUNetv2_train of fold FOLD with --c (resumes from the latest checkpoint after an
    interruption) into ``env``'s nnUNet_results; an epoch bar on stderr."""
    total = _planned_epochs(trainer, full)
    epoch_re = re.compile(r"^.*Epoch (\d+)\s*$")

    def on_line(line: str) -> None:
        m = epoch_re.match(line.strip())
        if m:
            progress.bar(f"{trainer} epoch", int(m.group(1)), total)

    run_logged([console_script("nnUNetv2_train"), str(DATASET_ID), "2d", str(FOLD), "-tr", trainer,
                "-device", device, "--c"],
               log, env, on_line)
    progress.bar(f"{trainer} epoch", total, total)


def _planned_epochs(trainer: str, full: bool) -> int:
    if full:
        return 100 if trainer.startswith("FCDenseNet") else 1000
    from nnunet_nerve.training.demo_budget import demo_epochs

    return demo_epochs()


def predict_heldout(layout: DemoLayout, trainer: str, target: Path, device: str, env: dict, log: Path) -> None:
    """nnUNetv2_predict of the held-out images with ``trainer``'s fold FOLD (from ``env``'s
    nnUNet_results), without test-time mirroring, into ``target`` (written to a temporary
    sibling and renamed at the end)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    run_logged([console_script("nnUNetv2_predict"), "-i", str(layout.heldout_images), "-o", str(tmp),
                "-d", str(DATASET_ID), "-c", "2d", "-tr", trainer, "-f", str(FOLD), "-device", device,
                "-npp", "1", "-nps", "1", *NO_TTA], log, env)
    seconds = time.perf_counter() - started
    record_prediction_time(layout, trainer, len(heldout_cases(layout)), seconds, device)
    os.replace(tmp, target)


def record_prediction_time(layout: DemoLayout, trainer: str, cases: int, seconds: float, device: str) -> None:
    """Add ``trainer``'s nnUNetv2_predict run to ``layout.prediction_times`` ({trainer: {"cases",
    "seconds" (wall clock of the whole command), "device"}}), for the report."""
    from nnunet_nerve.io.atomic import atomic_file

    path = layout.prediction_times
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[trainer] = {"cases": cases, "seconds": round(seconds, 2), "device": device}
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(times, indent=2) + "\n")


def heldout_cases(layout: DemoLayout) -> list[str]:
    """The cases of the held-out fold FOLD (its validation cases in splits_final.json), sorted."""
    splits = json.loads(layout.splits.read_text())
    return sorted(splits[FOLD]["val"])


def link_heldout_images(layout: DemoLayout, cases: list[str]) -> None:
    """The held-out fold's images in a folder of their own, as nnUNetv2_predict's input."""
    folder = layout.heldout_images
    if folder.exists() and sorted(p.name for p in folder.iterdir()) == sorted(image_file_name(c) for c in cases):
        return
    shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for case in cases:
        shutil.copy2(layout.dataset / IMAGES_TR / image_file_name(case), tmp / image_file_name(case))
    os.replace(tmp, folder)


def _biomarker_case(layout: DemoLayout, heldout: list[str]) -> str:
    """The first held-out patient (a volunteer if the fold has no patient)."""
    from nnunet_nerve.registry.dataset_info import load_dataset_info

    info = load_dataset_info(layout.dataset)
    patients = [c for c in heldout if info.cohort(c) == "patient"]
    return (patients or heldout)[0]
