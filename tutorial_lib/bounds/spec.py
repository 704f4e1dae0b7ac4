"""Margin specifications, input checks and the result type shared by every bound method."""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from tutorial_lib.models import DenseSkip, Residual
from tutorial_lib.validation import _stacklevel, check_finite

from .activations import DualActivation
from .base import UnsupportedLayerError
from .layers import DualLayer, build_layers, run_layers

__all__ = ["BoundResult", "Problem", "Ball", "NORMS", "DUAL_NORMS", "is_certified", "margin_spec", "prepare",
           "check_pre_bounds", "check_norm", "dual_norm", "ConditionalBoundsError", "PRE_BOUNDS_SAMPLES"]

PreBounds = List[Tuple[Tensor, Tensor]]
#: a radius: a number, or a tensor of shape (N,) (one per example) or (l_inf only) x's shape
Eps = Union[float, Tensor]

#: the threat models every bound method takes (``norm=``): the ball {x' : ||x' - x|| <= eps}
NORMS: Tuple[str, ...] = ("linf", "l2", "l1")
#: the dual norm of each: the norm of the input coefficients nu_1 in the dual objective's input
#: term, min over the ball of nu_1 . x' = nu_1 . x - eps ||nu_1||_*
DUAL_NORMS = {"linf": "l1", "l2": "l2", "l1": "linf"}


def check_norm(norm: Any) -> str:
    """``norm`` if it is one of :data:`NORMS`, else ValueError naming the known ones."""
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: the bounds support " + ", ".join(repr(n) for n in NORMS))
    return norm


def dual_norm(v: Tensor, norm: str) -> Tensor:
    """The dual norm of the ``norm`` ball over the last dim of v: l1 for "linf", l2 for "l2",
    l_inf for "l1" (so that max over ||d|| <= 1 of v . d = dual_norm(v, norm))."""
    if norm == "linf":
        return v.abs().sum(-1)
    if norm == "l2":
        return torch.linalg.vector_norm(v, 2, dim=-1)
    if norm == "l1":
        return v.abs().amax(-1)
    raise ValueError(f"unknown norm {norm!r}: the bounds support " + ", ".join(repr(n) for n in NORMS))


class ConditionalBoundsError(ValueError):
    """A certificate was asked of bounds computed from user-supplied pre-activation bounds
    (``pre_bounds=``), which are checked at sampled points only, not proven."""


def is_certified(lower: Union[Tensor, "BoundResult"]) -> Tensor:
    """The one certification rule: every row's lower bound is strictly positive.

    lower: (N, m) lower bounds on spec @ logits (margins z_y - z_j by default), or a
    :class:`BoundResult` (then its ``.certified``, which refuses estimated bounds and bounds
    conditional on user pre-activation bounds). Returns (N,) bool. A zero margin allows a tie,
    so 0 is not certified; NaN is never certified (NaN > 0 is False), nor is +inf (a finite
    network on a bounded set has finite margins: an infinite bound is an overflow, not a
    certificate). Count errors as ``~is_certified(lower)``, never as ``lower < 0`` (False for NaN).
    """
    if isinstance(lower, BoundResult):
        return lower.certified
    return ((lower > 0) & torch.isfinite(lower)).all(dim=-1)


