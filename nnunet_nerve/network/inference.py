"""FCDenseNet's inference path: eval mode without autograd, the plain forward's function with
fewer passes over memory and fewer fresh tensors.

`FCDenseNet.forward` takes it when the module is in eval mode, autograd is off
(`torch.no_grad`, `torch.inference_mode`: nnUNetv2_predict) and `buffered_inference` is on.
In eval mode dropout is the identity and each batch norm a fixed affine map per channel, so:

- One channels-last buffer per resolution holds [down block input, its new maps (the skip
  connection), upsampled maps, up block's new maps]; every layer reads a channel prefix of
  it (a strided view) and its new maps are copied in once: nothing is concatenated, the skip
  connection is never copied. The bottleneck has its own buffer.
- A layer's batch norm + ReLU is relu(scale x + shift) with scale = gamma / sqrt(running_var
  + eps) and shift = beta - running_mean scale (the eval-mode definition of BatchNorm2d),
  written into one scratch tensor that every layer reuses (a few images at a time), then
  convolved.
  A fresh tensor of a layer's input size per layer (the plain path's batch-norm output, its
  concatenation) costs a page-faulting allocation each time; here the scratch is touched
  once per call.
- The dense layers' 3x3 convolutions run with their output channels padded with zero
  filters to a multiple of 8 (12 -> 16), the extra maps discarded: oneDNN blocks output
  channels by the vector width, and a 16-map convolution took less time than a 12-map one.

- The buffers and the scratch of the last input shape are kept between calls in the
  module's `Workspace` (never its output, which is fresh each call): a fresh tensor of a few
  hundred MiB costs a page fault per 4 KiB page on first touch, and nnUNetv2_predict calls
  the network over and over with one tile shape. Measured on the paper-size batch (8 x 320 x
  320, 2 threads, machine quiet): 1.84 s per batch against 2.1-2.9 s with fresh buffers
  (docs/performance.md). Every call writes each channel range of the buffers before reading
  it, so nothing of an earlier input reaches a later output. The workspace is released by
  `FCDenseNet.train()`, by `release()`, and when the input shape, dtype or device changes; a
  call made while another thread runs the same module uses fresh buffers. It never enters
  the state_dict, a deep copy or a pickle.
"""
from __future__ import annotations

import threading

import torch
from torch import nn


def eval_scale_shift(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) shaped (1, C, 1, 1) with norm(x) = scale x + shift in eval mode."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)


#: elements of the scratch tensor (32 Mi: 128 MiB of float32): the loops below take as many
#: images per pass as fit, one 320 x 320 image at the widest layer (19.7 Mi elements), up to 6
#: at the lower levels. Measured with the buffers kept between calls (docs/performance.md):
#: 1.47-1.53 s per batch of 8 x 320 x 320 against 1.79 s with 64 Mi (three images per pass at
#: the top; their larger per-pass temporaries are fresh pages each time), 2.52 s with 160 Mi;
#: 2-16 Mi as fast as 32 Mi.
SCRATCH_ELEMENTS = 32 * 2 ** 20


