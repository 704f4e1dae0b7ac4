"""Certified (provable) training as a loss for the one training loop: Wong & Kolter 2017's robust
loss, with Wong et al. 2018's random projections for the intermediate bounds."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..bounds.dual import MEDIAN_RULES
from ..bounds.robust import robust_loss
from ..bounds.spec import check_norm
from .schedule import ScheduledEps

__all__ = ["RobustTrainingLoss"]


class RobustTrainingLoss(ScheduledEps):
    """Loss for the training loop (``LOSSES["robust"]``): Wong & Kolter's robust loss at a
    scheduled eps.

    eps ramps linearly from ``start_eps`` to ``eps`` over ``ramp_steps`` optimisation steps
    (after ``warmup_steps`` at ``start_eps``); ``proj`` = k Cauchy projections for the
    intermediate bounds (Wong et al. 2018; None = exact, ~10x slower on the small CNN).
    ``norm``: the ball, 'linf' (default), 'l2' (Gaussian projections for the input term;
    the pixel box dropped in the bounds) or 'l1' (exact only: proj must be None).
    ``median``: the projections' median rule for an even k ('mid', the default, or 'lower':
    torch.median's lower middle value, with which the shipped checkpoints trained with projections
    were trained; their recipes say so, so a rerun reproduces them).
    ``on_step(step)`` is called by the loop before every step, so the schedule survives a
    resumed run. Returns (loss, clean logits), the logits only for the training accuracy.
    """

    def __init__(self, eps: float = 0.1, proj: Optional[int] = 50, ramp_steps: int = 0,
                 start_eps: float = 0.0, warmup_steps: int = 0,
                 clip: Optional[Tuple[float, float]] = (0.0, 1.0), norm: str = "linf", median: str = "mid"):
        super().__init__(eps, ramp_steps, warmup_steps, start_eps)
        if proj is not None and (int(proj) != proj or proj < 1):
            raise ValueError(f"proj must be a positive integer or None, got {proj!r}")
        if check_norm(norm) == "l1" and proj is not None:
            raise ValueError(f"norm='l1' has no random projections (Wong et al. 2018 give them for "
                             f"l_inf and l2 balls only); pass proj=None (exact bounds), got proj={proj!r}")
        if median not in MEDIAN_RULES:
            raise ValueError(f"median must be one of {MEDIAN_RULES}, got {median!r}")
        self.proj, self.clip, self.norm, self.median = proj, clip, norm, median

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor):
        loss, _ = robust_loss(model, x, y, self.eps, clip=self.clip, proj=self.proj, norm=self.norm,
                              median=self.median)
        with torch.no_grad():
            logits = model(x)
        return loss, logits
