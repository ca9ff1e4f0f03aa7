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

One implementation on every device: plain `nn.BatchNorm2d`, `nn.Conv2d`, `nn.Dropout`,
`nn.ConvTranspose2d` and `nn.MaxPool2d` modules called in the published order, so that a
seed draws the same dropout masks as any plain implementation, on the CPU and on a GPU, and
autocast, `torch.compile` and `nn.SyncBatchNorm.convert_sync_batchnorm` apply as to any
module. Two explicit, tested variations of how (not what) it computes:

- `memory_efficient=True` (the default): Pleiss et al. (2017) as torchvision's DenseNet does
  it, while training with gradients: nothing of a dense layer's BN + ReLU + convolution is
  kept for the backward pass but its inputs; it is recomputed there. The recomputed batch
  norm normalises with the same batch statistics but does not update the running statistics
  a second time (`num_batches_tracked` too counts one step).
  With `by_parts=True` (the default; `nnunet_nerve.network.by_parts`) no concatenation is
  ever formed in training: batch norm and ReLU act channel by channel, and a convolution of
  concatenated maps is the sum of the parts' convolutions with their slices of the weight,
  so each dense layer, each transition down and the final 1x1 convolution read the list of
  maps they would concatenate, each part's BN + ReLU + convolution under its own checkpoint
  (the backward pass recomputes one part at a time, never a whole concatenation); each
  transition down runs under a checkpoint too (only its input maps, kept anyway as the skip
  connection, and its pooled output are kept; the dropout mask replays). Sums of fp16/bf16
  terms accumulate in float32.
  The result equals the concatenated form up to the order of the floating-point sums. A
  SyncBatchNorm (DDP) normalises a whole input in its own forward: layers whose batch norm
  is not a plain BatchNorm2d, and `by_parts=False`, concatenate under one checkpoint per
  layer (torchvision's form).
  Around them, each resolution level runs under a checkpoint of its own
  (`checkpoint_levels`, on with `memory_efficient`): on the way down first convolution (top
  level) + dense block + transition down, on the way up transition up + dense block (+ final
  1x1 convolution at the top), so that the forward keeps only each level's input and skip
  connection, with the RNG state preserved so that the dropout masks replay. The paper
  network's training step at batch 8 x 320 x 320 peaks at 13.7 GiB plain, 4.8 GiB with
  concatenations under checkpoints and 3.1 GiB by parts (docs/performance.md).
- `buffered_inference=True` (the default): on the CPU in eval mode without autograd
  (`torch.no_grad`, `torch.inference_mode`: prediction; `takes_inference_path` has the
  rule) `nnunet_nerve.network.inference.forward` computes the same function (eval mode has
  no dropout and fixed batch-norm statistics) in one buffer per resolution, without a
  concatenation or a fresh batch-norm output per layer; the tests check it against the
  plain path.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nnunet_nerve.network import inference as network_inference
from nnunet_nerve.network.by_parts import (bn_relu_conv_by_parts, buffers_restored, concatenate, conv_by_parts,
                                           splits_into_parts)


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
    """BN, ReLU, 3x3 conv to `growth_rate` maps, dropout; input: the list of feature maps
    whose channel concatenation the layer reads."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float, conv_bias: bool,
                 memory_efficient: bool = True, by_parts: bool = True):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=conv_bias)
        self.dropout = nn.Dropout(dropout)
        self.memory_efficient = memory_efficient
        self.by_parts = by_parts

    def bn_relu_conv(self, *features: torch.Tensor) -> torch.Tensor:
        """conv(relu(norm(cat(features)))): the part Pleiss et al. recompute in backward. The
        ReLU works in place on the batch norm's output (which its backward does not need),
        as in torchvision's DenseNet: one layer-input-sized tensor fewer."""
        return self.conv(torch.relu_(self.norm(concatenate(features))))

    def recomputation_contexts(self):
        """checkpoint's context_fn: the forward as is; the recomputation undoes its running-stats update."""
        return nullcontext(), buffers_restored(self.norm)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        lean = self.memory_efficient and self.training and torch.is_grad_enabled()
        if lean and self.by_parts and splits_into_parts(self.norm):
            new = bn_relu_conv_by_parts(self.norm, self.conv, features, checkpointed=True)
        elif lean:
            # The concatenation under one checkpoint (torchvision's way); also what a
            # SyncBatchNorm (DDP) gets: it normalises the whole input in its own forward.
            # Eagerly, the recomputation runs the batch norm's module again: its second
            # running-stats update is undone. Under torch.compile, AOTAutograd turns the
            # update into a forward-graph output and recomputes only values in the
            # backward graph, so there is nothing to undo (and dynamo takes no context_fn).
            # Nothing random inside (dropout comes after): no RNG state to preserve.
            contexts = {} if torch.compiler.is_compiling() else {"context_fn": self.recomputation_contexts}
            new = checkpoint(self.bn_relu_conv, *features, use_reentrant=False,
                             preserve_rng_state=False, **contexts)
        else:
            new = self.bn_relu_conv(*features)
        return self.dropout(new)


class DenseBlock(nn.Module):
    """`n_layers` dense layers; returns [input, new maps] or only the new maps."""

    def __init__(self, in_channels: int, n_layers: int, growth_rate: int, dropout: float,
                 conv_bias: bool, keep_input: bool, memory_efficient: bool = True, by_parts: bool = True):
        super().__init__()
        self.keep_input = keep_input
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + k * growth_rate, growth_rate, dropout, conv_bias,
                       memory_efficient, by_parts)
            for k in range(n_layers))

    def features(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """[*inputs, new maps of each layer], unconcatenated; `inputs`: the feature maps whose
        concatenation is the block input."""
        features = list(inputs)
        for layer in self.layers:
            features.append(layer(features))
        return features

    def outputs(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """The maps the block passes on, unconcatenated: all features or only the new maps."""
        features = self.features(*inputs)
        return features if self.keep_input else features[len(inputs):]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return concatenate(self.outputs(*inputs))


class TransitionDown(nn.Module):
    """BN, ReLU, 1x1 conv (channels kept), dropout, 2x2 max-pool; input: the feature maps
    whose channel concatenation it reads."""

    def __init__(self, channels: int, dropout: float, conv_bias: bool, memory_efficient: bool = True,
                 by_parts: bool = True):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=conv_bias)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.MaxPool2d(2)
        self.memory_efficient = memory_efficient
        self.by_parts = by_parts

    def lean(self) -> bool:
        """Whether forward computes by parts under a checkpoint (see FCDenseNet's by_parts)."""
        return (self.memory_efficient and self.by_parts and self.training and torch.is_grad_enabled()
                and splits_into_parts(self.norm))

    def forward_by_parts(self, *parts: torch.Tensor) -> torch.Tensor:
        return self.pool(self.dropout(bn_relu_conv_by_parts(self.norm, self.conv, parts, checkpointed=True)))

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        if self.lean():
            # Only the parts (kept anyway: the skip connection) and the pooled maps are kept;
            # the backward pass recomputes the rest with the same dropout mask.
            contexts = {} if torch.compiler.is_compiling() else {
                "context_fn": lambda: (nullcontext(), buffers_restored(self.norm))}
            return checkpoint(self.forward_by_parts, *parts, use_reentrant=False, preserve_rng_state=True, **contexts)
        return self.pool(self.dropout(self.conv(torch.relu_(self.norm(concatenate(parts))))))


def transition_up(channels: int, conv_bias: bool) -> nn.ConvTranspose2d:
    """3x3 transposed conv, stride 2: (H, W) -> (2H, 2W), input (i, j) centred on (2i, 2j)."""
    return nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1,
                              bias=conv_bias)


