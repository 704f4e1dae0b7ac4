"""Checkers for notebook 10 (IBP, CROWN and CROWN-IBP).

* :func:`check_crown_lower_slope` -- CROWN's adaptive lower slope of an unstable ReLU, checked
  on values (ties accepted either way) and through the bound it gives: plugged into a backward
  pass over interval pre-activation bounds, it must reproduce ``bounds.crown_bounds(pre='interval')``.
* :func:`check_ibp_beats_crown` -- a network with ONE hidden ReLU layer, an input, a radius and a
  spec on which interval bounds are tighter than CROWN on some row.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

from .. import bounds
from ..bounds.crown import CrownReLU
from .checking import Checker, CheckResult
from .polytope import MIN_GAP, _radius

__all__ = ["check_crown_lower_slope", "check_ibp_beats_crown", "backward_bound", "ibp_pre_bounds"]


def ibp_pre_bounds(linears: List[nn.Linear], x: Tensor, eps: float) -> List[Tuple[Tensor, Tensor]]:
    """Interval bounds of every hidden pre-activation of the MLP ``linears`` (ReLU between
    consecutive layers) over the l_inf ball of radius eps around x (N, d) intersected with [0, 1]:
    one (l, u) pair of (N, n_i) per hidden layer."""
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    out = []
    for layer in linears[:-1]:
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        c, r = layer(mid), rad @ layer.weight.abs().t()
        out.append((c - r, c + r))
        lo, hi = (c - r).clamp(min=0), (c + r).clamp(min=0)
    return out


def backward_bound(linears: List[nn.Linear], pre_bounds: List[Tuple[Tensor, Tensor]], x: Tensor, eps: float,
                   C: Tensor, lower_slope: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Lower bound on C @ f(x') over the l_inf ball (in [0, 1]) by one backward pass, the upper
    line a <= u (z - l) / (u - l) and the lower line a >= alpha z, alpha = lower_slope(l, u), on
    every unstable ReLU (notebook 10's algorithm cell; notebook 05's with alpha = u / (u - l)).
    linears: the MLP's layers; pre_bounds: (l, u) (N, n_i) per hidden layer; x (N, d); C (N, m, K).
    Returns (N, m)."""
    nu, J = C, 0.0
    for k in range(len(linears) - 1, -1, -1):
        W, b = linears[k].weight, linears[k].bias
        J = J + nu @ b
        nu_hat = nu @ W
        if k == 0:
            break
        l, u = (t.unsqueeze(1) for t in pre_bounds[k - 1])
        unstable = (l < 0) & (u > 0)
        d = torch.where(unstable, u / torch.where(unstable, u - l, 1.0), (l >= 0).to(u.dtype))
        alpha = torch.where(unstable, lower_slope(l, u), d)
        nu = torch.where(nu_hat >= 0, alpha, d) * nu_hat
        J = J + (d * l * (-nu_hat).clamp(min=0) * unstable).sum(-1)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    mid, rad = ((lo + hi) / 2).unsqueeze(1), ((hi - lo) / 2).unsqueeze(1)
    return J + (nu_hat * mid).sum(-1) - (nu_hat.abs() * rad).sum(-1)


