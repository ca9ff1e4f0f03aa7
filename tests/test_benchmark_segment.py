"""benchmarks/bench_segment.py without timing: its checkpoint change keeps the network's computation and
makes it predict no nerve (the full benchmark takes an hour on a shared 2-core machine; docs/segment.md
quotes it)."""
from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_segment as bs  # noqa: E402

pytestmark = pytest.mark.benchmark_script


def test_predict_no_nerve_changes_only_the_classifier(tmp_path):
    from nnunet_nerve.network.fcdensenet import FCDenseNet

    torch.manual_seed(0)
    network = FCDenseNet(in_channels=1, num_classes=2).eval()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": network.state_dict(), "trainer_name": "FCDenseNetTrainer"}, path)

    assert bs.predict_no_nerve(path) == ["final_conv"]
    state = torch.load(path, map_location="cpu", weights_only=False)
    changed = [k for k in before if not torch.equal(before[k], state["network_weights"][k])]
    assert sorted(changed) == ["final_conv.bias", "final_conv.weight"]
    network.load_state_dict(state["network_weights"])
    with torch.inference_mode():
        logits = network(torch.randn(2, 1, 32, 48) * 100)
    assert (logits.argmax(1) == 0).all() and torch.allclose(logits[:, 0] - logits[:, 1], torch.tensor(40.0))