@dataclass
class BoundResult:
    """What every bound method returns.

    lower:      (N, m) lower bounds on spec @ logits over the input set (same units as logits).
    pre_bounds: one (l, u) pair per activation layer, each (N, *its input shape), the bounds used.
    method:     'interval' | 'dual' | 'dual-opt' | 'lp' | 'milp'.
    x_worst:    MILP only: (N, m, *input shape) inputs attaining the minimum of each row.
    norm:       the threat model: 'linf' (default), 'l2' or 'l1' (:data:`NORMS`).
    alpha:      optimised dual only: the lower lines' parameters (ReLU: slopes), one
                (N, m, *shape) per optimisable activation layer.
    info:       method-specific numbers (solver times, MILP attained values, step history...).
    conditional_on_user_bounds: True when the caller gave ``pre_bounds``: every method takes
                them as valid, and they were checked only at sampled points of the input set
                (:func:`check_pre_bounds`), so ``lower`` holds IF they contain every value the
                network takes there. Too tight ones (feasible, containing the sampled values)
                make the bounds unsound: ``certified`` refuses such results.
    """

    lower: Tensor
    pre_bounds: PreBounds
    method: str
    x_worst: Optional[Tensor] = None
    alpha: Optional[List[Tensor]] = None
    info: Dict[str, Any] = field(default_factory=dict)
    norm: str = "linf"  # the ball the bounds hold on (see NORMS)
    conditional_on_user_bounds: bool = False

    @property
    def certified(self) -> Tensor:
        """(N,) bool: :func:`is_certified` (every row's lower bound > 0; NaN never).

        Refused for estimated (projected) bounds, which are not certificates, and
        (ConditionalBoundsError) for bounds conditional on user pre-activation bounds."""
        if self.method == "dual-proj":
            raise ValueError("bounds estimated with random projections are not certificates; "
                             "use dual_bounds / certified_error")
        if self.conditional_on_user_bounds:
            raise ConditionalBoundsError(
                f"these {self.method} bounds were computed from user-supplied pre_bounds, which were "
                "checked only at sampled points of the input set, not proven: they hold only if those "
                "bounds contain every value the network takes there, so they are not a certificate. "
                "Recompute without pre_bounds to certify (or use .lower, knowing the condition)")
        return is_certified(self.lower)


@dataclass
class Ball:
    """An l2 or l1 ball {x' : ||x' - center|| <= radius} (the l_inf ball is a box: Problem.lo/hi).

    norm: 'l2' or 'l1'; center: (N, *in_shape) (x itself: the bounds are differentiable in it); radius: (N, 1).
    """

    norm: str
    center: Tensor
    radius: Tensor

    def term(self, nu0: Tensor) -> Tuple[Tensor, Tensor]:
        """nu0 (B, m, *in) -> (nu0 . center, radius * ||nu0||_*), each (N, m): the minimum of
        nu0 . x' over the ball is the first minus the second (the maximum: plus)."""
        n0 = nu0.flatten(2)
        c = self.center.flatten(1)
        if n0.shape[0] == 1:
            lin = c.matmul(n0[0].t())
        else:
            lin = n0.matmul(c.unsqueeze(-1)).squeeze(-1)
        return lin, self.radius * dual_norm(n0, self.norm)


@dataclass
class Problem:
    """A checked bound problem.

    layers: the network's nodes in topological order (:func:`~tutorial_lib.bounds.layers.build_layers`);
    node i reads the values ``layers[i].inputs`` (value 0 the input, value i + 1 node i's output).
    A plain nn.Sequential is the chain ``inputs == (i,)``; Residual and DenseSkip blocks add
    join nodes (:mod:`tutorial_lib.bounds.joins`). The logits are the last node's output.

    l_inf (``ball`` None): the input set is the box [lo, hi] (each (N, *in_shape)), the ball
    intersected with the pixel box. l2/l1: the input set is ``ball`` intersected with the pixel
    box, and [lo, hi] is a box containing it (x +- eps clipped to the pixel box): the dual and
    interval bounds use the ball only (the box dropped: sound, looser), the LP/MILP both.
    """

    layers: List[DualLayer]
    x: Tensor
    lo: Tensor
    hi: Tensor
    C: Tensor  # (N, m, K)
    y: Optional[Tensor]
    num_classes: int
    nonfinite: Optional[str] = None  # the message naming a NaN/inf parameter, if any
    ball: Optional[Ball] = None  # the l2/l1 ball; None for l_inf

    @property
    def norm(self) -> str:
        """'linf', 'l2' or 'l1'."""
        return "linf" if self.ball is None else self.ball.norm

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


def _check_eps(eps: Eps, x: Tensor, norm: str = "linf") -> Tensor:
    if isinstance(eps, numbers.Real) and not isinstance(eps, bool):
        e = torch.tensor(float(eps), dtype=x.dtype, device=x.device)
    elif isinstance(eps, Tensor):
        e = eps.detach().to(dtype=x.dtype, device=x.device)
    else:
        raise TypeError(f"eps must be a number or a tensor, got {type(eps).__name__}")
    if not torch.isfinite(e).all():
        raise ValueError(f"eps must be finite (a radius of inf or NaN certifies nothing), got {eps}"
                         + (f" (not finite in {x.dtype})" if isinstance(eps, numbers.Real) and math.isfinite(eps)
                            else ""))
    if (e < 0).any():
        raise ValueError(f"eps must be >= 0, got {eps}")
    if e.dim() == 0:
        return e
    if e.dim() == 1 and e.shape[0] == x.shape[0]:
        return e.view(-1, *([1] * (x.dim() - 1)))  # one eps per example
    if norm != "linf":
        raise ValueError(f"for norm={norm!r} eps must be a scalar or shape (N,)=({x.shape[0]},) (one "
                         f"radius per example); got {tuple(e.shape)} (per-coordinate radii are l_inf only)")
    if tuple(e.shape) == tuple(x.shape):
        return e
    raise ValueError(f"eps must be a scalar, shape (N,)=({x.shape[0]},) or x's shape "
                     f"{tuple(x.shape)}; got {tuple(e.shape)}")


