"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): random search, no gradients.

"Square Attack: a query-efficient black-box adversarial attack via random search" needs only the
model's scores: it proposes a random change of a square window of the perturbation and keeps it
when the margin loss improves. As it never differentiates the model, gradient masking (a
non-differentiable or shattered-gradient preprocessing, saturated softmax) does not stop it,
which is why AutoAttack includes it. Written from the paper:

* loss: the margin of the logits, ``z_y - max_{j != y} z_j`` (untargeted; minimised) or
  ``max_{j != t} z_j - z_t`` (targeted), on logits, in logit units;
* l-inf: start from vertical stripes (one random sign per column and channel, so every pixel sits
  at +-eps); each iteration picks, per example, a square of side s at a random position and sets
  the perturbation there to a random +-eps per channel (re-drawn, without a query, while it would
  not change anything);
* l2: start from a 5 x 5 grid of squares, each holding the paper's centred pattern (nested
  rectangles weighted 1/(r + 1)^2, two halves of opposite sign) with a random sign per channel,
  scaled to norm eps; each iteration moves the perturbation's mass of two random squares W1, W2
  (and the budget eps^2 - ||delta||^2 lost to the box) into W1, as a fresh pattern added to the
  old content of W1, and rescales the whole perturbation to norm eps;
* the square's side ``s = round(sqrt(p * n_features / c))`` (at least 1 in l-inf, 3 and odd in
  l2, at most min(h, w)), where the fraction p of pixels starts at ``p_init`` and is halved after
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10 000-query schedule,
  rescaled to ``n_queries`` (as AutoAttack does).

