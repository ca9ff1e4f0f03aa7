"""Accuracy and speed of nnU-Net's inference settings for a trained FC-DenseNet, on phantom data.

Input: the output folder of the demo (``./run_demo.sh OUT``): the trained
``FCDenseNetTrainer_demo`` fold 0 in ``OUT/nnUNet_results``, the held-out fold's images in
``OUT/heldout_images`` and their Auto-GT (the raters' majority vote) in
``OUT/nnUNet_raw/Dataset900_NervePhantom/labelsTr``. Nothing in OUT is changed.

For every tile step size (``nnUNetv2_predict -step_size``; 0.5 is nnU-Net's default, half a
patch of overlap; 1.0 no overlap) and test-time mirroring off and on, the real
``nnUNetv2_predict -i OUT/heldout_images -d 900 -c 2d -tr FCDenseNetTrainer_demo -f 0 -device cpu
-npp 1 -nps 1 -step_size S [--disable_tta]`` runs in a subprocess; its wall time is divided by the
number of scans, and the same command with ``--continue_prediction`` (every output exists: it
only starts up and loads the model) gives the fixed start-up, so "net s per scan" is
(wall - start-up) / scans. Each setting's predictions are scored against the Auto-GT with the
package's own ``nnunet_nerve.evaluation.metrics.dice`` and ``hd95_surface`` (masks read with
``nnunet_nerve.evaluation.evaluator.load_binary_mask``), and compared voxel by voxel with the default's.

Mirroring on: FCDenseNetTrainer (and so FCDenseNetTrainer_demo) allows no test-time mirroring
(the paper used none): its checkpoint stores ``inference_allowed_mirroring_axes = None``, which
is what ``nnUNetv2_predict`` reads, so dropping ``--disable_tta`` alone changes nothing. For
"on", the model folder (plans.json, dataset.json, dataset_fingerprint.json,
fold_0/checkpoint_final.pth) is copied into a results folder under the work folder and the copy's
checkpoint gets ``inference_allowed_mirroring_axes = (0, 1)``: what a trainer allowing mirroring
(FCDenseNetTrainer_mirrorTTA, nnU-Net's own trainers in 2D) stores, with the same weights; the
network trained with random flips on both axes. ``nnUNetv2_predict`` then runs with
``nnUNet_results`` pointing at the copy and without ``--disable_tta``: 4 forward passes per tile.

    nice -n 19 .venv/bin/python benchmarks/bench_inference_settings.py OUT [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import bench_common
from bench_common import tiles_per_slice, timed
from nnunet_nerve.study.console_scripts import console_script
from nnunet_nerve.registry.dataset_info import CHANNEL_SUFFIX, FILE_ENDING

TRAINER = "FCDenseNetTrainer_demo"
STEP_SIZES = (0.5, 0.75, 1.0)
MIRRORING = ("off", "on")
DEFAULT = (0.5, "off")
MIRROR_AXES_2D = (0, 1)


@dataclass(frozen=True)
class Setting:
    step_size: float
    mirroring: str  # "off" | "on"
    tile: str = "trained"  # "trained": the training patch; "planned": nnU-Net's planned patch

    @property
    def name(self) -> str:
        tile = ", planned patch" if self.tile == "planned" else ""
        return f"step {self.step_size:g}, mirroring {self.mirroring}{tile}"

    @property
    def folder(self) -> str:
        tile = "_planned" if self.tile == "planned" else ""
        return f"step{self.step_size:g}_mirror{self.mirroring}{tile}"


def demo_inputs(demo: Path) -> dict:
    """The demo's layout: results, model folder, held-out images, cases and their Auto-GT paths."""
    from nnunet_nerve.registry.dataset_info import load_dataset_info
    from nnunet_nerve.study.demo import DemoLayout

    layout = DemoLayout(Path(demo).resolve())
    fold = layout.fold_dir(TRAINER)
    if not (fold / "checkpoint_final.pth").is_file():
        raise SystemExit(f"error: {fold}/checkpoint_final.pth not found; run ./run_demo.sh {demo} first")
    images = sorted(layout.heldout_images.glob(f"*{CHANNEL_SUFFIX}{FILE_ENDING}"))
    if not images:
        raise SystemExit(f"error: no held-out images in {layout.heldout_images}")
    info = load_dataset_info(layout.dataset)
    cases = [p.name[: -len(CHANNEL_SUFFIX + FILE_ENDING)] for p in images]
    return {"layout": layout, "model_folder": fold.parent, "images": layout.heldout_images, "cases": cases,
            "labels": {c: info.consensus_path(c) for c in cases}, "dataset_name": layout.dataset.name}


