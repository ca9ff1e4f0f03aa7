"""FCDenseNet: the paper's counts, shapes, transposed-conv alignment, input checks; training
against the plain reference in tests/ under the same seed (outputs, gradients, dropout draws,
running statistics), plain and checkpointed; and checkpoints written before the rewrite."""
from __future__ import annotations

import copy
import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from nnunet_nerve import FCDenseNet
from nnunet_nerve.network.fcdensenet import DenseLayer
from reference_fcdensenet import SMALL, assert_same_buffers, assert_same_gradients, paired, training_step

DATA = Path(__file__).parent / "data"


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


# ----------------------------------------------------------------------------- training against the reference

#: how the network may checkpoint: nothing, dense layers by parts and resolution levels (the
#: default), dense layers by parts only, resolution levels only, and the concatenated form
#: (one checkpoint per layer over its concatenation, torchvision's) with levels
CHECKPOINTING = {"plain": dict(memory_efficient=False), "default": dict(memory_efficient=True),
                 "layers": dict(memory_efficient=True, checkpoint_levels=False),
                 "levels": dict(memory_efficient=False, checkpoint_levels=True),
                 "concatenated": dict(memory_efficient=True, by_parts=False)}


@pytest.mark.parametrize("checkpointing", CHECKPOINTING)
@pytest.mark.parametrize("kwargs", [{}, SMALL], ids=["paper", "small"])
def test_train_step_matches_reference_with_dropout_float64(kwargs, checkpointing):
    """The same seed draws the same dropout masks (p = 0.2, every layer and transition) in the
    same order: outputs, input and parameter gradients and running statistics equal the plain
    reference's, and the generator ends where the reference leaves it (checkpointing draws
    nothing more; a checkpointed level's recomputation replays its masks)."""
    net, reference = paired(3, CHECKPOINTING[checkpointing], **kwargs)
    net.double(), reference.double()
    x = torch.randn(3, kwargs.get("in_channels", 1), 32, 48, dtype=torch.float64)
    target = torch.randint(0, kwargs.get("num_classes", 2), (3, 32, 48))
    out, grad_x, rng = training_step(net, x, target)
    out_ref, grad_x_ref, rng_ref = training_step(reference, x, target)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_x, grad_x_ref, rtol=1e-9, atol=1e-12)
    assert_same_gradients(net, reference, rtol=1e-9, atol=1e-12)
    assert_same_buffers(net, reference, rtol=1e-12, atol=1e-12)
    assert torch.equal(rng, rng_ref)


def test_train_step_dropout_masks_differ_from_another_seed():
    """The comparison above can fail: another seed gives other masks and another output."""
    net, reference = paired(3)
    x = torch.randn(2, 1, 32, 32)
    target = torch.randint(0, 2, (2, 32, 32))
    out, _, _ = training_step(net, x, target, seed=7)
    other, _, _ = training_step(reference, x, target, seed=8)
    assert (out - other).abs().max() > 1e-2


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_train_step_matches_reference_float32(memory_efficient):
    """float32, what training runs: the same operations in the same order as the reference."""
    net, reference = paired(1, dict(memory_efficient=memory_efficient))
    x = torch.randn(3, 1, 32, 48)
    target = torch.randint(0, 2, (3, 32, 48))
    out, grad_x, _ = training_step(net, x, target)
    out_ref, grad_x_ref, _ = training_step(reference, x, target)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    assert (grad_x - grad_x_ref).norm() <= 1e-4 * grad_x_ref.norm()
    assert_same_gradients(net, reference, rtol=1e-4, atol=1e-7)
    assert_same_buffers(net, reference, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- checkpointing

def test_checkpointed_equals_plain_over_three_steps():
    """Outputs, gradients and parameters after three Adam steps: the recomputation in the
    backward pass reproduces the forward (same batch statistics, same maps). In float64: the
    by-parts sums differ from the concatenated convolution in the order of their terms, and
    Adam's first steps turn float32 rounding of near-zero gradients into updates of +-lr."""
    torch.manual_seed(0)
    plain = FCDenseNet(memory_efficient=False, **SMALL).double()
    lean = copy.deepcopy(plain)
    lean.memory_efficient = True
    assert lean.memory_efficient and not plain.memory_efficient
    optimisers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (plain, lean)]
    for step in range(3):
        x = torch.randn(2, 2, 32, 32, dtype=torch.float64)
        target = torch.randint(0, 3, (2, 32, 32))
        outs = []
        for net, optimiser in zip((plain, lean), optimisers):
            optimiser.zero_grad()
            out, _, _ = training_step(net, x, target, seed=step)
            optimiser.step()
            outs.append(out)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-9, atol=1e-9)
    for (name, p), q in zip(plain.named_parameters(), lean.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-9, msg=name)
    assert_same_buffers(lean, plain, rtol=1e-10, atol=1e-10)
    norms = [m for m in lean.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 3 for m in norms)


