"""End-to-end `nnUNetv2_predict` time of one paper-size scan: FCDenseNetTrainer against nnUNetTrainer, same run.

The scan is the paper's geometry by default: 60 axial slices of 640 x 768 pixels (rows x
columns) at 0.52 x 0.52 mm in plane and 4.0 mm slice thickness (Balsiger et al. 2018; DESIGN.md,
``nnunet_nerve.registry.phantom_anatomy.SIZES["paper"]``). Everything happens under one work folder (a new
temporary folder, or ``--workdir``), with nnUNet_raw/preprocessed/results and MPLCONFIGDIR
pointing there:

1. a small nnU-Net dataset (two training cases and the scan to predict, all of that size).
   Content: phantom subjects (``nnunet_nerve.registry.phantom``: thigh, sciatic nerve, vessels, noise)
   rendered on this grid when it covers the phantom's thigh (at least 300 mm each way);
   otherwise (tiny test grids) a synthetic ellipse with a labelled disc. Inference time does
   not depend on the content; the script prints which was used;
2. the real ``nnUNetv2_plan_and_preprocess -c 2d``, so nnU-Net plans its own 2D U-Net and
   patch for this image size;
3. a results folder with ``checkpoint_final.pth`` for each trainer without training: in a
   subprocess, nnU-Net's ``get_trainer_from_args`` builds the trainer as ``nnUNetv2_train``
   does, ``initialize()`` builds its network, ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``
   sets its inference mirroring axes, plans.json / dataset.json / dataset_fingerprint.json are
   written as ``on_train_start`` writes them, and ``save_checkpoint`` writes the (untrained)
   weights. FCDenseNetTrainer's saved plans carry its 320 x 320 patch and its checkpoint no
   mirroring axes; nnUNetTrainer's are nnU-Net's plans and (0, 1). What ``nnUNetv2_predict``
   will load is then read back with ``nnUNetPredictor.initialize_from_trained_model_folder``
   and printed (trainer, network class, parameters, patch, mirroring axes);
4. ``nnUNetv2_predict -i <scan> -o ... -d ... -c 2d -tr <trainer> -f 0 -device cpu -npp 1 -nps 1
   --disable_progress_bar [-step_size S] [--disable_tta]`` in subprocesses, the trainers
   alternating, ``--rounds`` times; the median wall time per trainer is printed with the ratio
   nnUNetTrainer / FCDenseNetTrainer (above 1: FC-DenseNet faster). After each timed run the same
   command is repeated with ``--continue_prediction`` (every output exists, so it only starts
   up and loads the model): its median is the fixed start-up, and (scan - start-up) / slices
   the net time per slice.

Test-time mirroring: nnU-Net's default is on; ``--tta`` (default) keeps it for the U-Net (four
forward passes per tile in 2D), ``--no-tta`` passes ``--disable_tta``. FCDenseNetTrainer
allows no mirroring (the paper used none), so the flag changes nothing for it.

``--device cuda`` times the same commands on a GPU (default ``cpu``).

Threads: ``nnUNetv2_predict -device cpu`` sets torch's threads to the machine's CPU count itself;
``--threads N`` sets OMP/MKL_NUM_THREADS and, when N is below the CPU count, pins the command to
N cores with ``taskset``.

    nice -n 19 .venv/bin/python benchmarks/bench_predict.py [--slices 60] [--rounds 3] [--no-tta]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import bench_common
from bench_common import run_checked, tiles_per_slice, timed
from nnunet_nerve.study.console_scripts import console_script
from nnunet_nerve.registry.dataset_info import CHANNEL_SUFFIX, FILE_ENDING, IMAGES_TR, LABELS_TR

DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID}_PredictBench"
CONFIGURATION = "2d"
FOLD = 0
#: FCDenseNetTrainer (the paper's 320 x 320 tiles), its variant predicting with nnU-Net's planned
#: patch (one tile per slice here), and nnU-Net's default trainer
TRAINERS = ("FCDenseNetTrainer", "FCDenseNetTrainer_plannedPatchInference", "nnUNetTrainer")
SPACING_XYZ = (0.52, 0.52, 4.0)
N_TRAIN = 2
SCAN = "scan_000"
#: Prefix of the temporary work folder (``bench_common.prepare_workdir``) of this script and those built on it.
WORKDIR_PREFIX = "bench_predict_"
#: Smallest field of view (mm) on which the phantom's thigh fits (it is about 2 x 86 mm plus fat).
PHANTOM_MIN_FOV_MM = 300.0


@dataclass
class Workdir:
    """The folders of one benchmark run, all under ``root``."""
    root: Path
    threads: int = 2
    device: str = "cpu"
    extra_env: dict = field(default_factory=dict)

    @property
    def raw(self) -> Path: return self.root / "nnUNet_raw"
    @property
    def preprocessed(self) -> Path: return self.root / "nnUNet_preprocessed"
    @property
    def results(self) -> Path: return self.root / "nnUNet_results"
    @property
    def dataset(self) -> Path: return self.raw / DATASET_NAME
    @property
    def scan_dir(self) -> Path: return self.root / "scan"
    @property
    def scan_path(self) -> Path: return self.scan_dir / f"{SCAN}{CHANNEL_SUFFIX}{FILE_ENDING}"

    def predictions(self, trainer: str) -> Path:
        return self.root / "predictions" / trainer

    def model_folder(self, trainer: str) -> Path:
        return self.results / DATASET_NAME / f"{trainer}__nnUNetPlans__{CONFIGURATION}"

    def env(self) -> dict:
        from nnunet_nerve.training.trainer_dir import trainer_dir

        env = dict(os.environ)
        threads = str(self.threads)
        env.update(nnUNet_raw=str(self.raw), nnUNet_preprocessed=str(self.preprocessed),
                   nnUNet_results=str(self.results), nnUNet_extTrainer=trainer_dir(),
                   nnUNet_n_proc_DA="1", nnUNet_compile="false", MPLCONFIGDIR=str(self.root / "mpl"),
                   OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
        env.update(self.extra_env)
        return env


# ----------------------------------------------------------------------------- the dataset

def content_kind(rows: int, cols: int) -> str:
    """'phantom' when the grid covers the phantom's thigh, else 'blob'."""
    fov = min(rows * SPACING_XYZ[1], cols * SPACING_XYZ[0])
    return "phantom" if fov >= PHANTOM_MIN_FOV_MM else "blob"


