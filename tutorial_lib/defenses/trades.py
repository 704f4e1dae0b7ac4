"""TRADES (Zhang et al. 2019) as a loss for the one training loop: natural cross-entropy plus
beta times the KL divergence between the clean and the adversarial prediction."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import eval_mode
from .schedule import ScheduledEps

__all__ = ["TradesLoss", "trades_attack"]


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


class TradesLoss(ScheduledEps):
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
