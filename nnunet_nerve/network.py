"""The fully-convolutional DenseNet ("Tiramisu", Jégou et al. 2017) of Balsiger et al. (2018).

Defaults are the paper's network: 1 input channel, 2 classes, 4 poolings, dense blocks of
4 layers (bottleneck included) with growth rate 12, a first 3x3 convolution with 48 filters,
dropout 0.2; 979,106 trainable parameters with conv biases, 977,762 without.

Definitions (Jégou et al. 2017, Tiramisu):
- Layer: BN, ReLU, 3x3 conv (stride 1, same padding) to `growth_rate` maps, dropout.
- Dense block of L layers: each layer sees the concatenation of the block input and all
  previous layers' outputs. Down blocks pass on [input, new maps]; the bottleneck and the up
  blocks pass up only their new maps (L * growth_rate), except the last up block, whose
  whole stack [input, new maps] goes to the final 1x1 convolution.
- Transition down: BN, ReLU, 1x1 conv (channels kept), dropout, 2x2 max-pool.
- Transition up: 3x3 transposed conv, stride 2, channels kept, padding 1 and output padding 1:
  the output is exactly twice the input and input pixel (i, j) lands on (2i, 2j), the
  top-left pixel of the 2x2 window it was pooled from (no one-pixel shift).
- The up block's input is [skip connection, upsampled maps] (in that channel order).
- The network returns logits (no softmax).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_nerve.network_blocks import (Workspace, dense_block, fast_path_applies, first_conv,
                                         pointwise_conv, transition_down)


def layers_per_block_list(layers_per_block: int | Sequence[int], n_pool: int) -> list[int]:
    """Expand an int into 2 * n_pool + 1 equal block sizes; check a sequence has that length."""
    if isinstance(layers_per_block, int):
        return [layers_per_block] * (2 * n_pool + 1)
    sizes = [int(n) for n in layers_per_block]
    if len(sizes) != 2 * n_pool + 1:
        raise ValueError(
            f"layers_per_block needs 2 * n_pool + 1 = {2 * n_pool + 1} entries "
            f"(down blocks, bottleneck, up blocks), got {len(sizes)}: {sizes}")
    if min(sizes) < 1:
        raise ValueError(f"every dense block needs at least one layer, got {sizes}")
    return sizes


class DenseLayer(nn.Module):
    """BN, ReLU, 3x3 conv to `growth_rate` maps, dropout."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float, conv_bias: bool):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=conv_bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv(torch.relu(self.norm(x))))


class DenseBlock(nn.Module):
    """`n_layers` dense layers; returns [input, new maps] or only the new maps."""

    def __init__(self, in_channels: int, n_layers: int, growth_rate: int, dropout: float,
                 conv_bias: bool, keep_input: bool):
        super().__init__()
        self.keep_input = keep_input
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + k * growth_rate, growth_rate, dropout, conv_bias)
            for k in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stack = x
        new_maps = []
        for layer in self.layers:
            new = layer(stack)
            new_maps.append(new)
            stack = torch.cat([stack, new], dim=1)
        return stack if self.keep_input else torch.cat(new_maps, dim=1)


class TransitionDown(nn.Module):
    """BN, ReLU, 1x1 conv (channels kept), dropout, 2x2 max-pool."""

    def __init__(self, channels: int, dropout: float, conv_bias: bool):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=conv_bias)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.dropout(self.conv(torch.relu(self.norm(x)))))


def transition_up(channels: int, conv_bias: bool) -> nn.ConvTranspose2d:
    """3x3 transposed conv, stride 2: (H, W) -> (2H, 2W), input (i, j) centred on (2i, 2j)."""
    return nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1,
                              bias=conv_bias)


