"""FCDenseNet against nnU-Net's default 2D U-Net, side by side on this CPU, and the standard
means of making it faster or leaner, each measured as an option in the same run.

Every measurement (network x {inference, training step}) runs in its own child process, so
that its peak resident set size (the child's VmHWM: everything the process touched, Python
and torch included) is that measurement's alone. Times are wall-clock and,
because this machine is shared with other jobs, also the child's CPU time (user + system of
all its threads); CPU-time ratios are the steadier ones when the machine is busy. Rounds
alternate the networks so that a machine shared with other jobs slows all alike; the tables
give the median over rounds and the ratios U-Net / network (time) and U-Net / network
(memory): above 1 means the network is faster / leaner than the U-Net.

- unet: dynamic_network_architectures' PlainConvUNet with the arguments nnU-Net's default
  planner writes for a 2D 320 x 320 patch (7 stages, 32..512 features, 3x3 convs, instance
  norm, leaky ReLU, deep supervision as nnUNetTrainer trains it), built through nnU-Net's
  own get_network_from_plans, run as nnU-Net runs it on a CPU (eager, NCHW).
- fcdensenet: nnunet_nerve.FCDenseNet() with the paper's defaults, the module
  FCDenseNetTrainer builds: checkpointed dense layers in training, each dense block written
  into one buffer at inference.
- The options (--networks), all the same function with the same parameters:
  fcdensenet_plain (memory_efficient=False, buffered_inference=False: one concatenation
  per layer, everything kept for backward), fcdensenet_concatenated (by_parts=False: dense
  layers and levels checkpointed, each layer concatenating its input under its checkpoint,
  torchvision's form and the default until 2 Dec 2026), fcdensenet_layer_checkpoints /
  fcdensenet_level_checkpoints (one of the two kinds of checkpoint), fcdensenet_checkpoint_only (checkpointing, no
  inference buffer), fcdensenet_channels_last and fcdensenet_plain_channels_last (module
  and input in channels-last memory format), fcdensenet_compile and
  fcdensenet_plain_compile (torch.compile, Inductor's C++ backend; the first iteration
  compiles and is reported apart), fcdensenet_compile_freezing (the same with
  torch._inductor.config.freezing: weights folded into the graph, inference only),
  unet_compile (nnU-Net's U-Net compiled the same way, for a like-for-like look), and
  fcdensenet_thp / unet_thp (the environment variable THP_MEM_ALLOC_ENABLE=1: PyTorch
  allocates large CPU tensors on transparent huge pages, so a fresh tensor costs 512 times
  fewer page faults).
- Inference: forward in eval mode under torch.inference_mode (as nnUNetv2_predict runs
  it). Training step: zero_grad, forward, cross-entropy (each deep-supervision output of
  the U-Net against the subsampled target, nnU-Net's weights), backward, Adam step.
- FLOPs: 2 x multiply-accumulates of every (transposed) convolution, counted with forward
  hooks on the real modules; a training step is counted as 3 x the forward FLOPs.
- Peak: cores x fp32 FLOP per cycle x clock, from lscpu / /proc/cpuinfo (see `cpu_peak`),
  and the FMA throughput the cores sustain, measured by benchmarks/fma_peak.c when a C
  compiler is present; percentages are of the larger.

    .venv/bin/python benchmarks/bench_network.py                 # batch 8, 320 x 320, 2 threads
    .venv/bin/python benchmarks/bench_network.py --networks unet,fcdensenet,fcdensenet_plain,fcdensenet_compile
    .venv/bin/python benchmarks/bench_network.py --batch 2 --rounds 1 --iterations 1   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

MODES = ("inference", "train")
#: PyTorch's switch for 2 MiB-aligned CPU allocations with madvise(MADV_HUGEPAGE): large fresh
#: tensors are then faulted in by huge pages, not 4 KiB pages
THP = {"THP_MEM_ALLOC_ENABLE": "1"}


class Option:
    """How one measured network is built and run."""

    def __init__(self, base: str, description: str, memory_efficient: bool = True,
                 buffered_inference: bool = True, checkpoint_levels: bool | None = None,
                 by_parts: bool = True, channels_last: bool = False,
                 compile: bool = False, freezing: bool = False, modes=MODES, env: dict | None = None):
        self.base, self.description = base, description
        self.memory_efficient, self.buffered_inference = memory_efficient, buffered_inference
        self.checkpoint_levels, self.by_parts = checkpoint_levels, by_parts
        self.channels_last, self.compile, self.freezing = channels_last, compile, freezing
        self.modes = modes
        self.env = env or {}


OPTIONS = {
    "unet": Option("unet", "nnU-Net's default 2D U-Net (eager, NCHW)"),
    "fcdensenet": Option("fcdensenet", "FCDenseNet() as FCDenseNetTrainer builds it"),
    "fcdensenet_plain": Option("fcdensenet", "no checkpointing, no inference buffer",
                               memory_efficient=False, buffered_inference=False),
    "fcdensenet_concatenated": Option("fcdensenet", "dense layers and levels checkpointed, concatenations formed",
                                      by_parts=False, modes=("train",)),
    "fcdensenet_layer_checkpoints": Option("fcdensenet", "dense layers checkpointed, resolution levels not",
                                           checkpoint_levels=False, modes=("train",)),
    "fcdensenet_level_checkpoints": Option("fcdensenet", "resolution levels checkpointed, dense layers not",
                                           memory_efficient=False, checkpoint_levels=True, modes=("train",)),
    "fcdensenet_checkpoint_only": Option("fcdensenet", "checkpointing, no inference buffer",
                                         buffered_inference=False),
    "fcdensenet_channels_last": Option("fcdensenet", "FCDenseNet(), channels-last", channels_last=True),
    "fcdensenet_plain_channels_last": Option("fcdensenet", "plain, channels-last", memory_efficient=False,
                                             buffered_inference=False, channels_last=True),
    "fcdensenet_compile": Option("fcdensenet", "FCDenseNet() under torch.compile", compile=True),
    "fcdensenet_plain_compile": Option("fcdensenet", "plain, under torch.compile", memory_efficient=False,
                                       compile=True),
    "fcdensenet_compile_freezing": Option("fcdensenet", "torch.compile with Inductor freezing",
                                          compile=True, freezing=True, modes=("inference",)),
    "unet_compile": Option("unet", "nnU-Net's U-Net under torch.compile", compile=True),
    "fcdensenet_thp": Option("fcdensenet", "FCDenseNet() with THP_MEM_ALLOC_ENABLE=1", env=THP),
    "unet_thp": Option("unet", "nnU-Net's U-Net with THP_MEM_ALLOC_ENABLE=1", env=THP),
}
#: measured when --networks is not given
DEFAULT_NETWORKS = ("unet", "fcdensenet")


def nnunet_default_2d_unet(in_channels: int = 1, num_classes: int = 2):
    """PlainConvUNet as nnU-Net's ExperimentPlanner plans it for a 2D 320 x 320 patch."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    n_stages = 7
    arch_kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [min(32 * 2 ** i, 512) for i in range(n_stages)],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * n_stages,
        "strides": [[1, 1]] + [[2, 2]] * (n_stages - 1),
        "n_conv_per_stage": [2] * n_stages,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return get_network_from_plans(
        "dynamic_network_architectures.architectures.unet.PlainConvUNet", arch_kwargs,
        ["conv_op", "norm_op", "dropout_op", "nonlin"], in_channels, num_classes,
        allow_init=True, deep_supervision=True)


