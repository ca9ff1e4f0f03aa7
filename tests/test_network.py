"""FCDenseNet: the paper's counts, shapes, transposed-conv alignment, input checks, and
equality (outputs and gradients) with the straightforward reference in tests/."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnunet_nerve import FCDenseNet
from reference_fcdensenet import ReferenceFCDenseNet


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count(module: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in module.modules())


def test_paper_configuration_counts():
    net = FCDenseNet()
    assert trainable(net) == 979_106
    assert trainable(FCDenseNet(conv_bias=False)) == 977_762
    assert count(net, nn.Conv2d) == 42
    assert count(net, nn.ConvTranspose2d) == 4
    assert count(net, nn.BatchNorm2d) == 40
    assert count(net, nn.MaxPool2d) == 4


def test_paper_configuration_channels():
    net = FCDenseNet()
    assert [t.norm.num_features for t in net.transitions_down] == [96, 144, 192, 240]
    assert net.bottleneck.layers[0].norm.num_features == 240
    assert net.transitions_up[0].in_channels == 48
    assert net.final_conv.in_channels == 192 and net.final_conv.out_channels == 2
    # without biases only the final 1x1 conv (not followed by a batch norm) keeps one
    with_bias = [m for m in FCDenseNet(conv_bias=False).modules()
                 if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None]
    assert len(with_bias) == 1


@pytest.mark.parametrize("name, kwargs, expected", [
    # 3 input channels, 11 classes (CamVid) as in Jégou et al. 2017; their Table reports
    # 1.5M, 3.5M and 9.4M. Lasagne's count_params also counts the batch norms' running
    # mean and inverse std: adding those gives 1,397,963, 3,502,923 and 9,425,163.
    ("FC-DenseNet56", dict(n_pool=5, growth_rate=12, layers_per_block=4), 1_376_795),
    ("FC-DenseNet67", dict(n_pool=5, growth_rate=16, layers_per_block=5), 3_463_243),
    ("FC-DenseNet103", dict(n_pool=5, growth_rate=16,
                            layers_per_block=[4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4]), 9_322_091),
])
def test_jegou_variants_build(name, kwargs, expected):
    net = FCDenseNet(in_channels=3, num_classes=11, **kwargs)
    assert trainable(net) == expected, name
    running = sum(2 * m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    published = {"FC-DenseNet56": 1.5e6, "FC-DenseNet67": 3.5e6, "FC-DenseNet103": 9.4e6}[name]
    assert abs(trainable(net) + running - published) / published < 0.07
    out = net.eval()(torch.randn(1, 3, 32, 64))
    assert out.shape == (1, 11, 32, 64)


def test_layers_per_block_length_checked():
    with pytest.raises(ValueError, match="2 \\* n_pool \\+ 1"):
        FCDenseNet(layers_per_block=[4, 4, 4])


def test_output_shape_and_dtype_non_square():
    net = FCDenseNet().eval()
    x = torch.randn(2, 1, 48, 80)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 2, 48, 80)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(1, 1, 40, 32), (1, 1, 32, 36), (1, 1, 8, 8)])
def test_sides_not_divisible_raise(shape):
    net = FCDenseNet()
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(*shape))


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match="4D"):
        FCDenseNet()(torch.randn(1, 32, 32))


def test_transposed_conv_centred_delta_is_zero_insertion():
    """A centred delta kernel puts input (i, j) on output (2i, 2j): no one-pixel shift."""
    up = FCDenseNet().transitions_up[0]
    channels = up.in_channels
    with torch.no_grad():
        up.weight.zero_()
        up.weight[range(channels), range(channels), 1, 1] = 1.0
        up.bias.zero_()
        x = torch.randn(1, channels, 5, 7)
        out = up(x)
    assert out.shape == (1, channels, 10, 14)
    expected = torch.zeros_like(out)
    expected[:, :, ::2, ::2] = x
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_transposed_conv_can_be_nearest_neighbour():
    """Taps (1..2, 1..2) of the kernel cover exactly the 2x2 window a pooled pixel came from."""
    up = FCDenseNet().transitions_up[0]
    channels = up.in_channels
    with torch.no_grad():
        up.weight.zero_()
        up.weight[range(channels), range(channels), 1:, 1:] = 1.0
        up.bias.zero_()
        x = torch.randn(1, channels, 5, 7)
        out = up(x)
    torch.testing.assert_close(out, nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


def test_eval_mode_is_deterministic():
    torch.manual_seed(0)
    net = FCDenseNet().eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)


def test_train_mode_dropout_is_active():
    torch.manual_seed(0)
    net = FCDenseNet().train()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = FCDenseNet()
    x = torch.randn(2, 1, 32, 32)
    target = torch.randint(0, 2, (2, 32, 32))
    nn.functional.cross_entropy(net(x), target).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_batch_norms_convert_to_sync_batch_norm():
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(FCDenseNet())
    assert count(converted, nn.SyncBatchNorm) == 40
    assert count(converted, nn.BatchNorm2d) == 0


def assert_same_gradients(net: nn.Module, reference: nn.Module, rtol: float, atol: float):
    """Every parameter's gradient equals the reference's: |g - g_ref| <= rtol |g_ref| + atol
    (Frobenius norms). The biases of convolutions followed by a training-mode batch norm have
    an exactly-zero true gradient (the norm removes any constant): both sides give rounding
    noise there, which atol absorbs."""
    ref_params = dict(reference.named_parameters())
    for name, p in net.named_parameters():
        ref = ref_params[name].grad
        error = (p.grad - ref).norm()
        assert error <= rtol * ref.norm() + atol, \
            f"{name}: gradient error {error:.2e}, gradient norm {ref.norm():.2e}"


def paired(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    net = FCDenseNet(**kwargs)
    reference = ReferenceFCDenseNet(**kwargs)
    assert list(net.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(net.state_dict())
    return net, reference


SMALL = dict(conv_bias=False, n_pool=3, growth_rate=8, layers_per_block=[2, 3, 1, 2, 3, 4, 2],
             in_channels=2, num_classes=3, first_filters=16)


def train_step_pair(net, reference, x, target):
    x_net, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = net.train()(x_net), reference.train()(x_ref)
    nn.functional.cross_entropy(out, target).backward()
    nn.functional.cross_entropy(out_ref, target).backward()
    return out, out_ref, x_net.grad, x_ref.grad


@pytest.mark.parametrize("kwargs", [dict(dropout=0.0), dict(dropout=0.0, **SMALL)])
def test_matches_reference_in_train_mode_float64(kwargs):
    """Outputs, input and parameter gradients, running statistics, in float64: there the
    lean kernels must agree with the straightforward layout to ~1e-10 (in float32, rounding
    differences can flip a max-pool winner between near-equal values, see below)."""
    net, reference = paired(**kwargs)
    net.double(), reference.double()
    x = torch.randn(4, kwargs.get("in_channels", 1), 64, 48, dtype=torch.float64)
    target = torch.randint(0, kwargs.get("num_classes", 2), (4, 64, 48))
    out, out_ref, grad_x, grad_x_ref = train_step_pair(net, reference, x, target)
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad_x, grad_x_ref, rtol=1e-7, atol=1e-12)
    assert_same_gradients(net, reference, rtol=1e-8, atol=1e-12)
    ref_buffers = dict(reference.named_buffers())
    for name, b in net.named_buffers():   # running stats updated once per forward
        torch.testing.assert_close(b, ref_buffers[name], rtol=1e-9, atol=1e-12, msg=name)


def test_matches_reference_in_train_mode_float32():
    """float32 (what training runs): same outputs elementwise, same gradients up to rounding
    amplified through 40 training-mode batch norms (relative error of the gradient norm)."""
    net, reference = paired(1, dropout=0.0)
    x = torch.randn(4, 1, 64, 48)
    target = torch.randint(0, 2, (4, 64, 48))
    out, out_ref, grad_x, grad_x_ref = train_step_pair(net, reference, x, target)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    assert (grad_x - grad_x_ref).norm() <= 0.05 * grad_x_ref.norm()
    assert_same_gradients(net, reference, rtol=0.05, atol=1e-6)


def test_matches_reference_in_eval_mode():
    net, reference = paired(0)
    # non-trivial running statistics and affine parameters
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)   # negative scales take the other clamp side
                m.weight[0] = 0.0              # and a switched-off channel
                m.bias.uniform_(-0.2, 0.2)
    net.load_state_dict(reference.state_dict())
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


def test_inference_mode_then_training_then_inference_mode():
    """nnU-Net predicts under torch.inference_mode; the reused workspace must not leak
    inference tensors into a later training step (or the other way round)."""
    net = FCDenseNet()
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        first = net.eval()(x)
    loss = net.train()(x).square().mean()
    loss.backward()
    with torch.inference_mode():
        again = net.eval()(x)
    assert first.shape == again.shape == (2, 2, 32, 32)
    assert net.first_conv.weight.grad is not None


def test_deepcopy_and_state_dict_round_trip():
    net = FCDenseNet()
    clone = copy.deepcopy(net)
    clone.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), net.eval()(x))


class SharedMasks:
    """Dropout keep-masks drawn with torch.rand from torch's default generator, in call
    order: seeded alike, the lean kernels and the reference draw the same masks in the same
    order and shapes, so both drop the same units. The lean kernels draw each mask a second
    time in the backward pass from the generator state saved before the first draw."""

    def __init__(self):
        self.calls = 0

    def __call__(self, shape, p, like):
        if p <= 0:
            return None
        self.calls += 1
        return torch.rand(tuple(shape)) >= p


class MaskDropout(nn.Module):
    def __init__(self, p: float, masks: SharedMasks):
        super().__init__()
        self.p, self.masks = p, masks

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * self.masks(x.shape, self.p, x) / (1 - self.p)


@pytest.mark.parametrize("one_image_chunks", [False, True])
def test_matches_reference_with_dropout_masks(monkeypatch, one_image_chunks):
    import nnunet_nerve.network_blocks as blocks

    if one_image_chunks:   # recompute BN + ReLU image by image, as large batches do
        monkeypatch.setattr(blocks, "CHUNK_ELEMENTS", 1)
    net, reference = paired(3, dropout=0.2)
    net.double(), reference.double()
    lean_masks = SharedMasks()
    monkeypatch.setattr(blocks, "dropout_mask", lean_masks)
    for module in list(reference.modules()):
        if isinstance(getattr(module, "dropout", None), nn.Dropout):
            module.dropout = MaskDropout(module.dropout.p, SharedMasks())
    x = torch.randn(4, 1, 64, 48, dtype=torch.float64)
    target = torch.randint(0, 2, (4, 64, 48))
    x_net, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(7)
    nn.functional.cross_entropy(out := net.train()(x_net), target).backward()
    after_lean = torch.get_rng_state()
    torch.manual_seed(7)
    nn.functional.cross_entropy(out_ref := reference.train()(x_ref), target).backward()
    # drawn twice (forward, backward), and the generator left where the forward pass left it
    assert lean_masks.calls == 2 * 40
    assert torch.equal(after_lean, torch.get_rng_state())
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x_net.grad, x_ref.grad, rtol=1e-7, atol=1e-12)
    assert_same_gradients(net, reference, rtol=1e-8, atol=1e-12)


def test_lean_path_one_buffer_per_resolution(monkeypatch):
    """Down and up block of a resolution share one buffer: [input, skip maps, upsampled,
    up block's maps], kept in the workspace from call to call; the bottleneck has its own.
    No other stack-sized buffers."""
    import nnunet_nerve.network_blocks as blocks

    made, kept = [], []
    original_empty = blocks.empty_channels_last
    original_kept = blocks.Workspace.kept_channels_last

    def recording_empty(n, c, h, w, like):
        made.append((c, h, w))
        return original_empty(n, c, h, w, like)

    def recording_kept(self, name, n, c, h, w, like, owner=None):
        kept.append((name, c, h, w))
        return original_kept(self, name, n, c, h, w, like, owner)

    monkeypatch.setattr(blocks, "empty_channels_last", recording_empty)
    monkeypatch.setattr(blocks.Workspace, "kept_channels_last", recording_kept)
    net = FCDenseNet()
    net.train()(torch.randn(2, 1, 64, 64))   # the forward pass makes the kept buffers
    assert kept == [("level0", 192, 64, 64), ("level1", 240, 32, 32),
                    ("level2", 288, 16, 16), ("level3", 336, 8, 8)]
    assert made == [(288, 4, 4)]


def test_kept_buffers_not_reused_while_a_graph_needs_them():
    """Two training forwards before one backward (gradient accumulation): the second must not
    overwrite the buffers the first one's backward reads; the gradients equal those of two
    separate steps."""
    torch.manual_seed(0)
    net = FCDenseNet(dropout=0.0, **{k: v for k, v in SMALL.items()})
    x1, x2 = torch.randn(2, 2, 32, 32), torch.randn(2, 2, 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    loss = nn.functional.cross_entropy
    separate = copy.deepcopy(net)
    loss(separate.train()(x1), target).backward()
    loss(separate(x2), target).backward()
    (loss(net.train()(x1), target) + loss(net(x2), target)).backward()
    ref = dict(separate.named_parameters())
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, ref[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_dropout_mask_keep_probability_and_layout():
    """16-bit lanes: the keep fraction of 4 million draws lies within 5 standard deviations
    of 1 - p (0.8, 0.5, 0.9), for every lane position of the 64-bit draws alike; the mask is
    channels-last like the maps it multiplies."""
    import nnunet_nerve.network_blocks as blocks

    like = torch.empty(0)
    for p in (0.2, 0.5, 0.1):
        mask = blocks.dropout_mask((4, 16, 256, 256), p, like)
        assert mask.dtype == torch.bool and mask.is_contiguous(memory_format=torch.channels_last)
        lanes = mask.permute(0, 2, 3, 1).reshape(-1, 4).double()
        sigma = ((1 - p) * p / lanes.shape[0]) ** 0.5
        for lane in range(4):
            assert abs(lanes[:, lane].mean().item() - (1 - p)) < 5 * sigma, (p, lane)
    assert blocks.dropout_mask((2, 3, 4, 4), 0.0, like) is None


def test_pool_winners_match_max_pool_indices_with_ties():
    """The kept winner of each 2x2 window is the one F.max_pool2d picks (first maximum in
    scan order), also where values tie; unpool_gradient routes gradients as max_pool2d's
    backward does."""
    import nnunet_nerve.network_blocks as blocks

    z = torch.randint(0, 3, (2, 5, 8, 6)).float().contiguous(memory_format=torch.channels_last)
    pooled, indices = nn.functional.max_pool2d(z, 2, return_indices=True)
    winners = blocks.pool_winners(z, pooled)
    rows, cols = indices // z.shape[3], indices % z.shape[3]
    expected = (rows % 2) * 2 + cols % 2
    assert torch.equal(winners.long(), expected)
    g = torch.randn_like(pooled)
    zz = z.clone().requires_grad_()
    nn.functional.max_pool2d(zz, 2).backward(g)
    out = torch.empty_like(z)
    torch.testing.assert_close(blocks.unpool_gradient(g, winners, out), zz.grad)


def test_matches_reference_with_batch_norm_scales_near_zero():
    """A batch-norm scale below MIN_ABS_GAMMA_FOR_WEIGHT_SUMS switches that layer's input sums
    from the weight-gradient identity (which divides by the scale) to explicit sums; negative
    scales and a non-zero shift exercise the identity's other terms."""
    net, reference = paired(5, dropout=0.0, **SMALL)
    with torch.no_grad():
        for i, m in enumerate(m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)):
            m.weight.uniform_(-1.5, 1.5)
            m.bias.uniform_(-0.3, 0.3)
            if i % 2:
                m.weight[0] = 0.0
    net.load_state_dict(reference.state_dict())
    net.double(), reference.double()
    x = torch.randn(3, 2, 32, 32, dtype=torch.float64)
    target = torch.randint(0, 3, (3, 32, 32))
    out, out_ref, grad_x, grad_x_ref = train_step_pair(net, reference, x, target)
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad_x, grad_x_ref, rtol=1e-7, atol=1e-12)
    assert_same_gradients(net, reference, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("h,w", [(1, 1), (2, 5), (3, 3), (4, 7), (16, 12)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bn_relu_conv3x3_matches_the_composition(h, w, with_bias):
    """The clamp form with the offset's response in the bias inside and on the border strips
    equals conv2d(relu(scale x + shift)) on images with and without an interior, for
    positive, negative and zero scales."""
    import nnunet_nerve.network_blocks as blocks

    torch.manual_seed(h * 10 + w)
    x = torch.randn(2, 5, h, w, dtype=torch.float64)
    scale, shift = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    scale[0] = 0.0
    weight = torch.randn(3, 5, 3, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64) if with_bias else None
    expected = nn.functional.conv2d(torch.relu(scale.view(1, -1, 1, 1) * x + shift.view(1, -1, 1, 1)),
                                    weight, bias, padding=1)
    out = blocks.bn_relu_conv3x3(x, scale, shift, weight, bias, torch.empty_like(x))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
