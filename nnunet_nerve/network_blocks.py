"""Memory-lean CPU kernels for FCDenseNet's dense blocks and transitions down.

The straightforward dense block (one torch.cat per layer, autograd keeping every batch-norm
and ReLU output) copies its growing feature stack at every layer and keeps 4 tensors of the
stack's size per layer for the backward pass. Here, as in Pleiss et al. (2017),
"Memory-Efficient Implementation of DenseNets":

- each dense block writes its input and every layer's new maps into ONE preallocated
  channels-last buffer (no concatenation);
- batch norm + ReLU are recomputed in the backward pass instead of being stored; in training
  mode the batch statistics of a channel are the same for every layer that reads it, so they
  are computed once per channel; running statistics are updated once, in the forward pass;
- the gradient of the whole stack is accumulated in one shared buffer; batch norm's sums
  for its backward come from the convolution's weight gradient (`bn_sum_dy_xhat_from_weights`)
  and its batch-statistics terms are added once per block, not once per layer;
- dropout masks are drawn from 16-bit lanes (`dropout_mask`) and drawn again in backward
  from the saved generator state instead of being kept (`DropoutMask`);
- the transition down keeps its input and the max-pool winners, nothing else;
- large temporaries (the BN+ReLU output, the stack gradient) and, when no autograd graph
  holds them, the per-resolution buffers live in a `Workspace` that is reused from call to
  call: on CPU every fresh large tensor is page-faulted in by the OS, which costs about as
  much as computing on it.

The functions compute exactly what nnunet_nerve.network.DenseBlock / TransitionDown compute
(same parameters, same running-statistics updates); tests/test_network.py checks outputs
and gradients against a straightforward reference implementation.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from nnunet_nerve import fused_kernels


class Workspace:
    """Scratch tensors reused across calls, one flat storage per (name, dtype, device).

    Not part of the state_dict; a deepcopy or pickle starts with an empty workspace.
    """

    def __init__(self):
        self._store: dict = {}
        self._owners: dict = {}

    def __deepcopy__(self, memo):
        return Workspace()

    def __getstate__(self):
        return {"_store": {}, "_owners": {}}

    def channels_last(self, name: str, n: int, c: int, h: int, w: int,
                      like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """An (n, c, h, w) tensor in channels-last layout, backed by the named scratch storage."""
        dtype = dtype or like.dtype
        key = (name, dtype, like.device)
        numel = n * c * h * w
        flat = self._store.get(key)
        # storage made under torch.inference_mode (nnU-Net's predictor) cannot be written
        # outside it, and vice versa is fine but keeps the two apart: one per mode
        if flat is not None and flat.is_inference() != torch.is_inference_mode_enabled():
            flat = None
        if flat is None or flat.numel() < numel:
            self._store.pop(key, None)
            flat = torch.empty(numel, dtype=dtype, device=like.device)
            self._store[key] = flat
        return flat[:numel].view(n, h, w, c).permute(0, 3, 1, 2)

    def holds(self, t: torch.Tensor) -> bool:
        """Whether t lies in one of the workspace's storages (kept from call to call)."""
        ptr = t.untyped_storage().data_ptr()
        return any(flat.untyped_storage().data_ptr() == ptr for flat in self._store.values())

    def flat(self, name: str, numel: int, like: torch.Tensor) -> torch.Tensor:
        """A 1-D tensor of numel elements backed by the named scratch storage."""
        return self.channels_last(name, 1, numel, 1, 1, like).reshape(numel)

    def kept_channels_last(self, name: str, n: int, c: int, h: int, w: int,
                           like: torch.Tensor, owner=None) -> torch.Tensor:
        """Like `channels_last`, for a tensor that must stay intact while `owner` (an autograd
        ctx whose backward reads it) is alive: while an earlier owner of the name is still
        alive (a graph not yet backpropagated), a fresh tensor is returned instead. Reusing
        the storage saves the page faults of a fresh stack-sized buffer at every call."""
        key = (name, like.dtype, like.device)
        previous = self._owners.get(key)
        if previous is not None and previous() is not None:
            return empty_channels_last(n, c, h, w, like)
        out = self.channels_last(name, n, c, h, w, like)
        self._owners[key] = weakref.ref(owner) if owner is not None else None
        return out