class FCDenseNet(nn.Module):
    """Fully-convolutional DenseNet for 2D segmentation; returns logits (N, num_classes, H, W).

    `layers_per_block`: an int (every block) or 2 * n_pool + 1 sizes (down blocks,
    bottleneck, up blocks). `conv_bias=False` drops the bias of every convolution that is
    followed by a batch norm (all but the final 1x1). Input sides must divide by 2 ** n_pool.

    Jégou et al.'s variants: FC-DenseNet56 = (n_pool=5, growth_rate=12, layers_per_block=4),
    67 = (5, 16, 5), 103 = (5, 16, [4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4]).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, n_pool: int = 4,
                 growth_rate: int = 12, layers_per_block: int | Sequence[int] = 4,
                 first_filters: int = 48, dropout: float = 0.2, conv_bias: bool = True):
        super().__init__()
        if n_pool < 1:
            raise ValueError(f"n_pool must be at least 1, got {n_pool}")
        sizes = layers_per_block_list(layers_per_block, n_pool)
        self.n_pool = n_pool
        self.layers_per_block = sizes
        self.growth_rate = growth_rate

        self.first_conv = nn.Conv2d(in_channels, first_filters, 3, padding=1, bias=conv_bias)
        channels = first_filters
        skip_channels = []
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        for i in range(n_pool):
            self.down_blocks.append(
                DenseBlock(channels, sizes[i], growth_rate, dropout, conv_bias, keep_input=True))
            channels += sizes[i] * growth_rate
            skip_channels.append(channels)
            self.transitions_down.append(TransitionDown(channels, dropout, conv_bias))
        self.bottleneck = DenseBlock(channels, sizes[n_pool], growth_rate, dropout, conv_bias,
                                     keep_input=False)
        up_channels = sizes[n_pool] * growth_rate
        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(n_pool):
            self.transitions_up.append(transition_up(up_channels, conv_bias))
            block_in = skip_channels[n_pool - 1 - i] + up_channels
            last = i == n_pool - 1
            n_layers = sizes[n_pool + 1 + i]
            self.up_blocks.append(
                DenseBlock(block_in, n_layers, growth_rate, dropout, conv_bias, keep_input=last))
            up_channels = block_in + n_layers * growth_rate if last else n_layers * growth_rate
        self.final_conv = nn.Conv2d(up_channels, num_classes, 1, bias=True)
        self.workspace = Workspace()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-uniform convolution weights and zero biases, as Jégou et al.'s Lasagne code."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def check_input(self, x: torch.Tensor) -> None:
        """ValueError unless x is (N, C, H, W) with H and W divisible by 2 ** n_pool."""
        factor = 2 ** self.n_pool
        if x.dim() != 4:
            raise ValueError(f"FCDenseNet expects a 4D (N, C, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"FCDenseNet with n_pool={self.n_pool} needs input sides divisible by {factor}, "
                f"got {x.shape[2]} x {x.shape[3]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if fast_path_applies(self, x):
            return self.forward_lean(x)
        return self.forward_straightforward(x)

    def forward_straightforward(self, x: torch.Tensor) -> torch.Tensor:
        """One torch.cat per layer; used on GPU (AMP, torch.compile) and with SyncBatchNorm."""
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

    def forward_lean(self, x: torch.Tensor) -> torch.Tensor:
        """The same function on CPU with nnunet_nerve.network_blocks' buffer-per-block
        kernels: channels-last, no concatenation, BN + ReLU recomputed in backward."""
        ws = self.workspace
        # one buffer per resolution: [down block input, its new maps (= the skip), upsampled
        # maps, up block's new maps]
        levels = [{"spare_channels": up.out_channels + len(block.layers) * self.growth_rate,
                   "name": f"level{i}"}
                  for i, (up, block) in enumerate(zip(reversed(self.transitions_up),
                                                      reversed(self.up_blocks)))]
        x = first_conv(self.first_conv, ws, x)
        skips = []
        for block, down, level in zip(self.down_blocks, self.transitions_down, levels):
            x = dense_block(block, ws, [x], keep_input=True, level=level)
            skips.append(x)
            x = transition_down(down, ws, x, level)
        x = dense_block(self.bottleneck, ws, [x], keep_input=False)
        for up, block, skip, level in zip(self.transitions_up, self.up_blocks, reversed(skips),
                                          reversed(levels)):
            # a channels-last input (x is a slice of its block's buffer) gives the transposed
            # convolution's backward a channels-last input gradient (NCHW otherwise)
            upsampled = up(x.contiguous(memory_format=torch.channels_last))
            x = dense_block(block, ws, [skip, upsampled], keep_input=block.keep_input, level=level)
        return pointwise_conv(self.final_conv, x, ws)