def test_running_statistics_updated_once_per_checkpointed_step(monkeypatch):
    """A naive checkpoint runs each batch norm's update twice (forward and recomputation);
    here the recomputation's is undone: running statistics and num_batches_tracked equal the
    plain reference's after one step. Without the guard (monkeypatched away) they do not."""
    import nnunet_nerve.network.by_parts as by_parts
    import nnunet_nerve.network.fcdensenet as network

    configs = {"concatenated": dict(memory_efficient=True, checkpoint_levels=False, by_parts=False),
               "by parts": dict(memory_efficient=True, checkpoint_levels=False)}
    x = torch.randn(3, 2, 32, 32)
    target = torch.randint(0, 3, (3, 32, 32))
    naives = {}
    for name, config in configs.items():
        net, reference = paired(2, config, dropout=0.0, **SMALL)
        naives[name] = copy.deepcopy(net)
        training_step(net, x, target)
        training_step(reference, x, target)
        assert_same_buffers(net, reference, rtol=1e-6, atol=1e-7)
    ref_norm = reference.down_blocks[0].layers[0].norm

    monkeypatch.setattr(DenseLayer, "recomputation_contexts", lambda self: (nullcontext(), nullcontext()))
    monkeypatch.setattr(network, "buffers_restored", lambda *modules: nullcontext())
    monkeypatch.setattr(by_parts, "buffers_restored", lambda *modules: nullcontext())
    for name, naive in naives.items():
        training_step(naive, x, target)
        layer_norm = naive.down_blocks[0].layers[0].norm
        # the concatenated form runs the module again; by parts counts the step outside the checkpoints
        assert int(layer_norm.num_batches_tracked) == (2 if name == "concatenated" else 1), name
        assert not torch.allclose(layer_norm.running_mean, ref_norm.running_mean), name


def test_running_statistics_updated_once_per_checkpointed_level(monkeypatch):
    """The same for a checkpointed resolution level (its transition down's batch norm and its
    dense layers'): updated once; without the guard, twice."""
    import nnunet_nerve.network.by_parts as by_parts
    import nnunet_nerve.network.fcdensenet as network

    net, reference = paired(2, CHECKPOINTING["levels"], dropout=0.0, **SMALL)
    naive = copy.deepcopy(net)
    x = torch.randn(3, 2, 32, 32)
    target = torch.randint(0, 3, (3, 32, 32))
    training_step(net, x, target)
    training_step(reference, x, target)
    assert_same_buffers(net, reference, rtol=1e-6, atol=1e-7)

    monkeypatch.setattr(network, "buffers_restored", lambda *modules: nullcontext())
    monkeypatch.setattr(by_parts, "buffers_restored", lambda *modules: nullcontext())
    training_step(naive, x, target)
    for norm in (naive.transitions_down[0].norm, naive.up_blocks[-1].layers[0].norm):
        assert int(norm.num_batches_tracked) == 2


