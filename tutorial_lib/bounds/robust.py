"""Robust training loss and certified error (Wong & Kolter 2017, Wong et al. 2018).

Every function takes ``norm`` ('linf' default, 'l2', 'l1'): the ball the bounds hold on (see
:func:`tutorial_lib.bounds.dual_bounds`; for l2/l1 the pixel box is dropped, sound and looser).

Certificates (:func:`certified_bounds`, used by :func:`certified_error` and
:func:`certified_accuracy_vs_eps`) are computed in float64 with TF32 off, on a float64 copy of a
float32 model (:mod:`tutorial_lib.bounds.precision`): a float32 bound can be above the exact one
by its rounding. The training loss (:func:`robust_loss`) stays in the model's dtype.
"""
from __future__ import annotations

from functools import partial
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .crown import crown_bounds
from .dual import dual_bounds, estimated_dual_bounds, optimized_dual_bounds
from .interval import interval_bounds
from .precision import float64_copy, no_tf32
from .spec import BoundResult, Eps, _check_eps, check_norm, is_certified

__all__ = ["robust_loss", "certified_bounds", "certified_mask", "certified_error", "certified_accuracy_vs_eps",
           "margins_to_logits", "CERTIFY_METHODS"]

#: the bound methods a certificate may come from (exact; never random projections)
CERTIFY_METHODS = {"dual": dual_bounds, "dual-opt": optimized_dual_bounds, "interval": interval_bounds,
                   "crown": crown_bounds, "crown-ibp": partial(crown_bounds, pre="interval")}


def _to64(t: Any) -> Any:
    """A floating tensor as float64 (exact for float32); anything else unchanged."""
    return t.to(torch.float64) if isinstance(t, Tensor) and t.is_floating_point() else t


def certified_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps, method: str = "dual",
                     spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                     norm: str = "linf", **kwargs: Any) -> BoundResult:
    """The bound ``method`` ('dual', 'dual-opt', 'interval', 'crown' or 'crown-ibp') for a certificate: computed in
    float64 with TF32 off, on a float64 copy of the model (the caller's model is not changed;
    a float64 model is used as is), so that a float32 rounding error cannot turn a margin bound
    <= 0 into one > 0. x, eps and spec are cast to float64 (exact for float32 values).

    x: (N, *input_shape); y: (N,) or None with spec (N, m, K) / (m, K); eps, clip and norm as in
    :func:`~tutorial_lib.bounds.dual_bounds`; kwargs go to the bound method (e.g. ``steps`` for
    'dual-opt'). Returns its BoundResult, in float64 (``.certified``: :func:`is_certified`). For
    many batches, pass ``float64_copy(model)`` once: the copy is then not redone per call.
    Costs ~3x the float32 bound on CPU (the small MNIST CNN); no gradients.
    """
    fn = CERTIFY_METHODS.get(method)
    if fn is None:
        raise ValueError(f"method must be one of {', '.join(map(repr, CERTIFY_METHODS))}; got {method!r}")
    twin = float64_copy(model)
    with no_tf32(), torch.no_grad():
        return fn(twin, _to64(x), y, _to64(eps), spec=_to64(spec), clip=clip, norm=norm, **kwargs)


def margins_to_logits(J: Tensor, y: Tensor) -> Tensor:
    """(N, K-1) margin lower bounds J_j (j != y, increasing j) -> (N, K) "logits" -J, 0 at y."""
    N, K = J.shape[0], J.shape[1] + 1
    keep = torch.ones(N, K, dtype=torch.bool, device=J.device)
    keep[torch.arange(N, device=J.device), y] = False
    return torch.zeros(N, K, dtype=J.dtype, device=J.device).masked_scatter(keep, -J)


def robust_loss(model: nn.Module, x: Tensor, y: Tensor, eps: Eps,
                clip: Optional[Tuple[float, float]] = (0.0, 1.0), proj: Optional[int] = None,
                generator: Optional[torch.Generator] = None,
                reduction: str = "mean", norm: str = "linf", median: str = "mid") -> Tuple[Tensor, Tensor]:
    """Wong & Kolter's robust loss CE(-J, y) on the dual bounds J of the margins z_y - z_j.

    x: (N, *input_shape) in clip; y: (N,) labels; eps: the radius in ``norm`` ('linf', 'l2'
    or 'l1'). Projections: Cauchy for l_inf, Gaussian for l2 (Wong et al. 2018), none for l1
    (proj must be None there: ValueError); ``median``: the projections' median rule
    (:func:`~tutorial_lib.bounds.dual.median_abs`: 'mid' or 'lower', torch.median's, which the
    checkpoints shipped before the rule changed were trained with).
    Returns (loss, err): loss is differentiable; err (0-d tensor, fraction of examples not
    certified by :func:`is_certified`: some margin bound <= 0 or NaN) is the certified error
    when proj is None. With proj=k (training only)
    the intermediate bounds are random-projection estimates, so both numbers are estimates:
    report certificates with :func:`certified_error`, which never uses projections (and
    computes in float64: this err is in the model's dtype, float32 in training).
    """
    if y is None:
        raise ValueError("robust_loss needs the labels y")
    if proj is None:
        res = dual_bounds(model, x, y, eps, clip=clip, norm=norm)
    else:
        res = estimated_dual_bounds(model, x, y, eps, clip=clip, proj=proj, generator=generator, norm=norm,
                                    median=median)
    J = res.lower
    loss = F.cross_entropy(margins_to_logits(J, y), y, reduction=reduction)
    err = (~is_certified(J.detach())).to(J.dtype).mean()
    return loss, err


