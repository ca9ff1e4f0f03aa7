"""The fused dense-layer kernels (nnunet_nerve/csrc/dense_layer_avx512.c): build, load, call.

A dense layer, y = dropout(conv3x3(relu(scale * x + shift))) with C input and K output maps,
runs here as three C calls instead of batch-norm passes over the stack around oneDNN's
convolution: the forward (batch norm + ReLU applied on the fly, bias, border response,
dropout, batch statistics of y), the zero-padded output gradient (dropout mask and pending
batch-statistics terms applied), and the backward in one pass over x (weight gradient with
batch norm + ReLU recomputed on the fly; input gradient with the ReLU mask, batch-norm scale,
accumulation into the stack gradient and the per-channel sums batch norm's backward needs).
Dropout masks are never stored (`HashDropout`). Smaller kernels serve the transition down
(BN + ReLU, pool with winners, unpool, ReLU backward with sums), the first convolution, the
classifier's backward and batch statistics.

The C file is compiled with the system C compiler (`$CC`, else `cc`) at first use into
`$NNUNET_NERVE_CACHE` (default `~/.cache/nnunet_nerve`), keyed by a hash of the source and
the flags; a second process finds the library there. They run where all of the following
hold, else the PyTorch path of network_blocks computes the same function:
float32 CPU tensors, K in (12, 16), a CPU with AVX-512 (torch reports it), a working C
compiler with OpenMP, and `NNUNET_NERVE_FUSED_KERNELS` not set to 0.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("csrc") / "dense_layer_avx512.c"
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-fopenmp",
         "-shared", "-fPIC"]
SUPPORTED_GROWTH = (12, 16)
ENV_SWITCH = "NNUNET_NERVE_FUSED_KERNELS"

_state: dict = {}


def cache_dir() -> Path:
    root = os.environ.get("NNUNET_NERVE_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nnunet_nerve"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def library_path() -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return cache_dir() / f"dense_layer_avx512-{key}.so"


def build(path: Path) -> None:
    """Compile the C source to `path` (written under a temporary name, then moved)."""
    cc = compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler found (set CC; tried {os.environ.get('CC', 'cc')!r})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        result = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{cc} failed on {SOURCE}: {result.stderr.strip()[-500:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def unavailable_reason() -> str | None:
    """Why the fused kernels cannot run in this process (None: they can)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"switched off by {ENV_SWITCH}=0"
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return f"the CPU has no AVX-512 (torch reports {capability})"
    return _load()[1]


def _load():
    if "lib" not in _state:
        lib, error = None, None
        try:
            path = library_path()
            if not path.exists():
                build(path)
            lib = ctypes.CDLL(str(path))
            _declare(lib)
        except (OSError, RuntimeError) as exc:
            error = f"the fused kernels could not be built or loaded: {exc}"
            warnings.warn(f"nnunet_nerve: {error}; using the PyTorch path", RuntimeWarning, stacklevel=3)
        _state["lib"], _state["error"] = lib, error
    return _state["lib"], _state["error"]


