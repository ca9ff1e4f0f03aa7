"""The fused C kernels (nnunet_nerve/csrc/dense_layer_avx512.c) against PyTorch's own
convolution, batch-norm, ReLU, max-pool and autograd, on strided channels-last views as the
network hands them over; and the network with them against the reference implementation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_nerve import fused_kernels as fk
from nnunet_nerve.network_blocks import POOL_OFFSETS, relu_affine_as_clamp

# skipped only where the kernels cannot run (no AVX-512, no C compiler, switched off); a
# failed build on a machine that has both fails every test here
REASON = fk.unavailable_reason()
CANNOT_RUN = REASON is not None and (fk.compiler() is None or "could not be built" not in REASON)
pytestmark = pytest.mark.skipif(CANNOT_RUN, reason=f"fused kernels unavailable: {REASON}")


def test_the_kernels_build_and_load():
    assert fk.unavailable_reason() is None


def stack_view(n, total, c, h, w, seed=0):
    """Channels [0, c) of a channels-last (n, total, h, w) buffer, as the dense blocks read it."""
    g = torch.Generator().manual_seed(seed)
    buf = torch.randn(n, h, w, total, generator=g).permute(0, 3, 1, 2)
    return buf, buf[:, :c]


def bn_relu(x, scale, shift):
    return torch.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))


CASES = [  # n, stack channels, read channels, growth, h, w
    (2, 50, 48, 12, 9, 11), (1, 64, 60, 12, 8, 8), (3, 40, 36, 16, 5, 7), (1, 30, 24, 12, 2, 5),
    (1, 30, 24, 12, 1, 3), (4, 100, 96, 12, 17, 20), (1, 200, 180, 12, 12, 33),
]


def layer_parameters(c, k, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.randn(c, generator=g)
    scale[0] = 0.0                                  # a switched-off channel
    shift = torch.randn(c, generator=g)
    weight = 0.1 * torch.randn(k, c, 3, 3, generator=g)
    bias = torch.randn(k, generator=g)
    return scale, shift, weight, bias


@pytest.mark.parametrize("n,total,c,k,h,w", CASES)
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_dense_layer_forward(n, total, c, k, h, w, p):
    buf, x = stack_view(n, total + k, c, h, w)
    scale, shift, weight, bias = layer_parameters(c, k, 1)
    dropout = fk.hash_dropout(p)
    expected = F.conv2d(bn_relu(x, scale, shift), weight, bias, padding=1)
    if dropout is not None:
        expected = expected * dropout.keep_mask(n, k, h, w)
    layer = fk.FusedDenseLayerForward(*relu_affine_as_clamp(scale, shift), weight, bias, h, w)
    out = buf[:, total:total + k]
    scratch = torch.empty(fk.forward_scratch_numel(n, h, w, k))
    before = buf[:, :total].clone()
    total_sum, total_sq = layer(x, dropout, out, scratch, True)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)   # sums of up to 1620 products
    assert torch.equal(buf[:, :total], before)      # nothing but the output maps written
    torch.testing.assert_close(total_sum, expected.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(total_sq, expected.double().square().sum((0, 2, 3)), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("n,total,c,k,h,w", CASES)
@pytest.mark.parametrize("p,pending", [(0.0, False), (0.2, True)])
def test_dense_layer_backward(n, total, c, k, h, w, p, pending):
    buf, x = stack_view(n, total + k, c, h, w)
    scale, shift, weight, bias = layer_parameters(c, k, 2)
    dropout = fk.hash_dropout(p)
    g = torch.Generator().manual_seed(3)
    grad_buf = torch.randn(n, h, w, total + k + 3, generator=g).permute(0, 3, 1, 2)
    grad_in, grad_y = grad_buf[:, :c], grad_buf[:, total:total + k]
    maps = buf[:, total:total + k]
    a, b = torch.randn(k, generator=g), torch.randn(k, generator=g)
    k1 = torch.randn(c, generator=g)
    # reference: autograd through relu(bn(x)) -> conv, with dL/dy = (grad_y + a maps + b) * keep
    gy = grad_y + (a.view(1, -1, 1, 1) * maps + b.view(1, -1, 1, 1) if pending else 0)
    if dropout is not None:
        gy = gy * dropout.keep_mask(n, k, h, w)
    z = (x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)).requires_grad_()
    w_ = weight.clone().requires_grad_()
    (F.conv2d(torch.relu(z), w_, padding=1) * gy).sum().backward()
    dz = z.grad
    expected_grad_in = grad_in + k1.view(1, -1, 1, 1) * dz
    expected_grad_y = grad_y.clone()

    gyp = torch.empty(n, h + 2, w + 2, k)
    sum_gy = fk.padded_output_gradient(grad_y, dropout, gyp, *((maps, a, b) if pending else ()))
    torch.testing.assert_close(sum_gy, gy.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gyp[:, 1:-1, 1:-1], gy.permute(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    assert gyp[:, 0].abs().max() == 0 and gyp[:, :, -1].abs().max() == 0
    grad_w, sum_dz, sum_dz_x = fk.layer_backward(gyp, weight, x, scale, shift, k1, grad_in)
    torch.testing.assert_close(grad_w, w_.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_in, expected_grad_in, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_y, expected_grad_y)      # read, not written
    torch.testing.assert_close(sum_dz, dz.double().sum((0, 2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sum_dz_x, (dz * x).double().sum((0, 2, 3)), rtol=1e-4, atol=1e-4)


def test_add_affine():
    buf, x = stack_view(2, 40, 36, 5, 6)
    grad = torch.randn(2, 5, 6, 44).permute(0, 3, 1, 2)[:, 4:40]
    expected = grad + 2 * x + 3
    fk.add_affine_(grad, x, torch.full((36,), 2.0), torch.full((36,), 3.0))
    torch.testing.assert_close(grad, expected)


def test_hash_dropout_keep_rate_determinism_and_apply():
    torch.manual_seed(5)
    first = fk.hash_dropout(0.2)
    torch.manual_seed(5)
    again = fk.hash_dropout(0.2)
    other = fk.hash_dropout(0.2)
    mask = first.keep_mask(8, 12, 64, 64)
    assert torch.equal(mask, again.keep_mask(8, 12, 64, 64))   # torch.manual_seed repeats it
    assert not torch.equal(mask, other.keep_mask(8, 12, 64, 64))
    rate = mask.float().mean().item()
    assert abs(rate - 0.8) < 0.005                                 # 393,216 draws: sd 0.0006
    per_channel = mask.float().mean((0, 2, 3))
    assert per_channel.min() > 0.78 and per_channel.max() < 0.82
    # neighbouring elements independent: P(both kept) = 0.64
    both = (mask[:, :-1] & mask[:, 1:]).float().mean().item()
    assert abs(both - 0.64) < 0.006
    assert mask.permute(0, 2, 3, 1).is_contiguous()
    t = torch.randn(2, 5, 7, 30).permute(0, 3, 1, 2)
    expected = t * first.keep_mask(2, 30, 5, 7)
    torch.testing.assert_close(first.apply_(t), expected)
    assert fk.hash_dropout(0.0) is None


@pytest.mark.parametrize("p", [0.0, 0.2])
def test_max_pool_with_winners_and_unpool(p):
    n, c, h, w = 2, 20, 6, 8
    z = torch.randn(n, h, w, c).permute(0, 3, 1, 2)
    z[:, :, 0::2, 0::2] = z[:, :, 1::2, 1::2]     # ties: max_pool2d takes the first in scan order
    z[:, 3] = 0.0
    dropout = fk.hash_dropout(p)
    kept = z * dropout.keep_mask(n, c, h, w) if dropout is not None else z
    pooled, indices = F.max_pool2d(kept, 2, return_indices=True)
    out, winners = fk.max_pool_with_winners(z, dropout)
    torch.testing.assert_close(out, pooled, rtol=0, atol=0)
    rows, cols = indices // w, indices % w
    position = (rows % 2) * 2 + cols % 2
    assert torch.equal(winners.permute(0, 3, 1, 2).long(), position)
    assert [POOL_OFFSETS[k] for k in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    grad_out = torch.randn_like(pooled)
    zz = kept.clone().requires_grad_()
    F.max_pool2d(zz, 2).backward(grad_out)
    expected = zz.grad * (dropout.keep_mask(n, c, h, w) if dropout is not None else 1)
    grad = fk.unpool_gradient(grad_out, winners, dropout, torch.empty(n, h, w, c).permute(0, 3, 1, 2))
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)


def test_pointwise_conv_backward():
    x = torch.randn(2, 6, 7, 40).permute(0, 3, 1, 2)[:, :37]
    weight, bias = torch.randn(2, 37, 1, 1), torch.randn(2)
    gy = torch.randn(2, 2, 6, 7)
    xx, ww, bb = (t.clone().requires_grad_() for t in (x, weight, bias))
    (F.conv2d(xx, ww, bb) * gy).sum().backward()
    grad_x = torch.empty(2, 6, 7, 37).permute(0, 3, 1, 2)
    grad_w, grad_b = fk.pointwise_conv_backward(gy, x, weight, grad_x)
    torch.testing.assert_close(grad_x, xx.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_w, ww.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_b, bb.grad, rtol=1e-5, atol=1e-5)


class HashMaskDropout(nn.Module):
    """Dropout for the reference network with the fused path's masks: draws a HashDropout
    from torch's generator in the same call order as the lean network."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        n, c, h, w = x.shape
        return x * fk.hash_dropout(self.p).keep_mask(n, c, h, w) / (1 - self.p)


