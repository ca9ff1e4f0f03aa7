"""FCDenseNet against nnU-Net's default 2D U-Net, side by side on this CPU.

Every measurement (network x {inference, training step}) runs in its own child process, so
that its peak resident set size (the child's VmHWM: everything the process touched, Python
and torch included) is that measurement's alone. Times are wall-clock and,
because this machine is shared with other jobs, also the child's CPU time (user + system of
all its threads); CPU-time ratios are the steadier ones when the machine is busy. Rounds alternate the two
networks so that a machine shared with other jobs slows both alike; the table gives the
median over rounds and the ratios U-Net / FCDenseNet (time) and U-Net / FCDenseNet (memory):
above 1 means FCDenseNet is faster / leaner.

- U-Net: dynamic_network_architectures' PlainConvUNet with the arguments nnU-Net's default
  planner writes for a 2D 320 x 320 patch (7 stages, 32..512 features, 3x3 convs, instance
  norm, leaky ReLU, deep supervision as nnUNetTrainer trains it), built through nnU-Net's
  own get_network_from_plans.
- FCDenseNet: nnunet_nerve.FCDenseNet() with the paper's defaults, the module
  FCDenseNetTrainer builds.
- Inference: forward in eval mode under torch.no_grad. Training step: zero_grad, forward,
  cross-entropy (each deep-supervision output of the U-Net against the subsampled target,
  nnU-Net's weights), backward, Adam step.
- FLOPs: 2 x multiply-accumulates of every (transposed) convolution, counted with forward
  hooks on the real modules; a training step is counted as 3 x the forward FLOPs.
- Peak: cores x fp32 FLOP per cycle x clock, from lscpu / /proc/cpuinfo (see `cpu_peak`),
  and the FMA throughput the cores sustain, measured by benchmarks/fma_peak.c when a C
  compiler is present; percentages are of the larger.
- --networks fcdensenet_pytorch: FCDenseNet with its fused C kernels switched off
  (NNUNET_NERVE_FUSED_KERNELS=0: the PyTorch lean path); fcdensenet_straightforward: one
  torch.cat per layer.

    .venv/bin/python benchmarks/bench_network.py                 # batch 8, 320 x 320, 2 threads
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

NETWORKS = ("unet", "fcdensenet")
# the same FCDenseNet forced onto its one-torch.cat-per-layer path, or onto its lean CPU
# path without the fused C kernels, to show what each buys; measured only when asked for
# with --networks
STRAIGHTFORWARD = "fcdensenet_straightforward"
PYTORCH_LEAN = "fcdensenet_pytorch"
VARIANTS = (STRAIGHTFORWARD, PYTORCH_LEAN)
MODES = ("inference", "train")


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
    if name == "unet":
        return nnunet_default_2d_unet()
    from nnunet_nerve import FCDenseNet
    net = FCDenseNet()
    if name == STRAIGHTFORWARD:
        net.forward = net.forward_straightforward
    return net


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
    # FCDenseNet's lean CPU path calls the convolutions functionally: count on the
    # straightforward path, which runs the same convolutions through the modules
    forward = getattr(net, "forward_straightforward", net)
    with torch.no_grad():
        forward(torch.zeros(shape))
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


def child(args) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build(args.network)
    shape = (args.batch, 1, args.size, args.size)
    x = torch.randn(shape)
    target = torch.randint(0, 2, (args.batch, args.size, args.size))
    times, cpu_times = [], []
    if args.mode == "inference":
        net.eval()
        with torch.no_grad():
            for i in range(args.warmup + args.iterations):
                start, cpu = time.perf_counter(), time.process_time()
                net(x)
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu)
    else:
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

        def loss_of(output):
            if isinstance(output, (list, tuple)):   # deep supervision, nnU-Net's weights
                weights = [1 / 2 ** i for i in range(len(output))]
                weights[-1] = 0
                total = sum(weights)
                loss = 0
                for w, out in zip(weights, output):
                    if w:
                        step = args.size // out.shape[-1]
                        loss = loss + w / total * nn.functional.cross_entropy(
                            out, target[:, ::step, ::step])
                return loss
            return nn.functional.cross_entropy(output, target)

        for i in range(args.warmup + args.iterations):
            start, cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            loss_of(net(x)).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
    fused = None
    if args.network in ("fcdensenet", PYTORCH_LEAN):
        from nnunet_nerve import fused_kernels
        fused = fused_kernels.unavailable_reason() is None
    print(json.dumps({"times": times[args.warmup:], "cpu_times": cpu_times[args.warmup:],
                      "peak_rss_gib": peak_rss_kib() / 2 ** 20, "fused_kernels": fused}))


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
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if network == PYTORCH_LEAN:
        env["NNUNET_NERVE_FUSED_KERNELS"] = "0"
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"error: {network} {mode} measurement failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=320, help="square patch side (pixels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of all four measurements (median reported)")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per child")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per child")
    parser.add_argument("--modes", default="inference,train")
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help=f"comma-separated, from {', '.join(NETWORKS + VARIANTS)}; "
                             "the ratio table needs unet and fcdensenet")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--network", choices=NETWORKS + VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    import torch

    modes = [m for m in args.modes.split(",") if m]
    networks = tuple(n for n in NETWORKS + VARIANTS if n in args.networks.split(","))
    peak = cpu_peak(args.threads)
    shape = (args.batch, 1, args.size, args.size)
    flops = {name: forward_flops(build(name), shape) for name in networks}
    print(f"torch {torch.__version__}, {peak['model']}, {args.threads} threads; batch "
          f"{args.batch} x 1 x {args.size} x {args.size}; {args.rounds} rounds x "
          f"{args.iterations} timed iterations (+{args.warmup} warm-up), medians")
    print(f"theoretical fp32 peak {peak['peak_gflops']:.0f} GFLOP/s = {args.threads} cores x "
          f"{peak['flop_per_cycle']} FLOP/cycle ({peak['simd']}) x {peak['mhz']:.0f} MHz "
          f"({peak['clock_source']})")
    reference_peak = peak["peak_gflops"]
    if peak["measured_gflops"]:
        reference_peak = max(reference_peak, peak["measured_gflops"])
        print(f"measured FMA throughput {peak['measured_gflops']:.0f} GFLOP/s on {args.threads} "
              f"threads (benchmarks/fma_peak.c; the cores run above the reported clock); "
              f"percentages below are of {reference_peak:.0f}")
    for name in networks:
        print(f"{name}: {flops[name] / args.batch / 1e9:.1f} GFLOP per slice (forward)")
    samples = {(n, m): [] for n in networks for m in modes}
    cpu_samples = {(n, m): [] for n in networks for m in modes}
    memory = {(n, m): [] for n in networks for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            order = networks if r % 2 == 0 else tuple(reversed(networks))
            for name in order:
                out = run_child(args, name, mode)
                samples[(name, mode)].extend(out["times"])
                cpu_samples[(name, mode)].extend(out["cpu_times"])
                memory[(name, mode)].append(out["peak_rss_gib"])
                kernels = {True: ", fused kernels", False: ", PyTorch path"}.get(out["fused_kernels"], "")
                print(f"  round {r + 1}: {name:10s} {mode:9s} "
                      f"{', '.join(f'{t:.2f}' for t in out['times'])} s/batch "
                      f"(CPU {', '.join(f'{t:.2f}' for t in out['cpu_times'])} s), "
                      f"peak RSS {out['peak_rss_gib']:.2f} GiB{kernels}", flush=True)
    if not set(NETWORKS) <= set(networks):
        return
    print()
    print(f"{'':26s}{'U-Net':>12s}{'FCDenseNet':>12s}{'ratio':>8s}")
    for mode in modes:
        factor = 1.0 if mode == "inference" else 3.0
        t = {n: statistics.median(samples[(n, mode)]) for n in NETWORKS}
        g = {n: factor * flops[n] / t[n] / 1e9 for n in NETWORKS}
        m = {n: max(memory[(n, mode)]) for n in NETWORKS}
        label = "inference" if mode == "inference" else "training step"
        print(f"{label + ' s/slice':26s}{t['unet'] / args.batch:12.3f}"
              f"{t['fcdensenet'] / args.batch:12.3f}{t['unet'] / t['fcdensenet']:8.2f}x")
        c = {n: statistics.median(cpu_samples[(n, mode)]) for n in NETWORKS}
        print(f"{label + ' CPU s/slice':26s}{c['unet'] / args.batch:12.3f}"
              f"{c['fcdensenet'] / args.batch:12.3f}{c['unet'] / c['fcdensenet']:8.2f}x")
        print(f"{label + ' GFLOP/s':26s}{g['unet']:12.1f}{g['fcdensenet']:12.1f}"
              f"   ({100 * g['unet'] / reference_peak:.0f}% and "
              f"{100 * g['fcdensenet'] / reference_peak:.0f}% of peak)")
        print(f"{label + ' peak GiB':26s}{m['unet']:12.2f}{m['fcdensenet']:12.2f}"
              f"{m['unet'] / m['fcdensenet']:8.2f}x")


if __name__ == "__main__":
    main()