def saved_bytes(net: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of net(x) (those
    saved inside a checkpointed region are not kept, so they are not seen)."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net.train()(x)
    return sum(storages.values())


def test_checkpointing_keeps_far_fewer_activations():
    """Pleiss et al.'s saving: the concatenations and batch-norm outputs of the dense layers
    (quadratic in the block depth) are no longer kept for backward."""
    torch.manual_seed(0)
    plain = FCDenseNet(memory_efficient=False)
    x = torch.randn(2, 1, 64, 64)
    layers_only = FCDenseNet(memory_efficient=True, checkpoint_levels=False)
    kept_plain, kept_layers = saved_bytes(plain, x), saved_bytes(layers_only, x)
    assert kept_layers < 0.5 * kept_plain, (kept_layers, kept_plain)


def test_checkpointed_levels_keep_little_more_than_the_skip_connections():
    """With the resolution levels checkpointed too (the default), the forward keeps the skip
    connections and the maps handed from level to level (the pooled maps down, the up
    blocks' new maps up); the transitions, the up path's concatenations and the final
    convolution's input are recomputed. In units of the top level's 96-map skip connection
    (first convolution's 48 + 4 x 12): skip connections 96 + 144/4 + 192/16 + 240/64,
    pooled maps 96/4 + 144/16 + 192/64 + 240/256, new maps 48 (1/4 + 1/16 + 1/64 + 1/256),
    about 200 maps at full resolution: 2.1 times the skip connection. The dense layers
    alone keep more than twice that."""
    torch.manual_seed(0)
    lean = FCDenseNet()
    layers_only = FCDenseNet(checkpoint_levels=False)
    x = torch.randn(2, 1, 64, 64)
    kept_lean, kept_layers = saved_bytes(lean, x), saved_bytes(layers_only, x)
    skip_bytes = 96 * x.numel() * x.element_size()
    assert kept_lean < 0.5 * kept_layers, (kept_lean, kept_layers)
    assert kept_lean < 2.2 * skip_bytes, (kept_lean, skip_bytes)


def concatenation_widths(net: nn.Module, x: torch.Tensor) -> list[int]:
    """Channels of every concatenation (aten.cat along channels) in a training step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    widths = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.cat.default and out.dim() == 4:
                widths.append(out.shape[1])
            return out

    with Record():
        net.train()(x).sum().backward()
    return widths


def test_by_parts_forms_no_wide_concatenation():
    """By parts (the default) a training step, forward and backward with all recomputations,
    concatenates nothing but the up path's new maps before each transposed convolution (48 of
    the paper network's channels); the concatenated form builds every layer's input (up to the
    up blocks' 324 maps)."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    by_parts = concatenation_widths(FCDenseNet(), x)
    concatenated = concatenation_widths(FCDenseNet(by_parts=False), x)
    assert by_parts and max(by_parts) == 48, by_parts
    assert max(concatenated) == 288 + 3 * 12  # the first up block's last layer: skip 240 + 48 upsampled + 3 x 12


def test_by_parts_sums_reduced_precision_terms_in_float32():
    """bf16 terms are summed in float32 and rounded once; summing them in bf16 rounds after
    each term and gives another (worse) result for these terms."""
    from nnunet_nerve.network.by_parts import Sum

    torch.manual_seed(0)
    terms = [torch.randn(4096).bfloat16() * 100, torch.randn(4096).bfloat16(), torch.randn(4096).bfloat16() / 100]
    running = Sum()
    for term in terms:
        running.add(term)
    total = running.result()
    assert total.dtype == torch.bfloat16
    exact = (terms[0].double() + terms[1].double() + terms[2].double())
    assert torch.equal(total, (terms[0].float() + terms[1].float() + terms[2].float()).bfloat16())
    naive = terms[0] + terms[1] + terms[2]
    assert not torch.equal(total, naive)
    assert (total.double() - exact).abs().sum() < (naive.double() - exact).abs().sum()


def test_by_parts_falls_back_to_the_concatenation_for_sync_batch_norm():
    """A SyncBatchNorm normalises whole inputs: the converted network's layers concatenate
    their inputs (as the concatenated form does), a plain one does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 16, 16)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(FCDenseNet(**SMALL))
    widths = concatenation_widths(converted, x)
    assert widths == concatenation_widths(FCDenseNet(by_parts=False, **SMALL), x)
    assert max(widths) > max(concatenation_widths(FCDenseNet(**SMALL), x))


def test_checkpointing_only_while_training_with_gradients(monkeypatch):
    """torch.utils.checkpoint runs only where it saves something: train mode with autograd on."""
    import nnunet_nerve.network.by_parts as by_parts
    import nnunet_nerve.network.fcdensenet as network

    calls = []
    real = network.checkpoint
    monkeypatch.setattr(network, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(by_parts, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    net = FCDenseNet(**SMALL)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        net.train()(x)
        net.eval()(x)
    assert calls == []
    net.train()(x)
    levels = 2 * net.n_pool
    # by parts: one checkpoint per part a layer reads (block input parts + earlier layers'
    # maps); a transition down: one around it and one per part (block input + its layers)
    input_parts = [1] * net.n_pool + [1] + [2 + len(b.layers) for b in reversed(net.down_blocks)]
    blocks = [*net.down_blocks, net.bottleneck, *net.up_blocks]
    layers = sum(p + k for p, b in zip(input_parts, blocks) for k in range(len(b.layers)))
    transitions = sum(1 + 1 + len(b.layers) for b in net.down_blocks)
    assert len(calls) == levels + layers + transitions


# ----------------------------------------------------------------------------- basics and checkpoints

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


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_gradients_reach_every_parameter(memory_efficient):
    torch.manual_seed(0)
    net = FCDenseNet(memory_efficient=memory_efficient)
    x = torch.randn(2, 1, 32, 32)
    target = torch.randint(0, 2, (2, 32, 32))
    nn.functional.cross_entropy(net(x), target).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_non_contiguous_and_channels_last_inputs_train_alike():
    """A transposed view, a strided slice and a channels-last copy of the same batch give
    the same training step as the contiguous batch."""
    x = torch.randn(2, 1, 48, 32)
    target = torch.randint(0, 2, (2, 48, 32))
    variants = {
        "contiguous": x,
        "transposed view": x.transpose(2, 3).contiguous().transpose(2, 3),
        "strided slice": torch.stack([x, x], dim=1).flatten(1, 2)[:, ::2],
        "channels-last": x.contiguous(memory_format=torch.channels_last),
    }
    assert not variants["transposed view"].is_contiguous()
    assert not variants["strided slice"].is_contiguous()
    results = {}
    for name, batch in variants.items():
        torch.manual_seed(0)
        net = FCDenseNet(**{k: v for k, v in SMALL.items() if k != "in_channels"}, in_channels=1)
        out, grad_x, _ = training_step(net, batch, target)
        results[name] = (out, grad_x, net.first_conv.weight.grad)
    for name, (out, grad_x, grad_w) in results.items():
        torch.testing.assert_close(out, results["contiguous"][0], rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(grad_x, results["contiguous"][1], rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(grad_w, results["contiguous"][2], rtol=1e-4, atol=1e-6, msg=name)


def test_one_thread_trains_like_the_reference():
    """torch.set_num_threads(1): the same step as the reference (float64)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, reference = paired(4, dict(memory_efficient=True), **SMALL)
        net.double(), reference.double()
        x = torch.randn(2, 2, 32, 32, dtype=torch.float64)
        target = torch.randint(0, 3, (2, 32, 32))
        out, grad_x, _ = training_step(net, x, target)
        out_ref, grad_x_ref, _ = training_step(reference, x, target)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    assert_same_gradients(net, reference, rtol=1e-9, atol=1e-12)


def test_deepcopy_and_state_dict_round_trip():
    net = FCDenseNet()
    clone = copy.deepcopy(net)
    clone.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), net.eval()(x))