def test_network_with_fused_kernels_matches_reference_with_dropout():
    """float32 train step with dropout through the fused kernels (dense layers, transition
    down, classifier) against the straightforward reference with the same masks; the float32
    tolerance of test_network.py's float32 test."""
    from reference_fcdensenet import ReferenceFCDenseNet
    from nnunet_nerve import FCDenseNet

    torch.manual_seed(4)
    net = FCDenseNet(dropout=0.2)
    reference = ReferenceFCDenseNet(dropout=0.2)
    reference.load_state_dict(net.state_dict())
    for module in list(reference.modules()):
        if isinstance(getattr(module, "dropout", None), nn.Dropout):
            module.dropout = HashMaskDropout(module.dropout.p)
    x = torch.randn(4, 1, 64, 48)
    target = torch.randint(0, 2, (4, 64, 48))
    x_net, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(7)
    nn.functional.cross_entropy(out := net.train()(x_net), target).backward()
    torch.manual_seed(7)
    nn.functional.cross_entropy(out_ref := reference.train()(x_ref), target).backward()
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    assert (x_net.grad - x_ref.grad).norm() <= 0.05 * x_ref.grad.norm()
    ref_params = dict(reference.named_parameters())
    for name, param in net.named_parameters():
        ref = ref_params[name].grad
        assert (param.grad - ref).norm() <= 0.05 * ref.norm() + 1e-6, name


