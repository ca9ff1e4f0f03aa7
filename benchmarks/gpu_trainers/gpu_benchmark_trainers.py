"""Trainers for benchmarks/bench_gpu.py only: that script adds this folder to nnUNet_extTrainer;
it is not part of the installed package.

Each runs nnU-Net's own training loop, with AMP and torch.compile as nnU-Net sets them up for
the device, for two epochs: a short warm-up epoch (compilation of the training and the
validation graph, cuDNN autotuning, data-loader start-up) and one timed epoch of the trainer's
real epoch length: FC-DenseNet's paper epoch (one pass over the paper's 39 training scans of 60
slices in batches of 8: 293 iterations; validation over 13 scans: 98) and nnU-Net's (250
training and 50 validation iterations). No final validation. At the end it writes
gpu_benchmark.json into the fold folder: the timed epoch's seconds (training, validation,
whole epoch), its iteration counts, the seconds a full epoch of the schedule takes at those
rates, torch.cuda.max_memory_allocated over the timed epoch and over the whole run, and
whether AMP and compile were on. checkpoint_final.pth is written as usual, so that
nnUNetv2_predict can load the model.

Tiny runs (bench_gpu.py --tiny, on a CPU) set NNUNET_NERVE_BENCH_ITERATIONS ("train,val" of
the timed epoch, extrapolated to the full epoch), NNUNET_NERVE_BENCH_WARMUP (the same for the
warm-up epoch) and, for FC-DenseNet, NNUNET_NERVE_BENCH_PATCH ("64x64") and
NNUNET_NERVE_BENCH_BATCH.
"""
from __future__ import annotations

import json
import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_nerve.training.plans import PAPER_BATCH_SIZE, iterations_per_pass
from nnunet_nerve.training.variants import FCDenseNetTrainer_plannedPatchInference

#: one paper epoch: 39 training and 13 test scans per fold, 60 slices each, batches of 8
PAPER_EPOCH = (iterations_per_pass(39 * 60, PAPER_BATCH_SIZE), iterations_per_pass(13 * 60, PAPER_BATCH_SIZE))
WARMUP_EPOCH = (10, 2)
RESULT_FILE = "gpu_benchmark.json"


def _pair(variable: str):
    value = os.environ.get(variable)
    return tuple(int(v) for v in value.replace("x", ",").split(",")) if value else None


class GPUBenchmarkMixin:
    """Two epochs (warm-up, timed) and gpu_benchmark.json; see the module docstring."""

    # nnUNetTrainer.__init__ records its caller's arguments by name: the signature must be spelt out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.marks: dict[str, float] = {}

    def full_epoch(self) -> tuple[int, int]:
        """(training, validation) iterations of one epoch of this trainer's schedule."""
        raise NotImplementedError

    def timed_epoch(self) -> tuple[int, int]:
        return _pair("NNUNET_NERVE_BENCH_ITERATIONS") or self.full_epoch()

    def _mark(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks[name] = time.perf_counter()

    def on_epoch_start(self):
        timed = self.current_epoch == self.num_epochs - 1
        counts = self.timed_epoch() if timed else _pair("NNUNET_NERVE_BENCH_WARMUP") or WARMUP_EPOCH
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = counts
        if timed and self.device.type == "cuda":
            self.peak_before_timed_epoch = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        super().on_epoch_start()
        self._mark(f"epoch{self.current_epoch}_start")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._mark(f"epoch{self.current_epoch}_train_start")

    def on_train_epoch_end(self, train_outputs):
        self._mark(f"epoch{self.current_epoch}_train_end")
        super().on_train_epoch_end(train_outputs)

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._mark(f"epoch{self.current_epoch}_val_start")

    def on_validation_epoch_end(self, val_outputs):
        self._mark(f"epoch{self.current_epoch}_val_end")
        super().on_validation_epoch_end(val_outputs)

    def on_epoch_end(self):
        super().on_epoch_end()
        self._mark(f"epoch{self.current_epoch - 1}_end")   # nnU-Net counts the epoch up in on_epoch_end

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped (GPU benchmark)")

    def on_train_end(self):
        super().on_train_end()
        if self.local_rank == 0:
            with open(os.path.join(self.output_folder, RESULT_FILE), "w") as f:
                json.dump(self.benchmark_result(), f, indent=2)

    def benchmark_result(self) -> dict:
        e = self.num_epochs - 1
        m = self.marks
        train_s = m[f"epoch{e}_train_end"] - m[f"epoch{e}_train_start"]
        val_s = m[f"epoch{e}_val_end"] - m[f"epoch{e}_val_start"]
        epoch_s = m[f"epoch{e}_end"] - m[f"epoch{e}_start"]
        train_it, val_it = self.timed_epoch()
        full_train, full_val = self.full_epoch()
        result = {
            "trainer": type(self).__name__, "device": str(self.device),
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            "torch": torch.__version__, "amp": self.grad_scaler is not None, "compile": self._do_i_compile(),
            "batch_size": self.configuration_manager.batch_size,
            "patch_size": list(self.configuration_manager.patch_size),
            "timed_iterations": [train_it, val_it], "full_epoch_iterations": [full_train, full_val],
            "timed_train_s": train_s, "timed_val_s": val_s, "timed_epoch_s": epoch_s,
            "warmup_epoch_s": m["epoch0_end"] - m["epoch0_start"],
            # the rest of an epoch (logging, plotting, checkpoint) taken as measured
            "full_epoch_s": train_s / train_it * full_train + val_s / val_it * full_val
            + (epoch_s - train_s - val_s),
        }
        if self.device.type == "cuda":
            result["timed_epoch_max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
            result["run_max_memory_allocated_gib"] = max(self.peak_before_timed_epoch,
                                                         torch.cuda.max_memory_allocated(self.device)) / 2 ** 30
        return result


class FCDenseNetTrainerGPUBenchmark(GPUBenchmarkMixin, FCDenseNetTrainer_plannedPatchInference):
    """FCDenseNetTrainer (paper patch and batch, Adam, AMP and compile as nnU-Net sets them
    up) predicting with nnU-Net's planned patch: one tile per paper-size slice."""

    @property
    def batch_size_slices(self):
        batch = _pair("NNUNET_NERVE_BENCH_BATCH")
        return batch[0] if batch else PAPER_BATCH_SIZE

    def patch_size_for(self, plans, configuration):
        return _pair("NNUNET_NERVE_BENCH_PATCH") or super().patch_size_for(plans, configuration)

    def full_epoch(self):
        return PAPER_EPOCH


class nnUNetTrainerGPUBenchmark(GPUBenchmarkMixin, nnUNetTrainer):
    """nnU-Net's default trainer, its own plans, epoch length, AMP and compile."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.schedule_epoch = (self.num_iterations_per_epoch, self.num_val_iterations_per_epoch)

    def full_epoch(self):
        return self.schedule_epoch