def build(name: str):
    """The module for option `name` (uncompiled, NCHW)."""
    option = OPTIONS[name]
    if option.base == "unet":
        return nnunet_default_2d_unet()
    from nnunet_nerve import FCDenseNet
    return FCDenseNet(memory_efficient=option.memory_efficient,
                      buffered_inference=option.buffered_inference,
                      checkpoint_levels=option.checkpoint_levels, by_parts=option.by_parts)


def forward_flops(net, shape) -> float:
    """2 x multiply-accumulates of all convolutions in one forward pass of a `shape` batch."""
    import torch
    from torch import nn

    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, nn.ConvTranspose2d):
            # every input pixel meets the whole kernel once
            x = inputs[0]
            macs = x.numel() * module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            macs //= module.groups
        else:
            macs = output.numel() * (module.in_channels // module.groups) \
                * module.kernel_size[0] * module.kernel_size[1]
        total[0] += 2.0 * macs

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    net.eval()
    if hasattr(net, "buffered_inference"):   # its inference path calls some convolutions functionally
        net.buffered_inference = False
    with torch.no_grad():
        net(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total[0]


def cpu_peak(threads: int) -> dict:
    """Theoretical fp32 peak: threads (cores used) x FLOP/cycle/core x clock.

    FLOP/cycle/core: 2 (FMA) x fp32 lanes x FMA pipes. AVX-512 on AMD Zen 4 (family 25) runs
    as two 256-bit FMA pipes: 32 FLOP/cycle; AVX-512 on Intel server cores: two 512-bit FMA
    units, 64; AVX2 + FMA: two 256-bit units, 32. Clock: lscpu's "CPU max MHz" when the
    hypervisor reports it, else /proc/cpuinfo's current "cpu MHz" (base clock; turbo can be
    higher, so the peak may be understated).
    """
    info = open("/proc/cpuinfo").read()
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split())
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", info, re.M).group(1)
    family = int(re.search(r"^cpu family\s*:\s*(\d+)", info, re.M).group(1))
    model_name = re.search(r"^model name\s*:\s*(.*)$", info, re.M).group(1).strip()
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family <= 25):
        per_cycle, simd = 64, "AVX-512, two 512-bit FMA units"
    elif "avx512f" in flags:
        per_cycle, simd = 32, "AVX-512 on AMD Zen 4: two 256-bit FMA pipes"
    elif "fma" in flags and "avx2" in flags:
        per_cycle, simd = 32, "AVX2, two 256-bit FMA units"
    else:
        per_cycle, simd = 8, "SSE, no FMA"
    mhz, clock_source = None, ""
    measured = measured_fma_peak(threads)
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"CPU max MHz:\s*([\d.]+)", lscpu)
        if m:
            mhz, clock_source = float(m.group(1)), "lscpu CPU max MHz"
    except OSError:
        pass
    if mhz is None:
        mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M).group(1))
        clock_source = "/proc/cpuinfo cpu MHz (no max clock reported)"
    gflops = threads * per_cycle * mhz / 1000.0
    return {"model": model_name, "simd": simd, "flop_per_cycle": per_cycle, "mhz": mhz,
            "clock_source": clock_source, "threads": threads, "peak_gflops": gflops,
            "measured_gflops": measured}


