"""Margin specifications, input checks and the result type shared by every bound method."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .activations import DualActivation
from .layers import DualLayer, build_layers

__all__ = ["BoundResult", "Problem", "is_certified", "margin_spec", "prepare", "check_pre_bounds"]

PreBounds = List[Tuple[Tensor, Tensor]]
#: an l_inf radius: a number, or a tensor of shape (N,) (one per example) or x's shape
Eps = Union[float, Tensor]


def is_certified(lower: Tensor) -> Tensor:
    """The one certification rule: every row's lower bound is strictly positive.

    lower: (N, m) lower bounds on spec @ logits (margins z_y - z_j by default). Returns (N,)
    bool. A zero margin allows a tie, so 0 is not certified; NaN is never certified (NaN > 0 is
    False). Count errors as ``~is_certified(lower)``, never as ``lower < 0`` (False for NaN).
    """
    return (lower > 0).all(dim=-1)


@dataclass
class BoundResult:
    """What every bound method returns.

    lower:      (N, m) lower bounds on spec @ logits over the input set (same units as logits).
    pre_bounds: one (l, u) pair per activation layer, each (N, *its input shape), the bounds used.
    method:     'interval' | 'dual' | 'dual-opt' | 'lp' | 'milp'.
    x_worst:    MILP only: (N, m, *input shape) inputs attaining the minimum of each row.
    alpha:      optimised dual only: the lower lines' parameters (ReLU: slopes), one
                (N, m, *shape) per optimisable activation layer.
    info:       method-specific numbers (solver times, MILP attained values, step history...).
    """

    lower: Tensor
    pre_bounds: PreBounds
    method: str
    x_worst: Optional[Tensor] = None
    alpha: Optional[List[Tensor]] = None
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def certified(self) -> Tensor:
        """(N,) bool: :func:`is_certified` (every row's lower bound > 0; NaN never).

        Refused for estimated (projected) bounds, which are not certificates."""
        if self.method == "dual-proj":
            raise ValueError("bounds estimated with random projections are not certificates; "
                             "use dual_bounds / certified_error")
        return is_certified(self.lower)


@dataclass
class Problem:
    """A checked bound problem: the input set is the box [lo, hi] (each (N, *in_shape))."""

    layers: List[DualLayer]
    x: Tensor
    lo: Tensor
    hi: Tensor
    C: Tensor  # (N, m, K)
    y: Optional[Tensor]
    num_classes: int

    @property
    def activations(self) -> List[DualActivation]:
        """The activation layers, in order (one (l, u) pre-bound pair each)."""
        return [l for l in self.layers if isinstance(l, DualActivation)]

    @property
    def act_idx(self) -> List[int]:
        """Indices into ``layers`` of the activation layers."""
        return [i for i, l in enumerate(self.layers) if isinstance(l, DualActivation)]

    # the names from when ReLU was the only activation
    relus = activations
    relu_idx = act_idx


def margin_spec(y: Tensor, num_classes: int) -> Tensor:
    """C of shape (N, K-1, K): row j is e_y - e_j for each j != y, in increasing j."""
    N, K = y.shape[0], num_classes
    eye = torch.eye(K, device=y.device)
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (N, K, K); row y is zero
    keep = torch.ones(N, K, dtype=torch.bool, device=y.device)
    keep[torch.arange(N, device=y.device), y] = False
    return C[keep].view(N, K - 1, K)


def _check_eps(eps: Eps, x: Tensor) -> Tensor:
    if isinstance(eps, numbers.Real) and not isinstance(eps, bool):
        e = torch.tensor(float(eps), dtype=x.dtype, device=x.device)
    elif isinstance(eps, Tensor):
        e = eps.detach().to(dtype=x.dtype, device=x.device)
    else:
        raise TypeError(f"eps must be a number or a tensor, got {type(eps).__name__}")
    if torch.isnan(e).any() or (e < 0).any():
        raise ValueError(f"eps must be >= 0, got {eps}")
    if e.dim() == 0:
        return e
    if e.dim() == 1 and e.shape[0] == x.shape[0]:
        return e.view(-1, *([1] * (x.dim() - 1)))  # one eps per example
    if tuple(e.shape) == tuple(x.shape):
        return e
    raise ValueError(f"eps must be a scalar, shape (N,)=({x.shape[0]},) or x's shape "
                     f"{tuple(x.shape)}; got {tuple(e.shape)}")


def prepare(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps, spec: Optional[Tensor] = None,
            clip: Optional[Tuple[float, float]] = (0.0, 1.0)) -> Problem:
    """Check every input and build the layer list, the input box and the spec matrix.

    The input set is {x' : |x' - x|_inf <= eps} intersected with the box clip=(lo, hi)
    (clip=None: no box). x must lie inside the box.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating tensor of shape (N, *input_shape)")
    if x.shape[0] == 0:
        raise ValueError("x is empty")
    params = list(model.parameters()) + list(model.buffers())
    for p in params:
        if p.is_floating_point() and (p.dtype != x.dtype or p.device != x.device):
            raise ValueError(f"model parameters are {p.dtype} on {p.device} but x is {x.dtype} "
                             f"on {x.device}; move/cast one of them")
    e = _check_eps(eps, x)
    layers, out_shape = build_layers(model, x[:1].detach().clone())
    if len(out_shape) != 1:
        raise ValueError(f"the model must output logits of shape (N, K); got (N, *{out_shape})")
    K = out_shape[0]
    N = x.shape[0]

    if y is not None:
        if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError("y must be an integer tensor of labels, shape (N,)")
        if tuple(y.shape) != (N,):
            raise ValueError(f"y must have shape (N,)=({N},) to match x; got {tuple(y.shape)}")
        if (y < 0).any() or (y >= K).any():
            raise ValueError(f"labels must be in [0, {K}); got min {int(y.min())}, max {int(y.max())}")
        y = y.to(x.device)
    if spec is None:
        if y is None:
            raise ValueError("give the labels y (for the default margin spec) or a spec C")
        if K < 2:
            raise ValueError("the default margin spec needs at least 2 classes")
        C = margin_spec(y, K).to(dtype=x.dtype)
    else:
        C = torch.as_tensor(spec, dtype=x.dtype, device=x.device)
        if C.dim() == 2:
            C = C.unsqueeze(0).expand(N, *C.shape)
        if C.dim() != 3 or C.shape[0] != N or C.shape[2] != K or C.shape[1] == 0:
            raise ValueError(f"spec must have shape (N, m, K)=({N}, m, {K}) or (m, {K}); "
                             f"got {tuple(torch.as_tensor(spec).shape)}")

    xd = x.detach()
    if clip is None:
        lo, hi = xd - e, xd + e
    else:
        try:
            c0, c1 = (float(c) for c in clip)
        except Exception as exc:
            raise ValueError(f"clip must be None or a pair (lo, hi); got {clip!r}") from exc
        if not c0 < c1:
            raise ValueError(f"clip must satisfy lo < hi; got {clip!r}")
        if (xd < c0).any() or (xd > c1).any():
            raise ValueError(f"x has values in [{float(xd.min()):.4g}, {float(xd.max()):.4g}], "
                             f"outside the box clip={clip}; pass raw inputs or clip=None")
        lo, hi = (xd - e).clamp(min=c0), (xd + e).clamp(max=c1)
    return Problem(layers, x, lo, hi, C, y, K)


def check_pre_bounds(P: Problem, pre_bounds: Sequence[Tuple[Tensor, Tensor]]) -> PreBounds:
    """Validate user-given pre-activation bounds: one (l, u) per activation layer, each
    (N, *its input shape), with l <= u. Returns them as tensors of x's dtype and device."""
    acts = P.activations
    if len(pre_bounds) != len(acts):
        raise ValueError(f"pre_bounds has {len(pre_bounds)} entries but the model has "
                         f"{len(acts)} activation layers")
    N = P.x.shape[0]
    out = []
    for k, ((l, u), r) in enumerate(zip(pre_bounds, acts)):
        l = torch.as_tensor(l, dtype=P.x.dtype, device=P.x.device)
        u = torch.as_tensor(u, dtype=P.x.dtype, device=P.x.device)
        want = (N, *r.in_shape)
        if tuple(l.shape) != want or tuple(u.shape) != want:
            raise ValueError(f"pre_bounds[{k}] must have shape {want}; got {tuple(l.shape)}, "
                             f"{tuple(u.shape)}")
        if (l > u).any():
            raise ValueError(f"pre_bounds[{k}] has l > u somewhere (invalid bounds)")
        out.append((l, u))
    return out
