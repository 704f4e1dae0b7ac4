"""Checkers for notebook 07 (Wong et al. 2018: general activations, residual networks, projections).

* :func:`check_sigmoid_upper_line` -- an upper line of the sigmoid on [l, u] for every neuron: valid
  (above the sigmoid at every z in [l, u]) and about as tight as the chord/tangent relaxation of
  :class:`tutorial_lib.bounds.DualSigmoid`.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import nn

from ..bounds import DualSigmoid, DualTanh
from .checking import Checker, CheckResult

__all__ = ["check_sigmoid_upper_line"]

#: a valid line may leave at most this many times the reference's area between it and the sigmoid
LOOSENESS = 3.0

#: the cases: name -> (l, u), each a list of neurons, chosen so that each typical mistake fails one
CASES: Dict[str, Tuple[list, list]] = {
    "intervals left of 0 (u <= 0: the sigmoid is convex there)": ([-6.0, -3.0, -1.5, -0.8], [-2.0, -0.5, 0.0, -0.7]),
    "intervals right of 0 (l >= 0: concave)": ([0.0, 0.5, 2.0, 0.1], [1.0, 3.0, 6.0, 0.2]),
    "intervals around 0 where the chord lies above the sigmoid (l far left, u near 0)": ([-6.0, -4.0, -8.0],
                                                                                          [0.5, 0.3, 1.0]),
    "intervals around 0 where the chord cuts the sigmoid (u far right)": ([-1.0, -0.5, -2.0, -3.0],
                                                                          [4.0, 3.0, 6.0, 5.0]),
    "degenerate intervals (l == u)": ([-1.0, 0.0, 2.0], [-1.0, 0.0, 2.0]),
}


def _reference(lo: torch.Tensor, hi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    n = lo.numel()
    _, _, slope, icpt = DualSigmoid(nn.Sigmoid(), (n,), (n,)).relax(lo.view(1, -1), hi.view(1, -1))
    return slope.view(-1), icpt.view(-1)


def _gap(slope: torch.Tensor, icpt: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, points: int = 2001):
    """Per neuron: (the largest amount by which the line falls below the sigmoid on [lo, hi], the
    area between line and sigmoid), on a grid of ``points`` z values, float64."""
    t = torch.linspace(0, 1, points, dtype=torch.float64)
    z = lo.view(-1, 1) + (hi - lo).view(-1, 1) * t
    diff = slope.view(-1, 1) * z + icpt.view(-1, 1) - torch.sigmoid(z)
    width = (hi - lo).view(-1)
    area = torch.trapezoid(diff, t, dim=1) * width
    return (-diff).clamp_min(0).amax(1), area


def _as_lines(checker: Checker, case: str, got, n: int):
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        checker.require(False, f"on {case}: return a pair (slope, intercept) of tensors, got {type(got).__name__}")
        return None
    out = []
    for what, t in zip(("slope", "intercept"), got):
        if not isinstance(t, torch.Tensor):
            checker.require(False, f"on {case}: the {what} must be a torch.Tensor, got {type(t).__name__}")
            return None
        if t.shape != (n,):
            checker.require(False, f"on {case}: the {what} has shape {tuple(t.shape)}, expected ({n},): "
                                   "one line per neuron, like l and u")
            return None
        t = t.detach().to(torch.float64)
        if not torch.isfinite(t).all():
            hint = (" (a chord's slope (s(u) - s(l)) / (u - l) divides by zero when l == u: use the tangent at l "
                    "there)" if "l == u" in case else "")
            checker.require(False, f"on {case}: the {what} contains NaN or inf{hint}")
            return None
        out.append(t)
    return out


def check_sigmoid_upper_line(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``sigmoid_upper_line(l, u) -> (slope, intercept)``: l <= u (n,) float64 tensors, one
    neuron each; the line slope * z + intercept must lie above sigmoid(z) for every z in [l, u]
    (up to 1e-9) and leave at most :data:`LOOSENESS` times the area between the reference line
    (:class:`~tutorial_lib.bounds.DualSigmoid`'s) and the sigmoid, plus 1e-6 per unit of width.
    Cases: :data:`CASES`. The library's own relaxation (DualSigmoid, and DualTanh, whose lines
    give the sigmoid's through sigmoid(z) = (1 + tanh(z / 2)) / 2) may not be called: that would
    answer the exercise by one call."""
    checker = Checker("sigmoid_upper_line", student_fn, verbose, forbid=[DualSigmoid, DualTanh])
    for case, (lo, hi) in CASES.items():
        lt, ut = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
        got = checker.call(case, lt.clone(), ut.clone())
        if not checker.started:
            return checker.finish()
        lines = _as_lines(checker, case, got, len(lo)) if got is not None else None
        if lines is None:
            continue
        below, area = _gap(*lines, lt, ut)
        bad = (below > 1e-9).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            checker.require(False, f"on {case}: on [{lo[i]:g}, {hi[i]:g}] your line falls {float(below[i]):.3g} "
                                   f"below the sigmoid: {_why_invalid(lo[i], hi[i])}")
            continue
        ref_area = _gap(*_reference(lt, ut), lt, ut)[1]
        loose = (area > LOOSENESS * ref_area + 1e-6 * (ut - lt) + 1e-12).nonzero().flatten()
        if len(loose):
            i = int(loose[0])
            checker.require(False, f"on {case}: on [{lo[i]:g}, {hi[i]:g}] your line is valid but loose: the area "
                                   f"between it and the sigmoid is {float(area[i]):.3g}, the chord/tangent line "
                                   f"leaves {float(ref_area[i]):.3g}; a looser line makes every bound after it "
                                   f"looser")
            continue
        checker.require(True, "")
    return checker.finish()


def _why_invalid(lo: float, hi: float) -> str:
    if hi <= 0:
        return ("the sigmoid is convex left of 0, and a tangent lies BELOW a convex function; the chord through "
                "(l, s(l)) and (u, s(u)) lies above it")
    if lo >= 0:
        return ("the sigmoid is concave right of 0, and a chord lies BELOW a concave function; a tangent (e.g. at "
                "the midpoint) lies above it")
    return ("the interval contains the inflection point 0: the chord is valid only when s'(u) >= its slope; "
            "otherwise take a tangent at a point t > 0 whose line passes above (l, s(l))")