def measured_fma_peak(threads: int) -> float | None:
    """GFLOP/s of benchmarks/fma_peak.c (independent FMA chains on every thread), built with
    the system C compiler; None without one. The nominal peak uses the clock the kernel
    reports, which on a VM is often the base clock while the cores run at their boost
    clock: this one is what the cores sustain."""
    import shutil
    import tempfile
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return None
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fma_peak.c")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "fma_peak")
        build = subprocess.run([cc, "-O3", "-march=native", "-fopenmp", source, "-o", exe],
                               capture_output=True, text=True)
        if build.returncode != 0:
            return None
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        run = subprocess.run([exe], capture_output=True, text=True, env=env)
        return float(run.stdout.split()[0]) if run.returncode == 0 else None


def deep_supervision_loss(output, target, size: int):
    """nnU-Net's deep-supervision weighting of cross-entropy (last output weighted 0), or
    plain cross-entropy for a single output."""
    from torch import nn

    if isinstance(output, (list, tuple)):
        weights = [1 / 2 ** i for i in range(len(output))]
        weights[-1] = 0
        total = sum(weights)
        loss = 0
        for w, out in zip(weights, output):
            if w:
                step = size // out.shape[-1]
                loss = loss + w / total * nn.functional.cross_entropy(out, target[:, ::step, ::step])
        return loss
    return nn.functional.cross_entropy(output, target)


def child(args) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    option = OPTIONS[args.network]
    net = build(args.network)
    shape = (args.batch, 1, args.size, args.size)
    x = torch.randn(shape)
    target = torch.randint(0, 2, (args.batch, args.size, args.size))
    if option.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = net
    if option.compile:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = option.freezing
        run = torch.compile(net)
    times, cpu_times = [], []
    if args.mode == "inference":
        net.eval()
        with torch.inference_mode():
            for i in range(args.warmup + args.iterations):
                start, cpu = time.perf_counter(), time.process_time()
                run(x)
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu)
    else:
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for i in range(args.warmup + args.iterations):
            start, cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            deep_supervision_loss(run(x), target, args.size).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
    print(json.dumps({"times": times[args.warmup:], "cpu_times": cpu_times[args.warmup:],
                      "warmup_times": times[:args.warmup], "peak_rss_gib": peak_rss_kib() / 2 ** 20}))


