"""Training FCDenseNet's layers without forming concatenations ("by parts"), and the
checkpoint helper that undoes a recomputation's running-statistics update.

Batch norm and ReLU act channel by channel, and a convolution of concatenated maps is the sum
of the parts' convolutions with their slices of the weight:
conv(relu(norm(cat(p_1, ..., p_n)))) = sum_i conv_i(relu(norm_i(p_i))), norm_i and conv_i the
channel slices of p_i. Equal to the concatenated form up to the order of the floating-point
sums. See nnunet_nerve.network.fcdensenet's docstring for where FCDenseNet uses it.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def concatenate(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Channel concatenation (no copy for a single tensor)."""
    return features[0] if len(features) == 1 else torch.cat(list(features), dim=1)


@contextmanager
def buffers_restored(*modules: nn.Module):
    """On leaving the block, the buffers of `modules` (and their submodules) hold again what
    they held on entering it: a checkpointed region's recomputation runs its batch norms
    exactly as its forward did (same batch statistics, same saved tensors) and this undoes
    their second update of running_mean, running_var and num_batches_tracked."""
    buffers = [b for module in modules for b in module.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


def splits_into_parts(norm: nn.Module) -> bool:
    """Whether a batch norm can run channel range by channel range: a plain nn.BatchNorm2d
    (per-channel statistics; a SyncBatchNorm gathers them across processes in its own forward)."""
    return type(norm) is nn.BatchNorm2d


def batch_norm_step(norm: nn.BatchNorm2d) -> tuple[bool, float]:
    """What nn.BatchNorm2d.forward does before normalising, done once per call: count the step
    in num_batches_tracked (train mode) and return (normalise with batch statistics?,
    exponential average factor) for F.batch_norm."""
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    batch_statistics = norm.training or (norm.running_mean is None and norm.running_var is None)
    return batch_statistics, factor


def part_bn_relu_conv(norm: nn.BatchNorm2d, conv: nn.Conv2d, start: int, batch_statistics: bool,
                      factor: float, with_bias: bool, part: torch.Tensor) -> torch.Tensor:
    """conv's contribution from input channels start .. start + C of relu(norm(.)), C the
    part's channels: F.batch_norm with those channels' parameters and running statistics
    (updated in place through the views, as the whole batch norm updates them), then the
    convolution with those channels' weights (the bias only if `with_bias`)."""
    channels = slice(start, start + part.shape[1])

    def sliced(t):
        return None if t is None else t[channels]

    keeps_stats = not norm.training or norm.track_running_stats
    normalised = nn.functional.batch_norm(
        part, sliced(norm.running_mean) if keeps_stats else None,
        sliced(norm.running_var) if keeps_stats else None, sliced(norm.weight), sliced(norm.bias),
        batch_statistics, factor, norm.eps)
    return nn.functional.conv2d(torch.relu_(normalised), conv.weight[:, channels],
                                conv.bias if with_bias else None, conv.stride, conv.padding,
                                conv.dilation, conv.groups)


def bn_relu_conv_by_parts(norm: nn.BatchNorm2d, conv: nn.Conv2d, parts: Sequence[torch.Tensor],
                          checkpointed: bool) -> torch.Tensor:
    """conv(relu(norm(cat(parts)))) without the concatenation: batch norm and ReLU act per
    channel, and a convolution over concatenated channels is the sum of the convolutions of
    the parts with their slices of the weight. With `checkpointed`, each part's term runs
    under torch.utils.checkpoint: the backward pass recomputes one part's batch-norm output
    at a time (the size of that part), never the whole concatenation's; the recomputation's
    second running-statistics update is undone. Equal to the concatenated form up to the
    order of the floating-point sums."""
    batch_statistics, factor = batch_norm_step(norm)
    total, start = Sum(), 0
    for index, part in enumerate(parts):
        term = partial(part_bn_relu_conv, norm, conv, start, batch_statistics, factor, index == 0)
        if checkpointed:
            contexts = {} if torch.compiler.is_compiling() else {
                "context_fn": lambda: (nullcontext(), buffers_restored(norm))}
            term = partial(checkpoint, term, use_reentrant=False, preserve_rng_state=False, **contexts)
        total.add(term(part))
        start += part.shape[1]
    return total.result()


class Sum:
    """A running sum of the parts' convolution outputs, each term added (and released) as it
    comes; fp16 or bf16 terms (autocast) accumulate in float32 and the result is rounded to
    their dtype once, as the whole convolution's float32 accumulator rounds once."""

    def __init__(self):
        self.total, self.dtype = None, None

    def add(self, term: torch.Tensor) -> None:
        if self.total is None:
            self.dtype = term.dtype
            self.total = term.float() if term.dtype in (torch.float16, torch.bfloat16) else term
        else:
            self.total = self.total + term.to(self.total.dtype)

    def result(self) -> torch.Tensor:
        return self.total.to(self.dtype)


def conv_by_parts(conv: nn.Conv2d, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """conv(cat(parts)) as the sum of the parts' convolutions with their weight slices (the
    bias once); autograd keeps the parts, not their concatenation."""
    total, start = Sum(), 0
    for index, part in enumerate(parts):
        stop = start + part.shape[1]
        total.add(nn.functional.conv2d(part, conv.weight[:, start:stop], conv.bias if index == 0 else None,
                                       conv.stride, conv.padding, conv.dilation, conv.groups))
        start = stop
    return total.result()