def empty_channels_last(n: int, c: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty((n, h, w, c), dtype=like.dtype, device=like.device).permute(0, 3, 1, 2)


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """x with channels-last strides, also when it has one channel (x.contiguous(
    memory_format=torch.channels_last) leaves a one-channel NCHW tensor as it is, and oneDNN
    then computes, and returns, NCHW)."""
    n, c, h, w = x.shape
    if x.stride() == (h * w * c, 1, w * c, c):
        return x
    return torch.empty((n, h, w, c), dtype=x.dtype, device=x.device).permute(0, 3, 1, 2).copy_(x)


class FirstConvFunction(torch.autograd.Function):
    """The one-input-channel first convolution through fused_kernels.first_conv, its output
    in the workspace (the down block copies it into its buffer at once), its backward reading
    the block's strided stack gradient directly (the input image needs no gradient)."""

    @staticmethod
    def forward(ctx, conv, workspace, x, weight, bias):
        n, _, h, w = x.shape
        ctx.save_for_backward(x)
        ctx.has_bias = bias is not None
        out = workspace.channels_last("first_conv", n, conv.out_channels, h, w, x)
        return fused_kernels.first_conv(x, weight, bias, out)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad_out = grad_out if grad_out.stride(1) == 1 else as_channels_last(grad_out)
        grad_w, grad_b = fused_kernels.first_conv_backward(x, grad_out)
        return None, None, None, grad_w, grad_b if ctx.has_bias else None


def first_conv(conv: torch.nn.Conv2d, workspace: Workspace, x: torch.Tensor) -> torch.Tensor:
    """conv(x), channels-last: through the fused kernels for one input channel (an image
    that needs no gradient), else `conv_channels_last`."""
    if (conv.in_channels == 1 and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
            and conv.stride == (1, 1) and conv.groups == 1 and not x.requires_grad
            and fused_kernels.applies(x, None)):
        return FirstConvFunction.apply(conv, workspace, x, conv.weight, conv.bias)
    return conv_channels_last(conv, x)


def conv_channels_last(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x) computed and returned in channels-last layout (half the time of oneDNN's NCHW
    kernel for the one-channel first convolution, and no transposing copy afterwards)."""
    weight = as_channels_last(conv.weight)
    return F.conv2d(as_channels_last(x), weight, conv.bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups)


def pointwise_conv_channels_last(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution of a channels-last x as one matrix product over the pixels
    ((N*H*W, C) @ (C, K)); returns a contiguous NCHW tensor. oneDNN takes twice as long for
    few output channels (the final 192 -> 2 classifier)."""
    n, c, h, w = x.shape
    k = conv.out_channels
    pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    weight = conv.weight.view(k, c).t()
    out = torch.addmm(conv.bias, pixels, weight) if conv.bias is not None else pixels @ weight
    return out.view(n, h, w, k).permute(0, 3, 1, 2).contiguous()


def per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def batch_var_mean(x: torch.Tensor):
    """Biased variance and mean of each channel over (N, H, W)."""
    return torch.var_mean(x, dim=(0, 2, 3), correction=0)


def batch_var_mean_two_pass(x: torch.Tensor, scratch: torch.Tensor):
    """batch_var_mean for a large x, as mean then mean squared deviation, using `scratch`
    (x's shape) instead of a fresh temporary; several times faster than torch.var_mean
    (Welford) on CPU."""
    count = x.numel() // x.shape[1]
    mean = x.sum(dim=(0, 2, 3)) / count
    torch.sub(x, per_channel(mean), out=scratch)
    var = scratch.square_().sum(dim=(0, 2, 3)) / count
    return var, mean


def update_running_stats(bn: torch.nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor,
                         count: int) -> None:
    """What nn.BatchNorm2d does to its running statistics in one training forward pass."""
    if not bn.track_running_stats or bn.running_mean is None:
        return
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    unbiased = var * (count / max(count - 1, 1))
    bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    bn.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


def uses_batch_stats(bn: torch.nn.BatchNorm2d) -> bool:
    return bn.training or not bn.track_running_stats or bn.running_mean is None


def dropout_mask(shape, p: float, like: torch.Tensor) -> torch.Tensor | None:
    """Keep-mask (bool) of dropout with drop probability p; None when dropout is inactive.

    Each element compares one uniform 16-bit integer with a threshold, so the keep
    probability is 1 - p rounded to a multiple of 2**-16 (1 - 0.2 -> 0.800003); the 16-bit
    lanes are cut from 64-bit draws of torch's generator, four times fewer draws than
    `bernoulli_`, which takes several times longer than a layer's dropout multiplication.
    """
    if p <= 0:
        return None
    numel = 1
    for size in shape:
        numel *= int(size)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=like.device)
    words.random_(-2 ** 63, 2 ** 63 - 1)
    threshold = round((1.0 - p) * 2 ** 16) - 2 ** 15   # P(int16 lane < threshold) = 1 - p
    keep = words.view(torch.int16)[:numel] < threshold
    if len(shape) == 4:   # laid out channels-last, like the maps it multiplies
        n, c, h, w = (int(v) for v in shape)
        return keep.view(n, h, w, c).permute(0, 3, 1, 2)
    return keep.view(tuple(shape))


class DropoutMask:
    """A dropout keep-mask that is not kept: the forward pass draws it from torch's default
    CPU generator and remembers only the generator state before the draw; the backward pass
    draws the identical mask again from that state (and puts the generator back), as
    torch.utils.checkpoint does. Saves the masks' memory (about 0.23 GB for a batch of
    8 x 320 x 320) for a second draw (about 3% of a training step)."""

    def __init__(self, shape, p: float, like: torch.Tensor):
        self.shape, self.p, self.like = tuple(shape), p, like.new_empty(0)
        self.state = torch.get_rng_state()
        self.first = dropout_mask(self.shape, p, like)

    def take(self) -> torch.Tensor:
        """The forward pass's mask (once)."""
        mask, self.first = self.first, None
        return mask

    def again(self) -> torch.Tensor:
        """The same mask, drawn again."""
        current = torch.get_rng_state()
        torch.set_rng_state(self.state)
        try:
            return dropout_mask(self.shape, self.p, self.like)
        finally:
            torch.set_rng_state(current)


def layer_dropout(shape, p: float, like: torch.Tensor) -> DropoutMask | None:
    return DropoutMask(shape, p, like) if p > 0 else None