def test_options_leave_the_state_dict_alone():
    keys = {name: [(k, tuple(v.shape)) for k, v in FCDenseNet(**kw).state_dict().items()]
            for name, kw in {"default": {}, "plain": dict(memory_efficient=False, buffered_inference=False)}.items()}
    assert keys["default"] == keys["plain"]


def test_paper_network_state_dict_keys_unchanged_since_e870172():
    """tests/data/fcdensenet_e870172_paper_state_dict_keys.json: FCDenseNet()'s state_dict
    keys and shapes, in order, as the network code of commit e870172 (before the rewrite to
    one implementation) wrote them into every trained checkpoint."""
    recorded = json.loads((DATA / "fcdensenet_e870172_paper_state_dict_keys.json").read_text())
    now = [[k, list(v.shape)] for k, v in FCDenseNet().state_dict().items()]
    assert now == recorded["state_dict"]


@pytest.mark.parametrize("buffered_inference", [True, False])
def test_checkpoint_written_at_e870172_loads_and_predicts_the_same(buffered_inference):
    """tests/data/fcdensenet_e870172_small.pt: a small FCDenseNet trained three Adam steps by
    the code of commit e870172 (its CPU training path), its state_dict, an input and that
    code's eval-mode output; written with

        net = FCDenseNet(**config); (3 steps: Adam lr 1e-2, cross-entropy, batches of 2 x 16 x 16)
        torch.save({"commit", "config", "state_dict": net.state_dict(), "input": x,
                    "eval_output": net.eval().forward_straightforward(x) under no_grad}, path)

    It loads strictly (same keys, shapes and running statistics) and gives the same output."""
    saved = torch.load(DATA / "fcdensenet_e870172_small.pt", weights_only=True)
    assert saved["commit"] == "e870172"
    net = FCDenseNet(**saved["config"], buffered_inference=buffered_inference)
    net.load_state_dict(saved["state_dict"], strict=True)
    assert int(net.down_blocks[0].layers[0].norm.num_batches_tracked) == 3
    with torch.inference_mode():
        out = net.eval()(saved["input"])
    torch.testing.assert_close(out, saved["eval_output"], rtol=1e-5, atol=1e-5)
