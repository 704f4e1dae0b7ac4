"""Carlini & Wagner's l2 attack (IEEE S&P 2017) on the logits."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .base import Attack, Box, _margin_to, check_inputs

__all__ = ["CarliniWagnerL2"]


class CarliniWagnerL2(Attack):
    """Carlini & Wagner (S&P 2017) l2 attack on the logits.

    Minimises ``||x' - x||_2^2 + c * max(m(x'), -kappa)`` over ``w`` with
    ``x' = lo + (hi - lo) * (tanh(w) + 1) / 2`` (the change of variables keeps x' in the box), with
    Adam (``lr``, ``steps`` per value of c). ``m`` is the margin on the logits: targeted,
    ``max_{j != t} z_j - z_t``; untargeted, ``z_y - max_{j != y} z_j``. A binary search over c
    (``binary_steps`` values, starting at ``c_init``) keeps, per example, the successful x' of
    smallest l2 distortion. The search runs in log scale: c is multiplied by 10 while no success has
    been found, divided by 10 while every value succeeded, then bisected geometrically; the right c
    scales inversely with the logits, which a distilled network multiplies by about T, so a
    log-scale search finds it in a few steps where Carlini & Wagner's arithmetic bisection (with
    many more steps) would halve it slowly. Examples never attacked successfully are returned
    unchanged.

    This is a minimum-distortion attack: there is no eps-ball, so it is an :class:`Attack`, not a
    :class:`~tutorial_lib.attacks.NormBallAttack`, and has no ``eps``. :meth:`run` returns
    ``(x_adv, success, l2)``; ``attack(model, x, y, target=None)`` returns x_adv (N, C, H, W) in
    the box.

    ``tanh_margin``: x is mapped into w-space as ``atanh`` of its box coordinate clamped to
    ``1 - tanh_margin``, so a pixel at 0 or 1 starts at a finite w (about 3.8 for 1e-3) that Adam
    can leave within a few hundred steps; unchanged pixels then move by at most
    ``tanh_margin / 2`` of the box (included in the reported l2).
    """

    def __init__(self, c_init: float = 1.0, kappa: float = 0.0, steps: int = 100, binary_steps: int = 5,
                 lr: float = 0.05, clip: Box = (0.0, 1.0), abort_early: bool = True,
                 tanh_margin: float = 1e-3):
        if not c_init > 0:
            raise ValueError(f"c_init must be > 0, got {c_init}")
        if kappa < 0:
            raise ValueError(f"kappa (confidence) must be >= 0, got {kappa}")
        if int(steps) != steps or steps < 1 or int(binary_steps) != binary_steps or binary_steps < 1:
            raise ValueError(f"steps and binary_steps must be positive integers, got {steps}, {binary_steps}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if clip is None:
            raise ValueError("the tanh change of variables needs a box (clip)")
        super().__init__(clip)
        self.c_init, self.kappa = float(c_init), float(kappa)
        self.steps, self.binary_steps = int(steps), int(binary_steps)
        if not 0 < tanh_margin < 1:
            raise ValueError(f"tanh_margin must lie in (0, 1), got {tanh_margin}")
        self.lr, self.abort_early, self.tanh_margin = float(lr), bool(abort_early), float(tanh_margin)

    def _to_x(self, w):
        lo, hi = self.clip
        return lo + (hi - lo) * (torch.tanh(w) + 1) / 2

    def _to_w(self, x):
        lo, hi = self.clip
        u = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + self.tanh_margin, 1 - self.tanh_margin)
        return torch.atanh(u)

    def _succeeded(self, logits, y, target):
        # success at the attack's own confidence kappa (kappa = 0: the prediction flips)
        m = _margin_to(logits, y, target)
        return m > self.kappa if self.kappa > 0 else (
            logits.argmax(1) != y if target is None else logits.argmax(1) == target)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_adv, success, l2)`` for x (N, C, H, W) in the box, y (N,), target (N,) or None:
        x_adv like x; success (N,) bool; l2 (N,) is ||x_adv - x||_2 in input units (0 where the
        attack failed)."""
        check_inputs(model, x, y, None, self.clip, target)
        device = next(model.parameters()).device
        x, y = x.to(device).detach(), y.to(device)
        target = target.to(device) if target is not None else None
        n = x.shape[0]
        c = torch.full((n,), self.c_init, device=device)
        lower = torch.zeros(n, device=device)
        upper = torch.full((n,), float("inf"), device=device)
        best_l2 = torch.full((n,), float("inf"), device=device)
        best = x.clone()
        w0 = self._to_w(x)
        for _ in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=device)
            prev = float("inf")
            for it in range(self.steps):
                x_adv = self._to_x(w)
                logits = model(x_adv)
                l2sq = (x_adv - x).flatten(1).pow(2).sum(1)
                f = torch.clamp(-_margin_to(logits, y, target), min=-self.kappa)
                loss_each = l2sq + c * f
                loss = loss_each.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    ok = self._succeeded(logits.detach(), y, target)
                    l2 = l2sq.detach().sqrt()
                    improved = ok & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best[improved] = x_adv.detach()[improved]
                    found |= ok
                if self.abort_early and it % max(10, self.steps // 10) == 0:  # no progress: stop this c
                    if loss.item() > prev * 0.9999:
                        break
                    prev = loss.item()
            with torch.no_grad():  # search on c, per example, in log scale
                upper = torch.where(found, torch.min(upper, c), upper)
                lower = torch.where(found, lower, torch.max(lower, c))
                bracketed = torch.isfinite(upper) & (lower > 0)
                c = torch.where(bracketed, (lower * upper).clamp_min(1e-30).sqrt(),
                                torch.where(torch.isfinite(upper), c / 10, c * 10))
        with torch.no_grad():
            success = self._succeeded(model(best), y, target) & torch.isfinite(best_l2)
        l2 = torch.where(success, (best - x).flatten(1).norm(dim=1), torch.zeros_like(best_l2))
        return best.detach(), success, l2

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        return self.run(model, x, y, target)[0]
