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
- the gradient of the whole stack is accumulated in one shared buffer;
- large temporaries (the BN+ReLU output, the stack gradient) live in a `Workspace` that is
  reused from call to call: on CPU every fresh large tensor is page-faulted in by the OS,
  which costs about as much as computing on it.

The functions compute exactly what nnunet_nerve.network.DenseBlock / TransitionDown compute
(same parameters, same running-statistics updates); tests/test_network.py checks outputs
and gradients against a straightforward reference implementation.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F


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

    def clear(self) -> None:
        self._store.clear()
        self._owners.clear()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._store.values())

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
    """Bernoulli keep-mask (bool) of nn.Dropout(p); None when dropout is inactive."""
    if p <= 0:
        return None
    return torch.empty(shape, dtype=torch.bool, device=like.device).bernoulli_(1 - p)


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


def constant_input_response(offset: torch.Tensor, weight: torch.Tensor, h: int, w: int):
    """conv2d (padding 1) of an h x w image whose channel i is the constant offset[i]:
    constant inside, different on the border rows and columns (zero padding). Computed on
    an image of at most 3 x 3 and expanded; shape (1, out_channels, h, w)."""
    h3, w3 = min(h, 3), min(w, 3)
    small = F.conv2d(offset.view(1, -1, 1, 1).expand(1, -1, h3, w3), weight, padding=1)
    rows = torch.tensor([0] + [1] * (h - 2) + [2] if h >= 3 else list(range(h)),
                        device=weight.device)
    cols = torch.tensor([0] + [1] * (w - 2) + [2] if w >= 3 else list(range(w)),
                        device=weight.device)
    return small.index_select(2, rows).index_select(3, cols)


def bn_relu_conv3x3(x, scale, shift, weight, bias, scratch):
    """conv2d(relu(scale * x + shift), weight, bias, padding=1) with one pass over x into
    `scratch` (x's shape) for batch norm and ReLU together."""
    low, high, factor, offset = relu_affine_as_clamp(scale, shift)
    torch.clamp(x, per_channel(low), per_channel(high), out=scratch)
    y = F.conv2d(scratch, weight * factor.view(1, -1, 1, 1), bias, padding=1)
    return y.add_(constant_input_response(offset, weight, x.shape[2], x.shape[3]))


CHUNK_ELEMENTS = 2 ** 26   # 256 MiB of float32 per recomputed BN+ReLU chunk (smaller: slower)