class Scratch:
    """One flat tensor for `images` images of up to `image_numel` elements each, handed out
    as channels-last (k, C, H, W) views of its beginning."""

    def __init__(self, image_numel: int, like: torch.Tensor):
        self.images_per_pass = max(1, min(like.shape[0], SCRATCH_ELEMENTS // image_numel))
        self.flat = torch.empty(self.images_per_pass * image_numel, dtype=like.dtype, device=like.device)

    def passes(self, n: int):
        """(start, stop) image ranges covering a batch of n."""
        step = self.images_per_pass
        return ((i, min(i + step, n)) for i in range(0, n, step))

    def images(self, k: int, channels: int, height: int, width: int) -> torch.Tensor:
        return self.flat[:k * channels * height * width].view(k, height, width, channels).permute(0, 3, 1, 2)


def channels_last_buffer(n: int, channels: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty((n, channels, height, width), dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last)


def bn_relu_then(norm, module, x: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
    """out[i] = module(relu(norm(x[i]))) for every image i, in eval mode, through `scratch`."""
    scale, shift = eval_scale_shift(norm)
    for i, j in scratch.passes(x.shape[0]):
        activated = scratch.images(j - i, *x.shape[1:])
        torch.addcmul(shift, x[i:j], scale, out=activated).relu_()
        out[i:j].copy_(module(activated))


def per_image(module, x: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
    """out[i] = module(x[i]) for every image i, as many images per pass as `scratch` takes."""
    for i, j in scratch.passes(x.shape[0]):
        out[i:j].copy_(module(x[i:j]))


def output_channels_padded(conv: nn.Conv2d, multiple: int = 8):
    """conv with its output channels padded with zero filters up to a multiple of `multiple`
    (a callable returning all of them; the caller keeps the first conv.out_channels). oneDNN
    blocks output channels by the vector width: a 12-map 3x3 convolution ran at half the
    FLOP rate of a 16-map one on AVX2 (docs/performance.md), so 16 maps cost less time."""
    extra = -conv.out_channels % multiple
    if extra == 0:
        return conv
    weight = torch.cat([conv.weight, conv.weight.new_zeros((extra, *conv.weight.shape[1:]))])
    bias = None if conv.bias is None else torch.cat([conv.bias, conv.bias.new_zeros(extra)])
    return lambda x: nn.functional.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def first_convolution(conv: nn.Conv2d, x: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
    """out = conv(x) for a stride-1 'same' convolution as the product of x's unfolded patches
    (N H W, C k k) with the weight matrix (C k k, out channels), written straight into `out`
    (a channel range of a channels-last buffer, seen as an (N H W, out channels) matrix with
    the buffer's row stride). The first convolution reads one channel: few FLOPs, and oneDNN
    took 3x longer for it plus a copy into the buffer (docs/performance.md). Other
    convolutions, or an `out` that is no such matrix, go through per_image."""
    n, channels, height, width = x.shape
    kernel = tuple(conv.kernel_size)
    same = all(k % 2 == 1 and p == k // 2 for k, p in zip(kernel, conv.padding))
    try:
        target = out.permute(0, 2, 3, 1).view(n * height * width, conv.out_channels)
    except RuntimeError:
        target = None
    if target is None or not same or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) \
            or conv.groups != 1:
        return per_image(conv, x, out, scratch)
    patches = nn.functional.unfold(x, kernel, padding=conv.padding).transpose(1, 2)
    patches = patches.reshape(n * height * width, channels * kernel[0] * kernel[1])
    weight = conv.weight.reshape(conv.out_channels, -1).t()
    if conv.bias is None:
        torch.mm(patches, weight, out=target)
    else:
        torch.addmm(conv.bias, patches, weight, out=target)


def dense_block(block, buffer: torch.Tensor, start: int, scratch: Scratch) -> int:
    """The block's layers on buffer[:, :start] (its input), each appending its maps to the
    buffer; returns the number of filled channels."""
    channels = start
    for layer in block.layers:
        grown = channels + layer.conv.out_channels
        conv = output_channels_padded(layer.conv)
        bn_relu_then(layer.norm, lambda a: conv(a)[:, :layer.conv.out_channels], buffer[:, :channels],
                     buffer[:, channels:grown], scratch)
        channels = grown
    return channels


class Workspace:
    """The inference buffers and scratch of the last input (module docstring): (key, tensors)
    with a lock; copies and pickles of it are empty."""

    def __init__(self):
        self.key, self.tensors, self.lock = None, None, threading.Lock()

    def __deepcopy__(self, memo):
        return Workspace()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    def release(self) -> None:
        self.key = self.tensors = None

    def tensors_for(self, key, make):
        if self.key != key:
            self.release()
            self.tensors, self.key = make(), key
        return self.tensors


def workspace_tensors(net, x: torch.Tensor):
    """(buffers, scratch) for x: one channels-last buffer per resolution holding [down block
    input, new maps, upsampled, up block's new maps], and the scratch."""
    n, _, height, width = x.shape
    sides = [(height >> i, width >> i) for i in range(net.n_pool + 1)]
    totals = [block.in_channels + len(block.layers) * block.growth_rate
              for block in reversed(net.up_blocks)]
    totals.append(net.bottleneck.in_channels + len(net.bottleneck.layers) * net.bottleneck.growth_rate)
    scratch = Scratch(max(c * h * w for c, (h, w) in zip(totals, sides)), x)
    return [channels_last_buffer(n, c, h, w, x) for c, (h, w) in zip(totals, sides)], scratch


def forward(net, x: torch.Tensor) -> torch.Tensor:
    """net(x) for an FCDenseNet in eval mode, without autograd (see the module docstring),
    in the module's workspace unless another thread holds it."""
    workspace = getattr(net, "inference_workspace", None)
    if workspace is None or not workspace.lock.acquire(blocking=False):
        return forward_in(net, x, *workspace_tensors(net, x))
    try:
        key = (tuple(x.shape), x.dtype, x.device)
        return forward_in(net, x, *workspace.tensors_for(key, lambda: workspace_tensors(net, x)))
    finally:
        workspace.lock.release()


def forward_in(net, x: torch.Tensor, buffers: list, scratch: Scratch) -> torch.Tensor:
    """net(x) computed in `buffers` and `scratch` (workspace_tensors)."""
    n, _, height, width = x.shape
    n_pool = net.n_pool
    channels = net.first_conv.out_channels
    first_convolution(net.first_conv, x, buffers[0][:, :channels], scratch)
    skips = []
    for level, (block, down) in enumerate(zip(net.down_blocks, net.transitions_down)):
        channels = dense_block(block, buffers[level], channels, scratch)
        skips.append(channels)
        bn_relu_then(down.norm, nn.Sequential(down.conv, down.pool), buffers[level][:, :channels],
                     buffers[level + 1][:, :channels], scratch)
    end = dense_block(net.bottleneck, buffers[n_pool], channels, scratch)
    new_maps = buffers[n_pool][:, channels:end]
    for level, up, block in zip(reversed(range(n_pool)), net.transitions_up, net.up_blocks):
        upsampled = skips[level] + up.out_channels
        # a channels-last copy: oneDNN's transposed convolution takes a strided view (a
        # channel range of the buffer) through a slow reference kernel
        per_image(lambda maps: up(maps.contiguous(memory_format=torch.channels_last)), new_maps,
                  buffers[level][:, skips[level]:upsampled], scratch)
        end = dense_block(block, buffers[level], upsampled, scratch)
        new_maps = buffers[level][:, upsampled:end]
    output = torch.empty((n, net.final_conv.out_channels, height, width), dtype=x.dtype, device=x.device)
    per_image(net.final_conv, buffers[0], output, scratch)
    return output