def phantom_case(index: int, slices: int, rows: int, cols: int, seed: int = 0) -> tuple:
    """(int16 image, uint8 label) [z, y, x]: phantom subject ``index`` rendered on this grid."""
    from nnunet_nerve.registry import phantom, phantom_anatomy

    size = phantom_anatomy.PhantomSize("bench", (cols, rows, slices), SPACING_XYZ, anatomy_scale=1.0, nerve_scale=1.0)
    cohort = "volunteer" if index % 2 == 0 else "patient"
    subject = phantom_anatomy.draw_subject(index, f"sub-{index + 1:03d}", cohort, size, seed)
    image, _, truth = phantom.render_subject(subject, size, seed, index)
    return image, truth


def blob_case(index: int, slices: int, rows: int, cols: int, seed: int = 0) -> tuple:
    """(int16 image, uint8 label) [z, y, x]: a noisy ellipse with a brighter labelled disc drifting through."""
    rng = np.random.default_rng([seed, index])
    z, y, x = np.ogrid[:slices, :rows, :cols]
    body = ((y - rows / 2) / (0.42 * rows)) ** 2 + ((x - cols / 2) / (0.45 * cols)) ** 2 <= 1
    cy = rows * 0.6 + 0.3 * z
    cx = cols * 0.5 + rng.uniform(-0.05, 0.05) * cols
    radius = max(2.0, 0.06 * min(rows, cols))
    label = ((y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2) & body
    image = 20 + 300 * body + 400 * label + rng.normal(0, 15, (slices, rows, cols))
    return np.clip(image, 1, None).astype(np.int16), label.astype(np.uint8)


def _write(array: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((-(array.shape[2] - 1) / 2 * SPACING_XYZ[0], -(array.shape[1] - 1) / 2 * SPACING_XYZ[1], 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def write_dataset(wd: Workdir, slices: int, rows: int, cols: int, seed: int = 0) -> str:
    """The raw dataset (N_TRAIN training cases) and the scan to predict; returns the content kind."""
    kind = content_kind(rows, cols)
    make = phantom_case if kind == "phantom" else blob_case
    for i in range(N_TRAIN + 1):
        image, label = make(i, slices, rows, cols, seed)
        if i < N_TRAIN:
            _write(image, wd.dataset / IMAGES_TR / f"case_{i:03d}{CHANNEL_SUFFIX}{FILE_ENDING}")
            _write(label, wd.dataset / LABELS_TR / f"case_{i:03d}{FILE_ENDING}")
        else:
            _write(image, wd.scan_path)
    (wd.dataset / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "nerve": 1},
        "numTraining": N_TRAIN, "file_ending": ".nii.gz"}, indent=2))
    for folder in (wd.preprocessed, wd.results, wd.root / "mpl"):
        folder.mkdir(parents=True, exist_ok=True)
    return kind


def plan_and_preprocess(wd: Workdir) -> None:
    run_checked([console_script("nnUNetv2_plan_and_preprocess"), "-d", DATASET_ID, "-c", CONFIGURATION,
                 "-np", "1", "-npfp", "1"], wd.env())


# ----------------------------------------------------------------------------- the checkpoints

_IN_SUBPROCESS = ("import json, sys; sys.path.insert(0, {here!r}); import bench_predict as b; "
                  "print('RESULT ' + json.dumps(b.{function}(*sys.argv[1:])))")


def call_in_subprocess(wd: Workdir, function: str, *args) -> dict:
    """Run ``function(*args)`` of this module in a fresh interpreter with the work folder's
    environment (nnU-Net reads its paths when first imported) and return its JSON result."""
    code = _IN_SUBPROCESS.format(here=str(Path(__file__).resolve().parent), function=function)
    proc = run_checked([sys.executable, "-c", code, *map(str, args)], wd.env())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):])


