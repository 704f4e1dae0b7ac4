"""Random projections measured (Wong et al. 2018, Section 3.2; for notebook 07).

Robust training needs every neuron's pre-activation bounds, and their exact computation costs a
backward pass per neuron. Wong et al. estimate the l1 norms inside those bounds from k random
projections (the median of |Cauchy projections| for l_inf balls; the root mean square of Gaussian
ones for l2), so a bound costs k columns pushed forward instead. The estimate is not a bound: it
can land on either side of the exact value, which is why certificates never use it.

* :func:`estimate_errors`   per-neuron relative error of the estimated pre-activation bounds, and
  the fraction that come out TIGHTER than the exact (sound) bound, as k grows
* :func:`step_seconds`      seconds per robust-training step (loss + backward) against k, and exact
* :func:`median_bias`       on |Cauchy| draws of known median s: how often each median rule
  (bounds.dual.median_abs: 'mid', or torch.median's 'lower' middle value) lands below s, beside
  the exact probability for the lower rule

Bounds in both are the dual network's (:func:`tutorial_lib.bounds.dual_bounds`,
:func:`tutorial_lib.bounds.estimated_dual_bounds`) on the ball of radius eps in ``norm``.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..bounds import dual_bounds, estimated_dual_bounds, robust_loss
from ..bounds.dual import median_abs

__all__ = ["estimate_errors", "step_seconds", "median_bias", "lower_rule_below"]


def _lower_bounds(pre) -> Tensor:
    """The lower pre-activation bounds of the activation layers after the first, flattened to
    (N, neurons): the first layer's bounds are computed exactly by both methods."""
    if len(pre) < 2:
        raise ValueError("the network needs at least two activation layers: the first one's bounds are exact "
                         "with or without projections")
    return torch.cat([lo.flatten(1) for lo, _ in pre[1:]], 1)


def estimate_errors(model: nn.Module, x: Tensor, eps: float, ks: Sequence[int], trials: int = 3,
                    norm: str = "linf", seed: int = 0, min_scale: float = 1e-3,
                    median: str = "mid") -> Dict[int, Dict[str, object]]:
    """How far k-projection estimates of the lower pre-activation bounds are from the exact ones
    (every activation layer after the first: the first one's are exact either way).

    x: (N, *input shape) in [0, 1]; eps: the radius in ``norm`` ('linf' or 'l2'); ks: the numbers of
    projections; trials: independent draws per k (seeded). Neurons whose exact bound is within
    ``min_scale`` of 0 are left out of the relative errors (a relative error of a near-zero value
    says nothing). Returns {k: {"relative_error": (trials * N * neurons,) tensor of
    |estimate - exact| / |exact|, "median": float, "p90": float, "tighter": the fraction of
    neurons whose estimated lower bound is ABOVE the exact one (an unsound bound)}}.
    median: the median rule of the Cauchy estimates ('mid' or 'lower', see
    :func:`tutorial_lib.bounds.dual.median_abs`).
    """
    y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # pre-activation bounds ignore y
    with torch.no_grad():
        exact = _lower_bounds(dual_bounds(model, x, y, eps, norm=norm).pre_bounds)
    keep = exact.abs() > min_scale
    out: Dict[int, Dict[str, object]] = {}
    for k in ks:
        errors: List[Tensor] = []
        tighter: List[Tensor] = []
        for t in range(trials):
            g = torch.Generator(device=x.device).manual_seed(seed + 1000 * t + int(k))
            with torch.no_grad():
                est = _lower_bounds(estimated_dual_bounds(model, x, y, eps, proj=int(k), generator=g,
                                                          norm=norm, median=median).pre_bounds)
            errors.append(((est - exact).abs() / exact.abs())[keep])
            tighter.append((est > exact + 1e-6)[keep].float())
        err = torch.cat(errors)
        out[int(k)] = {"relative_error": err, "median": float(err.median()),
                       "p90": float(err.quantile(0.9)) if err.numel() else float("nan"),
                       "tighter": float(torch.cat(tighter).mean())}
    return out


def step_seconds(model: nn.Module, x: Tensor, y: Tensor, eps: float, ks: Sequence[Optional[int]],
                 reps: int = 3, norm: str = "linf", seed: int = 0) -> Dict[str, float]:
    """Median seconds of one robust-training step (the robust loss and its backward pass) on the
    batch (x, y) for each k in ``ks`` (None: the exact bound), after one warm-up step.
    Returns {"k=<k>" or "exact": seconds}."""
    out: Dict[str, float] = {}
    g = torch.Generator(device=x.device).manual_seed(seed)
    for k in ks:
        times = []
        for r in range(reps + 1):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss, _ = robust_loss(model, x, y, eps, proj=k, generator=g if k else None, norm=norm)
            loss.backward()
            if x.is_cuda:
                torch.cuda.synchronize()
            if r:  # the first run warms up
                times.append(time.perf_counter() - t0)
        out["exact" if k is None else f"k={k}"] = statistics.median(times)
    model.zero_grad(set_to_none=True)
    return out


def lower_rule_below(k: int) -> float:
    """The probability that the lower middle value of k i.i.d. draws of a continuous distribution
    lies below the distribution's median. For even k it is the (k/2)-th smallest draw, below the
    median exactly when at least k/2 of the k draws are: P(Binomial(k, 1/2) >= k/2) =
    1/2 + C(k, k/2) / 2^(k+1). For odd k the middle draw: 1/2."""
    if k % 2:
        return 0.5
    return 0.5 + math.comb(k, k // 2) / 2 ** (k + 1)


def median_bias(ks: Sequence[int], draws: int = 20000, scale: float = 1.0, seed: int = 0
                ) -> Dict[int, Dict[str, float]]:
    """How often the median estimate of ``scale`` from k |Cauchy(scale)| draws lands BELOW scale
    (an underestimated l1 norm: an optimistic bound), per median rule, over ``draws`` seeded
    repetitions. Returns {k: {"mid": fraction, "lower": fraction, "lower_exact":
    :func:`lower_rule_below` (k)}}; the fractions are sample rates over ``draws`` repetitions."""
    out: Dict[int, Dict[str, float]] = {}
    for k in ks:
        g = torch.Generator().manual_seed(seed + int(k))
        u = torch.rand(draws, int(k), dtype=torch.float64, generator=g)
        V = scale * torch.tan(math.pi * (u - 0.5))
        out[int(k)] = {rule: float((median_abs(V, dim=1, rule=rule) < scale).double().mean())
                       for rule in ("mid", "lower")}
        out[int(k)]["lower_exact"] = lower_rule_below(int(k))
    return out
