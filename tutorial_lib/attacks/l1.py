"""The l1 threat model: the exact projection onto the l1 ball and the sparse l1 descent attack.

* :func:`project_l1_ball` -- the Euclidean projection of each example's perturbation onto
  {d : ||d||_1 <= eps} (Duchi, Shalev-Shwartz, Singer & Chandra 2008, the sort-based algorithm).
* :class:`SparseL1Descent` -- SLIDE (Tramer & Boneh 2019, "Adversarial Training and Robustness
  for Multiple Perturbations"): projected steepest ascent for the l1 ball, where each step moves
  only the coordinates whose |gradient| is in the top (100 - q)%.

Why sparse: the steepest ascent direction for the l1 norm moves the one coordinate with the largest
|gradient| (a vertex of the ball), which makes plain l1-PGD progress one pixel at a time; the
dense sign step of l_inf PGD is the other extreme. SLIDE moves the top few percent.

Shapes: x (N, C, H, W) (any (N, ...) works) in the box ``clip``; y (N,); eps in input units
(the l1 norm of the whole perturbation: eps = 10 on MNIST changes at most 10 pixels fully).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import validation as V
from .base import Attack, Box, _broadcast, _per_example_loss

__all__ = ["project_l1_ball", "SparseL1Descent"]


def project_l1_ball(delta: torch.Tensor, eps: Union[float, torch.Tensor]) -> torch.Tensor:
    """The Euclidean projection of each row of delta (N, ...) onto the l1 ball of radius eps.

    eps: a number or a tensor (N,) (one radius per example), >= 0. Rows already inside the ball
    are returned unchanged. Otherwise the projection is sign(d) * max(|d| - theta, 0) with the
    threshold theta > 0 that makes the l1 norm eps (Duchi et al. 2008: sort |d| decreasingly as
    mu, rho = the largest j with mu_j > (sum_{i<=j} mu_i - eps) / j, theta = (sum_{i<=rho} mu_i
    - eps) / rho). O(n log n) per row. Differentiable almost everywhere (not needed here).
    """
    v = delta.flatten(1)
    N, n = v.shape
    e = torch.as_tensor(eps, dtype=v.dtype, device=v.device).reshape(-1)
    if e.numel() == 1:
        e = e.expand(N)
    if e.shape != (N,):
        raise ValueError(f"eps must be a number or a tensor of shape (N,)=({N},), got {tuple(e.shape)}")
    if (e < 0).any() or not torch.isfinite(e).all():
        raise ValueError("eps must be finite and >= 0")
    if n == 0:
        return delta.clone()
    a = v.abs()
    mu = a.sort(dim=1, descending=True).values
    cs = mu.cumsum(1)
    j = torch.arange(1, n + 1, dtype=v.dtype, device=v.device)
    cond = mu * j > cs - e[:, None]          # true on a prefix j = 1..rho
    rho = (cond.to(v.dtype) * j).amax(1)     # the last j where it holds (0 only when eps = 0)
    idx = (rho.long() - 1).clamp(min=0)
    theta = (cs.gather(1, idx[:, None]).squeeze(1) - e) / rho.clamp(min=1)
    w = torch.sign(v) * (a - theta[:, None]).clamp(min=0)
    # rounding can leave |w|_1 a few ulps above eps: scale it back (a relative change ~1e-16)
    size = w.abs().sum(1)
    w = w * torch.where(size > e, e / size.clamp_min(torch.finfo(v.dtype).tiny), torch.ones_like(e))[:, None]
    inside = a.sum(1) <= e
    return torch.where(inside[:, None], v, w).view_as(delta)


class SparseL1Descent(Attack):
    """Sparse l1 descent, SLIDE (Tramer & Boneh 2019), on the cross-entropy.

    Each of ``steps`` steps takes the gradient g of the loss at the current point, sets to zero
    the coordinates that sit on the box and whose gradient points out of it, and moves the
    coordinates with |g| at or above the q-th percentile of |g| (per example) by
    ``alpha * sign(g) / (number moved)`` (an l1 step of length alpha); then projects the
    perturbation onto the l1 ball of radius ``eps`` exactly (:func:`project_l1_ball`) and clamps
    to the box (clamping towards x can only shrink the l1 norm, so the result stays in both).

    eps: l1 radius in input units (>= 0). steps: number of steps (default 20). alpha: l1 length
    of one step (default eps / 10: the step of cleverhans' SparseL1Descent, eps 10 and step 1 on
    MNIST). q: the percentile in [0, 100) (default 99: the top 1% of coordinates move), or a pair
    (q_lo, q_hi) to draw q uniformly per example and step (Tramer & Boneh's training choice
    [80, 99]). random_start: start from a uniform point of the l1 ball (clamped to the box).
    seed: fixes the draws (random start, random q); None draws a fresh seed per call.
    Per example the best iterate is returned: a misclassified (targeted: on-target) one first,
    then the highest loss.

    ``SparseL1Descent(eps)(model, x, y, target=None) -> x_adv``, x (N, ...) in the box.
    """

    norm = "l1"

    def __init__(self, eps: float, steps: int = 20, alpha: Optional[float] = None,
                 q: Union[float, Sequence[float]] = 99.0, random_start: bool = False,
                 clip: Box = (0.0, 1.0), seed: Optional[int] = 0):
        if torch.is_tensor(eps) and eps.dim() != 0:
            raise TypeError(f"eps must be a single number, got a tensor of shape {tuple(eps.shape)}")
        self.eps = float(V.check_eps(eps, None))
        super().__init__(clip)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        alpha = self.eps / 10 if alpha is None else float(alpha)
        if not (alpha > 0 or (alpha == 0 and self.eps == 0)):
            raise ValueError(f"step size alpha must be > 0, got {alpha}")
        self.q = self._check_q(q)
        self.steps, self.alpha = int(steps), alpha
        self.random_start, self.seed = bool(random_start), seed

    @staticmethod
    def _check_q(q) -> Union[float, Tuple[float, float]]:
        pair = isinstance(q, (tuple, list))
        qs = [float(v) for v in q] if pair else [float(q)]
        if (pair and (len(qs) != 2 or qs[0] > qs[1])) or not all(0 <= v < 100 for v in qs):
            raise ValueError(f"q must be a percentile in [0, 100) or a pair (lo, hi) of them with lo <= hi, got {q!r}")
        return (qs[0], qs[1]) if pair else qs[0]

    def _budget(self) -> Optional[float]:
        return self.eps

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_adv (N, ...) projected onto the l1 ball of radius eps around x, then clamped to the box."""
        x_adv = x + project_l1_ball(x_adv - x, self.eps)
        return x_adv.clamp(*self.clip) if self.clip is not None else x_adv

    def _random_start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A uniform point of the l1 ball (Laplace direction, radius eps U^(1/n)), then the box."""
        n = x[0].numel()
        lap = -torch.log(torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype).clamp_min(1e-12))
        lap = lap * torch.where(torch.rand(x.shape, generator=gen, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
        lap = lap / _broadcast(lap.flatten(1).abs().sum(1).clamp_min(1e-12), x)
        radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / n) * self.eps
        return self.project(x + lap * _broadcast(radius, x), x)

    def _direction(self, grad: torch.Tensor, x_adv: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The sparse step direction (N, ...): sign(g) on the top-|g| coordinates, l1 norm 1."""
        if self.clip is not None:  # coordinates on the box whose gradient points out cannot move
            lo, hi = self.clip
            grad = torch.where(((x_adv <= lo) & (grad < 0)) | ((x_adv >= hi) & (grad > 0)),
                               torch.zeros_like(grad), grad)
        g = grad.flatten(1)
        a = g.abs()
        N, n = a.shape
        if isinstance(self.q, tuple):
            q = self.q[0] + (self.q[1] - self.q[0]) * torch.rand(N, generator=gen, device=a.device, dtype=a.dtype)
        else:
            q = torch.full((N,), self.q, dtype=a.dtype, device=a.device)
        k = (q / 100 * (n - 1)).round().long().clamp(0, n - 1)
        thr = a.sort(dim=1).values.gather(1, k[:, None])
        move = (a >= thr) & (a > 0)
        count = move.sum(1, keepdim=True).clamp(min=1).to(a.dtype)
        return (torch.sign(g) * move / count).view_as(grad)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        gen = torch.Generator(device=x.device)
        if self.seed is not None:
            gen.manual_seed(self.seed)
        else:
            gen.seed()
        x_adv = self._random_start(x, gen) if self.random_start else x.clone()
        best = x_adv.clone()
        best_success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), -float("inf"), dtype=x.dtype, device=x.device)
        for t in range(self.steps + 1):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            loss = _per_example_loss(logits, y, target)
            with torch.no_grad():  # keep the best iterate so far
                success = logits.argmax(1) != y if target is None else logits.argmax(1) == target
                better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
                best = torch.where(_broadcast(better, x), x_adv.detach(), best)
                best_success = best_success | success
                best_loss = torch.where(better, loss.detach(), best_loss)
            if t == self.steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
            with torch.no_grad():
                x_adv = self.project(x_adv.detach() + self.alpha * self._direction(grad, x_adv, gen), x)
        return best