def _declare(lib) -> None:
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    signatures = {
        "nerve_fwd_scratch_floats": ([i32, i32, i32, i32, i32], i64),
        "nerve_dense_bwd_scratch_floats": ([i32, i32, i32], i64),
        "nerve_dense_fwd": ([ptr, i64, i64, i64, i32, i32, i32, i32, i32, ptr, ptr, ptr, ptr, ptr,
                             ptr, i64, i64, i64, ptr, ptr, i32], None),
        "nerve_keep_mask": ([i64, i32, ptr, ptr], None),
        "nerve_first_conv": ([ptr, i32, i32, i32, i32, ptr, ptr, ptr, i64, i64, i64, i32], None),
        "nerve_first_conv_bwd": ([ptr, i32, i32, i32, i32, ptr, i64, i64, i64, ptr, ptr, i32], None),
        "nerve_channel_sums": ([ptr, i64, i64, i64, i32, i32, i32, i32, ptr, i32], None),
        "nerve_bn_relu": ([ptr, i64, i64, i64, i32, i32, i32, i32, ptr, ptr, ptr, i64, i64, i64, i32], None),
        "nerve_affine_combine_": ([ptr, i64, i64, i64, ptr, i64, i64, i64, i32, i32, i32, i32, ptr, ptr,
                                   ptr, i32], None),
        "nerve_relu_grad_sums_": ([ptr, i64, i64, i64, ptr, i64, i64, i64, i32, i32, i32, i32, ptr, ptr,
                                   ptr, i32], None),
        "nerve_pool_": ([ptr, i64, i64, i64, i32, i32, i32, i32, ptr, ptr, i64, i64, i64, ptr, i32], None),
        "nerve_unpool_": ([ptr, i64, i64, i64, ptr, i32, i32, i32, i32, ptr, ptr, i64, i64, i64, i32],
                          None),
        "nerve_pointwise_bwd": ([ptr, i32, i32, i32, i32, ptr, i64, i64, i64, i32, ptr, ptr, i64, i64,
                                 i64, ptr, ptr, i32], None),
        "nerve_dropout_": ([ptr, i64, i64, i64, i32, i32, i32, i32, ptr, i32], None),
        "nerve_pad_grad": ([ptr, i64, i64, i64, ptr, i64, i64, i64, ptr, ptr, i32, i32, i32, i32,
                            ptr, ptr, ptr, i32], None),
        "nerve_add_affine_": ([ptr, i64, i64, i64, ptr, i64, i64, i64, i32, i32, i32, i32, ptr, ptr,
                               i32], None),
        "nerve_dense_bwd": ([ptr, i32, i32, i32, i32, i32, ptr, i64, i64, i64, ptr, ptr, ptr, ptr,
                             ptr, i64, i64, i64, ptr, ptr, ptr, i32], None),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result


def applies(x: torch.Tensor, growth_rate: int | None) -> bool:
    """Whether a dense layer with `growth_rate` output maps (None: only the hash dropout) on x
    (float32 CPU, channels-last) can run the fused kernels."""
    return (x.dtype == torch.float32 and x.device.type == "cpu"
            and (growth_rate is None or growth_rate in SUPPORTED_GROWTH)
            and unavailable_reason() is None)


def _lib():
    return _load()[0]


def _threads() -> int:
    return max(1, min(64, torch.get_num_threads()))


def _nhwc_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(image, row, pixel) strides of a channels-last (N, C, H, W) view whose channels are
    contiguous."""
    if t.stride(1) != 1 and t.shape[1] > 1:
        raise ValueError(f"expected channels-last maps, got strides {t.stride()}")
    return t.stride(0), t.stride(2), t.stride(3)


def _ptr(t: torch.Tensor | None):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


class HashDropout:
    """A dropout keep-mask that is never stored: element e (its index in the maps' NHWC
    layout) is kept when lowbias32(lowbias32(e ^ s1) + s2) < threshold (unsigned 32-bit;
    the C kernels compute it where they need it, the backward pass again). The seeds s1, s2
    are drawn from torch's default generator (torch.manual_seed repeats a run); threshold =
    round((1 - p) * 2**32), so the keep probability is 1 - p to 2**-32."""

    def __init__(self, p: float):
        seeds = torch.empty(2, dtype=torch.int64).random_(0, 2 ** 32)
        threshold = min(round((1.0 - p) * 2 ** 32), 2 ** 32 - 1)
        self.p = p
        self.seeds = torch.cat([seeds, torch.tensor([threshold])])

    def keep_mask(self, n: int, c: int, h: int, w: int) -> torch.Tensor:
        """The mask as a bool (n, c, h, w) tensor laid out channels-last."""
        out = torch.empty((n, h, w, c), dtype=torch.uint8)
        _lib().nerve_keep_mask(n * h * w, c, _ptr(self.seeds), _ptr(out))
        return out.bool().permute(0, 3, 1, 2)

    def apply_(self, t: torch.Tensor) -> torch.Tensor:
        """Zero t's dropped elements in place (t: (N, C, H, W) channels-last, float32)."""
        n, c, h, w = t.shape
        _lib().nerve_dropout_(_ptr(t), *_nhwc_strides(t), n, h, w, c, _ptr(self.seeds), _threads())
        return t


def hash_dropout(p: float) -> HashDropout | None:
    return HashDropout(p) if p > 0 else None


def _seeds(dropout: HashDropout | None):
    return _ptr(dropout.seeds) if dropout is not None else None


def tap_columns(weight: torch.Tensor) -> torch.Tensor:
    """A (K, C, 3, 3) weight as the (C, NV * 16) tap-column matrix of the C kernels:
    column ky * 3K + (2 - kx) * K + k holds weight[k, c, ky, kx]; zero-padded."""
    k, c = weight.shape[:2]
    cols = weight.permute(1, 2, 3, 0).flip(2).reshape(c, 9 * k)
    width = -(-9 * k // 16) * 16
    return F.pad(cols, (0, width - 9 * k)).contiguous()


def weight_from_tap_columns(cols: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of `tap_columns`: (C, >= 9K) -> (K, C, 3, 3)."""
    c = cols.shape[0]
    return cols[:, :9 * k].reshape(c, 3, 3, k).flip(2).permute(3, 0, 1, 2).contiguous()


def constant_response(offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      h: int, w: int) -> torch.Tensor:
    """(K, 3, 3): conv3x3 (zero padding) of the constant image `offset` (per input channel)
    plus bias, at a pixel of row type ry and column type rx (0: first, 1: inside, 2: last;
    an image 2 pixels high has types 0 and 2, one pixel high type 1)."""
    hh, ww = min(h, 3), min(w, 3)
    small = F.conv2d(offset.view(1, -1, 1, 1).expand(1, -1, hh, ww), weight, padding=1)[0]
    rows = {3: [0, 1, 2], 2: [0, 0, 1], 1: [0, 0, 0]}[hh]
    cols = {3: [0, 1, 2], 2: [0, 0, 1], 1: [0, 0, 0]}[ww]
    resp = small[:, rows][:, :, cols]
    if bias is not None:
        resp = resp + bias.view(-1, 1, 1)
    return resp.contiguous()


class FusedDenseLayerForward:
    """dropout(conv3x3(relu(scale * x + shift), weight, bias)) written into a slice of a
    channels-last buffer, prepared once per layer (as network_blocks.BnReluConv): the ReLU
    of the affine map is factor * clamp(x, low, high) + offset, the factor folded into the
    weights and the offset's response (with the bias) added per row/column type."""

    def __init__(self, low, high, factor, offset, weight, bias, h: int, w: int):
        self.k, self.c = weight.shape[:2]
        self.low, self.high = low.contiguous(), high.contiguous()
        self.cols = tap_columns(weight * factor.view(1, -1, 1, 1))
        self.resp = constant_response(offset, weight, bias, h, w)

    def __call__(self, x: torch.Tensor, dropout: HashDropout | None, out: torch.Tensor,
                 scratch: torch.Tensor, with_sums: bool):
        """Writes into `out` (N, K, H, W channels-last view); returns (sum, sum of squares)
        of each output map (float64) when with_sums."""
        n, c, h, w = x.shape
        sums = torch.empty(2 * self.k, dtype=torch.float64) if with_sums else None
        _lib().nerve_dense_fwd(_ptr(x), *_nhwc_strides(x), n, h, w, c, self.k, _ptr(self.low),
                               _ptr(self.high), _ptr(self.cols), _ptr(self.resp), _seeds(dropout),
                               _ptr(out), *_nhwc_strides(out), _ptr(sums), _ptr(scratch), _threads())
        return (sums[:self.k], sums[self.k:]) if with_sums else None


def forward_scratch_numel(n: int, h: int, w: int, k: int) -> int:
    return int(_lib().nerve_fwd_scratch_floats(n, h, w, k, _threads()))


def padded_output_gradient(grad: torch.Tensor, dropout: HashDropout | None, out: torch.Tensor,
                           maps: torch.Tensor | None = None, a: torch.Tensor | None = None,
                           b: torch.Tensor | None = None):
    """out (N, H+2, W+2, K) = zero-padded (grad + a * maps + b) * keep-mask (grad, maps:
    (N, K, H, W) channels-last views; a, b per map, both None: no affine term); returns the
    sum of each map of out (float64)."""
    n, k, h, w = grad.shape
    sums = torch.empty(k, dtype=torch.float64)
    y = maps if a is not None else grad
    _lib().nerve_pad_grad(_ptr(grad), *_nhwc_strides(grad), _ptr(y), *_nhwc_strides(y),
                          _ptr(_contiguous(a)), _ptr(_contiguous(b)), n, h, w, k, _seeds(dropout),
                          _ptr(out), _ptr(sums), _threads())
    return sums


def add_affine_(grad: torch.Tensor, maps: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """grad += a * maps + b per channel (channels-last (N, C, H, W) views, float32)."""
    n, c, h, w = grad.shape
    _lib().nerve_add_affine_(_ptr(grad), *_nhwc_strides(grad), _ptr(maps), *_nhwc_strides(maps),
                             n, h, w, c, _ptr(_contiguous(a)), _ptr(_contiguous(b)), _threads())


def _contiguous(t: torch.Tensor | None):
    return t.detach().to(torch.float32).contiguous() if t is not None else None


def layer_backward(gyp: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, scale, shift, k1,
                   grad: torch.Tensor):
    """A dense layer's backward in one pass over x: grad (N, C, H, W channels-last view) +=
    k1 * [scale x + shift > 0] * conv_transpose(gy, weight), gy = gyp's interior; returns
    dL/dweight (K, C, 3, 3) of conv3x3(relu(scale x + shift)) and the per-channel sums of the
    masked conv_transpose(gy, weight) (dL/dz) and of it times x (float64)."""
    n, c, h, w = x.shape
    k = weight.shape[0]
    cp = -(-c // 16) * 16
    wt = F.pad(tap_columns(weight)[:, :9 * k].t(), (0, cp - c)).contiguous()
    cols = x.new_empty((c, -(-9 * k // 16) * 16))
    sums = torch.empty(2 * c, dtype=torch.float64)
    scratch = x.new_empty(int(_lib().nerve_dense_bwd_scratch_floats(c, k, _threads())))
    _lib().nerve_dense_bwd(_ptr(gyp), n, h, w, k, c, _ptr(x), *_nhwc_strides(x),
                           _ptr(_contiguous(scale)), _ptr(_contiguous(shift)), _ptr(_contiguous(k1)),
                           _ptr(wt), _ptr(grad), *_nhwc_strides(grad), _ptr(cols), _ptr(sums),
                           _ptr(scratch), _threads())
    return weight_from_tap_columns(cols, k), sums[:c], sums[c:]


def max_pool_with_winners(z: torch.Tensor, dropout: HashDropout | None):
    """F.max_pool2d(z * keep-mask, 2) and, per window, the position (uint8, 0-3 in
    network_blocks.POOL_OFFSETS order) of its first maximum; z channels-last float32 with
    even sides. Both results channels-last."""
    n, c, h, w = z.shape
    out = torch.empty((n, h // 2, w // 2, c), dtype=z.dtype).permute(0, 3, 1, 2)
    winners = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)
    _lib().nerve_pool_(_ptr(z), *_nhwc_strides(z), n, h, w, c, _seeds(dropout), _ptr(out),
                       *_nhwc_strides(out), _ptr(winners), _threads())
    return out, winners


def unpool_gradient(grad_out: torch.Tensor, winners: torch.Tensor, dropout: HashDropout | None,
                    out: torch.Tensor) -> torch.Tensor:
    """The backward of `max_pool_with_winners` into `out` (z's shape, channels-last): each
    window's gradient at its winner, zero elsewhere, times the keep-mask."""
    n, c, h, w = out.shape
    grad_out = grad_out if grad_out.stride(1) == 1 else grad_out.contiguous(memory_format=torch.channels_last)
    _lib().nerve_unpool_(_ptr(grad_out), *_nhwc_strides(grad_out), _ptr(winners), n, h, w, c,
                         _seeds(dropout), _ptr(out), *_nhwc_strides(out), _threads())
    return out


def pointwise_conv_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                            grad_x: torch.Tensor):
    """Gradients of a 1x1 convolution with at most 16 outputs (the classifier) of the
    channels-last x: the input's written into grad_x (x's shape, channels-last); returns
    those of the weight and the bias."""
    n, c, h, w = x.shape
    k = weight.shape[0]
    grad_out = grad_out.contiguous()
    grad_w = torch.empty((k, c), dtype=torch.float64)
    grad_b = torch.empty(k, dtype=torch.float64)
    wk = weight.detach().reshape(k, c).contiguous()
    _lib().nerve_pointwise_bwd(_ptr(grad_out), n, h, w, k, _ptr(x), *_nhwc_strides(x), c, _ptr(wk),
                               _ptr(grad_x), *_nhwc_strides(grad_x), _ptr(grad_w), _ptr(grad_b),
                               _threads())
    return grad_w.to(x.dtype).view_as(weight), grad_b.to(x.dtype)


def bn_relu(x: torch.Tensor, scale, shift, out: torch.Tensor) -> torch.Tensor:
    """out = relu(scale * x + shift) per channel, one pass (channels-last float32)."""
    n, c, h, w = x.shape
    _lib().nerve_bn_relu(_ptr(x), *_nhwc_strides(x), n, h, w, c, _ptr(_contiguous(scale)),
                         _ptr(_contiguous(shift)), _ptr(out), *_nhwc_strides(out), _threads())
    return out


def relu_gradient_sums_(grad: torch.Tensor, x: torch.Tensor, scale, shift):
    """ReLU backward of relu(scale * x + shift) in place on grad (zero where scale * x + shift
    <= 0); returns the per-channel sums of the new grad and of grad * x (float64)."""
    n, c, h, w = x.shape
    sums = torch.empty(2 * c, dtype=torch.float64)
    _lib().nerve_relu_grad_sums_(_ptr(grad), *_nhwc_strides(grad), _ptr(x), *_nhwc_strides(x),
                                 n, h, w, c, _ptr(_contiguous(scale)), _ptr(_contiguous(shift)),
                                 _ptr(sums), _threads())
    return sums[:c], sums[c:]


def affine_combine_(grad: torch.Tensor, x: torch.Tensor, a, b, c0) -> torch.Tensor:
    """grad = a * grad + b * x + c0 per channel, in place, one pass."""
    n, c, h, w = x.shape
    _lib().nerve_affine_combine_(_ptr(grad), *_nhwc_strides(grad), _ptr(x), *_nhwc_strides(x),
                                 n, h, w, c, _ptr(_contiguous(a)), _ptr(_contiguous(b)),
                                 _ptr(_contiguous(c0)), _threads())
    return grad


def batch_var_mean(x: torch.Tensor):
    """Biased variance and mean of each channel of a channels-last float32 x over (N, H, W),
    from one pass of float64 sums (variance = E[x^2] - mean^2 in float64)."""
    n, c, h, w = x.shape
    sums = torch.empty(2 * c, dtype=torch.float64)
    _lib().nerve_channel_sums(_ptr(x), *_nhwc_strides(x), n, h, w, c, _ptr(sums), _threads())
    return var_mean_from_sums(sums[:c], sums[c:], n * h * w, x.dtype)


def var_mean_from_sums(total: torch.Tensor, total_sq: torch.Tensor, count: int, dtype):
    """Biased variance and mean per channel from float64 sums of x and x^2 over count values
    (variance = E[x^2] - mean^2 in float64, clamped at 0)."""
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min_(0)
    return var.to(dtype), mean.to(dtype)


def first_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor):
    """out (N, K, H, W channels-last) = conv2d(x, weight, bias, padding=1) for a one-channel x."""
    n, _, h, w = x.shape
    k = weight.shape[0]
    wk = weight.detach().reshape(k, 9).t().contiguous()
    _lib().nerve_first_conv(_ptr(x.contiguous()), n, h, w, k, _ptr(wk), _ptr(_contiguous(bias)),
                            _ptr(out), *_nhwc_strides(out), _threads())
    return out


def first_conv_backward(x: torch.Tensor, grad_out: torch.Tensor):
    """Weight (K, 1, 3, 3) and bias gradients of `first_conv` (x needs none)."""
    n, _, h, w = x.shape
    k = grad_out.shape[1]
    grad_w = torch.empty(9 * k, dtype=torch.float64)
    grad_b = torch.empty(k, dtype=torch.float64)
    _lib().nerve_first_conv_bwd(_ptr(x.contiguous()), n, h, w, k, _ptr(grad_out),
                                *_nhwc_strides(grad_out), _ptr(grad_w), _ptr(grad_b), _threads())
    return grad_w.view(3, 3, k).permute(2, 0, 1).reshape(k, 1, 3, 3).to(x.dtype), grad_b.to(x.dtype)