def write_checkpoint(trainer_name: str) -> dict:
    """(In a subprocess.) An untrained ``checkpoint_final.pth`` for ``trainer_name``, as nnUNetv2_train leaves it."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, save_json
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(DATASET_ID), CONFIGURATION, FOLD, trainer_name, "nnUNetPlans",
                                    device=torch.device("cpu"))
    trainer.initialize()
    # nnUNetv2_train sets the inference mirroring axes here (through get_dataloaders in on_train_start).
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    # What on_train_start copies for inference.
    plans = trainer.plans_for_inference() if hasattr(trainer, "plans_for_inference") else trainer.plans_manager.plans
    save_json(plans, join(trainer.output_folder_base, "plans.json"), sort_keys=False)
    save_json(trainer.dataset_json, join(trainer.output_folder_base, "dataset.json"), sort_keys=False)
    shutil.copyfile(join(trainer.preprocessed_dataset_folder_base, "dataset_fingerprint.json"),
                    join(trainer.output_folder_base, "dataset_fingerprint.json"))
    path = join(trainer.output_folder, "checkpoint_final.pth")
    trainer.save_checkpoint(path)
    return {"checkpoint": path}


def describe_model(model_folder: str) -> dict:
    """(In a subprocess.) What nnUNetv2_predict loads from ``model_folder``: trainer, network, patch, mirroring."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, (FOLD,), "checkpoint_final.pth")
    axes = predictor.allowed_mirroring_axes
    return {"trainer": predictor.trainer_name, "network": type(predictor.network).__name__,
            "parameters": sum(p.numel() for p in predictor.network.parameters()),
            "patch_size": [int(p) for p in predictor.configuration_manager.patch_size],
            "mirror_axes": list(axes) if axes is not None else None}