def certified_mask(model: nn.Module, x: Tensor, y: Tensor, eps: Eps,
                   clip: Optional[Tuple[float, float]] = (0.0, 1.0), method: str = "dual",
                   batch_size: Optional[int] = None, norm: str = "linf", **kwargs: Any) -> Tensor:
    """Per example, whether ``method``'s bound certifies it: (N,) bool on x's device, True when
    every margin z_y - z_j has a lower bound > 0 (:func:`is_certified`; a tie or NaN is not).

    x: (N, *input_shape); y: (N,); eps: a number or (N,), the radius in ``norm`` ('linf', 'l2'
    or 'l1'). Always exact bounds ('dual', 'dual-opt', 'interval', 'crown' or 'crown-ibp'; never
    projections), computed by :func:`certified_bounds` (float64, TF32 off) in batches of
    ``batch_size`` examples (None: all at once). Every method's certificate is sound, so
    several methods' masks may be OR-ed: an example is certified if any of them certifies it.
    Examples misclassified (or tied) at x itself are never certified (their margin is <= 0).
    kwargs go to the bound method (e.g. ``steps`` for 'dual-opt').
    """
    if method not in CERTIFY_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, CERTIFY_METHODS))}; got {method!r}")
    check_norm(norm)
    if isinstance(eps, Tensor) and eps.dim() > 0:
        _check_eps(eps, x, norm)  # against the whole x: the batches' slices of a longer eps would pass
    twin = float64_copy(model)
    n = x.shape[0]
    bs = batch_size or max(n, 1)
    out = []
    for a in range(0, n, bs):
        xb, yb = x[a:a + bs], y[a:a + bs]
        eb = eps[a:a + bs] if isinstance(eps, Tensor) and eps.dim() > 0 else eps
        out.append(is_certified(certified_bounds(twin, xb, yb, eb, method=method, clip=clip, norm=norm,
                                                 **kwargs).lower))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


def certified_error(model: nn.Module, x: Tensor, y: Tensor, eps: Eps,
                    clip: Optional[Tuple[float, float]] = (0.0, 1.0), method: str = "dual",
                    batch_size: Optional[int] = None, norm: str = "linf") -> float:
    """Fraction of examples NOT certified by ``method``: 1 - the mean of :func:`certified_mask`
    (same arguments). Examples that are misclassified (or tied) at x itself count as errors
    automatically (their margin is <= 0)."""
    mask = certified_mask(model, x, y, eps, clip=clip, method=method, batch_size=batch_size, norm=norm)
    return int((~mask).sum()) / x.shape[0]


def certified_accuracy_vs_eps(model: nn.Module, x: Tensor, y: Tensor, eps_values: Sequence[float],
                              clip: Optional[Tuple[float, float]] = (0.0, 1.0), method: str = "dual",
                              batch_size: int = 50, norm: str = "linf") -> List[float]:
    """Certified accuracy (fraction in [0, 1]) at each eps of an increasing sequence.

    x: (N, *input_shape); y: (N,); eps_values: radii in ``norm`` ('linf', 'l2' or 'l1'). An
    example is certified at eps if every margin bound of ``method`` (any of :data:`CERTIFY_METHODS`) is > 0 there
    (:func:`is_certified`). To save time, an example not certified at a smaller eps is not
    tried again at a larger one: that can only under-report certificates (never claim one that
    was not computed), and the dual bound rarely certifies a larger ball it failed on a smaller
    one. The bounds are :func:`certified_bounds` (float64, TF32 off).
    """
    eps_values = [float(e) for e in eps_values]
    if any(b < a for a, b in zip(eps_values, eps_values[1:])) or (eps_values and eps_values[0] < 0):
        raise ValueError(f"eps_values must be non-negative and increasing, got {eps_values}")
    if method not in CERTIFY_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, CERTIFY_METHODS))}; got {method!r}")
    check_norm(norm)
    twin = float64_copy(model)
    alive = torch.arange(x.shape[0])
    out = []
    for eps in eps_values:
        keep = []
        for a in range(0, len(alive), batch_size):
            idx = alive[a:a + batch_size]
            low = certified_bounds(twin, x[idx], y[idx], eps, method=method, clip=clip, norm=norm).lower
            keep.append(idx[is_certified(low).cpu()])
        alive = torch.cat(keep) if keep else alive[:0]
        out.append(len(alive) / x.shape[0])
    return out
