"""benchmarks/bench_network.py on a tiny batch (no timing assertions): every option is measured
in its own child, the ratio tables are printed with a row per option, and the options build
the modules they name."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO, run

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_network as bn  # noqa: E402

pytestmark = pytest.mark.benchmark_script


def test_bench_network_tiny_run():
    networks = ("unet", "fcdensenet", "fcdensenet_plain")
    proc = run([sys.executable, str(REPO / "benchmarks" / "bench_network.py"), "--batch", "1",
                "--size", "128", "--rounds", "1", "--iterations", "1", "--warmup", "0",
                "--networks", ",".join(networks)], timeout=900)
    out = proc.stdout
    for name in networks:
        for mode in ("inference", "train"):
            assert f"round 1: {name} {mode} " in out, (name, mode, out)
    tables = out.split("\n\n")[1:]
    assert tables[0].startswith("inference (eval, inference_mode)") and tables[1].startswith("training step")
    for table in tables:
        rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
        assert set(rows) == set(networks)
        assert rows["unet"][-3:] == ["1.00x", "1.00x", "1.00x"]
    assert "load average at start" in out


def test_options_build_what_they_name():
    plain, default = bn.build("fcdensenet_plain"), bn.build("fcdensenet")
    assert not plain.memory_efficient and not plain.buffered_inference
    assert default.memory_efficient and default.buffered_inference
    layers, levels = bn.build("fcdensenet_layer_checkpoints"), bn.build("fcdensenet_level_checkpoints")
    assert not layers.checkpoint_levels and all(layer.memory_efficient for layer in layers.dense_layers())
    assert levels.checkpoint_levels and not any(layer.memory_efficient for layer in levels.dense_layers())
    concatenated = bn.build("fcdensenet_concatenated")
    assert concatenated.memory_efficient and not any(m.by_parts for m in concatenated.lean_modules())
    assert all(m.by_parts for m in default.lean_modules())
    assert type(bn.build("unet")).__name__ == "PlainConvUNet"
    assert bn.OPTIONS["fcdensenet_compile_freezing"].modes == ("inference",)
    assert all(o.base in ("unet", "fcdensenet") for o in bn.OPTIONS.values())


def test_compiled_options_need_a_warm_up_iteration():
    proc = run([sys.executable, str(REPO / "benchmarks" / "bench_network.py"), "--warmup", "0",
                "--networks", "unet,fcdensenet_compile"], check=False, timeout=300)
    assert proc.returncode != 0 and "need --warmup 1" in proc.stderr