def test_switch_and_build_failure_fall_back(monkeypatch, tmp_path):
    """NNUNET_NERVE_FUSED_KERNELS=0 and an unusable compiler both leave the PyTorch path (with
    one warning for the failed build), which computes the same."""
    monkeypatch.setenv(fk.ENV_SWITCH, "0")
    assert "switched off" in fk.unavailable_reason()
    assert not fk.applies(torch.zeros(1, 12, 4, 4), 12)
    monkeypatch.delenv(fk.ENV_SWITCH)
    monkeypatch.setattr(fk, "_state", {})
    monkeypatch.setenv("NNUNET_NERVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="could not be built"):
        reason = fk.unavailable_reason()
    assert "no C compiler" in reason
    assert not list((tmp_path / "cache").glob("*.so")) if (tmp_path / "cache").exists() else True
    from nnunet_nerve import FCDenseNet
    torch.manual_seed(0)
    net = FCDenseNet(dropout=0.0)
    out = net.eval()(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 2, 32, 32)


def test_batch_norm_relu_passes():
    """The transition down's passes: relu(scale x + shift), ReLU backward with its sums, and
    the final affine combination, against PyTorch ops."""
    buf, x = stack_view(2, 40, 36, 5, 6)
    scale, shift = torch.randn(36), torch.randn(36)
    t = torch.empty(2, 5, 6, 36).permute(0, 3, 1, 2)
    torch.testing.assert_close(fk.bn_relu(x, scale, shift, t), bn_relu(x, scale, shift))
    grad = torch.randn(2, 36, 5, 6).contiguous(memory_format=torch.channels_last)
    on = (x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)) > 0
    expected = grad * on
    s1, s2 = fk.relu_gradient_sums_(grad, x, scale, shift)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(s1, expected.double().sum((0, 2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s2, (expected * x).double().sum((0, 2, 3)), rtol=1e-6, atol=1e-6)
    a, b, c = torch.randn(36), torch.randn(36), torch.randn(36)
    combined = a.view(1, -1, 1, 1) * grad + b.view(1, -1, 1, 1) * x + c.view(1, -1, 1, 1)
    torch.testing.assert_close(fk.affine_combine_(grad, x, a, b, c), combined)


def test_batch_var_mean_one_pass():
    buf, x = stack_view(3, 40, 36, 7, 9)
    x.add_(5.0)                                     # a mean far from zero
    var, mean = fk.batch_var_mean(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, ref_mean.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var, ref_var.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h,w", [(7, 9), (1, 4)])
def test_first_conv_and_its_backward(h, w):
    x = torch.randn(3, 1, h, w)
    weight, bias = torch.randn(48, 1, 3, 3), torch.randn(48)
    out = torch.empty(3, h, w, 60).permute(0, 3, 1, 2)[:, 5:53]
    torch.testing.assert_close(fk.first_conv(x, weight, bias, out), F.conv2d(x, weight, bias, padding=1),
                               rtol=1e-5, atol=1e-5)
    gy = torch.randn(3, h, w, 60).permute(0, 3, 1, 2)[:, 5:53]
    ww, bb = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    (F.conv2d(x, ww, bb, padding=1) * gy).sum().backward()
    grad_w, grad_b = fk.first_conv_backward(x, gy)
    torch.testing.assert_close(grad_w, ww.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_b, bb.grad, rtol=1e-5, atol=1e-5)
