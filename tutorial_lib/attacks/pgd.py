"""PGD (Madry et al., ICLR 2018) on the cross-entropy, and MarginPGD on the margin of the logits."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .base import Box, NormBallAttack, _broadcast, _margin_to, _per_example_loss

__all__ = ["PGD", "MarginPGD"]


class PGD(NormBallAttack):
    """Projected gradient descent (Madry et al. 2018) in l-inf or l2.

    ``steps`` steps of size ``alpha`` (input units; default 2.5 * eps / steps) on the
    cross-entropy, each followed by projection onto the eps-ball and the box. ``random_start``
    starts from a uniform point of the ball. With ``restarts`` > 1 the attack is repeated from
    fresh random starts and, per example, the worst result is kept: a misclassified (or, targeted,
    on-target) point first, then the highest loss. ``seed`` fixes the random starts (restart 0 of a
    run with ``restarts=k`` equals a run with ``restarts=1`` and the same seed); None draws a fresh
    seed per call.

    ``PGD(eps)(model, x, y, target=None) -> x_adv``, x (N, C, H, W) in [0, 1], eps in input units.
    """

    def __init__(self, eps: float, alpha: Optional[float] = None, steps: int = 40,
                 restarts: int = 1, norm: str = "linf", random_start: bool = True,
                 clip: Box = (0.0, 1.0), seed: Optional[int] = 0):
        super().__init__(eps, norm=norm, clip=clip)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {restarts}")
        alpha = 2.5 * eps / steps if alpha is None else alpha
        if not (alpha > 0 or (alpha == 0 and eps == 0)):
            raise ValueError(f"step size alpha must be > 0, got {alpha}")
        self.alpha, self.steps, self.restarts = float(alpha), int(steps), int(restarts)
        self.random_start, self.seed = bool(random_start), seed

    def _random_start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1
            return self.project(x + self.eps * noise, x)
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=gen, device=x.device)
        direction = direction / _broadcast(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        radius = torch.rand(x.shape[0], generator=gen, device=x.device) ** (1.0 / d) * self.eps
        return self.project(x + direction * _broadcast(radius, x), x)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
             gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run from one start: (x_adv, success (N,) bool, loss (N,))."""
        x_adv = self._random_start(x, gen) if self.random_start else x.clone()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = self._loss(model(x_adv), y, target).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / _broadcast(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
                x_adv = self.project(x_adv + self.alpha * step, x)
        with torch.no_grad():
            logits = model(x_adv)
            loss = self._loss(logits, y, target)
            success = logits.argmax(1) != y if target is None else logits.argmax(1) == target
        return x_adv.detach(), success, loss

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-example loss (N,) that the attack maximises: cross-entropy (minus, if targeted)."""
        return _per_example_loss(logits, y, target)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        gen = torch.Generator(device=x.device)
        if self.seed is not None:
            gen.manual_seed(self.seed)
        else:
            gen.seed()
        best, best_success, best_loss = self._run(model, x, y, target, gen)
        for _ in range(self.restarts - 1):
            x_adv, success, loss = self._run(model, x, y, target, gen)
            better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
            best = torch.where(_broadcast(better, x), x_adv, best)
            best_success, best_loss = best_success | success, torch.where(better, loss, best_loss)
        return best


class MarginPGD(PGD):
    """PGD (l-inf or l2) on the margin of the logits instead of the cross-entropy.

    Maximises ``max_{j != y} z_j - z_y`` (untargeted) or ``z_t - max_{j != t} z_j`` (targeted):
    the loss of Carlini & Wagner, whose gradient does not vanish when the softmax saturates, so
    it is not fooled by defensive distillation. Same parameters and call shape as :class:`PGD`,
    plus ``kappa`` (logit units, default inf): the confidence of Carlini & Wagner's loss, which
    is the margin capped at ``kappa`` (the attack stops pushing an example once its margin exceeds
    kappa). Madry et al.'s "CW+" is this attack with ``kappa=50``.
    """

    def __init__(self, eps: float, alpha: Optional[float] = None, steps: int = 40,
                 restarts: int = 1, norm: str = "linf", random_start: bool = True,
                 clip: Box = (0.0, 1.0), seed: Optional[int] = 0, kappa: float = float("inf")):
        super().__init__(eps, alpha=alpha, steps=steps, restarts=restarts, norm=norm,
                         random_start=random_start, clip=clip, seed=seed)
        if not kappa > 0:
            raise ValueError(f"kappa (the confidence, in logit units) must be > 0, got {kappa}")
        self.kappa = float(kappa)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        m = _margin_to(logits, y, target)
        return m if self.kappa == float("inf") else m.clamp(max=self.kappa)