def write_and_describe_models(results: str) -> dict:
    """(In a subprocess.) ``write_checkpoint`` for every trainer, then ``describe_model`` of each folder."""
    for trainer in TRAINERS:
        write_checkpoint(trainer)
    folder = Path(results) / DATASET_NAME
    return {t: describe_model(str(folder / f"{t}__nnUNetPlans__{CONFIGURATION}")) for t in TRAINERS}


def make_models(wd: Workdir) -> dict:
    """A checkpoint per trainer (one subprocess); returns {trainer: describe_model(...)}."""
    return call_in_subprocess(wd, "write_and_describe_models", wd.results)


def set_up(wd: Workdir, slices: int, rows: int, cols: int, seed: int = 0) -> dict:
    """Dataset, nnU-Net plans and a checkpoint per trainer; returns {"content": ..., "models": {...}}."""
    content = write_dataset(wd, slices, rows, cols, seed)
    plan_and_preprocess(wd)
    return {"content": content, "models": make_models(wd)}


# ----------------------------------------------------------------------------- timing

def predict_command(wd: Workdir, trainer: str, step_size: float, tta: bool, resume: bool = False) -> list:
    cmd = [console_script("nnUNetv2_predict"), "-i", wd.scan_dir, "-o", wd.predictions(trainer), "-d", DATASET_ID,
           "-c", CONFIGURATION, "-tr", trainer, "-f", FOLD, "-device", wd.device, "-npp", "1", "-nps", "1",
           "-step_size", step_size, "--disable_progress_bar"]
    if not tta:
        cmd.append("--disable_tta")
    if resume:
        cmd.append("--continue_prediction")
    cmd = [str(c) for c in cmd]
    if wd.threads < (os.cpu_count() or 1) and shutil.which("taskset"):
        cmd = ["taskset", "-c", f"0-{wd.threads - 1}", *cmd]
    return cmd


def time_trainers(wd: Workdir, rounds: int, step_size: float, tta: bool, log=print) -> dict:
    """{trainer: {"scan": [s, ...], "startup": [s, ...]}}; trainers alternate who goes first."""
    times = {t: {"scan": [], "startup": []} for t in TRAINERS}
    env = wd.env()
    for r in range(rounds):
        order = TRAINERS if r % 2 == 0 else TRAINERS[::-1]
        for trainer in order:
            shutil.rmtree(wd.predictions(trainer), ignore_errors=True)
            scan = timed(predict_command(wd, trainer, step_size, tta), env)
            startup = timed(predict_command(wd, trainer, step_size, tta, resume=True), env)
            times[trainer]["scan"].append(scan)
            times[trainer]["startup"].append(startup)
            log(f"  round {r + 1}/{rounds} {trainer:18s} {scan:8.1f} s per scan (start-up alone {startup:.1f} s)")
    return times


def geometry_problems(prediction: Path, scan: Path) -> list:
    """Differences in size, spacing, origin and direction between a prediction and its scan."""
    import SimpleITK as sitk

    if not prediction.is_file():
        return [f"{prediction} was not written"]
    a, b = sitk.ReadImage(str(prediction)), sitk.ReadImage(str(scan))
    problems = []
    for what in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        va, vb = getattr(a, what)(), getattr(b, what)()
        if not np.allclose(va, vb, atol=1e-4):
            problems.append(f"{prediction.name}: {what[3:].lower()} {va} != scan's {vb}")
    return problems