def mirrored_model_copy(model_folder: Path, results_root: Path, dataset_name: str,
                        axes=MIRROR_AXES_2D) -> Path:
    """Copy ``model_folder`` to ``results_root/<dataset>/<same name>`` with the checkpoint's
    ``inference_allowed_mirroring_axes`` set to ``axes``; returns the copy's model folder."""
    import torch

    target = Path(results_root) / dataset_name / Path(model_folder).name
    (target / "fold_0").mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy2(Path(model_folder) / name, target / name)
    checkpoint = torch.load(Path(model_folder) / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    checkpoint["inference_allowed_mirroring_axes"] = tuple(axes)
    torch.save(checkpoint, target / "fold_0" / "checkpoint_final.pth")
    return target


def planned_tile_model_copy(model_folder: Path, results_root: Path, dataset_name: str,
                            planned_plans: Path) -> Path:
    """Copy ``model_folder`` to ``results_root/<dataset>/<same name>`` with the 2d patch of its
    plans.json set to nnU-Net's planned patch (from ``planned_plans``, each side rounded up to
    a multiple of 16), as FCDenseNetTrainer_plannedPatchInference saves it; same checkpoint.
    Returns the copy's model folder."""
    from nnunet_nerve.training.plans import divisible_patch, resolved_configuration

    target = Path(results_root) / dataset_name / Path(model_folder).name
    (target / "fold_0").mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "dataset_fingerprint.json"):
        shutil.copy2(Path(model_folder) / name, target / name)
    shutil.copy2(Path(model_folder) / "fold_0" / "checkpoint_final.pth", target / "fold_0" / "checkpoint_final.pth")
    planned = json.loads(Path(planned_plans).read_text())
    plans = json.loads((Path(model_folder) / "plans.json").read_text())
    patch = divisible_patch(resolved_configuration(planned["configurations"], "2d")["patch_size"])
    plans["configurations"]["2d"]["patch_size"] = patch
    (target / "plans.json").write_text(json.dumps(plans, indent=4))
    return target


