"""Certified (provable) training as a loss for the one training loop: Wong & Kolter 2017's robust
loss, with Wong et al. 2018's random projections for the intermediate bounds."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..bounds.robust import robust_loss
from .schedule import ScheduledEps

__all__ = ["RobustTrainingLoss"]


class RobustTrainingLoss(ScheduledEps):
    """Loss for the training loop (``LOSSES["robust"]``): Wong & Kolter's robust loss at a
    scheduled eps.

    eps ramps linearly from ``start_eps`` to ``eps`` over ``ramp_steps`` optimisation steps
    (after ``warmup_steps`` at ``start_eps``); ``proj`` = k Cauchy projections for the
    intermediate bounds (Wong et al. 2018; None = exact, ~10x slower on the small CNN).
    ``on_step(step)`` is called by the loop before every step, so the schedule survives a
    resumed run. Returns (loss, clean logits), the logits only for the training accuracy.
    """

    def __init__(self, eps: float = 0.1, proj: Optional[int] = 50, ramp_steps: int = 0,
                 start_eps: float = 0.0, warmup_steps: int = 0,
                 clip: Optional[Tuple[float, float]] = (0.0, 1.0)):
        super().__init__(eps, ramp_steps, warmup_steps, start_eps)
        if proj is not None and (int(proj) != proj or proj < 1):
            raise ValueError(f"proj must be a positive integer or None, got {proj!r}")
        self.proj, self.clip = proj, clip

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor):
        loss, _ = robust_loss(model, x, y, self.eps, clip=self.clip, proj=self.proj)
        with torch.no_grad():
            logits = model(x)
        return loss, logits