def _mlp(seed: int, sizes=(6, 12, 10, 3)) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers: List[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        lin = nn.Linear(a, b).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64) / a ** 0.5)
            lin.bias.copy_(0.1 * torch.randn(b, generator=g, dtype=torch.float64))
        layers += [lin] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def check_crown_lower_slope(student_fn, verbose: bool = True) -> CheckResult:
    """Check ``crown_lower_slope(l, u) -> alpha``: for pre-activation bounds l < 0 < u (tensors of
    any shape), CROWN's lower slope: 1 where u > -l, 0 where u < -l (either at a tie u = -l, where
    both lines leave the same area). Then the slope is used in :func:`backward_bound` over interval
    pre-activation bounds on two random MLPs, which must give ``bounds.crown_bounds(pre='interval')``;
    a slope outside [0, 1] is reported with the sampled point where its bound fails."""
    checker = Checker("crown_lower_slope", student_fn, verbose, forbid=[bounds.crown_bounds, CrownReLU])
    l = torch.tensor([[-1.0, -3.0, -0.5, -2.0, -1e-3, -5.0]], dtype=torch.float64)
    u = torch.tensor([[2.0, 1.0, 0.25, 2.0, 4.0, 4.999]], dtype=torch.float64)
    want = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)  # index 3 is a tie
    out = checker.call("six unstable neurons (one a tie, u = -l)", l.clone(), u.clone())
    if out is None:
        return checker.finish()
    if not checker.require(isinstance(out, Tensor) and tuple(out.shape) == tuple(l.shape),
                           f"return a tensor of the shape of l and u {tuple(l.shape)}, got "
                           f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"):
        return checker.finish()
    out = out.detach().double()
    checker.require(((out >= 0) & (out <= 1)).all(),
                    "some slopes are outside [0, 1]: the line a >= alpha z is below the ReLU on [l, u] only "
                    "for 0 <= alpha <= 1 (at z = u it needs alpha <= 1, at z = l it needs alpha >= 0)")
    not_tie = torch.ones_like(want, dtype=torch.bool)
    not_tie[0, 3] = False
    wrong = ((out - want).abs() > 1e-12) & not_tie
    if wrong.any():
        i = int(wrong.flatten().nonzero()[0])
        checker.require(False, f"for l = {l.flatten()[i]:g}, u = {u.flatten()[i]:g} your slope is "
                               f"{out.flatten()[i]:g}, CROWN's is {want.flatten()[i]:g}: CROWN keeps the line "
                               "(a >= z or a >= 0) that leaves the smaller area between it and the ReLU on [l, u]")
    else:
        checker.require(True, "")
    checker.require(out[0, 3] in (0.0, 1.0), f"at the tie l = -2, u = 2 your slope is {float(out[0, 3]):g}; "
                                             "CROWN takes 0 or 1 (both leave area 2)")
    for seed, eps in ((0, 0.15), (1, 0.3)):
        net = _mlp(seed)
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.rand(4, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (4,), generator=g)
        C = bounds.margin_spec(y, 3).double()
        linears = [m for m in net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            pre = ibp_pre_bounds(linears, x, eps)
            ties = any(bool((((lo < 0) & (up > 0)) & ((up + lo).abs() < 1e-9)).any()) for lo, up in pre)
            seen: list = []

            def slope(lo, up, seen=seen):
                return checker._run((lo, up), {}, seen)
            try:
                got = backward_bound(linears, pre, x, eps, C, slope)
            except Exception as err:
                checker.require(False, f"on the MLP of seed {seed}, your slope raised {type(err).__name__}: {err} "
                                       "(it receives l and u of shape (N, 1, n): broadcast, do not index)")
                continue
            if seen:
                checker.require(False, f"your slope calls the library's own {seen[0]}: write it yourself")
                continue
            ref = bounds.crown_bounds(net, x, y, eps, pre="interval").lower
        if not ties:
            checker.tensor_close(f"the CROWN-IBP bound with your slope (MLP of seed {seed}, eps {eps})", got, ref,
                                 atol=1e-9, rtol=1e-9)
    return checker.finish()


def check_ibp_beats_crown(student_fn, verbose: bool = True) -> CheckResult:
    """Check ``ibp_beats_crown() -> (model, x, eps, spec)``: model an nn.Sequential Linear, ReLU,
    Linear (ONE hidden layer), x (1, d), eps > 0, spec (m, K); on the l_inf ball around x without
    a pixel box, ``bounds.interval_bounds`` must beat ``bounds.crown_bounds`` on some row."""
    checker = Checker("ibp_beats_crown", student_fn, verbose)
    out = checker.call("your example (called with no arguments)")
    if out is None:
        return checker.finish()
    if not checker.require(isinstance(out, (tuple, list)) and len(out) == 4,
                           "return a tuple (model, x, eps, spec) of four things"):
        return checker.finish()
    model, x, eps, spec = out
    kinds = [type(m) for m in model] if isinstance(model, nn.Sequential) else None
    ok = checker.require(kinds == [nn.Linear, nn.ReLU, nn.Linear],
                         "model: expected nn.Sequential(nn.Linear, nn.ReLU, nn.Linear), one hidden layer (with "
                         f"more layers interval bounds beat CROWN more easily; the exercise is about one), got "
                         f"{[k.__name__ for k in kinds] if kinds else type(model).__name__}")
    ok &= checker.require(isinstance(x, Tensor) and x.is_floating_point() and x.dim() == 2 and x.shape[0] == 1,
                          "x: expected a floating tensor of shape (1, number of inputs)")
    r = _radius(eps)
    ok &= checker.require(r is not None and r > 0, f"eps must be one number > 0, got {eps!r}")
    ok &= checker.require(isinstance(spec, Tensor) and spec.dim() == 2 and spec.shape[0] >= 1,
                          "spec: expected a tensor of shape (m, K)")
    if not ok:
        return checker.finish()
    try:
        with torch.no_grad():
            ib = bounds.interval_bounds(model, x, None, r, spec=spec, clip=None).lower[0]
            cr = bounds.crown_bounds(model, x, None, r, spec=spec, clip=None).lower[0]
    except Exception as err:
        checker.require(False, f"the bound functions refused your example ({type(err).__name__}: {err})")
        return checker.finish()
    gap = ib - cr
    checker.require(float(gap.max()) > MIN_GAP,
                    f"interval bounds do not beat CROWN on any row (largest interval - CROWN: {float(gap.max()):.3g}). "
                    "Hint: find a row that needs a LOWER bound on an unstable ReLU where CROWN picks the slope 1 "
                    "(u >= -l): its line a >= z dips below 0, which interval arithmetic never does")
    return checker.finish()