#: dtypes whose rounding makes the dual bound exceed the exact minimum of the same weights
_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: tolerance of the check that the layer list reproduces model(x): relative, and absolute
#: times the largest |logit| (in the model's dtype)
CONSISTENCY_RTOL, CONSISTENCY_ATOL = 1e-4, 1e-5


def _check_precision(model: nn.Module, x: Tensor) -> None:
    low = {p.dtype for p in list(model.parameters()) + list(model.buffers())
           if p.dtype in _LOW_PRECISION}
    if x.dtype in _LOW_PRECISION or low:
        dt = x.dtype if x.dtype in _LOW_PRECISION else next(iter(low))
        raise ValueError(f"bounds refuse {str(dt).replace('torch.', '')} models and inputs: their "
                         "rounding makes the bounds unsound (the dual bound can exceed the exact "
                         "minimum); call model.float() and x.float() (or .double()) first")


def _nonfinite_parameter(model: nn.Module) -> Optional[str]:
    """A message naming the first parameter or buffer holding NaN/inf, or None."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    for name, p in named:
        if p.is_floating_point() and not torch.isfinite(p.detach()).all():
            n_bad = int((~torch.isfinite(p.detach())).sum())
            return (f"model parameter {name!r} has {n_bad} non-finite value{'s' if n_bad > 1 else ''} "
                    "(NaN or inf): no bound on this network is meaningful; fix the weights first")
    return None


def _hook_owner(model: nn.Module) -> Optional[str]:
    """A description of the first forward hook or pre-hook found (global, on the model or on
    any submodule), or None."""
    mm = torch.nn.modules.module
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        if getattr(mm, kind, None):
            return f"a global forward {'pre-' if 'pre' in kind else ''}hook (torch.nn.modules.module.{kind})"
    for name, m in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks"):
            if getattr(m, kind, None):
                where = f"submodule {name!r} ({type(m).__name__})" if name else f"the model ({type(m).__name__})"
                return f"a forward {'pre-' if 'pre' in kind else ''}hook on {where}"
    return None


#: the containers the bounds walk (their forward is the composition the node list describes):
#: class -> (its name in messages, what of it the bounds see)
_CONTAINERS: Dict[type, Tuple[str, str]] = {
    nn.Sequential: ("an nn.Sequential", "its layer list"),
    Residual: ("a Residual", "its body and shortcut (their sum)"),
    DenseSkip: ("a DenseSkip", "its body (and the concatenation with its input)"),
}


def _check_model_is_plain(model: nn.Module) -> None:
    """Refuse what makes model(x) differ from the composition of its layers: forward hooks and
    subclasses of the containers (nn.Sequential, Residual, DenseSkip) that override forward."""
    hook = _hook_owner(model)
    if hook is not None:
        raise UnsupportedLayerError(f"the model has {hook}: the bounds see only the layer list, "
                                    "not what hooks change; remove the hook to certify the model")
    for name, m in model.named_modules():
        for base, (kind, seen) in _CONTAINERS.items():
            if isinstance(m, base) and type(m).forward is not base.forward:
                where = f"submodule {name!r}" if name else "the model"
                raise UnsupportedLayerError(
                    f"{where} is a {type(m).__name__}, {kind} subclass that overrides forward: the bounds "
                    f"see only {seen}, not the forward that runs; certify a plain {kind.split()[1]}")


def _check_layers_reproduce_model(model: nn.Module, layers: Sequence[DualLayer], x: Tensor) -> None:
    """Composing the built layers must give model(x) (the model that runs is the one bounded)."""
    with torch.no_grad():
        out = model(x)
        h = run_layers(layers, x)
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(h.shape):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model(x) has shape {shape} but its layer list gives {tuple(h.shape)}: "
                         "the model's forward is not the composition of its layers")
    scale = float(out.abs().max()) if out.numel() else 0.0
    ok = torch.isfinite(out).all() and torch.allclose(
        h, out, rtol=CONSISTENCY_RTOL, atol=CONSISTENCY_ATOL * scale)
    if not ok:
        diff = float((h - out).abs().max())
        raise ValueError(f"model(x) differs from the composition of its layers by up to {diff:.3g} "
                         f"(largest |logit| {scale:.3g}): the model that runs is not the one the "
                         "bounds see (an overridden forward, hooks, or non-finite logits); refusing")


def prepare(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps, spec: Optional[Tensor] = None,
            clip: Optional[Tuple[float, float]] = (0.0, 1.0), norm: str = "linf") -> Problem:
    """Check every input and build the layer list, the input box and the spec matrix.

    The input set is {x' : ||x' - x|| <= eps} in ``norm`` ('linf', 'l2' or 'l1') intersected
    with the box clip=(lo, hi) (clip=None: no box). x must lie inside the box. For 'l2'/'l1'
    the Problem's ``ball`` holds the ball and lo/hi the box x +- eps clipped to ``clip`` (which
    contains the input set); eps is then a scalar or (N,).
    """
    check_norm(norm)
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating tensor of shape (N, *input_shape)")
    if x.shape[0] == 0:
        raise ValueError("x is empty")
    check_finite("x", x.detach())
    _check_precision(model, x)
    params = list(model.parameters()) + list(model.buffers())
    for p in params:
        if p.is_floating_point() and (p.dtype != x.dtype or p.device != x.device):
            raise ValueError(f"model parameters are {p.dtype} on {p.device} but x is {x.dtype} "
                             f"on {x.device}; move/cast one of them")
    # a NaN/inf parameter: a warning naming it, and NaN lower bounds everywhere (never certified;
    # the LP/MILP raise ValueError), so that a broken network is reported as uncertified
    bad_param = _nonfinite_parameter(model)
    e = _check_eps(eps, x, norm)
    _check_model_is_plain(model)
    layers, out_shape = build_layers(model, x[:1].detach().clone())
    if len(out_shape) != 1:
        raise ValueError(f"the model must output logits of shape (N, K); got (N, *{out_shape})")
    if bad_param is None:
        _check_layers_reproduce_model(model, layers, x.detach())
    else:
        warnings.warn(bad_param + "; every lower bound is NaN (never certified)", UserWarning,
                      stacklevel=_stacklevel())
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

    xd = x.detach()  # for the checks; the box itself keeps x's graph (bounds differentiable in x)
    if clip is None:
        lo, hi = x - e, x + e
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
        lo, hi = (x - e).clamp(min=c0), (x + e).clamp(max=c1)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError(f"the input set x +- eps overflows {x.dtype} (eps = {eps}); use a smaller "
                         "eps or a box clip")
    if bad_param is not None:
        C = torch.full_like(C, float("nan"))  # NaN bounds: never a certificate
    ball = None
    if norm != "linf":
        ball = Ball(norm, x, e.reshape(-1, 1).expand(N, 1) if e.dim() == 0 else e.reshape(N, 1))
    return Problem(layers, x, lo, hi, C, y, K, bad_param, ball)


#: points per example at which user pre-activation bounds are checked: the centre x, then
#: seeded samples of the input set (half at corners of the box / on the ball's surface)
PRE_BOUNDS_SAMPLES = 64


def _input_set_samples(P: Problem, n: int, k: int, generator: torch.Generator) -> Tensor:
    """x[n] and k points of example n's input set, (k + 1, *in_shape) in x's dtype: l_inf,
    uniform in the box [lo, hi] and (half) at its corners; l2 / l1, in the ball (half on its
    surface; l1: at its vertices) clamped to the box [lo, hi] (x +- eps clipped to the pixel box),
    which keeps them in the ball."""
    x0 = P.x[n].detach()
    lo, hi = P.lo[n].detach(), P.hi[n].detach()
    shape, dt, dev = x0.shape, x0.dtype, x0.device
    if P.ball is None:
        t = torch.rand(k, *shape, generator=generator, dtype=dt, device="cpu").to(dev)
        t[k // 2:] = t[k // 2:].round()
        pts = lo + (hi - lo) * t
    else:
        d = torch.randn(k, x0.numel(), generator=generator, dtype=dt, device="cpu").to(dev)
        if P.ball.norm == "l2":
            d = d / d.norm(dim=1, keepdim=True).clamp(min=torch.finfo(dt).tiny)
        else:  # the l1 ball's vertices +- e_i
            d = torch.zeros_like(d).scatter_(1, d.abs().argmax(1, keepdim=True), 1.0) * d.sign()
        r = torch.rand(k, 1, generator=generator, dtype=dt, device="cpu").to(dev)
        r[k // 2:] = 1.0
        eps = P.ball.radius[n].detach().to(dt)
        pts = torch.minimum(torch.maximum(x0 + (eps * r * d).view(k, *shape), lo), hi)
    return torch.cat([x0.unsqueeze(0), pts])


def _activation_inputs(layers: Sequence[DualLayer], h: Tensor) -> List[Tensor]:
    """Each activation's input, (B, *its in_shape), when the nodes run at h (B, *in_shape)."""
    values: Dict[int, Tensor] = {0: h}
    out = []
    for i, layer in enumerate(layers):
        ins = [values[j] for j in layer.inputs]
        if isinstance(layer, DualActivation):
            out.append(ins[0])
        values[i + 1] = layer.forward(*ins)
    return out