p_init: the authors use 0.8 for adversarially trained MNIST models (the default here, and
AutoAttack's everywhere) and 0.05 for the undefended ImageNet models in l-inf; a small p_init
suits large images, where a square of 80 % of the pixels would change almost everything. Only
examples not yet broken are queried: each stops at its first misclassified point. Inputs are
images (N, C, H, W).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .base import Box, NormBallAttack, _broadcast, _margin_to

__all__ = ["Square", "square_p_schedule"]

#: Iterations (of a 10 000-query schedule) after which Square halves p.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p_schedule(i: int, n_queries: int, p_init: float) -> float:
    """The fraction p of pixels Square changes at iteration i (0-based) of a run of ``n_queries``:
    ``p_init`` halved once per threshold of :data:`_HALVINGS` that ``i * 10000 / n_queries``
    exceeds."""
    it = int(i / n_queries * 10000)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def _nested_rectangles(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h, w) pattern: sum over the rectangles centred in the window, growing by one pixel per side
    with r = 0, 1, ..., of 1 / (r + 1)^2 on each rectangle; unit l2 norm."""
    ci, cj = h // 2, w // 2
    ii = torch.arange(h, device=device)[:, None]
    jj = torch.arange(w, device=device)[None, :]
    # a pixel lies in the rectangle of radius r iff its Chebyshev distance to the centre is <= r
    # (clipped at the window), so it gets sum_{r >= d} 1/(r + 1)^2 over r < max(ci, cj) + 1
    d = torch.maximum((ii - ci).abs(), (jj - cj).abs())
    r_max = max(ci, cj) + 1
    weights = 1.0 / torch.arange(1, r_max + 1, device=device, dtype=dtype) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[r] = sum_{r' >= r} 1/(r' + 1)^2
    pattern = tail[d.clamp(max=r_max - 1)]
    return pattern / pattern.norm()


def _eta(s: int, device, dtype) -> torch.Tensor:
    """The paper's l2 window pattern (s, s): nested rectangles in the top half, minus them in the
    bottom half, unit l2 norm."""
    top = _nested_rectangles(s // 2, s, device, dtype)
    bottom = -_nested_rectangles(s - s // 2, s, device, dtype)
    eta = torch.cat([top, bottom], 0)
    return eta / eta.norm()


class Square(NormBallAttack):
    """Square Attack (Andriushchenko et al. 2020), score-based: no gradient is ever computed.

    ``Square(eps, norm="linf", n_queries=5000, p_init=0.8, seed=0)(model, x, y, target=None)
    -> x_adv``; x (N, C, H, W) in the box ``clip`` (default [0, 1]), eps in input units (per pixel
    in l-inf, the Euclidean norm of the whole perturbation in l2). Each example is queried at most
    ``n_queries`` times (forward passes: one for the start, one per iteration) and stops at its
    first success (argmax != y, or argmax == target when targeted); examples the model already
    misclassifies cost no query and are returned as they are. An example never broken gets its
    point of smallest margin. The model runs under ``torch.no_grad``, so it may even be
    non-differentiable. ``p_init``: the starting fraction of pixels in the square (0.8 for MNIST;
    smaller, e.g. 0.05, for large natural images). ``seed`` makes the search reproducible
    (a ``torch.Generator`` on the model's device; the global RNG is untouched); None draws a fresh
    seed per call (the outputs may still differ across devices, or on a GPU where the model's
    kernels are not deterministic). After a call, ``last_queries`` (N,) holds the queries spent
    per example.
    """

    def __init__(self, eps: float, norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8,
                 seed: Optional[int] = 0, clip: Box = (0.0, 1.0)):
        super().__init__(eps, norm=norm, clip=clip)
        if int(n_queries) != n_queries or n_queries < 1:
            raise ValueError(f"n_queries must be a positive integer, got {n_queries}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init (a fraction of the pixels) must lie in (0, 1], got {p_init}")
        self.n_queries, self.p_init, self.seed = int(n_queries), float(p_init), seed
        self.last_queries: Optional[torch.Tensor] = None

    # -- helpers --------------------------------------------------------------------------------
    def _query(self, model: nn.Module, x_new: torch.Tensor, y: torch.Tensor,
               t: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Objective to maximise (N,) (minus the margin) and success (N,) at x_new."""
        logits = model(x_new)
        pred = logits.argmax(1)
        return _margin_to(logits, y, t), (pred != y if t is None else pred == t)

    @staticmethod
    def _window(n: int, h: int, w: int, s: int, gen: torch.Generator, device) -> Tuple[torch.Tensor, ...]:
        """Random square positions per example: (mask (n, 1, h, w) bool, top (n,), left (n,))."""
        top = torch.randint(0, h - s + 1, (n,), generator=gen, device=device)
        left = torch.randint(0, w - s + 1, (n,), generator=gen, device=device)
        rows = torch.arange(h, device=device)[None, :]
        cols = torch.arange(w, device=device)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + s)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
        mask = in_rows[:, :, None] & in_cols[:, None, :]
        return mask[:, None], top, left

    def _signs(self, shape, gen: torch.Generator, x: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1

    def _side(self, i: int, n_features: int, c: int, h: int, w: int) -> int:
        p = square_p_schedule(i, self.n_queries, self.p_init)
        s = int(round(math.sqrt(p * n_features / c)))
        if self.norm == "linf":
            return max(1, min(s, h, w))
        s = max(s, 3)
        s = s + 1 if s % 2 == 0 else s
        return min(s, h, w)

    # -- the attack -----------------------------------------------------------------------------
    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"Square needs images x of shape (N, C, H, W), got {tuple(x.shape)}")
        gen = torch.Generator(device=x.device)
        if self.seed is not None:
            gen.manual_seed(int(self.seed))
        else:
            gen.seed()
        with torch.no_grad():
            return self._search(model, x, y, target, gen)

    def _search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
                gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        n_features = c * h * w
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        self.last_queries = queries
        logits = model(x)
        pred = logits.argmax(1)
        done = pred == target if target is not None else pred != y
        out = x.clone()
        idx = (~done).nonzero().flatten()
        if len(idx) == 0:
            return out
        xs, ys = x[idx], y[idx]
        ts = None if target is None else target[idx]
        best = self.project(xs + self._init_delta(xs, gen), xs)
        score, success = self._query(model, best, ys, ts)
        queries[idx] += 1
        for i in range(self.n_queries - 1):
            # retire the broken examples
            if success.any():
                out[idx[success]] = best[success]
                keep = ~success
                idx, xs, ys, best, score = idx[keep], xs[keep], ys[keep], best[keep], score[keep]
                ts = None if ts is None else ts[keep]
                if len(idx) == 0:
                    return out
            s = self._side(i, n_features, c, h, w)
            if self.norm == "linf":
                x_new = self._propose_linf(xs, best, s, gen)
            else:
                x_new = self._propose_l2(xs, best, s, gen)
            new_score, success = self._query(model, x_new, ys, ts)
            queries[idx] += 1
            take = success | (new_score > score)
            best = torch.where(_broadcast(take, best), x_new, best)
            score = torch.where(take, new_score, score)
        out[idx] = best  # the successful ones of the last query included
        return out

    def _init_delta(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.norm == "linf":  # vertical stripes of width one, +-eps per column and channel
            return self.eps * self._signs((n, c, 1, w), gen, x).expand(n, c, h, w)
        s = max(h // 5, 1)
        delta = torch.zeros_like(x)
        eta = _eta(s, x.device, x.dtype) if s > 1 else torch.ones(1, 1, device=x.device, dtype=x.dtype)
        start_h, start_w = (h - 5 * s) // 2, (w - 5 * s) // 2
        for i in range(min(5, h // s)):
            for j in range(min(5, w // s)):
                r, q = start_h + i * s, start_w + j * s
                delta[:, :, r:r + s, q:q + s] += eta * self._signs((n, c, 1, 1), gen, x)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return delta * _broadcast(self.eps / norms, delta)

    def _propose_linf(self, x: torch.Tensor, best: torch.Tensor, s: int, gen: torch.Generator) -> torch.Tensor:
        """x_best with, per example, a random s x s square set to +-eps per channel (N, C, H, W).

        A proposal equal to x_best would waste a query (the square already holds those signs, or
        the box clips them away): its signs are drawn once more, and where that changes nothing
        either, one random channel's sign is flipped (no query is spent on either)."""
        n, c = x.shape[:2]
        mask, _, _ = self._window(n, x.shape[2], x.shape[3], s, gen, x.device)
        signs = self._signs((n, c, 1, 1), gen, x)

        def propose(signs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            window = x + self.eps * signs  # on the sphere of the l-inf ball: no projection but the box
            if self.clip is not None:
                window = window.clamp(*self.clip)
            x_new = torch.where(mask, window, best)
            return x_new, (x_new != best).flatten(1).any(1)

        x_new, changed = propose(signs)
        if not changed.all():
            signs = torch.where(_broadcast(changed, signs), signs, self._signs((n, c, 1, 1), gen, x))
            x_new, changed = propose(signs)
            if not changed.all():
                flip = torch.randint(0, c, (n,), generator=gen, device=x.device)
                one = torch.nn.functional.one_hot(flip, c).to(x.dtype).view(n, c, 1, 1)
                signs = torch.where(_broadcast(changed, signs), signs, signs * (1 - 2 * one))
                x_new, _ = propose(signs)
        return x_new

    def _propose_l2(self, x: torch.Tensor, best: torch.Tensor, s: int, gen: torch.Generator) -> torch.Tensor:
        """The paper's l2 proposal: the mass of two random squares W1, W2 (plus the unused budget)
        moved into W1 as a new pattern on top of W1's old content; rescaled to norm eps."""
        n, c, h, w = x.shape
        delta = best - x
        m1, top, left = self._window(n, h, w, s, gen, x.device)
        m2, _, _ = self._window(n, h, w, s, gen, x.device)
        m1f, both = m1.to(x.dtype), (m1 | m2).to(x.dtype)
        # the pattern eta (or its transpose), placed at each example's W1
        eta = _eta(s, x.device, x.dtype)
        patterns = torch.stack([eta, eta.t()])
        flip = torch.randint(0, 2, (n,), generator=gen, device=x.device)
        rows = (torch.arange(h, device=x.device)[None, :] - top[:, None]).clamp(0, s - 1)
        cols = (torch.arange(w, device=x.device)[None, :] - left[:, None]).clamp(0, s - 1)
        placed = patterns[flip[:, None, None], rows[:, :, None], cols[:, None, :]][:, None] * m1f
        new = placed * self._signs((n, c, 1, 1), gen, x)
        old = delta * m1f
        old_norm = old.flatten(2).norm(dim=2)[:, :, None, None]  # per channel (n, c, 1, 1)
        new = new + old / (old_norm + 1e-12)
        # mass for W1: what W1 and W2 held plus what the whole perturbation lacks to reach eps,
        # spread equally over the channels
        total = delta.flatten(1).norm(dim=1)
        windows = (delta * both).flatten(1).norm(dim=1)
        mass = ((self.eps ** 2 - total ** 2).clamp_min(0) + windows ** 2) / c
        new = new / (new.flatten(2).norm(dim=2)[:, :, None, None] + 1e-12) * _broadcast(mass.sqrt(), new)
        delta = delta * (1 - both) + new
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return self.project(x + delta * _broadcast(self.eps / norms, delta), x)
