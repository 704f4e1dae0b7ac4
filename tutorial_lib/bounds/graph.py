"""Interval and dual-network bounds for networks with residual blocks (Wong et al. 2018).

"Scaling provable adversarial defenses" writes a network as z_i = sum_{j<i} f_ij(z_j) and
builds the dual from one dual operator per f_ij. Here the network is an nn.Sequential whose
items are the layers of :data:`~tutorial_lib.bounds.layers.LAYER_TYPES` or
:class:`tutorial_lib.models.Residual` blocks y = body(x) + shortcut(x) (body and shortcut:
Sequentials of the same, nested blocks allowed; shortcut None is the identity). The dual of a
sum is the sum of the branches' duals::

    nu_x = body^T(nu_y) + shortcut^T(nu_y)        (the constants of both branches add up)

so a lower bound of nu . (a point of the graph) is pulled back to the input through every
branch, with the existing :class:`DualLayer` / :class:`DualActivation` objects doing each
layer's step (paper's slopes, no projections). Each activation's pre-activation bounds come
from pulling the identity back from its input, in forward order (as :func:`dual_bounds`);
the input set is the l_inf ball intersected with the box ``clip``. Intervals propagate
forward, adding the two branches' intervals at each block.

On a network without blocks both functions give the values of :func:`dual_bounds` and
:func:`interval_bounds` (tested). This is a separate entry point: the LP/MILP, the optimised
dual, random projections, l2/l1 balls and custom specs are not supported here.

Cost: every pre-activation bound is two full backward passes (lower, and upper = -lower of
-nu) of an identity of the activation's size (chunked), so this is for small networks.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..models import Residual
from ..validation import check_finite
from .activations import DualActivation
from .base import DualLayer, UnsupportedLayerError
from .dual import _input_term
from .interval import spec_lower_from_box
from .layers import LAYER_TYPES, DualLinear, _numel, supported_layer_names
from .spec import (
    CONSISTENCY_ATOL,
    CONSISTENCY_RTOL,
    _check_eps,
    _check_precision,
    _hook_owner,
    _nonfinite_parameter,
    margin_spec,
)

__all__ = ["Block", "build_graph", "residual_interval_bounds", "residual_dual_bounds"]

#: entries of one (N, rows, *shape) coefficient tensor when bounding an activation's inputs
_ELEMENT_BUDGET = 2 ** 24


class Block:
    """A wrapped :class:`Residual`: lists of nodes for the body and the shortcut (None: identity)."""

    def __init__(self, module: nn.Module, body: List["Node"], shortcut: Optional[List["Node"]],
                 in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]):
        self.module, self.body, self.shortcut = module, body, shortcut
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)

    def __repr__(self) -> str:
        return f"Block(body={self.body}, shortcut={self.shortcut})"


Node = Union[DualLayer, Block]
#: nu (B, m, *shape) -> a lower bound (N, m) of nu . h over the input set, h the point it is at
Outer = Callable[[Tensor], Tensor]


def _items(module: nn.Module, where: str) -> List[nn.Module]:
    """Flatten nested plain nn.Sequentials into their items; anything else is one item."""
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise UnsupportedLayerError(f"{where} is a {type(module).__name__}, an nn.Sequential subclass that "
                                        "overrides forward: the bounds see only its items; use a plain nn.Sequential")
        out: List[nn.Module] = []
        for k, m in enumerate(module):
            out += _items(m, f"{where}[{k}]")
        return out
    return [module]


def _build(module: nn.Module, h: Tensor, where: str) -> Tuple[List[Node], Tensor]:
    """Wrap the items of ``module`` (a Sequential or one layer) on the sample h (1, *shape)."""
    nodes: List[Node] = []
    for k, m in enumerate(_items(module, where)):
        name = f"{where}/{k} ({type(m).__name__})"
        if isinstance(m, Residual):
            if type(m).forward is not Residual.forward:
                raise UnsupportedLayerError(f"{name}: a Residual subclass that overrides forward is not supported")
            body, hb = _build(m.body, h, name + ".body")
            if m.shortcut is None:
                short, hs = None, h
            else:
                short, hs = _build(m.shortcut, h, name + ".shortcut")
            if hb.shape != hs.shape:
                raise ValueError(f"{name}: the body gives shape {tuple(hb.shape[1:])} but the shortcut "
                                 f"{tuple(hs.shape[1:])}; they must match to be added")
            out = hb + hs
            nodes.append(Block(m, body, short, tuple(h.shape[1:]), tuple(out.shape[1:])))
        else:
            cls = LAYER_TYPES.get(type(m))
            if cls is None:
                raise UnsupportedLayerError(f"layer {name} ({m!r}) is not supported by the residual bounds; "
                                            f"supported: {supported_layer_names()} and Residual blocks")
            try:
                with torch.no_grad():
                    out = m(h)
            except Exception as e:
                raise ValueError(f"layer {name} ({m!r}) failed on input shape {tuple(h.shape[1:])}: {e}") from e
            nodes.append(cls(m, tuple(h.shape[1:]), tuple(out.shape[1:])))
        h = out
    return nodes, h


def build_graph(model: nn.Module, sample: Tensor) -> Tuple[List[Node], Tuple[int, ...]]:
    """The node list of ``model`` (an nn.Sequential of supported layers and Residual blocks)
    on ``sample`` (1, *in_shape); returns (nodes, output shape per example). The last item must
    be an nn.Linear (the logits)."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(f"residual bounds need an nn.Sequential (of {supported_layer_names()} "
                                    f"and Residual blocks); got {type(model).__name__}")
    nodes, out = _build(model, sample, "model")
    if not nodes:
        raise ValueError("the model has no layers")
    if not isinstance(nodes[-1], DualLinear):
        raise ValueError(f"the last layer must be nn.Linear (the logits); got {nodes[-1]!r}")
    return nodes, tuple(out.shape[1:])