def _check_contains_network_values(P: Problem, bounds: PreBounds, samples: int) -> None:
    """ValueError unless every (l, u) contains the network's values at the centre and at
    ``samples`` seeded points of each example's input set (up to rounding: sqrt(eps of the
    dtype) times the layer's largest |value|)."""
    g = torch.Generator().manual_seed(0)
    tol_rel = torch.finfo(P.x.dtype).eps ** 0.5
    with torch.no_grad():
        for n in range(P.x.shape[0]):
            pts = _input_set_samples(P, n, samples, g)
            for k, ((l, u), z) in enumerate(zip(bounds, _activation_inputs(P.layers, pts))):
                ln, un = l[n].detach(), u[n].detach()
                tol = tol_rel * (1.0 + float(z.abs().max()))
                bad = (z < ln - tol) | (z > un + tol)
                if bad.any():
                    j, i = (int(t[0]) for t in torch.nonzero(bad.flatten(1), as_tuple=True))
                    where = "the centre x" if j == 0 else f"sampled point {j} of the input set"
                    v, lo_, hi_ = (float(t.flatten()[i]) for t in (z[j], ln, un))
                    raise ValueError(
                        f"pre_bounds[{k}] do not contain the network's values (example {n}): at {where} "
                        f"neuron {i} takes {v:.6g}, outside [{lo_:.6g}, {hi_:.6g}]. Bounds that exclude values "
                        "the network takes make every bound computed from them unsound (the LP/MILP may "
                        "then also be infeasible); pass bounds that hold on the whole input set, or none")


