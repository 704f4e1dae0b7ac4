"""Interval bound propagation (IBP).

For an l2/l1 ball the input set is not a box: the bounds of the first activation's input (the
image of the ball under the affine layers before it, a row a per neuron) are exact,
a . x0 + b +- eps ||a||_* with the dual norm, and intervals are propagated from there on. The
pixel box is dropped for l2/l1 (sound, looser). Residual and dense-skip blocks: the box of a sum
is the sum of the boxes, of a concatenation their concatenation.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from .activations import DualActivation
from .dual import _final_lower, _interval_node, _prefix_bounds
from .layers import DualLinear, last_uses
from .precision import no_tf32
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
    """(pre-activation boxes, one (l, u) per activation, each (N, *shape); lower (N, m)).

    Without activations and for an l2/l1 ball the network is affine and the bound is its exact
    minimum over the ball; otherwise :func:`_interval_boxes`, the spec folded into the last layer."""
    if P.ball is not None and not P.act_idx:
        return [], _final_lower(P)
    pre, boxes = _interval_boxes(P)
    return pre, spec_lower_from_box(P.layers[-1], P.C, *boxes[P.layers[-1].inputs[0]])


def _interval_boxes(P: Problem, keep: bool = False) -> Tuple[PreBounds, Dict[int, Tuple[Tensor, Tensor]]]:
    """Boxes propagated through the nodes but the last in topological order (a join: the sum or
    the concatenation of its inputs' boxes): (one box per activation's input, the boxes of the
    values: those still to be read, or with ``keep`` all of them, value v (N, *shape)).

    For an l2/l1 ball they start from the box x +- eps clipped (which contains the ball) and
    every activation whose input has no activation before it gets the exact bounds of that
    affine image of the ball instead (the first activation of a chain)."""
    boxes: Dict[int, Tuple[Tensor, Tensor]] = {0: (P.lo, P.hi)}
    after_act = [False] * (len(P.layers) + 1)  # value v has an activation on its way from the input
    uses = last_uses(P.layers)
    pre = []
    for i, layer in enumerate(P.layers[:-1]):
        if isinstance(layer, DualActivation):
            v = layer.inputs[0]
            if P.ball is not None and not after_act[v]:
                boxes[v] = _prefix_bounds(P, i)
            pre.append(boxes[v])
        after_act[i + 1] = isinstance(layer, DualActivation) or any(after_act[j] for j in layer.inputs)
        boxes[i + 1] = _interval_node(layer, boxes)
        for j in set(layer.inputs):
            if uses[j] == i and not keep:
                del boxes[j]
    return pre, boxes


def interval_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                    spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                    norm: str = "linf") -> BoundResult:
    """Interval bounds on spec @ logits over the ball of radius eps in ``norm``.

    x: (N, *input_shape); y: (N,) labels (default spec: margins z_y - z_j, j != y) or None with
    spec: (N, m, K) / (m, K); eps: the radius, a number or a tensor (N,) (l_inf also x's shape).
    norm: 'linf' (default; the ball intersected with the box clip), 'l2' or 'l1': the first
    activation's input gets the exact bounds a . x0 + b +- eps ||a||_* (dual norm: l2 or l_inf),
    then intervals; the box clip is DROPPED for l2/l1 (sound, looser).
    Returns BoundResult with lower (N, m) and pre_bounds (the boxes of every activation's
    input, each (N, *shape)). Differentiable. Runs with TF32 off, in the model's dtype (to
    certify a float32 model: :func:`~tutorial_lib.bounds.certified_bounds`, in float64).
    """
    with no_tf32():
        P = prepare(model, x, y, eps, spec, clip, norm)
        pre, lower = _interval(P)
        return BoundResult(lower=lower, pre_bounds=pre, method="interval", norm=P.norm)
