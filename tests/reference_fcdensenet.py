"""Straightforward reference FC-DenseNet (one torch.cat per layer), and the helpers the
network tests compare with it.

Same modules, same state_dict keys and the same definitions as nnunet_nerve.network.fcdensenet's
docstring, written independently as plainly as possible (nn.Sequential of BN, ReLU, conv,
dropout): its outputs, gradients, running statistics and dropout draws are the ground truth
nnunet_nerve.FCDenseNet is compared with, in training (plain and checkpointed) and at
inference.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def dense_layer(in_channels, growth_rate, dropout, conv_bias):
    return nn.Sequential(OrderedDict(
        norm=nn.BatchNorm2d(in_channels),
        relu=nn.ReLU(),
        conv=nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=conv_bias),
        dropout=nn.Dropout(dropout),
    ))


class ReferenceDenseBlock(nn.Module):
    def __init__(self, in_channels, n_layers, growth_rate, dropout, conv_bias, keep_input):
        super().__init__()
        self.keep_input = keep_input
        self.layers = nn.ModuleList(
            dense_layer(in_channels + k * growth_rate, growth_rate, dropout, conv_bias)
            for k in range(n_layers))

    def forward(self, x):
        new_maps = []
        for layer in self.layers:
            new_maps.append(layer(x))
            x = torch.cat([x, new_maps[-1]], dim=1)
        return x if self.keep_input else torch.cat(new_maps, dim=1)


class ReferenceFCDenseNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=2, n_pool=4, growth_rate=12,
                 layers_per_block=4, first_filters=48, dropout=0.2, conv_bias=True):
        super().__init__()
        sizes = ([layers_per_block] * (2 * n_pool + 1) if isinstance(layers_per_block, int)
                 else list(layers_per_block))
        self.first_conv = nn.Conv2d(in_channels, first_filters, 3, padding=1, bias=conv_bias)
        channels, skip_channels = first_filters, []
        self.down_blocks, self.transitions_down = nn.ModuleList(), nn.ModuleList()
        for i in range(n_pool):
            self.down_blocks.append(
                ReferenceDenseBlock(channels, sizes[i], growth_rate, dropout, conv_bias, True))
            channels += sizes[i] * growth_rate
            skip_channels.append(channels)
            self.transitions_down.append(nn.Sequential(OrderedDict(
                norm=nn.BatchNorm2d(channels),
                relu=nn.ReLU(),
                conv=nn.Conv2d(channels, channels, 1, bias=conv_bias),
                dropout=nn.Dropout(dropout),
                pool=nn.MaxPool2d(2),
            )))
        self.bottleneck = ReferenceDenseBlock(channels, sizes[n_pool], growth_rate, dropout,
                                              conv_bias, False)
        up = sizes[n_pool] * growth_rate
        self.transitions_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for i in range(n_pool):
            self.transitions_up.append(nn.ConvTranspose2d(
                up, up, 3, stride=2, padding=1, output_padding=1, bias=conv_bias))
            block_in = skip_channels[n_pool - 1 - i] + up
            last = i == n_pool - 1
            self.up_blocks.append(ReferenceDenseBlock(
                block_in, sizes[n_pool + 1 + i], growth_rate, dropout, conv_bias, last))
            up = sizes[n_pool + 1 + i] * growth_rate + (block_in if last else 0)
        self.final_conv = nn.Conv2d(up, num_classes, 1)

    def forward(self, x):
        x = self.first_conv(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.transitions_up, self.up_blocks, reversed(skips)):
            x = block(torch.cat([skip, up(x)], dim=1))
        return self.final_conv(x)


# ----------------------------------------------------------------------------- comparison helpers

#: a small configuration with every structural option different from the paper's
SMALL = dict(conv_bias=False, n_pool=3, growth_rate=8, layers_per_block=[2, 3, 1, 2, 3, 4, 2],
             in_channels=2, num_classes=3, first_filters=16)


def paired(seed: int = 0, network_kwargs: dict | None = None, **kwargs):
    """(FCDenseNet, ReferenceFCDenseNet) with the same weights; `network_kwargs` go to
    FCDenseNet only (memory_efficient, buffered_inference)."""
    from nnunet_nerve import FCDenseNet

    torch.manual_seed(seed)
    net = FCDenseNet(**kwargs, **(network_kwargs or {}))
    reference = ReferenceFCDenseNet(**kwargs)
    assert list(net.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(net.state_dict())
    return net, reference


def randomise_batch_norms(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters: negative scales (the other side
    of the ReLU), one switched-off channel per norm, non-zero shifts."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=generator, dtype=t.dtype) * (hi - lo) + lo)

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                uniform(m.running_mean, -0.5, 0.5)
                uniform(m.running_var, 0.5, 2.0)
                uniform(m.weight, -1.5, 1.5)
                m.weight[0] = 0.0
                uniform(m.bias, -0.2, 0.2)


def training_step(net: nn.Module, x: torch.Tensor, target: torch.Tensor, seed: int = 7):
    """Seeded train-mode forward and cross-entropy backward; returns (output, input gradient,
    generator state afterwards)."""
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)
    out = net.train()(x)
    nn.functional.cross_entropy(out.float(), target).backward()
    return out, x.grad, torch.get_rng_state()


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


def assert_same_buffers(net: nn.Module, reference: nn.Module, rtol: float, atol: float):
    """Running means, variances and num_batches_tracked equal the reference's."""
    ref_buffers = dict(reference.named_buffers())
    for name, b in net.named_buffers():
        torch.testing.assert_close(b, ref_buffers[name], rtol=rtol, atol=atol, msg=name)