def combine_var_mean(parts, count: int):
    """Biased variance and mean of a whole batch from per-chunk (variance, mean, count)
    (Chan et al.'s pairwise formula: M2 = sum of M2_k + n_k (mean_k - mean)**2)."""
    mean = sum(m * k for _, m, k in parts) / count
    m2 = sum(v * k + k * (m - mean).square() for v, m, k in parts)
    return m2 / count, mean


def relu_affine_as_clamp(scale: torch.Tensor, shift: torch.Tensor):
    """Rewrite relu(scale * x + shift), per channel, as factor * clamp(x, low, high) + offset.

    scale > 0: low = -shift/scale, high = +inf; scale < 0: low = -inf, high = -shift/scale
    (both: factor = scale, offset = shift); scale == 0: low = high = 0, factor = 0,
    offset = relu(shift). The clamp is one elementwise pass over x (BN then ReLU are two);
    the factor goes into the next convolution's weights and the offset into its bias.
    """
    on = scale.abs() > 1e-20
    threshold = torch.where(on, -shift / torch.where(on, scale, torch.ones_like(scale)),
                            torch.zeros_like(scale))
    inf = torch.full_like(scale, float("inf"))
    low = torch.where(scale > 0, threshold, torch.where(on, -inf, torch.zeros_like(scale)))
    high = torch.where(scale < 0, threshold, torch.where(on, inf, torch.zeros_like(scale)))
    factor = torch.where(on, scale, torch.zeros_like(scale))
    offset = torch.where(on, shift, torch.relu(shift))
    return low, high, factor, offset


def add_border_response(y: torch.Tensor, small: torch.Tensor, interior: torch.Tensor) -> torch.Tensor:
    """Complete y, which already holds `interior` (the response inside the image) everywhere,
    to the constant-input response `small` of a 3x3 convolution (its 3 x 3 image: [0, 0] the
    top-left corner's response, [1, 1] the interior's): the border rows and columns get the
    difference, in place (4 strips of one pixel instead of a pass over y)."""
    h, w = y.shape[2], y.shape[3]
    y[:, :, 0, 1:-1].add_((small[:, :, 0, 1] - interior).view(1, -1, 1))
    y[:, :, -1, 1:-1].add_((small[:, :, 2, 1] - interior).view(1, -1, 1))
    y[:, :, 1:-1, 0].add_((small[:, :, 1, 0] - interior).view(1, -1, 1))
    y[:, :, 1:-1, -1].add_((small[:, :, 1, 2] - interior).view(1, -1, 1))
    for i, j, si, sj in ((0, 0, 0, 0), (0, w - 1, 0, 2), (h - 1, 0, 2, 0), (h - 1, w - 1, 2, 2)):
        y[:, :, i, j].add_((small[:, :, si, sj] - interior).view(1, -1))
    return y


