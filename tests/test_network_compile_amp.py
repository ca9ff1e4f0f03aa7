"""What nnU-Net does to the network, checked on the CPU: mixed precision (bf16 autocast here;
nnU-Net autocasts to fp16 with a GradScaler on CUDA, which benchmarks/bench_gpu.py checks on a
GPU), torch.compile (nnU-Net's default on CUDA) and DDP with SyncBatchNorm
(nnUNetTrainer.initialize: compile, then convert_sync_batchnorm, then DDP). Each against eager
float32, plain and checkpointed, including the running statistics (updated once per step)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnunet_nerve import FCDenseNet
from reference_fcdensenet import SMALL, assert_same_buffers, randomise_batch_norms, training_step

#: SMALL without dropout: compiled graphs draw dropout with their own generator
NO_DROPOUT = dict(SMALL, dropout=0.0)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def grads(net: nn.Module) -> dict:
    return {name: p.grad.clone() for name, p in net.named_parameters()}


def batch(n=2, size=32):
    torch.manual_seed(11)
    return torch.randn(n, 2, size, size), torch.randint(0, 3, (n, size, size))


# ----------------------------------------------------------------------------- autocast

@pytest.mark.parametrize("memory_efficient", [False, True])
def test_bf16_autocast_training_step_tracks_float32(memory_efficient):
    """Under torch.autocast("cpu", bfloat16) the convolutions run in bf16: the logits stay
    within bf16 rounding of the float32 step's, every gradient is finite and points the same
    way (cosine > 0.99), and the running statistics are updated once."""
    torch.manual_seed(0)
    net = FCDenseNet(memory_efficient=memory_efficient, **NO_DROPOUT)
    fp32 = copy.deepcopy(net)
    x, target = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _, _ = training_step(net, x, target)
    out32, _, _ = training_step(fp32, x, target)
    assert out.dtype == torch.bfloat16
    assert relative_error(out, out32) < 0.05
    g, g32 = grads(net), grads(fp32)
    for name in g:
        assert torch.isfinite(g[name]).all(), name
    flat, flat32 = (torch.cat([v.flatten() for v in d.values()]) for d in (g, g32))
    assert nn.functional.cosine_similarity(flat, flat32, dim=0) > 0.99
    assert all(int(m.num_batches_tracked) == 1 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert_same_buffers(net, fp32, rtol=0.05, atol=0.02)


def test_bf16_autocast_checkpointed_equals_plain():
    """The recomputation runs under the forward's autocast state, and by parts the bf16 terms
    are summed in float32 and rounded once: the lean bf16 step is as close to the float32
    step as the plain bf16 step (outputs, every gradient, running statistics), and the two
    bf16 steps differ by bf16 rounding only."""
    torch.manual_seed(0)
    plain = FCDenseNet(memory_efficient=False, **NO_DROPOUT)
    lean, fp32 = copy.deepcopy(plain), copy.deepcopy(plain)
    lean.memory_efficient = True
    x, target = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _, _ = training_step(plain, x, target)
        out_lean, _, _ = training_step(lean, x, target)
    out32, _, _ = training_step(fp32, x, target)
    assert relative_error(out_lean, out) < 0.02
    assert relative_error(out_lean, out32) < 1.5 * relative_error(out, out32)
    g, g_lean, g32 = grads(plain), grads(lean), grads(fp32)
    for name in g:
        assert relative_error(g_lean[name], g32[name]) < 1.5 * relative_error(g[name], g32[name]) + 1e-3, name
    assert_same_buffers(lean, plain, rtol=0.02, atol=1e-3)


def test_bf16_autocast_inference_tracks_float32():
    torch.manual_seed(0)
    net = FCDenseNet(**SMALL).eval()
    randomise_batch_norms(net, seed=2)
    x, _ = batch()
    with torch.inference_mode():
        fp32 = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = net(x)
    assert relative_error(bf16, fp32) < 0.05


# ----------------------------------------------------------------------------- torch.compile

@pytest.mark.parametrize("memory_efficient", [False, True])
def test_torch_compile_training_step_matches_eager(memory_efficient):
    """Dynamo + AOTAutograd (the "aot_eager" backend: nnU-Net's compile minus Inductor's code
    generation, which takes minutes per graph on a 2-core CPU) trace the checkpointed layers
    as checkpoint regions: same output, gradients and running statistics (once) as eager."""
    torch.manual_seed(0)
    net = FCDenseNet(memory_efficient=memory_efficient, **NO_DROPOUT)
    eager = copy.deepcopy(net)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    x, target = batch()
    out, grad_x, _ = training_step(compiled, x, target)
    out_eager, grad_x_eager, _ = training_step(eager, x, target)
    torch.testing.assert_close(out, out_eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_x, grad_x_eager, rtol=1e-4, atol=1e-6)
    g, g_eager = grads(net), grads(eager)
    for name in g:
        torch.testing.assert_close(g[name], g_eager[name], rtol=1e-4, atol=1e-6, msg=name)
    assert_same_buffers(net, eager, rtol=1e-5, atol=1e-6)
    assert all(int(m.num_batches_tracked) == 1 for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_torch_compile_inductor_inference_matches_eager():
    """Inductor (nnU-Net's backend) on the eval-mode forward against eager prediction (which
    takes the buffered inference path)."""
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    net = FCDenseNet(n_pool=2, growth_rate=4, layers_per_block=2, first_filters=8).eval()
    randomise_batch_norms(net, seed=4)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- DDP

def test_sync_batch_norm_conversion_keeps_keys_and_trains_alike():
    """convert_sync_batchnorm (what nnUNetTrainer does under DDP) swaps every batch norm and
    keeps every state_dict key, shape and value. Without a process group SyncBatchNorm runs as
    BatchNorm2d (PyTorch runs SyncBatchNorm across processes only on GPUs): the converted,
    checkpointed network (concatenations: a SyncBatchNorm normalises whole inputs) trains
    like the original (by parts: equal up to the order of sums), running statistics updated
    once, and predicts alike."""
    torch.manual_seed(0)
    net = FCDenseNet(**NO_DROPOUT)
    original = copy.deepcopy(net)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == \
        sum(isinstance(m, nn.BatchNorm2d) for m in original.modules()) == 20
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    before = original.state_dict()
    assert [(k, v.shape) for k, v in converted.state_dict().items()] == [(k, v.shape) for k, v in before.items()]
    x, target = batch()
    out, _, _ = training_step(converted, x, target)
    out_original, _, _ = training_step(original, x, target)
    torch.testing.assert_close(out, out_original, rtol=1e-5, atol=1e-5)
    g, g_original = grads(converted), grads(original)
    for name in g:
        torch.testing.assert_close(g[name], g_original[name], rtol=1e-4, atol=1e-6, msg=name)
    assert_same_buffers(converted, original, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(converted.eval()(x), original.eval()(x), rtol=1e-5, atol=1e-5)


def test_distributed_data_parallel_on_cpu(tmp_path):
    """DDP (gloo, one process) around the checkpointed network: the gradients are the single
    process's."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    net = FCDenseNet(memory_efficient=True, **NO_DROPOUT)
    single = copy.deepcopy(net)
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        x, target = batch()
        training_step(DistributedDataParallel(net), x, target)
    finally:
        dist.destroy_process_group()
    training_step(single, x, target)
    g, g_single = grads(net), grads(single)
    for name in g:
        torch.testing.assert_close(g[name], g_single[name], rtol=1e-5, atol=1e-7, msg=name)
    assert_same_buffers(net, single, rtol=1e-6, atol=1e-7)
