"""benchmarks/bench_gpu.py --tiny --device cpu: every part of the GPU check runs at toy size on
the CPU (real nnUNetv2_plan_and_preprocess, nnUNetv2_train with the benchmark trainers and
nnUNetv2_predict), so that the script cannot rot before a GPU is at hand. No timing
assertions: the figures at this size mean nothing."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO, run

pytestmark = pytest.mark.benchmark_script

BENCH_GPU = str(REPO / "benchmarks" / "bench_gpu.py")


@pytest.mark.integration
def test_bench_gpu_tiny_on_cpu(nnunet_env, tmp_path):
    work = tmp_path / "work"
    proc = run([sys.executable, BENCH_GPU, "--tiny", "--device", "cpu", "--workdir", str(work)],
               env=nnunet_env, timeout=1200)
    out = proc.stdout
    for check in ("fp32 on cpu vs CPU float64, strict fp32", "dropout masks on cpu",
                  "fp16 autocast + GradScaler on cpu", "torch.compile (aot_eager) equals eager on cpu"):
        assert f"[PASS] {check}" in out, (check, out)
    assert "[FAIL]" not in out and "all checks passed" in out
    for row in ("FCDenseNet(memory_efficient=False)", "FCDenseNet() (by parts, checkpointed; default)",
                "FCDenseNet(by_parts=False) (concatenations checkpointed)",
                "nnU-Net 2D U-Net (320 x 320 plan)"):
        assert row in out, row
    for trainer in ("FCDenseNetTrainerGPUBenchmark", "nnUNetTrainerGPUBenchmark"):
        folder = work / "nnUNet_results" / "Dataset990_PredictBench" / f"{trainer}__nnUNetPlans__2d"
        result = json.loads((folder / "fold_0" / "gpu_benchmark.json").read_text())
        assert result["timed_iterations"] == [2, 1] and result["trainer"] == trainer
        assert result["amp"] is False and result["compile"] is False   # nnU-Net: neither on a CPU
        assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
        assert (work / "predictions" / trainer / "scan_000.nii.gz").is_file()
        assert f"nnUNetv2_train -tr {trainer}" in out
    fcd = json.loads((work / "nnUNet_results" / "Dataset990_PredictBench" / "FCDenseNetTrainerGPUBenchmark__nnUNetPlans__2d"
                      / "fold_0" / "gpu_benchmark.json").read_text())
    assert fcd["full_epoch_iterations"] == [293, 98] and fcd["patch_size"] == [64, 64] and fcd["batch_size"] == 2
    assert "(1 tile(s) per slice)" in out


def test_bench_gpu_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = run([sys.executable, BENCH_GPU], check=False, timeout=300)
    assert proc.returncode == 2 and "error: no CUDA device here" in proc.stderr
