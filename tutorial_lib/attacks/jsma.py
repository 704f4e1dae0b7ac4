"""JSMA: the Jacobian-based saliency map attack (Papernot et al., EuroS&P 2016)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import Attack, Box, check_inputs, random_targets

__all__ = ["JSMA"]


class JSMA(Attack):
    """Jacobian-based saliency map attack (Papernot et al., EuroS&P 2016), the attack of the
    defensive-distillation paper: targeted, increasing pixels, pairs of features.

    Each iteration takes the Jacobian of the model's softmax output F (at T = 1, the deployed
    model) and, over pairs (p, q) of pixels still in the search domain, computes
    ``alpha = dF_t/dx_p + dF_t/dx_q`` and ``beta = sum_{j != t} (dF_j/dx_p + dF_j/dx_q)``; it picks
    the pair maximising ``-alpha * beta`` subject to ``alpha > 0`` and ``beta < 0``, adds ``theta``
    (input units) to both pixels (clipped to the box) and removes them from the domain. It stops
    when the model predicts the target, when at most ``gamma`` (a fraction in [0, 1]) of the pixels
    have been changed (the paper's maximum distortion, 14.5 %), or when no pair satisfies the
    conditions: a saturated softmax has a zero Jacobian, and then the attack has nothing to follow
    and fails (that is how defensive distillation defeats it). ``saliency="logits"`` uses the
    logits' Jacobian instead (the variant Carlini & Wagner call JSMA-Z), which does not saturate.

    The budget is a number of pixels (an l0 budget), not an eps-ball: JSMA is an :class:`Attack`,
    not a :class:`~tutorial_lib.attacks.NormBallAttack`, and has no ``eps``.

    ``attack(model, x, y, target)`` returns x_adv (N, C, H, W) in the box; :meth:`run` also
    returns success and the number of pixels changed. Without ``target``, a random class != y is
    drawn (``seed``). All examples of a batch run together; ``chunk`` bounds the (chunk, d, d)
    pair tensors' memory.
    """

    def __init__(self, gamma: float = 0.145, theta: float = 1.0, saliency: str = "softmax",
                 clip: Box = (0.0, 1.0), chunk: int = 16, seed: Optional[int] = 0):
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma (fraction of pixels) must lie in [0, 1], got {gamma}")
        if theta <= 0:
            raise ValueError(f"theta must be > 0 (this JSMA increases pixels), got {theta}")
        if saliency not in ("softmax", "logits"):
            raise ValueError(f"saliency must be 'softmax' or 'logits', got {saliency!r}")
        if int(chunk) != chunk or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk}")
        if clip is None:
            raise ValueError("JSMA needs a box (clip) to know when a pixel is saturated")
        super().__init__(clip)
        self.gamma, self.theta, self.saliency = float(gamma), float(theta), saliency
        self.chunk, self.seed = int(chunk), seed

    def max_pixels(self, d: int) -> int:
        """Pixels the attack may change on an input of ``d`` features: 2 * floor(gamma * d / 2)."""
        return 2 * int(math.floor(self.gamma * d / 2 + 1e-9))

    def _gradients(self, model, x_flat, shape, target):
        x_req = x_flat.detach().clone().requires_grad_(True)
        logits = model(x_req.view(-1, *shape))
        out = F.softmax(logits, dim=1) if self.saliency == "softmax" else logits
        onehot = F.one_hot(target, out.shape[1]).to(out.dtype)
        (g_t,) = torch.autograd.grad((out * onehot).sum(), x_req, retain_graph=True)
        (g_o,) = torch.autograd.grad((out * (1 - onehot)).sum(), x_req)
        return g_t, g_o, logits.detach()

    def _select_pairs(self, g_t, g_o, domain):
        """Best pair (p, q) per row and whether any pair satisfies the conditions."""
        n, d = g_t.shape
        # a pixel outside the search domain gets alpha = -inf, so no pair containing it is admissible
        g_t = g_t.masked_fill(~domain, -float("inf"))
        ps, qs, found = [], [], []
        for i in range(0, n, self.chunk):
            a, b = g_t[i:i + self.chunk], g_o[i:i + self.chunk]
            alpha = a[:, :, None] + a[:, None, :]
            beta = b[:, :, None] + b[:, None, :]
            valid = (alpha > 0) & (beta < 0)
            valid.diagonal(dim1=1, dim2=2).fill_(False)  # a pair is two different pixels
            score = alpha.mul_(beta).neg_().masked_fill_(~valid, -1.0).flatten(1)
            best = score.argmax(1)
            ps.append(best // d)
            qs.append(best % d)
            found.append(valid.flatten(1).any(1))
        return torch.cat(ps), torch.cat(qs), torch.cat(found)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_adv, success, n_changed)`` for x (N, C, H, W) in the box, y (N,), target (N,) or
        None: x_adv like x; success (N,) bool = the model predicts the target on x_adv;
        n_changed (N,) long = pixels that differ from x (at most :meth:`max_pixels`)."""
        check_inputs(model, x, y, None, self.clip, target)
        device = next(model.parameters()).device
        x, y = x.to(device).detach(), y.to(device)
        if target is None:
            with torch.no_grad():
                classes = model(x[:1]).shape[1]
            target = random_targets(y, classes, self.seed)
        target = target.to(device)
        if (target == y).any():
            raise ValueError("JSMA is targeted: every target must differ from the true label")
        n, shape = x.shape[0], x.shape[1:]
        d = x[0].numel()
        lo, hi = self.clip
        x0 = x.flatten(1)
        x_adv = x0.clone()
        domain = x_adv < hi
        active = torch.ones(n, dtype=torch.bool, device=device)
        for _ in range(self.max_pixels(d) // 2):
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            g_t, g_o, logits = self._gradients(model, x_adv[idx], shape, target[idx])
            done = logits.argmax(1) == target[idx]
            p, q, found = self._select_pairs(g_t, g_o, domain[idx])
            step = ~done & found
            active[idx[~step]] = False  # reached the target, or no admissible pair: stop
            rows = idx[step]
            if len(rows) == 0:
                break
            p, q = p[step], q[step]
            for col in (p, q):
                x_adv[rows, col] = (x_adv[rows, col] + self.theta).clamp(lo, hi)
                domain[rows, col] = False
        x_adv = x_adv.view_as(x)
        with torch.no_grad():
            success = model(x_adv).argmax(1) == target
        n_changed = (x_adv != x).flatten(1).sum(1)
        return x_adv.detach(), success, n_changed

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        return self.run(model, x, y, target)[0]
