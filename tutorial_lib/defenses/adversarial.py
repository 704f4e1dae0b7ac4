"""Madry et al. 2018's adversarial training as a loss for the one training loop.

The loss is an object ``loss(model, x, y) -> (loss, logits)`` with an ``on_step(step)`` hook
(:class:`~tutorial_lib.defenses.schedule.ScheduledEps`), so an eps ramp survives a resumed run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import PGD
from ..runtime import eval_mode
from .schedule import ScheduledEps

__all__ = ["PGDTrainingLoss"]


class PGDTrainingLoss(ScheduledEps):
    """Madry et al.'s saddle point: min_theta E max_{x' in B_eps(x)} CE(f(x'), y).

    The inner max is PGD (``steps`` steps of ``alpha`` x eps / eps_max, random start), run with the
    model in eval mode; the outer loss is the cross-entropy at the PGD point (Danskin: its gradient
    is a gradient of the robust loss at the maximiser). ``clean_weight`` in [0, 1] mixes in the
    clean loss (0 = the paper's objective). ``clip``: the input box (None: unbounded inputs).
    Returns (loss, logits on the adversarial batch).
    """

    def __init__(self, eps: float = 0.3, alpha: float = 0.01, steps: int = 40, ramp_steps: int = 0,
                 warmup_steps: int = 0, clean_weight: float = 0.0, clip=(0.0, 1.0)):
        super().__init__(eps, ramp_steps, warmup_steps)
        self.clip = clip
        if not 0 <= clean_weight <= 1:
            raise ValueError(f"clean_weight must be in [0, 1], got {clean_weight}")
        self.alpha, self.steps, self.clean_weight = float(alpha), int(steps), float(clean_weight)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if self.eps > 0:
            alpha = self.alpha * self.eps / self.eps_max
            # the random start's seed is drawn from torch's global generator, which fit(seed=...) seeds
            # and a resumed run restores: PGD training is then reproducible (a fresh OS seed was not)
            seed = int(torch.randint(0, 2 ** 62, (1,)).item())
            with eval_mode(model):
                x_adv = PGD(self.eps, alpha=alpha, steps=self.steps, seed=seed, clip=self.clip)(model, x, y)
        else:
            x_adv = x
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        if self.clean_weight > 0:
            loss = (1 - self.clean_weight) * loss + self.clean_weight * F.cross_entropy(model(x), y)
        return loss, logits
