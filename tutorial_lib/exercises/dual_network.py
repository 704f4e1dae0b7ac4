"""Checkers for notebook 05 (the dual network and provably robust training).

* :func:`check_count_unstable` -- the number of unstable ReLUs (l < 0 < u) per ReLU layer and
  image, from the dual network's pre-activation bounds (``bounds.dual_bounds(...).pre_bounds``,
  the input set being the l_inf ball intersected with the pixel box [0, 1]).
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import nn

from .. import bounds
from .checking import Checker, CheckResult

__all__ = ["check_count_unstable"]

PreBounds = List[Tuple[torch.Tensor, torch.Tensor]]


def _hand_mlp() -> Tuple[nn.Sequential, torch.Tensor]:
    """2 -> 4 -> 3 -> 2 (float64) and two points. Around x = (0.5, 0.5) with eps = 0.25 the first
    layer's neurons have z in [0, 0.5] (l = 0 exactly: stable), [-0.5, 0] (u = 0: stable) and two
    in [-0.5, 0.5] (unstable); the second x is near the edge of the pixel box."""
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0], [1.0, -1.0]]))
        net[0].bias.copy_(torch.tensor([-0.25, 0.25, -1.0, 0.0]))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0, 2.0, -1.5], [-1.0, 0.5, 1.0, 1.0], [0.5, 0.5, -1.0, 1.0]]))
        net[2].bias.copy_(torch.tensor([-0.1, 0.3, 0.05]))
        net[4].weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.25]]))
        net[4].bias.zero_()
    x = torch.tensor([[0.5, 0.5], [0.1, 0.85]], dtype=torch.float64)
    return net.eval(), x


def _pre_bounds(model: nn.Module, x: torch.Tensor, eps: float, fn: Callable = bounds.dual_bounds,
                **kwargs) -> PreBounds:
    with torch.no_grad():
        y = model(x).argmax(1)  # the labels do not change the pre-activation bounds
        return fn(model, x, y, eps, **kwargs).pre_bounds


def _count(pre: PreBounds, strict: bool = True) -> torch.Tensor:
    if strict:
        masks = [(lo < 0) & (up > 0) for lo, up in pre]
    else:
        masks = [(lo <= 0) & (up >= 0) for lo, up in pre]
    return torch.stack([m.flatten(1).sum(1) for m in masks], 1)


def _explain(got: torch.Tensor, model: nn.Module, x: torch.Tensor, eps: float, expected: torch.Tensor) -> str:
    """Name the likely mistake when the counts differ."""
    known = [
        (lambda: _count(_pre_bounds(model, x, eps, bounds.interval_bounds)),
         "these are the counts from interval bounds; use the dual network's bounds "
         "(bounds.dual_bounds(...).pre_bounds), which are tighter from the second ReLU layer on and are "
         "the ones the certificate relaxes"),
        (lambda: _count(_pre_bounds(model, x, eps, intersect_ibp=True)),
         "these counts use the dual bounds intersected with interval bounds (intersect_ibp=True); "
         "count with the plain dual network's bounds, the ones the certificate of this notebook uses"),
        (lambda: _count(_pre_bounds(model, x, eps, clip=None)),
         "these counts ignore the pixel box: the input set is the eps-ball intersected with [0, 1] "
         "(the bound functions' default clip=(0, 1)); do not pass clip=None"),
        (lambda: _count(_pre_bounds(model, x, eps), strict=False),
         "you counted neurons with l = 0 or u = 0 (or l = u = 0) as unstable: such a ReLU is exactly "
         "linear on its input range (a = z or a = 0); count only l < 0 < u, with strict inequalities"),
    ]
    for alternative, message in known:
        try:
            alt = alternative()
        except Exception:  # an alternative that does not apply to this case
            continue
        if not torch.equal(alt, expected) and torch.equal(got, alt):
            return message
    rows = [i for i in range(got.shape[0]) if not torch.equal(got[i], expected[i])]
    i = rows[0]
    return (f"the counts differ on {len(rows)} of {got.shape[0]} images; image {i}: you return "
            f"{got[i].tolist()}, the dual bounds give {expected[i].tolist()} (per ReLU layer)")


def _compare(checker: Checker, case: str, got, model: nn.Module, x: torch.Tensor, eps: float) -> None:
    expected = _count(_pre_bounds(model, x, eps))
    N, L = expected.shape
    if not checker.require(isinstance(got, torch.Tensor),
                           f"on {case}: return a torch.Tensor of counts, got {type(got).__name__}"):
        return
    got = got.detach().cpu()
    if tuple(got.shape) != (N, L):
        if tuple(got.shape) == (N,):
            problem = (f"on {case}: shape ({N},): return one count per ReLU layer, shape (N, L) = ({N}, {L}), "
                       "not the total over the layers")
        elif tuple(got.shape) == (L,):
            problem = (f"on {case}: shape ({L},): return one row per image, shape (N, L) = ({N}, {L}), "
                       "not the sum over the images")
        else:
            problem = f"on {case}: shape {tuple(got.shape)}, expected (N, L) = ({N}, {L}) (images, ReLU layers)"
        checker.require(False, problem)
        return
    if got.is_floating_point():
        if not checker.require(torch.isfinite(got).all(), f"on {case}: the counts contain NaN or inf"):
            return
        if (got != got.round()).any():
            sizes = [int(torch.tensor(lo.shape[1:]).prod()) for lo, _ in _pre_bounds(model, x[:1], eps)]
            checker.require(False, f"on {case}: the values are not whole numbers; return counts of neurons, "
                                   f"not fractions (the layers have {sizes} neurons)")
            return
        got = got.round()
    got = got.to(torch.long)
    same = torch.equal(got, expected)
    checker.require(same, "" if same else f"on {case}: " + _explain(got, model, x, eps, expected))


def _mnist_case() -> Tuple[nn.Module, torch.Tensor]:
    from ..checkpoints import load_checkpoint
    from ..data import test_subset
    model = load_checkpoint("mnist_small_robust", device="cpu")[0].eval()
    x, _ = test_subset("mnist", 4)
    return model, x


def check_count_unstable(student_fn, verbose: bool = True) -> CheckResult:
    """Check ``count_unstable(model, x, eps) -> (N, L)`` integer counts of unstable ReLUs
    (l < 0 < u under the dual network's pre-activation bounds, the ball intersected with [0, 1])
    on a hand-made MLP (neurons with l = 0 and u = 0 exactly, eps 0.25 and 0) and on 4 MNIST
    test images with the shipped mnist_small_robust CNN at eps 0.1."""
    checker = Checker("count_unstable", student_fn, verbose)
    net, x = _hand_mlp()
    cases = [("a hand-made MLP, eps = 0.25", net, x, 0.25), ("the same MLP, eps = 0", net, x, 0.0)]
    for case, model, xc, eps in cases:
        got = checker.call(case, model, xc.clone(), eps, _no_grad=True)
        if not checker.started:
            return checker.finish()
        if got is not None:
            _compare(checker, case, got, model, xc, eps)
    model, xm = _mnist_case()
    case = "4 MNIST test images, mnist_small_robust, eps = 0.1"
    got = checker.call(case, model, xm.clone(), 0.1, _no_grad=True)
    if got is not None:
        _compare(checker, case, got, model, xm, 0.1)
    return checker.finish()
