"""Interval bound propagation (IBP)."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from .activations import DualActivation
from .layers import DualLinear
from .spec import BoundResult, Eps, PreBounds, Problem, prepare

__all__ = ["interval_bounds", "spec_lower_from_box"]


def spec_lower_from_box(layer: DualLinear, C: Tensor, l: Tensor, u: Tensor) -> Tensor:
    """Lower bound of C @ layer(h) over the box l <= h <= u for the last (Linear) layer.

    The spec is folded into the layer first (C W), which is tighter than bounding logits.
    C: (N, m, K); l, u: (N, n). Returns (N, m).
    """
    c, r = (u + l) / 2, (u - l) / 2
    CW = C.matmul(layer.W)  # (N, m, n)
    low = CW.matmul(c.unsqueeze(-1)).squeeze(-1) - CW.abs().matmul(r.unsqueeze(-1)).squeeze(-1)
    if layer.b is not None:
        low = low + C.matmul(layer.b)
    return low


def _interval(P: Problem) -> Tuple[PreBounds, Tensor]:
    """(pre-activation boxes, one (l, u) per activation, each (N, *shape); lower (N, m))."""
    l, u = P.lo, P.hi
    pre = []
    for layer in P.layers[:-1]:
        if isinstance(layer, DualActivation):
            pre.append((l, u))
        l, u = layer.interval(l, u)
    return pre, spec_lower_from_box(P.layers[-1], P.C, l, u)


def interval_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                    spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0)) -> BoundResult:
    """Interval bounds on spec @ logits over the l_inf ball of radius eps (intersected with clip).

    x: (N, *input_shape); y: (N,) labels (default spec: margins z_y - z_j, j != y) or None with
    spec: (N, m, K) / (m, K); eps: l_inf radius, a number or a tensor (N,) / x's shape.
    Returns BoundResult with lower (N, m) and pre_bounds (the boxes of every activation's
    input, each (N, *shape)). Differentiable.
    """
    P = prepare(model, x, y, eps, spec, clip)
    pre, lower = _interval(P)
    return BoundResult(lower=lower, pre_bounds=pre, method="interval")
