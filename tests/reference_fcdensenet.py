"""Straightforward reference FC-DenseNet (one torch.cat per layer) for checking the fast one.

Same modules, same state_dict keys and the same definitions as nnunet_nerve.network's
docstring; written as plainly as possible so that its outputs and gradients are the
ground truth the optimised implementation is compared with.
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