def predict_command(images: Path, out: Path, dataset_name: str, setting: Setting, resume: bool = False) -> list:
    cmd = [console_script("nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", dataset_name, "-c", "2d",
           "-tr", TRAINER, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1",
           "-step_size", f"{setting.step_size:g}", "--disable_progress_bar"]
    if setting.mirroring == "off":
        cmd.append("--disable_tta")
    if resume:
        cmd.append("--continue_prediction")
    return cmd


def model_tiles_per_slice(image: Path, plans_json: Path, step_size: float) -> int:
    """``bench_common.tiles_per_slice`` for a slice of ``image`` with the 2d patch of the model's plans.json."""
    import SimpleITK as sitk

    patch = json.loads(Path(plans_json).read_text())["configurations"]["2d"]["patch_size"]
    size_x, size_y = sitk.ReadImage(str(image)).GetSize()[:2]
    return tiles_per_slice(size_y, size_x, patch, step_size)


def score_folder(pred_dir: Path, labels: dict, reference_dir: "Path | None" = None) -> dict:
    """{case: {"dice", "hd95"[, "agreement"]}} of ``pred_dir/<case>.nii.gz`` against the Auto-GT
    (``labels[case]``); "agreement" is the Dice with ``reference_dir``'s prediction of the case."""
    import SimpleITK as sitk

    from nnunet_nerve.io import images as imageio

    from nnunet_nerve.evaluation import metrics
    from nnunet_nerve.evaluation.evaluator import load_binary_mask

    scores = {}
    for case, label_path in labels.items():
        grid = imageio.read_image(label_path)
        ref = sitk.GetArrayFromImage(grid) != 0
        pred = load_binary_mask(Path(pred_dir) / f"{case}{FILE_ENDING}", grid, case, "prediction")
        spacing = imageio.spacing_zyx(grid)
        row = {"dice": metrics.dice(pred, ref), "hd95": metrics.hd95_surface(pred, ref, spacing)}
        if reference_dir is not None:
            other = load_binary_mask(Path(reference_dir) / f"{case}{FILE_ENDING}", grid, case, "prediction")
            row["agreement"] = metrics.dice(pred, other)
        scores[case] = row
    return scores


def summarise(setting: Setting, scores: dict, wall: list, startup: list, n_scans: int, tiles: int) -> dict:
    """One table row: medians of the timings over rounds, means of the scores over cases."""
    hd = [s["hd95"] for s in scores.values()]
    row = {"setting": setting.name, "step_size": setting.step_size, "mirroring": setting.mirroring,
           "tiles_per_slice": tiles, "passes_per_slice": tiles * (2 ** len(MIRROR_AXES_2D) if setting.mirroring == "on" else 1),
           "s_per_scan": statistics.median(wall) / n_scans,
           "net_s_per_scan": (statistics.median(wall) - statistics.median(startup)) / n_scans,
           "dice": float(np.mean([s["dice"] for s in scores.values()])),
           "hd95": float(np.mean(hd)) if all(np.isfinite(hd)) else float("inf"),
           "n_cases": len(scores)}
    if all("agreement" in s for s in scores.values()):
        row["agreement"] = float(np.mean([s["agreement"] for s in scores.values()]))
    return row


def format_table(rows: list, default_name: str = Setting(*DEFAULT).name) -> str:
    """Markdown table; Dice difference and time relative to the default setting's row."""
    base = next((r for r in rows if r["setting"] == default_name), None)
    lines = ["| setting | tiles per slice | forward passes per slice | s per scan | net s per scan | time vs default "
             "| mean Dice | Dice - default | mean HD95 (mm) | Dice with default's masks |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if base:
            rel = f"{r['net_s_per_scan'] / base['net_s_per_scan']:.2f} x" if base["net_s_per_scan"] > 0 else "n/a"
            diff = f"{r['dice'] - base['dice']:+.4f}"
        else:
            rel = diff = "n/a"
        agreement = f"{r['agreement']:.4f}" if "agreement" in r else "n/a"
        lines.append(f"| {r['setting']} | {r['tiles_per_slice']} | {r['passes_per_slice']} | {r['s_per_scan']:.2f} "
                     f"| {r['net_s_per_scan']:.2f} | {rel} | {r['dice']:.4f} | {diff} | {r['hd95']:.1f} | {agreement} |")
    return "\n".join(lines)


def settings_from(step_sizes, mirroring) -> list:
    """All combinations, the default first (it is the reference for the others)."""
    settings = [Setting(float(s), m) for s in step_sizes for m in mirroring]
    default = Setting(*DEFAULT)
    return ([default] if default in settings else []) + [s for s in settings if s != default]


def run_benchmark(args) -> tuple:
    inputs = demo_inputs(Path(args.demo))
    with bench_common.work_folder(args, "bench_inference_settings_") as root:
        layout = inputs["layout"]
        mirrored_results = root / "nnUNet_results_mirroring"
        mirrored_model_copy(inputs["model_folder"], mirrored_results, inputs["dataset_name"])
        base_env = layout.env()
        base_env.update(MPLCONFIGDIR=str(root / "mpl"), nnUNet_compile="false")
        envs = {("off", "trained"): base_env,
                ("on", "trained"): dict(base_env, nnUNet_results=str(mirrored_results))}
        plans_of = {"trained": inputs["model_folder"] / "plans.json"}
        settings = settings_from(args.step_sizes, args.mirroring)
        if args.planned_tile:
            planned_results = root / "nnUNet_results_planned_tile"
            copy = planned_tile_model_copy(inputs["model_folder"], planned_results, inputs["dataset_name"],
                                           layout.preprocessed / inputs["dataset_name"] / "nnUNetPlans.json")
            envs[("off", "planned")] = dict(base_env, nnUNet_results=str(planned_results))
            plans_of["planned"] = copy / "plans.json"
            settings.append(Setting(DEFAULT[0], "off", "planned"))
        n = len(inputs["cases"])
        first_image = sorted(Path(inputs["images"]).iterdir())[0]
        print(f"{len(settings)} settings x {args.rounds} round(s) on {n} held-out scans of {args.demo}; work folder {root}",
              flush=True)
        wall = {s: [] for s in settings}
        startup = {s: [] for s in settings}
        for r in range(args.rounds):
            for s in (settings if r % 2 == 0 else settings[::-1]):
                out = root / "predictions" / s.folder
                shutil.rmtree(out, ignore_errors=True)
                env = envs[(s.mirroring, s.tile)]
                wall[s].append(timed(predict_command(inputs["images"], out, inputs["dataset_name"], s), env))
                startup[s].append(timed(predict_command(inputs["images"], out, inputs["dataset_name"], s, resume=True),
                                         env))
                print(f"  round {r + 1}/{args.rounds} {s.name:28s} {wall[s][-1]:7.1f} s for {n} scans "
                      f"(start-up alone {startup[s][-1]:.1f} s)", flush=True)
        default_dir = root / "predictions" / Setting(*DEFAULT).folder
        rows = []
        for s in settings:
            reference = default_dir if default_dir.is_dir() else None
            scores = score_folder(root / "predictions" / s.folder, inputs["labels"], reference)
            tiles = model_tiles_per_slice(first_image, plans_of[s.tile], s.step_size)
            rows.append(summarise(s, scores, wall[s], startup[s], n, tiles))
        table = format_table(rows)
        print("\n" + table, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return rows, table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", help="output folder of ./run_demo.sh (nnunet-nerve demo)")
    parser.add_argument("--step-sizes", type=float, nargs="+", default=list(STEP_SIZES))
    parser.add_argument("--mirroring", nargs="+", choices=MIRRORING, default=list(MIRRORING))
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per setting (median); orders alternate")
    bench_common.add_workdir_arguments(parser)
    parser.add_argument("--planned-tile", action="store_true",
                        help="also predict with nnU-Net's planned patch (one tile per slice, mirroring off), "
                             "as FCDenseNetTrainer_plannedPatchInference does")
    parser.add_argument("--json", default=None, help="also write the table's rows to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    run_benchmark(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
