"""The paper's step learning-rate schedule, computed from the epoch number.

Adam at 1e-3, then 1e-4 from epoch 30 and 1e-5 from epoch 80 (epochs counted from 0).
Because the rate is a pure function of the epoch, resuming a run (``nnUNetv2_train ... --c``)
continues at the right rate.
"""
from __future__ import annotations

from typing import Sequence

from torch.optim.lr_scheduler import LRScheduler

PAPER_INITIAL_LR = 1e-3
PAPER_MILESTONES = (30, 80)
PAPER_GAMMA = 0.1


def step_learning_rate(epoch: int, initial_lr: float = PAPER_INITIAL_LR,
                       milestones: Sequence[int] = PAPER_MILESTONES, gamma: float = PAPER_GAMMA) -> float:
    """``initial_lr * gamma ** (number of milestones <= epoch)``."""
    return initial_lr * gamma ** sum(1 for m in milestones if epoch >= m)


class EpochStepLR(LRScheduler):
    """Sets every parameter group's rate to ``step_learning_rate(epoch)``.

    nnU-Net calls ``scheduler.step(current_epoch)`` at the start of each epoch (as for its
    ``PolyLRScheduler``); the rate then depends only on that number.
    """

    def __init__(self, optimizer, initial_lr: float = PAPER_INITIAL_LR,
                 milestones: Sequence[int] = PAPER_MILESTONES, gamma: float = PAPER_GAMMA):
        self.initial_lr = initial_lr
        self.milestones = tuple(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch=-1)

    def get_lr(self):
        return [step_learning_rate(max(self.last_epoch, 0), self.initial_lr, self.milestones, self.gamma)
                for _ in self.optimizer.param_groups]

    def step(self, current_epoch: int | None = None):
        self.last_epoch = self.last_epoch + 1 if current_epoch is None else int(current_epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]
