"""FCDenseNet's inference path (nnunet_nerve.network.inference): when it is taken, and that it
computes the plain path's function (and the reference's) for every input layout."""
from __future__ import annotations

import pytest
import torch

import nnunet_nerve.network.inference as network_inference
from nnunet_nerve import FCDenseNet
from reference_fcdensenet import SMALL, paired, randomise_batch_norms

CONFIGS = {
    "paper": ({}, (3, 1, 48, 64)),
    "small": (SMALL, (2, 2, 40, 24)),
    "FC-DenseNet56-like": (dict(n_pool=5, growth_rate=12, layers_per_block=4, in_channels=3,
                                num_classes=11), (1, 3, 32, 64)),
}


def eval_pair(config: str, dtype=torch.float32):
    """(network, reference) in eval mode with randomised batch norms, and an input batch."""
    kwargs, shape = CONFIGS[config]
    net, reference = paired(0, **kwargs)
    randomise_batch_norms(reference, seed=1)
    net.load_state_dict(reference.state_dict())
    net.to(dtype).eval(), reference.to(dtype).eval()
    return net, reference, torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_inference_path_matches_plain_path_and_reference(config):
    """Under torch.inference_mode (as nnUNetv2_predict runs) and torch.no_grad: the buffered
    path equals the plain path (the same module with autograd on) and the reference."""
    net, reference, x = eval_pair(config)
    plain = net(x).detach()                  # eval mode with autograd on: the plain path
    with torch.no_grad():
        expected = reference(x)
        no_grad = net(x)
    with torch.inference_mode():
        inference = net(x)
    torch.testing.assert_close(plain, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(no_grad, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(inference, plain, rtol=1e-4, atol=1e-5)
    assert inference.is_contiguous() and inference.dtype == torch.float32


def test_inference_path_matches_reference_float64():
    net, reference, x = eval_pair("small", torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), reference(x), rtol=1e-11, atol=1e-12)


def test_inference_path_is_taken_only_in_eval_mode_without_autograd(monkeypatch):
    """The rule in FCDenseNet.forward: buffered_inference, eval mode, autograd off, a CPU
    tensor, no autocast; otherwise the plain modules run (dropout in train mode)."""
    calls = []
    real = network_inference.forward
    monkeypatch.setattr(network_inference, "forward", lambda net, x: calls.append(1) or real(net, x))
    net = FCDenseNet(**SMALL)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        net.train()(x)
        FCDenseNet(**SMALL, buffered_inference=False).eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net.eval()(x)
    net.eval()(x)
    assert calls == []
    with torch.no_grad():
        net.eval()(x)
    with torch.inference_mode():
        net.eval()(x)
    assert len(calls) == 2


@pytest.mark.parametrize("layout", ["transposed view", "strided slice", "channels-last", "batch slice"])
def test_inference_on_non_contiguous_inputs(layout):
    net, _, x = eval_pair("paper")
    batch = {
        "transposed view": lambda: x.transpose(2, 3).contiguous().transpose(2, 3),
        "strided slice": lambda: torch.stack([x, x], dim=1).flatten(1, 2)[:, ::2],
        "channels-last": lambda: x.contiguous(memory_format=torch.channels_last),
        "batch slice": lambda: torch.stack([x, x], dim=1).flatten(0, 1)[::2],
    }[layout]()
    assert torch.equal(batch, x)
    with torch.inference_mode():
        torch.testing.assert_close(net(batch), net(x), rtol=1e-5, atol=1e-6)


def test_inference_with_channels_last_module_and_one_thread():
    net, reference, x = eval_pair("small")
    with torch.no_grad():
        expected = reference(x)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            one_thread = net(x)
            net.to(memory_format=torch.channels_last)
            channels_last = net(x.contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(one_thread, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(channels_last, expected, rtol=1e-4, atol=1e-5)


def test_images_are_independent_at_inference():
    """Each image's prediction is that of the image alone (batch statistics play no part)."""
    net, _, x = eval_pair("paper")
    with torch.inference_mode():
        together = net(x)
        alone = torch.cat([net(x[i:i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_eval_scale_shift_is_batch_norms_eval_map():
    norm = torch.nn.BatchNorm2d(5).eval()
    randomise_batch_norms(norm, seed=3)
    x = torch.randn(2, 5, 4, 3)
    scale, shift = network_inference.eval_scale_shift(norm)
    with torch.no_grad():
        torch.testing.assert_close(scale * x + shift, norm(x), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- the workspace kept between calls

def test_workspace_is_reused_and_never_leaks_an_earlier_input():
    """Calls with one input shape reuse the buffers; each output equals that of a fresh module
    (no workspace) and is a tensor of its own, untouched by later calls."""
    import copy

    net, _, x = eval_pair("paper")
    fresh = copy.deepcopy(net)
    fresh.inference_workspace = None
    other = torch.randn_like(x) * 3
    with torch.inference_mode():
        first = net(x)
        kept = [t.data_ptr() for t in net.inference_workspace.tensors[0]]
        second = net(other)
        assert [t.data_ptr() for t in net.inference_workspace.tensors[0]] == kept
        third = net(x)
        torch.testing.assert_close(first, fresh(x), rtol=0, atol=0)
        torch.testing.assert_close(second, fresh(other), rtol=0, atol=0)
    assert torch.equal(third, first) and first.data_ptr() != third.data_ptr()
    assert not torch.equal(first, second)


def test_workspace_is_released_and_replaced():
    """A new input shape replaces the workspace; train() releases it; deep copies, pickles and
    the state_dict never carry it."""
    import copy
    import io

    net, _, x = eval_pair("small")
    with torch.inference_mode():
        net(x)
        assert net.inference_workspace.key[0] == tuple(x.shape)
        net(x[:1])
        assert net.inference_workspace.key[0] == (1, *x.shape[1:])
    assert copy.deepcopy(net).inference_workspace.tensors is None
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False).inference_workspace.tensors is None
    assert not any("workspace" in key for key in net.state_dict())
    net.train()
    assert net.inference_workspace.tensors is None and net.inference_workspace.key is None


def test_a_call_while_another_thread_holds_the_workspace_uses_fresh_buffers():
    net, reference, x = eval_pair("small")
    with torch.inference_mode():
        expected = reference(x)
        net(x)
        kept = net.inference_workspace.tensors
        assert net.inference_workspace.lock.acquire(blocking=False)   # as another thread would
        try:
            out = net(x * 2)
        finally:
            net.inference_workspace.lock.release()
        assert net.inference_workspace.tensors is kept
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out, reference(x * 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("in_channels, bias", [(1, True), (3, False)])
def test_first_convolution_written_into_the_buffer_is_the_convolution(in_channels, bias):
    """The unfolded-patches product lands in the buffer's channel range, the rest untouched."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_channels, 8, 3, padding=1, bias=bias)
    x = torch.randn(2, in_channels, 12, 10)
    buffer = torch.full((2, 20, 12, 10), 7.0).contiguous(memory_format=torch.channels_last)
    scratch = network_inference.Scratch(20 * 12 * 10, x)
    with torch.inference_mode():
        network_inference.first_convolution(conv, x, buffer[:, 4:12], scratch)
        torch.testing.assert_close(buffer[:, 4:12], conv(x), rtol=1e-5, atol=1e-6)
    assert (buffer[:, :4] == 7).all() and (buffer[:, 12:] == 7).all()
