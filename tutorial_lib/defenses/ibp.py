"""Interval bound propagation training (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020) as
losses for the one training loop.

The loss mixes the natural cross-entropy with the cross-entropy of the worst-case logits the
bounds allow::

    loss = kappa * CE(z(x), y) + (1 - kappa) * CE(z_hat, y),
    z_hat_j = -(lower bound of z_y - z_j over the ball)  (j != y),   z_hat_y = 0

(:func:`~tutorial_lib.bounds.margins_to_logits`). Since every lower bound is at most the true
margin at every point of the ball, CE(z_hat, y) >= CE(z(x'), y) for every x' in the ball: the
verified term is an upper bound of the worst-case loss. Three schedules, all by optimisation step
(``on_step(step)``, called by the loop before every step, so a resumed run keeps them), all with
the same warm-up and ramp as eps: eps from ``start_eps`` to ``eps``, kappa from ``kappa_start``
to ``kappa_end`` (Gowal et al.: 1 -> 0.5). The margins' lower bounds are
:func:`~tutorial_lib.bounds.interval_bounds` (the margin specification folded into the last
layer, as Gowal et al. do).

CROWN-IBP (:class:`CROWNIBPTrainingLoss`) replaces the margins' lower bounds by
``beta * CROWN-IBP bound + (1 - beta) * IBP bound``: the CROWN-IBP bound is
:func:`~tutorial_lib.bounds.crown_bounds` with ``pre="interval"`` (interval bounds for every
hidden layer, one CROWN backward pass for the margins). beta ramps from ``beta_start`` to
``beta_end`` (Zhang et al.: 1 -> 0) with the same warm-up and ramp as eps. A convex combination
of two lower bounds is a lower bound, so the verified term stays an upper bound of the loss.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from ..bounds.crown import crown_bounds
from ..bounds.interval import interval_bounds
from ..bounds.robust import margins_to_logits
from ..bounds.spec import check_norm
from .schedule import ScheduledEps, linear_ramp

__all__ = ["IBPTrainingLoss", "CROWNIBPTrainingLoss", "verified_cross_entropy"]


def _check_weight(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def verified_cross_entropy(margins: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """CE of the worst-case logits built from margin lower bounds.

    margins: (N, K-1) lower bounds of z_y - z_j (j != y, increasing j); y: (N,) labels.
    Returns CE(margins_to_logits(margins, y), y) (a 0-d tensor for 'mean'/'sum', (N,) for 'none').
    """
    return F.cross_entropy(margins_to_logits(margins, y), y, reduction=reduction)


class IBPTrainingLoss(ScheduledEps):
    """Loss for the training loop (``LOSSES["ibp"]``): Gowal et al. 2018's IBP loss.

    ``loss = kappa * CE(z(x), y) + (1 - kappa) * CE(z_hat, y)`` with z_hat the worst-case logits
    of the interval bounds of the margins at the current eps (see the module docstring).

    eps (input units, the ball's radius in ``norm``): ``start_eps`` for ``warmup_steps``
    optimisation steps, then linear to ``eps`` over ``ramp_steps`` steps. kappa (weight of the
    natural term, in [0, 1]): ``kappa_start`` during the warm-up, then linear to ``kappa_end``
    over the same ramp (Gowal et al.: 1 -> 0.5). ``clip``: the pixel box (None: no box);
    ``norm``: 'linf' (default), 'l2' or 'l1' (:func:`~tutorial_lib.bounds.interval_bounds`).
    When the current kappa is exactly 1 the bounds are not computed (their weight is 0).

    ``on_step(step)`` sets eps and kappa for the global step ``step`` (the loop calls it before
    every step). Returns (loss, clean logits detached, (N, K)); ``last`` holds the last call's
    ``natural`` and ``verified`` CE (floats; ``verified`` None when skipped), ``eps``, ``kappa``.
    """

    def __init__(self, eps: float = 0.1, ramp_steps: int = 0, warmup_steps: int = 0, start_eps: float = 0.0,
                 kappa_start: float = 1.0, kappa_end: float = 0.5,
                 clip: Optional[Tuple[float, float]] = (0.0, 1.0), norm: str = "linf"):
        super().__init__(eps, ramp_steps, warmup_steps, start_eps)
        self.kappa_start = _check_weight("kappa_start", kappa_start)
        self.kappa_end = _check_weight("kappa_end", kappa_end)
        self.kappa_schedule = linear_ramp(self.kappa_start, self.kappa_end, int(ramp_steps), int(warmup_steps))
        self.kappa = self.kappa_schedule(0)
        self.clip, self.norm = clip, check_norm(norm)
        self.last: Dict[str, Optional[float]] = {}

    def on_step(self, step: int) -> None:
        """Set ``eps`` and ``kappa`` for global optimisation step ``step``."""
        super().on_step(step)
        self.kappa = self.kappa_schedule(step)

    def verified_margins(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """(N, K-1) lower bounds of the margins z_y - z_j (j != y) over the ball of radius
        ``self.eps``: the interval bounds. Differentiable."""
        return interval_bounds(model, x, y, self.eps, clip=self.clip, norm=self.norm).lower

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor):
        logits = model(x)
        natural = F.cross_entropy(logits, y)
        kappa = self.kappa
        if kappa >= 1.0:
            loss, verified = natural, None
        else:
            verified = verified_cross_entropy(self.verified_margins(model, x, y), y)
            loss = kappa * natural + (1.0 - kappa) * verified
        self.last = {"natural": float(natural.detach()),
                     "verified": None if verified is None else float(verified.detach()),
                     "eps": self.eps, "kappa": kappa}
        return loss, logits.detach()


class CROWNIBPTrainingLoss(IBPTrainingLoss):
    """Loss for the training loop (``LOSSES["crown_ibp"]``): Zhang et al. 2020's CROWN-IBP.

    As :class:`IBPTrainingLoss` (the kappa mix, the eps and kappa schedules, ``clip``, ``norm``,
    the return value), with the margins' lower bounds
    ``beta * crown_bounds(..., pre="interval").lower + (1 - beta) * interval_bounds(...).lower``.
    beta (in [0, 1]): ``beta_start`` during the warm-up, then linear to ``beta_end`` over the
    ramp (Zhang et al.'s code sets beta = 1 - (eps / eps_max) (1 - final beta), the same line
    when eps starts at 0). A bound whose weight is 0 is not computed (beta 0: IBP alone; beta 1:
    CROWN-IBP alone). Defaults: kappa 1 -> 0.5 and beta 1 -> 0, the CROWN-IBP repository's
    defaults (``final-kappa`` 0.5, ``final-beta`` 0 in its defaults.json). ``last`` also holds
    ``beta``.
    """

    def __init__(self, eps: float = 0.1, ramp_steps: int = 0, warmup_steps: int = 0, start_eps: float = 0.0,
                 kappa_start: float = 1.0, kappa_end: float = 0.5, beta_start: float = 1.0, beta_end: float = 0.0,
                 clip: Optional[Tuple[float, float]] = (0.0, 1.0), norm: str = "linf"):
        super().__init__(eps, ramp_steps, warmup_steps, start_eps, kappa_start, kappa_end, clip, norm)
        self.beta_start = _check_weight("beta_start", beta_start)
        self.beta_end = _check_weight("beta_end", beta_end)
        self.beta_schedule = linear_ramp(self.beta_start, self.beta_end, int(ramp_steps), int(warmup_steps))
        self.beta = self.beta_schedule(0)

    def on_step(self, step: int) -> None:
        """Set ``eps``, ``kappa`` and ``beta`` for global optimisation step ``step``."""
        super().on_step(step)
        self.beta = self.beta_schedule(step)

    def verified_margins(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """(N, K-1) lower bounds of the margins z_y - z_j (j != y) over the ball of radius
        ``self.eps``: beta * CROWN-IBP + (1 - beta) * IBP. Differentiable."""
        beta = self.beta
        ibp = None if beta >= 1.0 else super().verified_margins(model, x, y)
        if beta <= 0.0:
            return ibp
        crown = crown_bounds(model, x, y, self.eps, clip=self.clip, pre="interval", norm=self.norm).lower
        return crown if ibp is None else beta * crown + (1.0 - beta) * ibp

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor):
        out = super().__call__(model, x, y)
        self.last["beta"] = self.beta
        return out