def _forward(nodes: List[Node], h: Tensor) -> Tensor:
    for n in nodes:
        if isinstance(n, Block):
            h = _forward(n.body, h) + (h if n.shortcut is None else _forward(n.shortcut, h))
        else:
            h = n.forward(h)
    return h


def _interval(nodes: List[Node], l: Tensor, u: Tensor, pre: list) -> Tuple[Tensor, Tensor]:
    for n in nodes:
        if isinstance(n, Block):
            lb, ub = _interval(n.body, l, u, pre)
            ls, us = (l, u) if n.shortcut is None else _interval(n.shortcut, l, u, pre)
            l, u = lb + ls, ub + us
        else:
            if isinstance(n, DualActivation):
                pre.append((l, u))
            l, u = n.interval(l, u)
    return l, u


def _pull(nodes: List[Node], end: int, nu: Tensor) -> Tuple[Tensor, Union[Tensor, float]]:
    """Pull a lower bound of nu . (output of nodes[end-1]) back to nu' . (input of nodes[0]) + c.

    nu: (B, m, *shape). Returns (nu' (B or N, m, *in_shape), c (N, m) or 0.)."""
    c: Union[Tensor, float] = 0.0
    for n in reversed(nodes[:end]):
        if isinstance(n, Block):  # the dual of a sum: the sum of the branches' duals
            nb, cb = _pull(n.body, len(n.body), nu)
            ns, cs = (nu, 0.0) if n.shortcut is None else _pull(n.shortcut, len(n.shortcut), nu)
            nu, c = nb + ns, c + cb + cs
        else:
            nu, cl, _ = n.backward(nu, None, False)
            if cl is not None:
                c = c + cl
    return nu, c


def _through(nodes: List[Node], i: int, outer: Outer) -> Outer:
    """The Outer of the input of nodes[i], given the Outer of the input of nodes[0]."""
    def bound(nu: Tensor) -> Tensor:
        nu0, c = _pull(nodes, i, nu)
        return outer(nu0) + c
    return bound