def check_pre_bounds(P: Problem, pre_bounds: Sequence[Tuple[Tensor, Tensor]],
                     samples: int = PRE_BOUNDS_SAMPLES) -> PreBounds:
    """Validate user-given pre-activation bounds: one (l, u) per activation layer, each
    (N, *its input shape), with l <= u, containing the network's values at the centre of each
    example's input set and at ``samples`` seeded points of it (:data:`PRE_BOUNDS_SAMPLES`;
    l_inf: the box and its corners, l2 / l1: the ball and its surface or vertices).

    Passing those checks does NOT prove the bounds: feasible but too tight bounds can contain
    every sampled value and still miss values the network takes elsewhere in the set, and then
    every bound computed from them (dual, LP, MILP) can be above the true minimum. So the bound
    methods mark their result ``conditional_on_user_bounds`` and ``BoundResult.certified``
    refuses it. Returns the bounds as tensors of x's dtype and device.
    """
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
        if torch.isnan(l).any() or torch.isnan(u).any():
            raise ValueError(f"pre_bounds[{k}] has NaN entries (invalid bounds)")
        if (l > u).any():
            raise ValueError(f"pre_bounds[{k}] has l > u somewhere (invalid bounds)")
        out.append((l, u))
    if P.nonfinite is None:
        _check_contains_network_values(P, out, samples)
    return out
