"""`nnunet-nerve segment` of a paper-size DICOM series against `nnUNetv2_predict` alone, same model, same run.

Goal (issue 16): on this CPU, segment (DICOM series in; prediction, post-processing, biomarkers,
NIfTI, DICOM SEG and report.html out) costs at most 1.3 x what nnUNetv2_predict alone costs for
the same scan (a NIfTI in, a NIfTI out).

Set-up, all under one work folder (``bench_predict.set_up``, see its docstring): a paper-size
phantom scan (60 slices of 640 x 768 pixels at 0.52 x 0.52 x 4.0 mm by default), the real
``nnUNetv2_plan_and_preprocess -c 2d``, and a results folder per trainer with an UNTRAINED
``checkpoint_final.pth`` written as nnUNetv2_train writes it: network time does not depend on the
weights. The scan is also written as a DICOM MR series (``nnunet_nerve.dicom.synthetic``).

What an untrained network predicts is no nerve-like mask (on the phantom, three quarters of the
voxels in thousands of pieces), and the stages after the network cost what the mask makes them
cost. So the benchmark sets the untrained checkpoints' classifier (every convolution with two
output channels: FCDenseNet's final 1 x 1 convolution, the U-Net's segmentation heads) to
weights 0 and biases (+20, -20): the network computes exactly as much, and predicts no nerve.
``segment``'s stages after the network (post-processing, biomarkers, writing the NIfTI and the
SEG, the report) are then timed again in this process on a realistic mask, the phantom's own
nerve for the scan (``segment.segment_from_prediction``), and the ratio is given both ways:
with the empty prediction as measured, and with those stages' times replaced by the realistic
ones.

Timed commands, alternating which goes first, ``--rounds`` times (median):

    nnUNetv2_predict -i <scan folder> -o <out> -d 990 -c 2d -tr <trainer> -f 0 -device cpu -npp 1 -nps 1 \\
        --disable_progress_bar --disable_tta
    nnunet-nerve segment <DICOM series folder> <out> --model <results folder of trainer> -f 0 --device cpu --disable-tta

(``--disable_tta`` on both: FCDenseNetTrainer allows no mirroring anyway.) Trainers: by default
``FCDenseNetTrainer_plannedPatchInference`` (one tile per slice), ``--trainer`` for others.

    nice -n 19 .venv/bin/python benchmarks/bench_segment.py [--slices 60] [--rounds 1] [--trainer ...]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path


import bench_common
import bench_predict
from bench_common import tiles_per_slice, timed
from nnunet_nerve.study.console_scripts import console_script

#: stages of `segment` that run after the network
AFTER_NETWORK = ("post-process", "biomarkers", "write segmentation", "report")


def predict_no_nerve(checkpoint: Path) -> list:
    """Set every two-output convolution of the checkpoint's network to weight 0, bias (+20, -20):
    the same computation, background everywhere. Returns the parameter names changed."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    weights = state["network_weights"]
    changed = []
    for name, bias in weights.items():
        weight = name[: -len("bias")] + "weight"
        if name.endswith(".bias") and bias.shape == (2,) and weight in weights and weights[weight].shape[0] == 2:
            weights[weight].zero_()
            bias.copy_(torch.tensor([20.0, -20.0]))
            changed.append(name[: -len(".bias")])
    if not changed:
        raise RuntimeError(f"{checkpoint}: no two-output convolution found")
    torch.save(state, checkpoint)
    return changed


def write_dicom_scan(wd: bench_predict.Workdir) -> Path:
    import SimpleITK as sitk

    from nnunet_nerve.dicom.synthetic import write_dicom_series

    folder = wd.root / "scan_dicom"
    write_dicom_series(sitk.ReadImage(str(wd.scan_path)), folder, series_description="paper-size phantom")
    return folder


def segment_command(wd: bench_predict.Workdir, dicom: Path, trainer: str, out: Path) -> list:
    return [console_script("nnunet-nerve"), "segment", str(dicom), str(out), "--model", str(wd.model_folder(trainer)),
            "-f", str(bench_predict.FOLD), "--device", wd.device, "--disable-tta"]


def realistic_after_network(dicom: Path, slices: int, rows: int, cols: int, seed: int, out: Path) -> dict:
    """Stage times (s) of segment's stages after the network (``segment.segment_from_prediction``,
    in this process) on the phantom's own nerve for the scan, over the DICOM series."""
    from nnunet_nerve.segmentation.segment import read_input, segment_from_prediction

    make = bench_predict.phantom_case if bench_predict.content_kind(rows, cols) == "phantom" \
        else bench_predict.blob_case
    _, truth = make(bench_predict.N_TRAIN, slices, rows, cols, seed)  # the scan is case N_TRAIN of write_dataset
    info = {"folder": "(the phantom's nerve)", "trainer": "phantom truth", "plans": "nnUNetPlans",
            "configuration": "2d", "folds": [0], "patch_size": [rows, cols], "tile_step_size": 0.5,
            "mirroring_axes": None}
    result = segment_from_prediction(read_input(dicom), truth.astype(bool), out, info, overwrite=True)
    return {"times": result.timings_s, "voxels": int(result.record["biomarkers"]["voxels"]),
            "fraction": int(result.record["biomarkers"]["voxels"]) / truth.size}