def down_level(stem, block, down, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One resolution level on the way down: (skip connection as its list of parts, pooled
    maps) of down(block(stem(x))); stem is the first convolution at the top level, else None."""
    skip = block.outputs(x if stem is None else stem(x))
    return skip, down(*skip)


def up_level(up, block, head, skip: Sequence[torch.Tensor], x: Sequence[torch.Tensor]):
    """One resolution level on the way up: block(skip, up(x)) (lists of parts), through
    `head` (the final 1x1 convolution on the parts at the top level, else None)."""
    parts = block.outputs(*skip, up(concatenate(x)))
    return parts if head is None else head(parts)


class FCDenseNet(nn.Module):
    """Fully-convolutional DenseNet for 2D segmentation; returns logits (N, num_classes, H, W).

    `layers_per_block`: an int (every block) or 2 * n_pool + 1 sizes (down blocks,
    bottleneck, up blocks). `conv_bias=False` drops the bias of every convolution that is
    followed by a batch norm (all but the final 1x1). Input sides must divide by 2 ** n_pool.
    `memory_efficient`: recompute every dense layer's BN + ReLU + conv (and each resolution
    level) in the backward pass while training; `by_parts`: without forming concatenations;
    `buffered_inference`: in eval mode without autograd, write each dense block into one
    buffer (module docstring). The parameters, the function and the state_dict are the same
    either way.

    Jégou et al.'s variants: FC-DenseNet56 = (n_pool=5, growth_rate=12, layers_per_block=4),
    67 = (5, 16, 5), 103 = (5, 16, [4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4]).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, n_pool: int = 4,
                 growth_rate: int = 12, layers_per_block: int | Sequence[int] = 4,
                 first_filters: int = 48, dropout: float = 0.2, conv_bias: bool = True,
                 memory_efficient: bool = True, buffered_inference: bool = True,
                 checkpoint_levels: bool | None = None, by_parts: bool = True):
        super().__init__()
        if n_pool < 1:
            raise ValueError(f"n_pool must be at least 1, got {n_pool}")
        sizes = layers_per_block_list(layers_per_block, n_pool)
        self.n_pool = n_pool
        self.layers_per_block = sizes
        self.growth_rate = growth_rate
        self.buffered_inference = buffered_inference

        def block(channels, n_layers, keep_input):
            return DenseBlock(channels, n_layers, growth_rate, dropout, conv_bias, keep_input,
                              memory_efficient, by_parts)

        self.first_conv = nn.Conv2d(in_channels, first_filters, 3, padding=1, bias=conv_bias)
        channels = first_filters
        skip_channels = []
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        for i in range(n_pool):
            self.down_blocks.append(block(channels, sizes[i], keep_input=True))
            channels += sizes[i] * growth_rate
            skip_channels.append(channels)
            self.transitions_down.append(TransitionDown(channels, dropout, conv_bias, memory_efficient, by_parts))
        self.bottleneck = block(channels, sizes[n_pool], keep_input=False)
        up_channels = sizes[n_pool] * growth_rate
        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(n_pool):
            self.transitions_up.append(transition_up(up_channels, conv_bias))
            block_in = skip_channels[n_pool - 1 - i] + up_channels
            last = i == n_pool - 1
            n_layers = sizes[n_pool + 1 + i]
            self.up_blocks.append(block(block_in, n_layers, keep_input=last))
            up_channels = block_in + n_layers * growth_rate if last else n_layers * growth_rate
        self.final_conv = nn.Conv2d(up_channels, num_classes, 1, bias=True)
        self.checkpoint_levels = memory_efficient if checkpoint_levels is None else bool(checkpoint_levels)
        self.inference_workspace = network_inference.Workspace()
        self.reset_parameters()

    def train(self, mode: bool = True):
        """nn.Module.train; also releases the inference workspace (buffers kept between
        eval-mode calls, nnunet_nerve.network.inference)."""
        workspace = getattr(self, "inference_workspace", None)   # absent in modules pickled before it
        if workspace is not None:
            workspace.release()
        return super().train(mode)

    @property
    def memory_efficient(self) -> bool:
        """Whether training checkpoints the dense layers and the resolution levels."""
        return self.checkpoint_levels and all(module.memory_efficient for module in self.lean_modules())

    @memory_efficient.setter
    def memory_efficient(self, value: bool) -> None:
        self.checkpoint_levels = bool(value)
        for module in self.lean_modules():
            module.memory_efficient = bool(value)

    def lean_modules(self):
        """The modules that compute by parts under checkpoints when memory_efficient."""
        return (m for m in self.modules() if isinstance(m, (DenseLayer, TransitionDown)))

    def head(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The final 1x1 convolution of the top level's parts; while training lean with
        gradients, as the sum of the parts' convolutions (no 192-map concatenation is kept)."""
        if self.transitions_down[0].lean():
            return conv_by_parts(self.final_conv, parts)
        return self.final_conv(concatenate(parts))

    def checkpointed(self, function, modules, *inputs):
        """function(*inputs), under torch.utils.checkpoint while training with gradients and
        checkpoint_levels: only the inputs are kept; the recomputation in the backward pass
        replays the dropout masks (RNG state preserved) and undoes its running-statistics
        update of the batch norms in `modules`."""
        if not (self.checkpoint_levels and self.training and torch.is_grad_enabled()):
            return function(*inputs)
        # under torch.compile AOTAutograd recomputes only values (DenseLayer.forward)
        contexts = {} if torch.compiler.is_compiling() else {
            "context_fn": lambda: (nullcontext(), buffers_restored(*modules))}
        return checkpoint(function, *inputs, use_reentrant=False, preserve_rng_state=True, **contexts)

    def dense_layers(self):
        return (m for m in self.modules() if isinstance(m, DenseLayer))

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

    def takes_inference_path(self, x: torch.Tensor) -> bool:
        """Whether forward(x) runs nnunet_nerve.network.inference: buffered_inference, eval
        mode, autograd off, a CPU tensor (where it was measured to pay), no CPU autocast
        and not while torch.compile traces."""
        return (self.buffered_inference and not self.training and not torch.is_grad_enabled()
                and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
                and not torch.compiler.is_compiling())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.takes_inference_path(x):
            return network_inference.forward(self, x)
        skips = []
        for level, (block, down) in enumerate(zip(self.down_blocks, self.transitions_down)):
            stem = self.first_conv if level == 0 else None
            modules = [m for m in (stem, block, down) if m is not None]
            skip, x = self.checkpointed(partial(down_level, stem, block, down), modules, x)
            skips.append(skip)
        x = self.bottleneck.outputs(x)
        top = len(self.up_blocks) - 1
        for level, (up, block, skip) in enumerate(zip(self.transitions_up, self.up_blocks, reversed(skips))):
            head = self.head if level == top else None
            x = self.checkpointed(partial(up_level, up, block, head), [block], skip, x)
        return x
