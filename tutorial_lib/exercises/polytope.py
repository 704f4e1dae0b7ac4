"""Checkers for notebook 04 (the convex outer adversarial polytope).

* :func:`check_interval_beats_dual` -- a network and an input on which interval bounds are
  tighter than the dual network (paper's slopes) on some row of the spec.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from .. import bounds
from .checking import Checker, CheckResult

__all__ = ["check_interval_beats_dual"]

#: how much larger than the dual bound the interval bound must be on some row
MIN_GAP = 1e-6


def _radius(eps):
    """eps as a float, or None when it is not one number."""
    if isinstance(eps, bool):
        return None
    if isinstance(eps, numbers.Real):
        return float(eps)
    if isinstance(eps, torch.Tensor) and eps.numel() == 1 and eps.is_floating_point():
        return float(eps)
    return None


def check_interval_beats_dual(student_fn, verbose: bool = True) -> CheckResult:
    """Check ``interval_beats_dual() -> (model, x, eps, spec)``: on the l_inf ball of radius eps
    around x (no pixel box, clip=None), ``bounds.interval_bounds`` must give a larger lower bound
    than ``bounds.dual_bounds`` on at least one row of spec (by more than 1e-6)."""
    checker = Checker("interval_beats_dual", student_fn, verbose)
    out = checker.call("your example (called with no arguments)")
    if out is None:
        return checker.finish()
    if not checker.require(isinstance(out, (tuple, list)) and len(out) == 4,
                           f"return a tuple (model, x, eps, spec) of four things; got "
                           f"{type(out).__name__}{f' of length {len(out)}' if isinstance(out, (tuple, list)) else ''}"):
        return checker.finish()
    model, x, eps, spec = out
    ok = checker.require(isinstance(model, nn.Sequential),
                         f"model: expected an nn.Sequential of nn.Linear and nn.ReLU layers ending in nn.Linear, "
                         f"got {type(model).__name__}")
    ok &= checker.require(isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 2 and x.shape[0] == 1,
                          "x: expected a floating tensor of shape (1, number of inputs): one input point, "
                          f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    r = _radius(eps)
    ok &= checker.require(r is not None and r > 0,
                          f"eps must be one number > 0 (got {eps!r}): at eps = 0 the ball is a single point, "
                          "where both bounds are exact and therefore equal")
    ok &= checker.require(isinstance(spec, torch.Tensor) and spec.dim() == 2 and spec.shape[0] >= 1,
                          "spec: expected a tensor of shape (m, K), one row c per quantity c @ f(x') to bound, "
                          f"got {tuple(spec.shape) if isinstance(spec, torch.Tensor) else type(spec).__name__}")
    if not ok:
        return checker.finish()
    try:
        with torch.no_grad():
            ib = bounds.interval_bounds(model, x, None, r, spec=spec, clip=None).lower[0]
            du = bounds.dual_bounds(model, x, None, r, spec=spec, clip=None).lower[0]
    except Exception as err:  # the library refuses the example: say why, in its words
        checker.require(False, f"the bound functions refused your example ({type(err).__name__}: {err})")
        return checker.finish()
    if not checker.require(torch.isfinite(ib).all() and torch.isfinite(du).all(),
                           "the bounds on your example are not finite (NaN or inf): check the weights"):
        return checker.finish()
    gap = ib - du
    best = int(gap.argmax())
    checker.require(
        float(gap[best]) > MIN_GAP,
        f"interval bounds do not beat the dual on any row of your spec (largest interval - dual: "
        f"{float(gap[best]):.3g}). Hint: for an unstable ReLU (l < 0 < u) the dual's lower line is "
        f"a >= u/(u-l) * z, which goes below 0 when z < 0, while interval arithmetic keeps a >= max(0, l) = 0; "
        f"try a spec row that puts a positive weight on a ReLU that can switch off")
    return checker.finish()
