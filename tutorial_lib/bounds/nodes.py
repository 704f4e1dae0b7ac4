"""Bounds of every node of a network (not only of the activations' inputs).

The bound methods walk a network as a list of nodes in topological order
(:func:`tutorial_lib.bounds.layers.build_layers`): its layers, and for every
:class:`tutorial_lib.models.Residual` / :class:`tutorial_lib.models.DenseSkip` block a
:class:`~tutorial_lib.bounds.joins.DualAdd` / :class:`~tutorial_lib.bounds.joins.DualConcat`
join. :func:`node_bounds` gives lower and upper bounds of each node's output over the input set
(the ball of radius eps in ``norm``, for l_inf intersected with the box ``clip``).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .activations import DualActivation
from .base import DualLayer
from .dual import _pre_bounds, _value_bounds
from .interval import _interval_boxes, _interval_node
from .precision import without_tf32
from .spec import Eps, prepare

__all__ = ["node_bounds"]

METHODS = ("dual", "interval")


@without_tf32
def node_bounds(model: nn.Module, x: Tensor, eps: Eps, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                method: str = "dual", norm: str = "linf",
                max_rows: Optional[int] = None) -> List[Tuple[DualLayer, Tensor, Tensor]]:
    """Lower and upper bounds of the output of every node over the input set.

    x: (N, *input_shape) in the box clip; eps: the radius in ``norm`` ('linf', 'l2', 'l1'; as
    in :func:`~tutorial_lib.bounds.dual_bounds`, the box is dropped for l2/l1). The model must
    have at least 2 outputs (its logits).
    method: 'dual' (each node's entries by the dual network, as :func:`dual_bounds` bounds the
    activations' inputs; an activation's output: the interval image of its input's bounds,
    exact given them) or 'interval' (interval arithmetic; the first activations' inputs exact
    for l2/l1, as in :func:`interval_bounds`).
    max_rows: as in :func:`dual_bounds` (entries per backward pass; None: a memory cap).
    Returns [(node, lower, upper)] in topological order: ``node.module`` is the torch module it
    wraps (the block, for a join), ``node.inputs`` the values it reads (0: the input, i + 1:
    node i's output); lower, upper (N, *node.out_shape). The dual costs one backward pass of
    the identity per node: meant for small networks.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if isinstance(x, Tensor) else None
    P = prepare(model, x, y, eps, None, clip, norm)
    last = P.layers[-1]
    if method == "interval":
        _, boxes = _interval_boxes(P, keep=True)
        boxes[len(P.layers)] = _interval_node(last, boxes)
        return [(layer, *boxes[i + 1]) for i, layer in enumerate(P.layers)]
    _pre_bounds(P, max_rows=max_rows)
    out = []
    for i, layer in enumerate(P.layers):
        if isinstance(layer, DualActivation):
            l, u = layer.interval(layer.l, layer.u)
        else:
            l, u = _value_bounds(P, i + 1, max_rows)
        out.append((layer, l, u))
    return out
