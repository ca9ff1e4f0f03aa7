"""What nnU-Net does to the network on a GPU, checked on the CPU: mixed precision (autocast) and
torch.compile. Both take FCDenseNet's straightforward path (plain PyTorch ops); on CUDA nnU-Net uses
autocast(float16) and compiles by default, which this cannot show here (no GPU in CI)."""
from __future__ import annotations

import pytest
import torch

from nnunet_nerve import FCDenseNet


def test_autocast_forward_backward_is_finite():
    torch.manual_seed(0)
    net = FCDenseNet()
    x = torch.randn(2, 1, 32, 32)
    target = torch.randint(0, 2, (2, 32, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        loss = torch.nn.functional.cross_entropy(out.float(), target)
    loss.backward()
    assert out.shape == (2, 2, 32, 32)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_torch_compile_matches_eager():
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    net = FCDenseNet().eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        eager = net.forward_straightforward(x)
        compiled = torch.compile(net)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