class BnReluConv:
    """conv2d(relu(scale * x + shift), weight, bias, padding=k // 2) for 1x1 and 3x3 kernels,
    with one pass over x (into a scratch tensor) for batch norm and ReLU together:
    relu(scale x + shift) = factor * clamp(x, low, high) + offset, the factor folded into the
    weights, the offset's response (the convolution of a constant image, which differs on the
    border of a 3x3 convolution because of the zero padding) into the bias inside and added on
    the border rows and columns. Prepared once per layer for h x w images, applied per chunk."""

    def __init__(self, scale, shift, weight, bias, h: int, w: int):
        self.low, self.high, factor, offset = relu_affine_as_clamp(scale, shift)
        self.padding = weight.shape[-1] // 2
        self.weight = weight * factor.view(1, -1, 1, 1)
        side = 2 * self.padding + 1
        self.small = F.conv2d(offset.view(1, -1, 1, 1).expand(1, -1, min(h, side), min(w, side)),
                              weight, padding=self.padding)
        self.interior = self.small[0, :, self.padding, self.padding] if h >= side and w >= side else None
        if self.interior is None:   # no interior: the whole response is added afterwards
            rows = [0] + [1] * (h - 2) + [2] if h >= 3 else list(range(h))
            cols = [0] + [1] * (w - 2) + [2] if w >= 3 else list(range(w))
            self.response, self.bias = self.small[:, :, rows][:, :, :, cols], bias
        else:
            self.bias = self.interior if bias is None else bias + self.interior

    def __call__(self, x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
        torch.clamp(x, per_channel(self.low), per_channel(self.high), out=scratch)
        y = F.conv2d(scratch, self.weight, self.bias, padding=self.padding)
        if self.interior is None:
            return y.add_(self.response)
        return add_border_response(y, self.small, self.interior) if self.padding else y


def bn_relu_conv3x3(x, scale, shift, weight, bias, scratch):
    """conv2d(relu(scale * x + shift), weight, bias, padding=1) through `BnReluConv`."""
    return BnReluConv(scale, shift, weight, bias, x.shape[2], x.shape[3])(x, scratch)


def param_grads_unfolded(keep_scale: float, grad_weight, grad_bias):
    """Gradients of the convolution's own weight and bias when the forward pass used them
    times dropout's keep_scale (`dropout_and_conv`)."""
    if keep_scale == 1.0:
        return grad_weight, grad_bias
    return grad_weight * keep_scale, None if grad_bias is None else grad_bias * keep_scale


def batch_norm_affine(bn: torch.nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor):
    """(invstd, scale, shift) with bn(x) = scale * x + shift per channel."""
    invstd = torch.rsqrt(var + bn.eps)
    scale = bn.weight * invstd if bn.weight is not None else invstd
    shift = (bn.bias if bn.bias is not None else 0) - mean * scale
    return invstd, scale, shift


def dropout_and_conv(conv: torch.nn.Conv2d, dropout: torch.nn.Dropout, shape, like: torch.Tensor,
                     fused: bool = False):
    """The dropout of conv's output (a DropoutMask, with `fused` a
    fused_kernels.HashDropout, or None), its mask for this forward pass (None with `fused`:
    the kernels compute it), dropout's 1 / (1 - p) and conv's weight and bias with that factor
    folded in."""
    p = dropout.p if dropout.training else 0.0
    if fused:
        draw, mask = fused_kernels.hash_dropout(p), None
    else:
        draw = layer_dropout(shape, p, like)
        mask = draw.take() if draw is not None else None
    keep_scale = 1.0 / (1.0 - p) if draw is not None else 1.0
    weight, bias = conv.weight, conv.bias
    if keep_scale != 1.0:
        weight = weight * keep_scale
        bias = bias * keep_scale if bias is not None else None
    return draw, mask, keep_scale, weight, bias


CHUNK_ELEMENTS = 2 ** 26   # 256 MiB of float32 per recomputed BN+ReLU chunk (smaller: slower)


def batch_chunks(n: int, elements_per_image: int):
    """Split a batch of n images into consecutive (start, stop) chunks of at most
    CHUNK_ELEMENTS elements (at least one image each)."""
    size = max(1, min(n, CHUNK_ELEMENTS // max(elements_per_image, 1)))
    return [(i, min(i + size, n)) for i in range(0, n, size)]


MIN_ABS_GAMMA_FOR_WEIGHT_SUMS = 1e-3


def sums_from_weights_apply(bn: torch.nn.BatchNorm2d) -> bool:
    """Whether `bn_sum_dy_xhat_from_weights` may be used: no batch-norm scale near zero
    (it divides by the scale)."""
    return bn.weight is None or bool(bn.weight.detach().abs().min() >= MIN_ABS_GAMMA_FOR_WEIGHT_SUMS)


def bn_sum_dy_xhat_from_weights(bn, weight, grad_weight, sum_dy):
    """Per channel c, sum over pixels of dL/dz * xhat, where z = gamma xhat + beta is the
    batch norm's output, r = relu(z) and the convolution reads r, computed without a pass
    over the stack:

    sum_p dL/dr[c,p] r[c,p] = sum_{k,q} W[k,c,q] dL/dW[k,c,q] (the transposed convolution is
    the adjoint of the convolution), and where r > 0, r = z, elsewhere dL/dz = 0, so that
    sum_p dL/dz z = gamma * sum_p dL/dz xhat + beta * sum_p dL/dz; solved for the last sum
    but one (sum_dy = sum_p dL/dz is given)."""
    sum_dz_z = (weight * grad_weight).sum(dim=(0, 2, 3))
    if bn.weight is None:
        return sum_dz_z
    if bn.bias is not None:
        sum_dz_z = sum_dz_z - bn.bias * sum_dy
    return sum_dz_z / bn.weight


class DenseBlockFunction(torch.autograd.Function):
    """A dense block over one channels-last buffer; BN + ReLU recomputed in backward."""

    @staticmethod
    def forward(ctx, block, workspace, keep_input, level, records_graph, *tensors):
        layers = block.layers
        n_pieces = len(tensors) - 4 * len(layers)
        pieces = tensors[:n_pieces]
        g = layers[0].conv.out_channels
        n, _, h, w = pieces[0].shape
        c0 = sum(p.shape[1] for p in pieces)
        channels = c0 + g * len(layers)
        count = n * h * w
        shared = level.get("buffer")
        if (shared is not None and shared.shape[1] == channels
                and pieces[0].data_ptr() == shared.data_ptr()):
            # up block: the skip connection (first piece) already lies at the front of the
            # buffer its down block left for this level; write the rest behind it
            buf, done = shared, 1
        else:
            spare = level.get("spare_channels", 0)
            if "name" in level:
                owner = ctx if records_graph else None
                buf = workspace.kept_channels_last(level["name"], n, channels + spare, h, w,
                                                   pieces[0], owner)
            else:
                buf = empty_channels_last(n, channels + spare, h, w, pieces[0])
            if spare:
                level["buffer"] = buf
                buf = buf[:, :channels]
            done = 0
        offset = sum(p.shape[1] for p in pieces[:done])
        for piece in pieces[done:]:
            buf[:, offset:offset + piece.shape[1]].copy_(piece)
            offset += piece.shape[1]
        batch_stats = uses_batch_stats(layers[0].norm)
        fused = fused_kernels.applies(buf, g)
        if batch_stats:
            means = buf.new_empty(channels)
            variances = buf.new_empty(channels)
            known = 0
            stats = level.get("stats")
            if done and stats is not None and stats[0].data_ptr() == buf.data_ptr():
                # an up block: its down block has the skip connection's statistics
                known = pieces[0].shape[1]
                variances[:known], means[:known] = stats[1][:known], stats[2][:known]
            if fused:
                variances[known:c0], means[known:c0] = fused_kernels.batch_var_mean(buf[:, known:c0])
            else:
                scratch = workspace.channels_last("t", n, c0 - known, h, w, buf)
                variances[known:c0], means[known:c0] = batch_var_mean_two_pass(buf[:, known:c0], scratch)
        if fused:
            fused_scratch = workspace.flat("fused", fused_kernels.forward_scratch_numel(n, h, w, g), buf)
        scales, shifts, masks, invstds = [], [], [], []
        for j, layer in enumerate(layers):
            c = c0 + j * g
            bn = layer.norm
            if batch_stats:
                mean, var = means[:c], variances[:c]
                if bn.training:
                    update_running_stats(bn, mean, var, count)
            else:
                mean, var = bn.running_mean, bn.running_var
            invstd, scale, shift = batch_norm_affine(bn, mean, var)
            dropout, mask, keep_scale, weight, bias = dropout_and_conv(
                layer.conv, layer.dropout, (n, g, h, w), buf, fused)
            if fused:
                layer_forward = fused_kernels.FusedDenseLayerForward(
                    *relu_affine_as_clamp(scale, shift), weight, bias, h, w)
                sums = layer_forward(buf[:, :c], dropout, buf[:, c:c + g], fused_scratch, batch_stats)
                if batch_stats:
                    variances[c:c + g], means[c:c + g] = fused_kernels.var_mean_from_sums(
                        *sums, count, buf.dtype)
                chunks = ()
            else:
                bn_relu_conv = BnReluConv(scale, shift, weight, bias, h, w)
                chunks = batch_chunks(n, c * h * w)
            parts = []
            for i0, i1 in chunks:
                t = workspace.channels_last("t", i1 - i0, c, h, w, buf)
                y = bn_relu_conv(buf[i0:i1, :c], t)
                if mask is not None:
                    y.mul_(mask[i0:i1])
                if batch_stats:   # on the contiguous chunk: twice as fast as on the buffer
                    parts.append((*batch_var_mean(y), (i1 - i0) * h * w))
                buf[i0:i1, c:c + g].copy_(y)
            if batch_stats and not fused:
                variances[c:c + g], means[c:c + g] = combine_var_mean(parts, count)
            scales.append(scale)
            shifts.append(shift)
            invstds.append(invstd)
            del mask
            masks.append((dropout, keep_scale))
        if batch_stats and keep_input:
            # the transition down that follows a down block normalises the same channels
            # with the same batch statistics
            level["stats"] = (buf, variances, means)
        ctx.block, ctx.workspace, ctx.keep_input = block, workspace, keep_input
        ctx.buf, ctx.c0, ctx.g = buf, c0, g
        ctx.piece_channels = [p.shape[1] for p in pieces]
        ctx.batch_stats, ctx.fused = batch_stats, fused
        ctx.means = means if batch_stats else None
        ctx.scales, ctx.shifts, ctx.invstds, ctx.masks = scales, shifts, invstds, masks
        ctx.has_bias = [layer.conv.bias is not None for layer in layers]
        return buf if keep_input else buf[:, c0:]

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.buf is None:
            raise RuntimeError("FCDenseNet's dense block cannot run backward twice "
                               "(retain_graph is not supported)")
        layers, ws, buf, c0, g = ctx.block.layers, ctx.workspace, ctx.buf, ctx.c0, ctx.g
        n, channels, h, w = buf.shape
        count = n * h * w
        if (ctx.keep_input and grad_out.dtype == buf.dtype
                and grad_out.is_contiguous(memory_format=torch.channels_last)):
            # accumulate into the incoming gradient of the whole stack: autograd hands it
            # to this backward alone and drops it afterwards (saves a stack-sized copy)
            grad = grad_out
        elif ctx.keep_input:
            grad = ws.channels_last("grad", n, channels, h, w, buf)
            grad.copy_(grad_out)
        else:
            # fresh, not a workspace: it would otherwise stay allocated through the next
            # training step's peak
            grad = empty_channels_last(n, channels, h, w, buf)
            grad[:, :c0].zero_()
            grad[:, c0:].copy_(grad_out)
        param_grads = []
        batch_stats = ctx.batch_stats
        if batch_stats:
            # the batch-statistics term k2 * x + k3 that every layer adds to the gradient of
            # the stack it read: summed per channel over the layers and added once, to a
            # layer's own maps just before they are read as its output gradient, and to the
            # block input at the end (one pass over the stack instead of one per layer)
            pending_k2, pending_k3 = buf.new_zeros(channels), buf.new_zeros(channels)
        for j in reversed(range(len(layers))):
            layer = layers[j]
            bn = layer.norm
            c = c0 + j * g
            pending = None
            if batch_stats and j < len(layers) - 1:
                if ctx.fused:   # added inside the kernel that reads the layer's output gradient
                    pending = (buf[:, c:c + g], pending_k2[c:c + g], pending_k3[c:c + g])
                else:
                    grad[:, c:c + g].addcmul_(buf[:, c:c + g], per_channel(pending_k2[c:c + g]))
                    grad[:, c:c + g].add_(per_channel(pending_k3[c:c + g]))
            dropout, keep_scale = ctx.masks[j]
            mask = dropout.again() if dropout is not None and not ctx.fused else dropout
            x = buf[:, :c]
            scale, shift, invstd = ctx.scales[j], ctx.shifts[j], ctx.invstds[j]
            has_bias = ctx.has_bias[j]
            weight = layer.conv.weight * keep_scale if keep_scale != 1.0 else layer.conv.weight
            k1 = scale   # d(batch-norm output)/dx at fixed statistics: weight * invstd
            if ctx.fused:
                sum_dy, sum_dy_xhat, grad_w, grad_b = fused_layer_backward(
                    ws, grad, mask, weight, x, scale, shift, invstd,
                    ctx.means[:c] if batch_stats else bn.running_mean, pending)
                chunks, from_weights = (), False
            else:
                from_weights = sums_from_weights_apply(bn)
                sum_dy = sum_dy_x = grad_w = grad_b = 0
                chunks = batch_chunks(n, c * h * w)
            for i0, i1 in chunks:
                gy = ws.channels_last("gy", i1 - i0, g, h, w, buf)
                if mask is not None:
                    torch.mul(grad[i0:i1, c:c + g], mask[i0:i1], out=gy)
                else:
                    gy.copy_(grad[i0:i1, c:c + g])
                t = ws.channels_last("t", i1 - i0, c, h, w, buf)
                torch.addcmul(per_channel(shift), x[i0:i1], per_channel(scale), out=t).relu_()
                grad_t, chunk_grad_w, chunk_grad_b = torch.ops.aten.convolution_backward(
                    gy, t, weight, [g] if has_bias else None, [1, 1], [1, 1], [1, 1],
                    False, [0, 0], 1, [True, True, has_bias])
                grad_w = grad_w + chunk_grad_w
                if has_bias:
                    grad_b = grad_b + chunk_grad_b
                # ReLU backward in place: grad_t becomes dL/d(batch-norm output)
                torch.ops.aten.threshold_backward.grad_input(grad_t, t, 0, grad_input=grad_t)
                sum_dy = sum_dy + grad_t.sum(dim=(0, 2, 3))
                if not from_weights:
                    sum_dy_x = sum_dy_x + torch.mul(grad_t, x[i0:i1], out=t).sum(dim=(0, 2, 3))
                grad[i0:i1, :c].addcmul_(grad_t, per_channel(k1))
                del grad_t
            if from_weights:
                sum_dy_xhat = bn_sum_dy_xhat_from_weights(bn, weight, grad_w, sum_dy)
            elif not ctx.fused:
                mean = ctx.means[:c] if batch_stats else bn.running_mean
                sum_dy_xhat = invstd * (sum_dy_x - mean * sum_dy)
            if batch_stats:
                k2 = -k1 * invstd * sum_dy_xhat / count
                pending_k2[:c] += k2
                pending_k3[:c] += -k1 * sum_dy / count - k2 * ctx.means[:c]
            grad_w, grad_b = param_grads_unfolded(keep_scale, grad_w, grad_b if has_bias else None)
            param_grads.append((sum_dy_xhat if bn.weight is not None else None,
                                sum_dy if bn.bias is not None else None,
                                grad_w, grad_b))
        if batch_stats and ctx.fused:
            fused_kernels.add_affine_(grad[:, :c0], buf[:, :c0], pending_k2[:c0], pending_k3[:c0])
        elif batch_stats:
            grad[:, :c0].addcmul_(buf[:, :c0], per_channel(pending_k2[:c0]))
            grad[:, :c0].add_(per_channel(pending_k3[:c0]))
        # copies, not views, where the consumer runs late: an up block's skip connection
        # waits for the whole deeper backward pass, and a view would keep this block's whole
        # stack gradient alive that long. The last piece (an up block's upsampled maps, a
        # down block's or the bottleneck's only input) goes to the transposed convolution or
        # the transition down before it, whose backward runs next: a view saves the copy.
        # (a gradient buffer that the workspace keeps anyway needs no copy)
        piece_grads = []
        offset = 0
        last = len(ctx.piece_channels) - 1
        kept = ws.holds(grad)
        for i, pc in enumerate(ctx.piece_channels):
            piece = grad[:, offset:offset + pc]
            piece_grads.append(piece if i == last or kept else piece.clone())
            offset += pc
        flat = []
        for grads in reversed(param_grads):
            flat.extend(grads)
        ctx.buf = None
        return (None, None, None, None, None, *piece_grads, *flat)


def fused_layer_backward(ws: Workspace, grad, dropout, weight, x, scale, shift, invstd, mean,
                         pending=None):
    """One dense layer's backward through nnunet_nerve.fused_kernels: adds the layer's input
    gradient at fixed batch statistics (dL/dz * scale) into grad[:, :C] and returns
    (sum_p dL/dz, sum_p dL/dz * xhat, dL/dweight, dL/dbias). The layer's output gradient is
    grad[:, C:C+K] plus, if `pending` = (maps, a, b), a * maps + b (not written back)."""
    n, c, h, w = x.shape
    g = weight.shape[0]
    gyp = ws.flat("gyp", n * (h + 2) * (w + 2) * g, x).view(n, h + 2, w + 2, g)
    grad_b = fused_kernels.padded_output_gradient(grad[:, c:c + g], dropout, gyp,
                                                  *(pending or ())).to(x.dtype)
    grad_w, sum_dz, sum_dz_x = fused_kernels.layer_backward(gyp, weight, x, scale, shift, scale,
                                                            grad[:, :c])
    sum_dz_xhat = invstd.double() * (sum_dz_x - mean.double() * sum_dz)
    return sum_dz.to(x.dtype), sum_dz_xhat.to(x.dtype), grad_w, grad_b


def records_graph(inputs, params) -> bool:
    """Whether autograd will record this call (inside Function.forward grad mode is off)."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (*inputs, *params))


def dense_block(block, workspace: Workspace, pieces, keep_input: bool,
                level: dict | None = None) -> torch.Tensor:
    """Run `block` (nnunet_nerve.network.DenseBlock) on the channel concatenation of
    `pieces`; returns [pieces, new maps] if keep_input else the new maps.

    `level` lets the down and up block of one resolution share one buffer: a down block
    given {"spare_channels": k} allocates k more channels than it needs and leaves the
    buffer in level["buffer"]; the up block given the same dict, whose first piece is the
    down block's output, writes behind it instead of copying the skip connection."""
    level = {} if level is None else level
    params = []
    for layer in block.layers:
        params += [layer.norm.weight, layer.norm.bias, layer.conv.weight, layer.conv.bias]
    return DenseBlockFunction.apply(block, workspace, keep_input, level,
                                    records_graph(pieces, params), *pieces, *params)


POOL_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))   # max_pool2d's scan order in a 2x2 window


def pool_winners(z: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """For each 2x2 window of z, the position (index into POOL_OFFSETS, uint8) of the value
    F.max_pool2d(z, 2) returned: the first maximum in scan order, as max_pool2d picks it."""
    winners = torch.full_like(pooled, len(POOL_OFFSETS) - 1, dtype=torch.uint8)
    for k in reversed(range(len(POOL_OFFSETS) - 1)):
        di, dj = POOL_OFFSETS[k]
        winners.masked_fill_(z[:, :, di::2, dj::2] == pooled, k)
    return winners


def unpool_gradient(grad_out: torch.Tensor, winners: torch.Tensor, out: torch.Tensor):
    """max_pool2d's backward into `out` (the pre-pool map's shape): each window's gradient
    goes to its winner, zero elsewhere."""
    for k, (di, dj) in enumerate(POOL_OFFSETS):
        torch.mul(grad_out, winners == k, out=out[:, :, di::2, dj::2])
    return out


class TransitionDownFunction(torch.autograd.Function):
    """Transition down that keeps its input and the max-pool winners (uint8) for backward and
    recomputes BN + ReLU there."""

    @staticmethod
    def forward(ctx, td, workspace, records_graph, stats, x, *params):
        bn = td.norm
        batch_stats = uses_batch_stats(bn)
        n, c, h, w = x.shape
        t = workspace.channels_last("t", n, c, h, w, x)
        if batch_stats:
            if stats is not None and stats[0].data_ptr() == x.data_ptr():
                var, mean = stats[1][:c], stats[2][:c]
            else:
                var, mean = batch_var_mean_two_pass(x, t)
            if bn.training:
                update_running_stats(bn, mean, var, n * h * w)
        else:
            mean, var = bn.running_mean, bn.running_var
        invstd, scale, shift = batch_norm_affine(bn, mean, var)
        fused = fused_kernels.applies(x, None)
        dropout, mask, keep_scale, weight, bias = dropout_and_conv(
            td.conv, td.dropout, (n, td.conv.out_channels, h, w), x, fused)
        if records_graph:
            # BN + ReLU exactly as the backward pass recomputes them
            if fused:
                fused_kernels.bn_relu(x, scale, shift, t)
            else:
                torch.addcmul(per_channel(shift), x, per_channel(scale), out=t).relu_()
            z = F.conv2d(t, weight, bias)
        else:
            z = BnReluConv(scale, shift, weight, bias, h, w)(x, t)
        if fused:
            out, winners = fused_kernels.max_pool_with_winners(z, dropout)
            ctx.winners = winners if records_graph else None
        else:
            if mask is not None:
                z.mul_(mask)
            out = F.max_pool2d(z, 2)
            ctx.winners = pool_winners(z, out) if records_graph else None
        del z
        del mask
        ctx.td, ctx.workspace, ctx.dropout, ctx.keep_scale, ctx.weight = td, workspace, dropout, keep_scale, weight
        ctx.fused = fused
        ctx.batch_stats, ctx.scale, ctx.shift, ctx.mean, ctx.invstd = batch_stats, scale, shift, mean, invstd
        # kept without autograd's version check: the up block of this level writes into
        # channels of the same buffer behind x, never into x itself
        ctx.x = x
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, winners = ctx.x, ctx.winners
        ctx.x = ctx.winners = None
        td, ws = ctx.td, ctx.workspace
        n, c, h, w = x.shape
        k = td.conv.out_channels
        # fresh, not a workspace: kept from step to step it would add to the next peak
        if ctx.fused:
            grad_z = fused_kernels.unpool_gradient(grad_out, winners, ctx.dropout,
                                                   empty_channels_last(n, k, h, w, x))
        else:
            grad_z = unpool_gradient(grad_out, winners, empty_channels_last(n, k, h, w, x))
            if ctx.dropout is not None:
                grad_z.mul_(ctx.dropout.again())
        t = ws.channels_last("t", n, c, h, w, x)
        if ctx.fused:
            fused_kernels.bn_relu(x, ctx.scale, ctx.shift, t)
        else:
            torch.addcmul(per_channel(ctx.shift), x, per_channel(ctx.scale), out=t).relu_()
        has_bias = td.conv.bias is not None
        grad_t, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_z, t, ctx.weight, [k] if has_bias else None,
            [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, has_bias])
        bn = td.norm
        conv_grads = param_grads_unfolded(ctx.keep_scale, grad_w, grad_b if has_bias else None)
        if ctx.fused and grad_t.stride(1) == 1:
            return (None, None, None, None,
                    *fused_transition_down_input_gradient(ctx, grad_t, x), *conv_grads)
        torch.ops.aten.threshold_backward.grad_input(grad_t, t, 0, grad_input=grad_t)
        sum_dy = grad_t.sum(dim=(0, 2, 3))
        if sums_from_weights_apply(bn):
            sum_dy_xhat = bn_sum_dy_xhat_from_weights(bn, ctx.weight, grad_w, sum_dy)
        else:
            sum_dy_x = torch.mul(grad_t, x, out=t).sum(dim=(0, 2, 3))
            sum_dy_xhat = ctx.invstd * (sum_dy_x - ctx.mean * sum_dy)
        k1 = ctx.scale   # d(batch-norm output)/dx at fixed statistics: weight * invstd
        grad_t.mul_(per_channel(k1))
        if ctx.batch_stats:
            count = n * h * w
            k2 = -k1 * ctx.invstd * sum_dy_xhat / count
            k3 = -k1 * sum_dy / count - k2 * ctx.mean
            grad_t.addcmul_(x, per_channel(k2)).add_(per_channel(k3))
        return (None, None, None, None, grad_t,
                sum_dy_xhat if bn.weight is not None else None,
                sum_dy if bn.bias is not None else None,
                *conv_grads)


class PointwiseConvFunction(torch.autograd.Function):
    """The classifier (1x1 convolution, at most 16 outputs) of a channels-last float32 x:
    forward as one matrix product over the pixels, backward through
    fused_kernels.pointwise_conv_backward (oneDNN's backward for 2 output channels took
    longer than a dense layer's)."""

    @staticmethod
    def forward(ctx, conv, workspace, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.workspace = bias is not None, workspace
        return pointwise_conv_channels_last(conv, x)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        # the last up block's whole stack gradient: in the workspace (a fresh one of this
        # size is page-faulted in at every step); it is consumed within this backward pass
        grad_x = ctx.workspace.channels_last("classifier_grad", n, c, h, w, x)
        grad_w, grad_b = fused_kernels.pointwise_conv_backward(grad_out, x, weight, grad_x)
        return None, None, grad_x, grad_w, grad_b if ctx.has_bias else None


def pointwise_conv(conv: torch.nn.Conv2d, x: torch.Tensor, workspace: Workspace) -> torch.Tensor:
    """conv(x) for the classifier of the lean path (NCHW contiguous result)."""
    if not torch.is_grad_enabled():
        return pointwise_conv_channels_last(conv, x)
    if conv.out_channels <= 16 and fused_kernels.applies(x, None):
        return PointwiseConvFunction.apply(conv, workspace, x, conv.weight, conv.bias)
    # autograd's backward of the matrix product (inner dimension 2) is slower than the
    # convolution's
    return conv(x).contiguous()


def fused_transition_down_input_gradient(ctx, grad_t: torch.Tensor, x: torch.Tensor):
    """(dL/dx, dL/dgamma, dL/dbeta) of the transition down's batch norm + ReLU from
    grad_t = dL/d relu(...), in two passes of the fused kernels: ReLU backward with the
    per-channel sums, then dL/dx = k1 dL/dz + k2 x + k3 in place."""
    n, c, h, w = x.shape
    bn = ctx.td.norm
    sum_dz, sum_dz_x = fused_kernels.relu_gradient_sums_(grad_t, x, ctx.scale, ctx.shift)
    sum_dz_xhat = ctx.invstd.double() * (sum_dz_x - ctx.mean.double() * sum_dz)
    sum_dz, sum_dz_xhat = sum_dz.to(x.dtype), sum_dz_xhat.to(x.dtype)
    k1 = ctx.scale   # d(batch-norm output)/dx at fixed statistics: weight * invstd
    if ctx.batch_stats:
        count = n * h * w
        k2 = -k1 * ctx.invstd * sum_dz_xhat / count
        k3 = -k1 * sum_dz / count - k2 * ctx.mean
    else:
        k2 = k3 = torch.zeros_like(k1)
    fused_kernels.affine_combine_(grad_t, x, k1, k2, k3)
    return (grad_t, sum_dz_xhat if bn.weight is not None else None,
            sum_dz if bn.bias is not None else None)


def transition_down(td, workspace: Workspace, x: torch.Tensor, level: dict | None = None):
    """Run `td` (nnunet_nerve.network.TransitionDown) keeping only x (and the max-pool
    winners) for backward; `level` is the preceding down block's, whose batch statistics
    of x it reuses."""
    params = [td.norm.weight, td.norm.bias, td.conv.weight, td.conv.bias]
    stats = (level or {}).get("stats")
    return TransitionDownFunction.apply(td, workspace, records_graph([x], params), stats, x,
                                        *params)


def fast_path_applies(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """The lean kernels run for float32 (and float64) CPU tensors with plain BatchNorm2d modules, outside
    torch.compile tracing and autocast; anything else (CUDA, AMP, SyncBatchNorm, compile) takes the
    straightforward path, which computes the same function."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    if torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
        return False  # mixed precision mixes dtypes the lean kernels do not handle
    return all(type(m) is torch.nn.BatchNorm2d for m in module.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