def summary(times: dict, slices: int) -> dict:
    """Medians per trainer and the ratio nnUNetTrainer / FCDenseNetTrainer."""
    out = {}
    for trainer, t in times.items():
        scan, startup = statistics.median(t["scan"]), statistics.median(t["startup"])
        out[trainer] = {"scan_s": scan, "startup_s": startup, "net_per_slice_s": (scan - startup) / slices}
    unet = out["nnUNetTrainer"]
    out["ratios"] = {}
    for trainer in TRAINERS[:-1]:
        fcd = out[trainer]
        out["ratios"][trainer] = (unet["scan_s"] / fcd["scan_s"],
                                  unet["net_per_slice_s"] / fcd["net_per_slice_s"]
                                  if fcd["net_per_slice_s"] > 0 else float("nan"))
    out["ratio"], out["ratio_net"] = out["ratios"]["FCDenseNetTrainer"]
    return out


def report(args, set_up_info: dict, times: dict, tiles: dict) -> str:
    s = summary(times, args.slices)
    lines = [f"scan: {args.slices} slices of {args.rows} x {args.cols} pixels at {SPACING_XYZ[0]} x {SPACING_XYZ[1]} mm, "
             f"{SPACING_XYZ[2]} mm slices; content: {set_up_info['content']}",
             f"nnUNetv2_predict -device {args.device} -npp 1 -nps 1 -step_size {args.step_size}; threads {args.threads}; "
             f"test-time mirroring for the U-Net: {'on (nnU-Net default)' if args.tta else 'off (--disable_tta)'}; "
             f"FCDenseNetTrainer: none (allows no mirroring); {args.rounds} round(s), median",
             "",
             "| trainer | network (as nnUNetv2_predict loads it) | parameters | patch | mirroring axes | tiles per slice "
             "| forward passes per slice | s per scan | start-up s | net s per slice |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for trainer in TRAINERS:
        m = set_up_info["models"][trainer]
        mirrors = 1
        if m["mirror_axes"] and (args.tta or trainer != "nnUNetTrainer"):
            mirrors = 2 ** len(m["mirror_axes"])
        r = s[trainer]
        lines.append(f"| {trainer} | {m['network']} | {m['parameters']:,} | {m['patch_size'][0]} x {m['patch_size'][1]} "
                     f"| {m['mirror_axes']} | {tiles[trainer]} | {tiles[trainer] * mirrors} | {r['scan_s']:.1f} "
                     f"| {r['startup_s']:.1f} | {r['net_per_slice_s']:.2f} |")
    lines.append("")
    for trainer, (ratio, ratio_net) in s["ratios"].items():
        lines.append(f"ratio nnUNetTrainer / {trainer}, s per scan: {ratio:.2f} "
                     f"(net of start-up, per slice: {ratio_net:.2f}; above 1 = FC-DenseNet faster)")
    return "\n".join(lines)


def run_benchmark(args) -> str:
    with bench_common.work_folder(args, WORKDIR_PREFIX) as root:
        wd = Workdir(root, threads=args.threads, device=args.device)
        print(f"work folder: {root}", flush=True)
        t0 = time.perf_counter()
        info = set_up(wd, args.slices, args.rows, args.cols, args.seed)
        print(f"set-up (dataset, nnUNetv2_plan_and_preprocess, checkpoints): {time.perf_counter() - t0:.0f} s", flush=True)
        tiles = {t: tiles_per_slice(args.rows, args.cols, info["models"][t]["patch_size"], args.step_size)
                 for t in TRAINERS}
        times = time_trainers(wd, args.rounds, args.step_size, args.tta)
        problems = [p for t in TRAINERS for p in geometry_problems(wd.predictions(t) / f"{SCAN}.nii.gz", wd.scan_path)]
        if problems:
            raise RuntimeError("; ".join(problems))
        text = report(args, info, times, tiles)
        print("\n" + text, flush=True)
        return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_common.add_scan_arguments(parser)
    parser.add_argument("--step-size", type=float, default=0.5, help="nnUNetv2_predict -step_size (nnU-Net's default 0.5)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="test-time mirroring for the U-Net (nnU-Net's default: on)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu",
                        help="nnUNetv2_predict -device (the checkpoints are written on the CPU either way)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    bench_common.add_workdir_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    run_benchmark(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
