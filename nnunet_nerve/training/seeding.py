"""An explicit seed for nnU-Net training runs (nnU-Net's own trainer seeds nothing).

A run drawn with seed ``s`` (environment variable ``NNUNET_NERVE_SEED``, set per run by
`nnunet-nerve demo --ablation`) starts Python's ``random``, NumPy's global generator and
torch's generator (CPU and CUDA) from ``s`` before the network is built, which fixes the
initial weights and dropout masks, and starts nnU-Net's data-augmentation workers from
seeds derived from ``s``, which fixes the patches the data loader cuts and the augmentation
drawn on them. nnU-Net creates its ``NonDetMultiThreadedAugmenter`` with ``seeds=None``
(each worker then re-seeds NumPy from the operating system); ``seed_augmenter_workers``
restarts those workers with the seeds below. With ``nnUNet_n_proc_DA=0`` (no workers)
the global generators seeded here draw the batches.

What repeats: on the CPU with ``nnUNet_n_proc_DA`` 0 or 1 the same seed gives the same
initial weights, the same batches and the same training. With several workers each
worker's stream repeats but the order in which their batches arrive does not (nnU-Net's
augmenter is non-deterministic by design); on a GPU, cuDNN's algorithm choice adds its own
run-to-run noise. A run resumed with ``--c`` starts the generators again from the seed, so
it does not continue the interrupted run's random stream (nnU-Net checkpoints no generator
state).
"""
from __future__ import annotations

import os
import random

import numpy as np

from nnunet_nerve.errors import NerveError

SEED_VARIABLE = "NNUNET_NERVE_SEED"
#: Stream ids, so that training and validation workers of one run draw different seeds.
TRAIN_STREAM, VALIDATION_STREAM = 0, 1


def seed_from_environment(environ=os.environ) -> "int | None":
    """The seed in ``NNUNET_NERVE_SEED`` (None when unset or empty); NerveError when it is
    not a non-negative integer."""
    text = environ.get(SEED_VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise NerveError(f"{SEED_VARIABLE}={text!r}: not a non-negative integer seed")
    return int(text)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_seeds(seed: int, stream: int, num_workers: int) -> list[int]:
    """One 32-bit seed per worker, from ``numpy.random.SeedSequence([seed, stream, worker])``
    (independent streams; no seed repeats between runs, streams or workers by construction)."""
    return [int(np.random.SeedSequence([seed, stream, w]).generate_state(1)[0]) for w in range(num_workers)]


def seed_augmenter_workers(augmenter, seed: int, stream: int) -> None:
    """Restart the worker processes of a batchgenerators augmenter (nnU-Net's
    ``NonDetMultiThreadedAugmenter``) with ``worker_seeds(seed, stream, n)``.

    An augmenter without workers (``SingleThreadedAugmenter``, ``nnUNet_n_proc_DA=0``) is
    left alone: its batches come from the global generators that ``seed_everything`` seeded.
    """
    num_workers = getattr(augmenter, "num_processes", None)
    if not num_workers or not hasattr(augmenter, "seeds") or not hasattr(augmenter, "restart"):
        return
    augmenter.seeds = worker_seeds(seed, stream, num_workers)
    augmenter.restart()