def run_benchmark(args) -> str:
    with bench_common.work_folder(args, bench_predict.WORKDIR_PREFIX) as root:
        wd = bench_predict.Workdir(root, threads=args.threads, device=args.device)
        lines = []
        print(f"work folder: {root}", flush=True)
        t0 = time.perf_counter()
        info = bench_predict.set_up(wd, args.slices, args.rows, args.cols, args.seed)
        for trainer in args.trainer:
            changed = predict_no_nerve(wd.model_folder(trainer) / f"fold_{bench_predict.FOLD}" / "checkpoint_final.pth")
            print(f"{trainer}: classifier set to predict no nerve ({', '.join(changed)})", flush=True)
        dicom = write_dicom_scan(wd)
        print(f"set-up: {time.perf_counter() - t0:.0f} s", flush=True)
        env = wd.env()
        for trainer in args.trainer:
            model = info["models"][trainer]
            times = {"predict": [], "segment": []}
            records = []
            for r in range(args.rounds):
                order = ("predict", "segment") if r % 2 == 0 else ("segment", "predict")
                for what in order:
                    if what == "predict":
                        shutil.rmtree(wd.predictions(trainer), ignore_errors=True)
                        seconds = timed(bench_predict.predict_command(wd, trainer, 0.5, tta=False), env)
                    else:
                        out = root / "segment" / trainer
                        shutil.rmtree(out, ignore_errors=True)
                        seconds = timed(segment_command(wd, dicom, trainer, out), env)
                        records.append(json.loads((out / "segment.json").read_text()))
                    times[what].append(seconds)
                    print(f"  round {r + 1}/{args.rounds} {trainer} {what}: {seconds:.1f} s", flush=True)
            predict_s, segment_s = statistics.median(times["predict"]), statistics.median(times["segment"])
            stage = {k: statistics.median(rec["timings_s"][k] for rec in records) for k in records[0]["timings_s"]}
            predicted = records[-1]["biomarkers"]["voxels"]
            added = sum(v for k, v in stage.items() if k != "predict")
            lines += [f"## {trainer}",
                      f"network {model['network']}, {model['parameters']:,} parameters, tile {model['patch_size']}, "
                      f"mirroring axes {model['mirror_axes']} (untrained weights, classifier set to predict no nerve); "
                      f"{tiles_per_slice(args.rows, args.cols, model['patch_size'], 0.5)} tile(s) per slice",
                      "",
                      "| command | s per scan (median of %d) |" % args.rounds, "|---|---|",
                      f"| nnUNetv2_predict (NIfTI in, NIfTI out) | {predict_s:.1f} |",
                      f"| nnunet-nerve segment (DICOM in; NIfTI, SEG, biomarkers, report out) | {segment_s:.1f} |",
                      "",
                      f"ratio segment / nnUNetv2_predict: **{segment_s / predict_s:.2f}** (goal <= 1.3)",
                      "",
                      "segment's stages (median s): " + ", ".join(f"{k} {v:.1f}" for k, v in stage.items()),
                      f"segment's stages other than the network's prediction: {added:.1f} s; on a loaded machine "
                      f"the two network runs differ by the load, so also: (nnUNetv2_predict + those) / "
                      f"nnUNetv2_predict = **{(predict_s + added) / predict_s:.2f}** (an upper bound: it counts "
                      f"reading, loading and writing twice)",
                      f"the model labelled {predicted} voxels as nerve (expected 0)"]
            if args.realistic_mask:
                real = realistic_after_network(dicom, args.slices, args.rows, args.cols, args.seed,
                                               root / "segment_realistic")
                after_empty = sum(stage[k] for k in AFTER_NETWORK if k in stage)
                after_real = sum(real["times"].values())
                adjusted = segment_s - after_empty + after_real
                lines += ["",
                          f"stages after the network on the phantom's own nerve ({real['voxels']} voxels, "
                          f"{100 * real['fraction']:.3f} %): " + ", ".join(f"{k} {v:.1f} s"
                                                                          for k, v in real["times"].items()),
                          f"segment with that mask instead of the empty one: {adjusted:.1f} s, ratio "
                          f"**{adjusted / predict_s:.2f}**"]
            lines.append("")
        text = "\n".join(lines)
        print("\n" + text, flush=True)
        return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_common.add_scan_arguments(parser)
    parser.add_argument("--trainer", action="append", choices=bench_predict.TRAINERS,
                        help="trainer(s) to time (default FCDenseNetTrainer_plannedPatchInference)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--realistic-mask", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the stages after the network on the phantom's own nerve")
    bench_common.add_workdir_arguments(parser)
    args = parser.parse_args(argv)
    args.trainer = args.trainer or ["FCDenseNetTrainer_plannedPatchInference"]
    return args


def main(argv=None) -> int:
    run_benchmark(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