def batch_chunks(n: int, elements_per_image: int):
    """Split a batch of n images into consecutive (start, stop) chunks of at most
    CHUNK_ELEMENTS elements (at least one image each)."""
    size = max(1, min(n, CHUNK_ELEMENTS // max(elements_per_image, 1)))
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def relu_backward_and_sums(grad_r, r, x):
    """ReLU backward in place on grad_r (r = the ReLU output, overwritten as scratch);
    returns the per-channel sums of grad_r and of grad_r * x that batch norm's backward needs."""
    torch.ops.aten.threshold_backward.grad_input(grad_r, r, 0, grad_input=grad_r)
    sum_dy = grad_r.sum(dim=(0, 2, 3))
    sum_dy_x = torch.mul(grad_r, x, out=r).sum(dim=(0, 2, 3))
    return sum_dy, sum_dy_x


class BatchNormBackward:
    """dL/dx of y = weight * (x - mean) * invstd + bias, split as
    dL/dx = k1 * dL/dy + (k2 * x + k3): the first term chunk by chunk as dL/dy is produced,
    the second (only with batch statistics, whose dependence on x it is) once the
    per-channel sums over the whole batch are known."""

    def __init__(self, weight, mean, invstd, batch_stats, count):
        self.k1 = weight * invstd if weight is not None else invstd
        self.mean, self.invstd, self.batch_stats, self.count = mean, invstd, batch_stats, count
        self.sum_dy = self.sum_dy_x = 0

    def add_chunk(self, grad_y, sum_dy, sum_dy_x, target):
        """Add k1 * grad_y into target (None: scale grad_y in place) and record the sums."""
        self.sum_dy = self.sum_dy + sum_dy
        self.sum_dy_x = self.sum_dy_x + sum_dy_x
        if target is None:
            grad_y.mul_(per_channel(self.k1))
        else:
            target.addcmul_(grad_y, per_channel(self.k1))

    def finish(self, x, target):
        """Add k2 * x + k3 into target; returns (dL/dweight, dL/dbias)."""
        sum_dy_xhat = self.invstd * (self.sum_dy_x - self.mean * self.sum_dy)
        if self.batch_stats:
            k2 = -self.k1 * self.invstd * sum_dy_xhat / self.count
            k3 = -self.k1 * self.sum_dy / self.count - k2 * self.mean
            target.addcmul_(x, per_channel(k2)).add_(per_channel(k3))
        return sum_dy_xhat, self.sum_dy


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
        if batch_stats:
            means = buf.new_empty(channels)
            variances = buf.new_empty(channels)
            scratch = workspace.channels_last("t", n, c0, h, w, buf)
            variances[:c0], means[:c0] = batch_var_mean_two_pass(buf[:, :c0], scratch)
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
            invstd = torch.rsqrt(var + bn.eps)
            scale = bn.weight * invstd if bn.weight is not None else invstd
            shift = (bn.bias if bn.bias is not None else 0) - mean * scale
            p = layer.dropout.p if layer.dropout.training else 0.0
            mask = dropout_mask((n, g, h, w), p, buf)
            for i0, i1 in batch_chunks(n, c * h * w):
                t = workspace.channels_last("t", i1 - i0, c, h, w, buf)
                y = bn_relu_conv3x3(buf[i0:i1, :c], scale, shift, layer.conv.weight,
                                    layer.conv.bias, t)
                if mask is not None:
                    y.mul_(mask[i0:i1]).mul_(1.0 / (1.0 - p))
                buf[i0:i1, c:c + g].copy_(y)
            if batch_stats:
                variances[c:c + g], means[c:c + g] = batch_var_mean(buf[:, c:c + g])
            scales.append(scale)
            shifts.append(shift)
            invstds.append(invstd)
            masks.append((mask, p))
        ctx.block, ctx.workspace, ctx.keep_input = block, workspace, keep_input
        ctx.buf, ctx.c0, ctx.g = buf, c0, g
        ctx.piece_channels = [p.shape[1] for p in pieces]
        ctx.batch_stats = batch_stats
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
        for j in reversed(range(len(layers))):
            layer = layers[j]
            bn = layer.norm
            c = c0 + j * g
            mask, p = ctx.masks[j]
            x = buf[:, :c]
            scale, shift = ctx.scales[j], ctx.shifts[j]
            has_bias = ctx.has_bias[j]
            mean = ctx.means[:c] if ctx.batch_stats else bn.running_mean
            bn_backward = BatchNormBackward(bn.weight, mean, ctx.invstds[j], ctx.batch_stats, count)
            grad_w = grad_b = 0
            for i0, i1 in batch_chunks(n, c * h * w):
                gy = ws.channels_last("gy", i1 - i0, g, h, w, buf)
                if mask is not None:
                    torch.mul(grad[i0:i1, c:c + g], mask[i0:i1], out=gy).mul_(1.0 / (1.0 - p))
                else:
                    gy.copy_(grad[i0:i1, c:c + g])
                t = ws.channels_last("t", i1 - i0, c, h, w, buf)
                torch.addcmul(per_channel(shift), x[i0:i1], per_channel(scale), out=t).relu_()
                grad_t, chunk_grad_w, chunk_grad_b = torch.ops.aten.convolution_backward(
                    gy, t, layer.conv.weight, [g] if has_bias else None, [1, 1], [1, 1], [1, 1],
                    False, [0, 0], 1, [True, True, has_bias])
                grad_w = grad_w + chunk_grad_w
                if has_bias:
                    grad_b = grad_b + chunk_grad_b
                sums = relu_backward_and_sums(grad_t, t, x[i0:i1])
                bn_backward.add_chunk(grad_t, *sums, target=grad[i0:i1, :c])
                del grad_t
            grad_gamma, grad_beta = bn_backward.finish(x, target=grad[:, :c])
            param_grads.append((grad_gamma if bn.weight is not None else None,
                                grad_beta if bn.bias is not None else None,
                                grad_w, grad_b if has_bias else None))
        piece_grads = []
        offset = 0
        for pc in ctx.piece_channels:
            piece_grads.append(grad[:, offset:offset + pc].clone())
            offset += pc
        flat = []
        for grads in reversed(param_grads):
            flat.extend(grads)
        ctx.buf = None
        return (None, None, None, None, None, *piece_grads, *flat)


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


class TransitionDownFunction(torch.autograd.Function):
    """Transition down that keeps only its input for backward and recomputes the rest."""

    @staticmethod
    def forward(ctx, td, workspace, records_graph, x, *params):
        bn = td.norm
        batch_stats = uses_batch_stats(bn)
        n, c, h, w = x.shape
        t = workspace.channels_last("t", n, c, h, w, x)
        if batch_stats:
            var, mean = batch_var_mean_two_pass(x, t)
            if bn.training:
                update_running_stats(bn, mean, var, n * h * w)
        else:
            mean, var = bn.running_mean, bn.running_var
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight * scale
        shift = (bn.bias if bn.bias is not None else 0) - mean * scale
        p = td.dropout.p if td.dropout.training else 0.0
        mask = dropout_mask((n, td.conv.out_channels, h, w), p, x)
        if records_graph:
            # exactly the operations the backward pass recomputes: identical values, hence
            # the same max-pool winners as in this forward pass
            z = TransitionDownFunction.pre_pool(td, x, scale, shift, mask, p, t)
        else:
            low, high, factor, offset = relu_affine_as_clamp(scale, shift)
            torch.clamp(x, per_channel(low), per_channel(high), out=t)
            weight = td.conv.weight
            bias = weight[:, :, 0, 0] @ offset
            if td.conv.bias is not None:
                bias = bias + td.conv.bias
            z = F.conv2d(t, weight * factor.view(1, -1, 1, 1), bias)
            if mask is not None:
                z.mul_(mask).mul_(1.0 / (1.0 - p))
        out = F.max_pool2d(z, 2)
        ctx.td, ctx.workspace, ctx.mask, ctx.p, ctx.batch_stats = td, workspace, mask, p, batch_stats
        ctx.scale, ctx.shift, ctx.mean, ctx.invstd = scale, shift, mean, torch.rsqrt(var + bn.eps)
        # kept without autograd's version check: the up block of this level writes into
        # channels of the same buffer behind x, never into x itself
        ctx.x = x
        return out

    @staticmethod
    def pre_pool(td, x, scale, shift, mask, p, t):
        """BN + ReLU into t, 1x1 conv, dropout: the map that is max-pooled."""
        torch.addcmul(per_channel(shift), x, per_channel(scale), out=t).relu_()
        z = F.conv2d(t, td.conv.weight, td.conv.bias)
        if mask is not None:
            z.mul_(mask).mul_(1.0 / (1.0 - p))
        return z

    @staticmethod
    def backward(ctx, grad_out):
        x = ctx.x
        ctx.x = None
        td = ctx.td
        n, c, h, w = x.shape
        t = ctx.workspace.channels_last("t", n, c, h, w, x)
        z = TransitionDownFunction.pre_pool(td, x, ctx.scale, ctx.shift, ctx.mask, ctx.p, t)
        _, indices = F.max_pool2d(z, 2, return_indices=True)
        grad_z = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, z, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
        del z, indices
        if ctx.mask is not None:
            grad_z.mul_(ctx.mask).mul_(1.0 / (1.0 - ctx.p))
        has_bias = td.conv.bias is not None
        grad_t, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_z, t, td.conv.weight, [td.conv.out_channels] if has_bias else None,
            [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, has_bias])
        del grad_z
        bn = td.norm
        bn_backward = BatchNormBackward(bn.weight, ctx.mean, ctx.invstd, ctx.batch_stats,
                                        n * h * w)
        bn_backward.add_chunk(grad_t, *relu_backward_and_sums(grad_t, t, x), target=None)
        grad_gamma, grad_beta = bn_backward.finish(x, target=grad_t)
        return (None, None, None, grad_t,
                grad_gamma if bn.weight is not None else None,
                grad_beta if bn.bias is not None else None,
                grad_w, grad_b if has_bias else None)


def transition_down(td, workspace: Workspace, x: torch.Tensor) -> torch.Tensor:
    """Run `td` (nnunet_nerve.network.TransitionDown) keeping only x for backward."""
    params = [td.norm.weight, td.norm.bias, td.conv.weight, td.conv.bias]
    return TransitionDownFunction.apply(td, workspace, records_graph([x], params), x, *params)


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