def peak_rss_kib() -> int:
    """Peak resident set size of this process's address space: VmHWM in /proc/self/status.
    (getrusage's ru_maxrss is no good here: Linux carries the parent's high-water mark
    over fork + exec, so every child would report at least the parent's size.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(args, network: str, mode: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--network", network,
           "--mode", mode, "--batch", str(args.batch), "--size", str(args.size),
           "--threads", str(args.threads), "--iterations", str(args.iterations),
           "--warmup", str(args.warmup)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               **OPTIONS[network].env)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"error: {network} {mode} measurement failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def table(mode: str, networks, samples, cpu_samples, memory, flops, batch, reference_peak) -> list[str]:
    """One row per network: medians per slice, GFLOP/s, peak, and U-Net / network ratios."""
    factor = 1.0 if mode == "inference" else 3.0
    label = "inference (eval, inference_mode)" if mode == "inference" else "training step"
    lines = [f"{label}: s/slice and CPU s/slice (medians), GFLOP/s (% of peak), peak RSS GiB; "
             "U-Net / network for time, CPU time and peak (above 1: faster / leaner than the U-Net)",
             f"{'network':32s}{'s/slice':>9s}{'CPU s':>9s}{'GFLOP/s':>14s}{'peak GiB':>10s}"
             f"{'time':>8s}{'CPU':>8s}{'memory':>8s}"]
    unet = "unet" if "unet" in networks else None
    for name in networks:
        if not samples[(name, mode)]:
            continue
        t = statistics.median(samples[(name, mode)])
        c = statistics.median(cpu_samples[(name, mode)])
        m = max(memory[(name, mode)])
        g = factor * flops[name] / t / 1e9
        ratios = ""
        if unet:
            tu = statistics.median(samples[(unet, mode)])
            cu = statistics.median(cpu_samples[(unet, mode)])
            mu = max(memory[(unet, mode)])
            ratios = f"{tu / t:7.2f}x{cu / c:7.2f}x{mu / m:7.2f}x"
        lines.append(f"{name:32s}{t / batch:9.3f}{c / batch:9.3f}{g:8.1f} ({100 * g / reference_peak:2.0f}%)"
                     f"{m:10.2f}{ratios}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=320, help="square patch side (pixels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of all measurements (median reported)")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per child")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed iterations per child (compiled options compile in the first)")
    parser.add_argument("--modes", default="inference,train")
    parser.add_argument("--networks", default=",".join(DEFAULT_NETWORKS),
                        help=f"comma-separated, from {', '.join(OPTIONS)}")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--network", choices=tuple(OPTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    unknown = [n for n in args.networks.split(",") if n and n not in OPTIONS]
    modes = [m for m in args.modes.split(",") if m]
    if unknown or not set(modes) <= set(MODES):
        parser.error(f"unknown network or mode: {', '.join(unknown + [m for m in modes if m not in MODES])}")
    if args.warmup < 1 and any(
            OPTIONS[n].compile for n in args.networks.split(",") if n in OPTIONS):
        parser.error("compiled options need --warmup 1 or more (the first iteration compiles)")

    import torch

    networks = tuple(n for n in OPTIONS if n in args.networks.split(","))
    peak = cpu_peak(args.threads)
    shape = (args.batch, 1, args.size, args.size)
    flops = {name: forward_flops(build(name), shape) for name in networks}
    print(f"torch {torch.__version__}, {peak['model']}, {args.threads} threads; batch "
          f"{args.batch} x 1 x {args.size} x {args.size}; {args.rounds} rounds x "
          f"{args.iterations} timed iterations (+{args.warmup} warm-up), medians; "
          f"load average at start {load_average()}")
    print(f"theoretical fp32 peak {peak['peak_gflops']:.0f} GFLOP/s = {args.threads} cores x "
          f"{peak['flop_per_cycle']} FLOP/cycle ({peak['simd']}) x {peak['mhz']:.0f} MHz "
          f"({peak['clock_source']})")
    reference_peak = peak["peak_gflops"]
    if peak["measured_gflops"]:
        reference_peak = max(reference_peak, peak["measured_gflops"])
        print(f"measured FMA throughput {peak['measured_gflops']:.0f} GFLOP/s on {args.threads} "
              f"threads (benchmarks/fma_peak.c); percentages below are of {reference_peak:.0f}")
    for name in networks:
        print(f"{name}: {OPTIONS[name].description}; {flops[name] / args.batch / 1e9:.1f} GFLOP per slice (forward)")
    samples = {(n, m): [] for n in networks for m in modes}
    cpu_samples = {(n, m): [] for n in networks for m in modes}
    memory = {(n, m): [] for n in networks for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            order = networks if r % 2 == 0 else tuple(reversed(networks))
            for name in order:
                if mode not in OPTIONS[name].modes:
                    continue
                out = run_child(args, name, mode)
                samples[(name, mode)].extend(out["times"])
                cpu_samples[(name, mode)].extend(out["cpu_times"])
                memory[(name, mode)].append(out["peak_rss_gib"])
                warm = ""
                if OPTIONS[name].compile and out["warmup_times"]:
                    warm = f", first (compiling) iteration {out['warmup_times'][0]:.1f} s"
                print(f"  round {r + 1}: {name} {mode} "
                      f"{', '.join(f'{t:.2f}' for t in out['times'])} s/batch "
                      f"(CPU {', '.join(f'{t:.2f}' for t in out['cpu_times'])} s), "
                      f"peak RSS {out['peak_rss_gib']:.2f} GiB{warm}; load {load_average()}", flush=True)
    for mode in modes:
        print()
        print("\n".join(table(mode, networks, samples, cpu_samples, memory, flops, args.batch,
                               reference_peak)))


if __name__ == "__main__":
    main()
