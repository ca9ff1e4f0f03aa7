"""One-command GPU check: FCDenseNet on the device, and FCDenseNetTrainer against nnUNetTrainer
end to end with nnU-Net's own commands on the same paper-size synthetic dataset.

    .venv/bin/python benchmarks/bench_gpu.py                        # one GPU, paper size
    .venv/bin/python benchmarks/bench_gpu.py --tiny --device cpu    # the same steps at toy size (CI)

Part 1, the network on the device (this process); each check prints PASS or FAIL:
- fp32 train-mode output and gradients (dropout off) against the CPU float64 result of the
  same weights and batch, with TF32 off (strict fp32) and as nnU-Net leaves it (cuDNN may use
  TF32 on Ampere and later: reported, looser bound);
- the same seed draws the same dropout masks with and without checkpointing on the device;
- one nnU-Net training step in fp16: autocast(float16) + GradScaler + gradient clipping at 12
  + Adam, three times: loss, gradients and parameters stay finite;
- torch.compile (Inductor on CUDA; --compile-backend) equals eager: training-step output,
  gradients and running statistics (updated once), and the eval-mode output;
- a training step (batch 8 x 320 x 320 at paper size) with nnU-Net's AMP: seconds and peak
  memory (torch.cuda.max_memory_allocated) of FCDenseNet plain and checkpointed
  (`memory_efficient`), eager and compiled, and of nnU-Net's default 2D U-Net for 320 x 320
  (benchmarks/bench_network.py builds it through nnU-Net's get_network_from_plans).
Part 2, nnU-Net's commands (subprocesses) on one work folder:
- a dataset of 2 training scans and 1 scan to predict, each 60 slices of 640 x 768 at 0.52 x
  0.52 x 4 mm (the paper's geometry; phantom content, benchmarks/bench_predict.py), the real
  nnUNetv2_plan_and_preprocess -c 2d, fold 0 training on both scans;
- nnUNetv2_train -tr FCDenseNetTrainerGPUBenchmark and -tr nnUNetTrainerGPUBenchmark
  (benchmarks/gpu_trainers/: nnU-Net's loop with its AMP and torch.compile, a warm-up epoch,
  then one full epoch of each schedule timed: FC-DenseNet's paper epoch of 293 + 98
  iterations, nnU-Net's of 250 + 50): seconds per epoch and peak GPU memory;
- nnUNetv2_predict of the scan with each trained model (one tile per slice: FC-DenseNet
  predicts with nnU-Net's planned patch, as FCDenseNetTrainer_plannedPatchInference does; no
  test-time mirroring for either, as in the paper), --rounds times alternating: seconds per
  scan and the start-up alone (the same command with --continue_prediction).

Every part prints its wall time; --skip-checks / --skip-train / --skip-predict leave parts out.
--tiny shrinks everything (a small FCDenseNet in part 1, 2 slices of 64 x 64, 64 x 64
patches, a few iterations; the compiled check uses --compile-backend aot_eager on a CPU,
where Inductor takes minutes): it runs in CI so that the script keeps working; its figures
mean nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import bench_common
import bench_predict as bp
from bench_common import run_checked, tiles_per_slice, timed
from nnunet_nerve.study.console_scripts import console_script

HERE = Path(__file__).resolve().parent
TRAINER_FOLDER = HERE / "gpu_trainers"
TRAINERS = ("FCDenseNetTrainerGPUBenchmark", "nnUNetTrainerGPUBenchmark")
PAPER_SCAN = (60, 640, 768)
TINY_SCAN = (2, 64, 64)
#: --tiny: a small FCDenseNet (the same code, a fraction of the paper network's work)
TINY_NETWORK = dict(n_pool=2, growth_rate=4, layers_per_block=2, first_filters=8)


class Report:
    """Collects PASS/FAIL lines; `failed` says whether any check failed."""

    def __init__(self):
        self.failed = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)


@contextmanager
def tf32(allowed: bool):
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative(a, b) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-30))


def train_step(net, x, target, seed: int = 0):
    """Seeded train-mode forward + cross-entropy backward; (output, {name: gradient})."""
    import torch

    torch.manual_seed(seed)
    net.zero_grad(set_to_none=True)
    out = net.train()(x)
    torch.nn.functional.cross_entropy(out.float(), target).backward()
    return out.detach(), {n.replace("_orig_mod.", ""): p.grad.detach().clone() for n, p in net.named_parameters()}


def worst_gradient_error(grads, reference) -> tuple[float, str]:
    """Largest relative error (Frobenius norms) over the parameters, and whose. Conv biases
    before a training-mode batch norm have an exactly-zero true gradient (rounding noise on
    both sides): every error is taken relative to at least 1e-4 x the largest gradient norm."""
    floor = 1e-4 * max(float(g.double().norm()) for g in reference.values())
    worst, name = 0.0, "none"
    for n, g in grads.items():
        ref = reference[n].double().cpu()
        error = float((g.double().cpu() - ref).norm()) / max(float(ref.norm()), floor)
        if error > worst:
            worst, name = error, n
    return worst, name


# ----------------------------------------------------------------------------- part 1

def check_against_float64(report: Report, device, batch: int, size: int, config: dict) -> None:
    import torch
    from nnunet_nerve import FCDenseNet

    torch.manual_seed(0)
    net = FCDenseNet(**config, dropout=0.0)
    x = torch.randn(batch, 1, size, size)
    target = torch.randint(0, 2, (batch, size, size))
    out64, grads64 = train_step(copy.deepcopy(net).double(), x.double(), target)
    bounds = {False: (1e-4, 1e-3), True: (2e-2, 5e-2)}
    for allowed in (False, True) if device.type == "cuda" else (False,):
        with tf32(allowed):
            out, grads = train_step(copy.deepcopy(net).to(device), x.to(device), target.to(device))
        out_error = relative(out, out64)
        grad_error, worst = worst_gradient_error(grads, grads64)
        label = "TF32 allowed (nnU-Net's setting)" if allowed else "strict fp32"
        report.check(f"fp32 on {device.type} vs CPU float64, {label}",
                     out_error <= bounds[allowed][0] and grad_error <= bounds[allowed][1],
                     f"output relative error {out_error:.1e} (bound {bounds[allowed][0]:.0e}), "
                     f"worst gradient {grad_error:.1e} ({worst}; bound {bounds[allowed][1]:.0e})")


def check_dropout_masks(report: Report, device, batch: int, size: int, config: dict) -> None:
    import torch
    from nnunet_nerve import FCDenseNet

    torch.manual_seed(1)
    plain = FCDenseNet(**config, memory_efficient=False).to(device)
    lean = copy.deepcopy(plain)
    lean.memory_efficient = True
    x = torch.randn(batch, 1, size, size, device=device)
    target = torch.randint(0, 2, (batch, size, size), device=device)
    with tf32(False):
        out, grads = train_step(plain, x, target, seed=5)
        out_lean, grads_lean = train_step(lean, x, target, seed=5)
        other, _ = train_step(plain, x, target, seed=6)
    error = relative(out_lean, out)
    grad_error, _ = worst_gradient_error(grads_lean, grads)
    report.check(f"dropout masks on {device.type}: checkpointed vs plain, same seed",
                 error <= 1e-5 and grad_error <= 1e-4 and relative(other, out) > 1e-3,
                 f"output difference {error:.1e}, worst gradient {grad_error:.1e}; "
                 f"another seed differs by {relative(other, out):.1e}")


def check_fp16_grad_scaler(report: Report, device, batch: int, size: int, config: dict) -> None:
    """nnUNetTrainer.train_step in fp16: autocast, GradScaler, unscale, clip at 12, Adam."""
    import torch
    from nnunet_nerve import FCDenseNet

    torch.manual_seed(2)
    net = FCDenseNet(**config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scaler = torch.GradScaler(device.type)
    before = [p.detach().clone() for p in net.parameters()]
    losses = []
    for step in range(3):
        x = torch.randn(batch, 1, size, size, device=device)
        target = torch.randint(0, 2, (batch, size, size), device=device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16):
            out = net.train()(x)
            loss = torch.nn.functional.cross_entropy(out, target)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    finite = all(torch.isfinite(p).all() for p in net.parameters())
    moved = any(not torch.equal(p, q) for p, q in zip(net.parameters(), before))
    report.check(f"fp16 autocast + GradScaler on {device.type}, 3 steps",
                 finite and moved and all(math.isfinite(v) for v in losses),
                 f"losses {', '.join(f'{v:.4f}' for v in losses)}, parameters finite: {finite}, "
                 f"updated: {moved}, scale {scaler.get_scale():.0f}, output dtype {out.dtype}")


def check_compiled_equals_eager(report: Report, device, batch: int, size: int, config: dict,
                                backend: str) -> None:
    import torch
    from nnunet_nerve import FCDenseNet

    torch.manual_seed(3)
    net = FCDenseNet(**config, dropout=0.0).to(device)
    eager = copy.deepcopy(net)
    x = torch.randn(batch, 1, size, size, device=device)
    target = torch.randint(0, 2, (batch, size, size), device=device)
    compiled = torch.compile(net, backend=backend)
    start = time.perf_counter()
    with tf32(False):
        out, grads = train_step(compiled, x, target)
        synchronize(device)
        compile_s = time.perf_counter() - start
        out_eager, grads_eager = train_step(eager, x, target)
        with torch.no_grad():
            eval_out, eval_eager = compiled.eval()(x), eager.eval()(x)
    grad_error, worst = worst_gradient_error(grads, grads_eager)
    stats = max(relative(b, dict(eager.named_buffers())[n]) for n, b in net.named_buffers()
                if b.is_floating_point())
    once = all(int(m.num_batches_tracked) == 1 for m in net.modules() if hasattr(m, "num_batches_tracked"))
    report.check(f"torch.compile ({backend}) equals eager on {device.type}",
                 relative(out, out_eager) <= 1e-4 and grad_error <= 1e-3 and stats <= 1e-4 and once
                 and relative(eval_out, eval_eager) <= 1e-4,
                 f"train output {relative(out, out_eager):.1e}, worst gradient {grad_error:.1e} ({worst}), "
                 f"running stats {stats:.1e} (updated once: {once}), eval output "
                 f"{relative(eval_out, eval_eager):.1e}; first compiled step {compile_s:.0f} s")


def training_step_table(device, batch: int, size: int, config: dict, steps: int, backend: str,
                        modes=(False, True)) -> list[str]:
    """Seconds per training step and peak memory under nnU-Net's AMP (fp16 + GradScaler on
    CUDA; none on a CPU), eager and (`modes`) compiled."""
    import torch
    from nnunet_nerve import FCDenseNet
    from bench_network import deep_supervision_loss, nnunet_default_2d_unet

    builders = {
        "FCDenseNet(memory_efficient=False)": lambda: FCDenseNet(**config, memory_efficient=False),
        "FCDenseNet(by_parts=False) (concatenations checkpointed)": lambda: FCDenseNet(**config, by_parts=False),
        "FCDenseNet() (by parts, checkpointed; default)": lambda: FCDenseNet(**config),
        "nnU-Net 2D U-Net (320 x 320 plan)": nnunet_default_2d_unet,
    }
    lines = [f"{'network':58s}{'mode':>10s}{'s/step':>10s}{'peak GiB':>10s}"]
    x = torch.randn(batch, 1, size, size, device=device)
    target = torch.randint(0, 2, (batch, size, size), device=device)
    for compiled in modes:
        for name, build in builders.items():
            torch.manual_seed(0)
            net = build().to(device)
            run = torch.compile(net, backend=backend) if compiled else net
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
            scaler = torch.GradScaler("cuda") if device.type == "cuda" else None
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for step in range(2 + steps):   # two warm-up steps (compilation, cuDNN autotuning)
                synchronize(device)
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    loss = deep_supervision_loss(run.train()(x), target, size)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                synchronize(device)
                times.append(time.perf_counter() - start)
            peak = (f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:10.2f}" if device.type == "cuda"
                    else f"{'n/a':>10s}")
            mode = "compiled" if compiled else "eager"
            lines.append(f"{name:58s}{mode:>10s}{statistics.median(times[2:]):10.3f}{peak}")
            del net, run, optimizer
    return lines


def network_checks(args, report: Report) -> None:
    import torch

    device = torch.device(args.device)
    batch, size = (1, 128) if args.tiny else (8, 320)   # nnU-Net's U-Net needs 128 pixels
    check_batch, check_size = (2, 32) if args.tiny else (4, 320)
    config = TINY_NETWORK if args.tiny else {}
    print(f"Part 1: FCDenseNet{'(' + str(config) + ')' if config else ''} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}", flush=True)
    for check in (check_against_float64, check_dropout_masks, check_fp16_grad_scaler):
        start = time.perf_counter()
        check(report, device, check_batch, check_size, config)
        print(f"    ({time.perf_counter() - start:.0f} s)", flush=True)
    start = time.perf_counter()
    check_compiled_equals_eager(report, device, check_batch, check_size, config, args.compile_backend)
    print(f"    ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"  training step, batch {batch} x 1 x {size} x {size}, "
          f"{'AMP fp16 + GradScaler' if device.type == 'cuda' else 'fp32'}, "
          f"{'eager only' if args.tiny else f'compiled with {args.compile_backend}'}; "
          f"median of {args.steps} steps after 2 warm-up steps:")
    modes = (False,) if args.tiny else (False, True)
    for line in training_step_table(device, batch, size, config, args.steps, args.compile_backend, modes):
        print("    " + line, flush=True)


# ----------------------------------------------------------------------------- part 2

def training_env(wd: bp.Workdir, args) -> dict:
    """The work folder's environment for nnUNetv2_train: both trainer folders, nnU-Net's own
    data-augmentation workers and compile setting on a GPU, tiny sizes with --tiny."""
    env = wd.env()
    env["nnUNet_extTrainer"] = env["nnUNet_extTrainer"] + os.pathsep + str(TRAINER_FOLDER)
    if args.device == "cuda":
        env.pop("nnUNet_n_proc_DA", None)
        env.pop("nnUNet_compile", None)   # nnU-Net's default: compile on CUDA
        env.pop("OMP_NUM_THREADS", None)
        env.pop("MKL_NUM_THREADS", None)
    if args.tiny:
        env.update(NNUNET_NERVE_BENCH_ITERATIONS="2,1", NNUNET_NERVE_BENCH_WARMUP="1,1",
                   NNUNET_NERVE_BENCH_PATCH="64x64", NNUNET_NERVE_BENCH_BATCH="2")
    return env


def write_split(wd: bp.Workdir) -> None:
    """Fold 0 trains on both training scans (and validates on one: the benchmark's epochs need
    validation batches)."""
    cases = [f"case_{i:03d}" for i in range(bp.N_TRAIN)]
    split = [{"train": cases, "val": cases[:1]}]
    (wd.preprocessed / bp.DATASET_NAME / "splits_final.json").write_text(json.dumps(split, indent=2))


def train_and_predict(args) -> None:
    from gpu_trainers.gpu_benchmark_trainers import RESULT_FILE

    root = bench_common.prepare_workdir(args.workdir, bp.WORKDIR_PREFIX)
    threads = os.cpu_count() if args.device == "cuda" else args.threads
    wd = bp.Workdir(root, threads=threads, device=args.device)
    slices, rows, cols = TINY_SCAN if args.tiny else PAPER_SCAN
    try:
        print(f"Part 2: nnU-Net's commands, work folder {root}", flush=True)
        start = time.perf_counter()
        content = bp.write_dataset(wd, slices, rows, cols, args.seed)
        bp.plan_and_preprocess(wd)
        write_split(wd)
        print(f"  dataset ({bp.N_TRAIN} training scans + 1 to predict, {slices} x {rows} x {cols}, {content}) "
              f"and nnUNetv2_plan_and_preprocess: {time.perf_counter() - start:.0f} s", flush=True)
        env = training_env(wd, args)
        results = {}
        if not args.skip_train:
            for trainer in TRAINERS:
                start = time.perf_counter()
                run_checked([console_script("nnUNetv2_train"), bp.DATASET_ID, bp.CONFIGURATION, bp.FOLD,
                             "-tr", trainer, "-device", args.device], env)
                results[trainer] = json.loads((wd.model_folder(trainer) / f"fold_{bp.FOLD}" / RESULT_FILE).read_text())
                print(f"  nnUNetv2_train -tr {trainer}: {time.perf_counter() - start:.0f} s in all", flush=True)
            print_training(results)
        if not args.skip_predict and not args.skip_train:
            predict(wd, args, env, slices, rows, cols)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def print_training(results: dict) -> None:
    print(f"  {'trainer':32s}{'AMP':>5s}{'compile':>9s}{'batch':>7s}{'patch':>11s}{'epoch it.':>11s}"
          f"{'s/epoch':>9s}{'train s/it':>11s}{'peak GiB':>10s}")
    for trainer, r in results.items():
        train_it, val_it = r["timed_iterations"]
        full = r["full_epoch_iterations"]
        peak = r.get("timed_epoch_max_memory_allocated_gib")
        print(f"  {trainer:32s}{str(r['amp']):>5s}{str(r['compile']):>9s}{r['batch_size']:7d}"
              f"{' x '.join(map(str, r['patch_size'])):>11s}{f'{full[0]}+{full[1]}':>11s}"
              f"{r['full_epoch_s']:9.1f}{r['timed_train_s'] / train_it:11.4f}"
              f"{f'{peak:.2f}' if peak is not None else 'n/a':>10s}")
        print(f"    timed epoch: {train_it} + {val_it} iterations in {r['timed_epoch_s']:.1f} s "
              f"(training {r['timed_train_s']:.1f} s, validation {r['timed_val_s']:.1f} s); "
              f"warm-up epoch {r['warmup_epoch_s']:.1f} s"
              + (f"; peak over the whole run {r['run_max_memory_allocated_gib']:.2f} GiB"
                 if "run_max_memory_allocated_gib" in r else ""), flush=True)


def predict(wd: bp.Workdir, args, env: dict, slices: int, rows: int, cols: int) -> None:
    times = {t: {"scan": [], "startup": []} for t in TRAINERS}
    for r in range(args.rounds):
        for trainer in (TRAINERS if r % 2 == 0 else TRAINERS[::-1]):
            shutil.rmtree(wd.predictions(trainer), ignore_errors=True)
            times[trainer]["scan"].append(timed(bp.predict_command(wd, trainer, 0.5, tta=False), env))
            times[trainer]["startup"].append(timed(bp.predict_command(wd, trainer, 0.5, tta=False, resume=True), env))
    print(f"  nnUNetv2_predict -device {args.device} --disable_tta, one scan of {slices} x {rows} x {cols}, "
          f"median of {args.rounds} round(s):")
    for trainer in TRAINERS:
        problems = bp.geometry_problems(wd.predictions(trainer) / f"{bp.SCAN}.nii.gz", wd.scan_path)
        if problems:
            raise RuntimeError("; ".join(problems))
        plans = json.loads((wd.model_folder(trainer) / "plans.json").read_text())
        patch = plans["configurations"][bp.CONFIGURATION]["patch_size"]
        tiles = tiles_per_slice(rows, cols, patch, 0.5)
        scan = statistics.median(times[trainer]["scan"])
        startup = statistics.median(times[trainer]["startup"])
        print(f"    {trainer:32s} patch {patch[0]} x {patch[1]} ({tiles} tile(s) per slice): "
              f"{scan:.1f} s per scan, start-up alone {startup:.1f} s, "
              f"{(scan - startup) / slices:.3f} s per slice net", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="toy sizes (CI); figures mean nothing")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of part 1 (default: inductor; aot_eager with --tiny on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per network in part 1")
    parser.add_argument("--rounds", type=int, default=None, help="nnUNetv2_predict rounds")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for --device cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-checks", action="store_true", help="leave out part 1")
    parser.add_argument("--skip-train", action="store_true", help="leave out training (and so prediction)")
    parser.add_argument("--skip-predict", action="store_true")
    bench_common.add_workdir_arguments(parser)
    args = parser.parse_args(argv)
    if args.compile_backend is None:
        args.compile_backend = "aot_eager" if args.tiny and args.device == "cpu" else "inductor"
    if args.steps is None:
        args.steps = 1 if args.tiny else 10
    if args.rounds is None:
        args.rounds = 1 if args.tiny else 2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --device cpu --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    report = Report()
    begin = time.perf_counter()
    if not args.skip_checks:
        network_checks(args, report)
        print(f"Part 1 took {time.perf_counter() - begin:.0f} s", flush=True)
    part2 = time.perf_counter()
    if not (args.skip_train and args.skip_predict):
        try:
            train_and_predict(args)
        except RuntimeError as e:   # a command failed: its output is in the message
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"Part 2 took {time.perf_counter() - part2:.0f} s", flush=True)
    print(f"bench_gpu: {time.perf_counter() - begin:.0f} s in all; "
          + (f"FAILED checks: {', '.join(report.failed)}" if report.failed else "all checks passed"))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