def _set_bounds(nodes: List[Node], outer: Outer, like: Tensor, pre: list) -> None:
    """Set every activation's pre-activation bounds, in forward order (recursing into blocks)."""
    N = like.shape[0]
    for i, n in enumerate(nodes):
        if isinstance(n, Block):
            here = _through(nodes, i, outer)
            _set_bounds(n.body, here, like, pre)
            if n.shortcut is not None:
                _set_bounds(n.shortcut, here, like, pre)
        elif isinstance(n, DualActivation):
            here = _through(nodes, i, outer)
            shape = n.in_shape
            size = _numel(shape)
            eye = torch.eye(size, dtype=like.dtype, device=like.device)
            step = max(1, min(size, _ELEMENT_BUDGET // max(1, N * size)))
            lows, ups = [], []
            for a in range(0, size, step):
                nu = eye[a:a + step].view(1, -1, *shape)
                lows.append(here(nu))
                ups.append(-here(-nu))
            l, u = torch.cat(lows, 1).view(N, *shape), torch.cat(ups, 1).view(N, *shape)
            n.set_bounds(l, u)
            pre.append((l, u))


def _prepare(model: nn.Module, x: Tensor, y: Tensor, eps, clip) -> Tuple[List[Node], Tensor, Tensor, Tensor]:
    """Check the inputs; return (nodes, lo, hi, C) with C the margin spec (N, K-1, K)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty floating tensor of shape (N, *input_shape)")
    check_finite("x", x.detach())
    _check_precision(model, x)
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point() and (p.dtype != x.dtype or p.device != x.device):
            raise ValueError(f"model parameters are {p.dtype} on {p.device} but x is {x.dtype} on {x.device}; "
                             "move/cast one of them")
    bad = _nonfinite_parameter(model)
    if bad is not None:
        raise ValueError(bad)
    hook = _hook_owner(model)
    if hook is not None:
        raise UnsupportedLayerError(f"the model has {hook}: the bounds see only the layers, not what hooks "
                                    "change; remove the hook to certify the model")
    e = _check_eps(eps, x)
    xd = x.detach()
    nodes, out_shape = build_graph(model, xd[:1].clone())
    if len(out_shape) != 1:
        raise ValueError(f"the model must output logits of shape (N, K); got (N, *{out_shape})")
    K, N = out_shape[0], x.shape[0]
    with torch.no_grad():
        out, h = model(xd), _forward(nodes, xd)
    scale = float(out.abs().max())
    if not (torch.isfinite(out).all() and out.shape == h.shape
            and torch.allclose(h, out, rtol=CONSISTENCY_RTOL, atol=CONSISTENCY_ATOL * scale)):
        raise ValueError("model(x) differs from the composition of its layers and blocks (an overridden "
                         "forward, or non-finite logits): the model that runs is not the one bounded")
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool or tuple(y.shape) != (N,):
        raise ValueError(f"y must be an integer tensor of labels of shape (N,)=({N},)")
    if K < 2 or (y < 0).any() or (y >= K).any():
        raise ValueError(f"labels must be in [0, {K}) (and K >= 2)")
    C = margin_spec(y.to(x.device), K).to(dtype=x.dtype)
    if clip is None:
        lo, hi = xd - e, xd + e
    else:
        c0, c1 = (float(c) for c in clip)
        if not c0 < c1:
            raise ValueError(f"clip must satisfy lo < hi; got {clip!r}")
        if (xd < c0).any() or (xd > c1).any():
            raise ValueError(f"x has values outside the box clip={clip}; pass raw inputs or clip=None")
        lo, hi = (xd - e).clamp(min=c0), (xd + e).clamp(max=c1)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError(f"the input set x +- eps overflows {x.dtype}")
    return nodes, lo, hi, C


def residual_interval_bounds(model: nn.Module, x: Tensor, y: Tensor, eps,
                             clip: Optional[Tuple[float, float]] = (0.0, 1.0)) -> Tensor:
    """Interval lower bounds (N, K-1) of the margins z_y - z_j (j != y, increasing j) over the
    l_inf ball of radius eps around x intersected with the box ``clip`` (None: no box), for an
    nn.Sequential with Residual blocks (a block's interval is the sum of its branches'). The
    margin spec is folded into the last Linear, as :func:`interval_bounds` does."""
    nodes, lo, hi, C = _prepare(model, x, y, eps, clip)
    l, u = _interval(nodes[:-1], lo, hi, [])
    return spec_lower_from_box(nodes[-1], C, l, u)


def residual_dual_bounds(model: nn.Module, x: Tensor, y: Tensor, eps,
                         clip: Optional[Tuple[float, float]] = (0.0, 1.0)) -> Tensor:
    """The dual-network lower bounds (N, K-1) of the margins z_y - z_j (j != y, increasing j)
    over the l_inf ball of radius eps around x intersected with the box ``clip``, for an
    nn.Sequential with Residual blocks (Wong et al. 2018: the dual of a block is the sum of its
    branches' duals; paper's slopes, exact, no projections). Same convention as
    ``dual_bounds(...).lower``. Differentiable w.r.t. the model."""
    nodes, lo, hi, C = _prepare(model, x, y, eps, clip)

    def input_bound(nu0: Tensor) -> Tensor:
        lin, l1 = _input_term(nu0, lo, hi)
        return lin - l1

    _set_bounds(nodes, input_bound, lo, [])
    return _through(nodes, len(nodes), input_bound)(C)
