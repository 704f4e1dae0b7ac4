"""Empirical defences as losses for the one training loop: PGD adversarial training
(Madry et al. 2018) and TRADES (Zhang et al. 2019).

Each loss is an object ``loss(model, x, y) -> (loss, logits)`` with an ``on_step(step)`` hook
that the training loop calls before every step, so an eps schedule (``training.linear_ramp``)
survives an interrupted and resumed run.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import PGD
from .training import LOSSES, eval_mode, linear_ramp

__all__ = ["PGDTrainingLoss", "TradesLoss", "trades_attack"]


class _ScheduledEps:
    def __init__(self, eps: float, ramp_steps: int = 0, warmup_steps: int = 0):
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps_max = float(eps)
        self.schedule = linear_ramp(0.0, float(eps), int(ramp_steps), int(warmup_steps))
        self.eps = self.schedule(0)

    def on_step(self, step: int) -> None:
        self.eps = self.schedule(step)


class PGDTrainingLoss(_ScheduledEps):
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
            with eval_mode(model):
                x_adv = PGD(self.eps, alpha=alpha, steps=self.steps, seed=None, clip=self.clip)(model, x, y)
        else:
            x_adv = x
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        if self.clean_weight > 0:
            loss = (1 - self.clean_weight) * loss + self.clean_weight * F.cross_entropy(model(x), y)
        return loss, logits


def trades_attack(model: nn.Module, x: torch.Tensor, eps: float, alpha: float, steps: int,
                  clip=(0.0, 1.0), generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """TRADES' inner maximisation: PGD on KL(f(x) || f(x')) starting at x + 0.001 * N(0, 1).
    x (N, ...) -> x' (N, ...) within the l-inf eps-ball (and the box). Run in eval mode."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=generator, device=x.device) if generator is not None \
        else torch.randn_like(x)
    x_adv = x + 0.001 * noise
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps)
        if clip is not None:
            x_adv = x_adv.clamp(*clip)
    return x_adv.detach()


class TradesLoss(_ScheduledEps):
    """TRADES: CE(f(x), y) + beta * KL(f(x) || f(x')), x' = argmax of the KL in the eps-ball.

    ``beta`` trades natural accuracy (small beta) for robustness (large beta); beta = 0 is plain
    cross-entropy. The KL is averaged over the batch; ``clip`` is the input box (None: unbounded).
    Returns (loss, clean logits).
    """

    def __init__(self, beta: float = 6.0, eps: float = 0.3, alpha: float = 0.01, steps: int = 40,
                 ramp_steps: int = 0, warmup_steps: int = 0, clip=(0.0, 1.0)):
        super().__init__(eps, ramp_steps, warmup_steps)
        self.clip = clip
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta, self.alpha, self.steps = float(beta), float(alpha), int(steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        natural = F.cross_entropy(logits, y)
        if self.beta == 0 or self.eps == 0:
            return natural, logits
        with eval_mode(model):
            x_adv = trades_attack(model, x, self.eps, self.alpha * self.eps / self.eps_max, self.steps,
                                  clip=self.clip)
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        return natural + self.beta * robust, logits


LOSSES["pgd"] = PGDTrainingLoss
LOSSES["trades"] = TradesLoss
