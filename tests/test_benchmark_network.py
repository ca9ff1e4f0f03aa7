"""benchmarks/bench_network.py on a tiny batch (no timing assertions): every network and mode
is measured in its own child, the ratio table is printed, the PyTorch-path variant really runs
without the fused kernels, and the measured FMA peak is reported where a compiler exists."""
from __future__ import annotations

import shutil
import sys

from conftest import REPO, run

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_network as bn  # noqa: E402


def test_bench_network_tiny_run(tmp_path):
    proc = run([sys.executable, str(REPO / "benchmarks" / "bench_network.py"), "--batch", "1",
                "--size", "128", "--rounds", "1", "--iterations", "1", "--warmup", "0",
                "--networks", "unet,fcdensenet,fcdensenet_pytorch"], timeout=900)
    out = proc.stdout
    for name in ("unet", "fcdensenet", "fcdensenet_pytorch"):
        for mode in ("inference", "train"):
            assert any(line.split()[2:4] == [name, mode] for line in out.splitlines()
                       if line.strip().startswith("round")), (name, mode, out)
    for row in ("inference s/slice", "training step s/slice", "training step peak GiB"):
        assert row in out
    if shutil.which("cc"):
        assert "measured FMA throughput" in out


def test_only_the_pytorch_variant_runs_without_the_fused_kernels(monkeypatch):
    """Each child reports whether the fused kernels ran: off in fcdensenet_pytorch only."""
    monkeypatch.delenv("NNUNET_NERVE_FUSED_KERNELS", raising=False)
    args = bn.main.__globals__["argparse"].Namespace(batch=1, size=64, threads=1, iterations=1, warmup=0)
    from nnunet_nerve import fused_kernels
    fused_here = fused_kernels.unavailable_reason() is None
    assert bn.run_child(args, bn.PYTORCH_LEAN, "inference")["fused_kernels"] is False
    assert bn.run_child(args, "fcdensenet", "inference")["fused_kernels"] is fused_here
