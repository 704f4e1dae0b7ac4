"""LP (triangle relaxation) and MILP (exact) bounds with cvxpy + HiGHS, one example at a time.

The network is rewritten as dense (sparse-stored, scipy.sparse) affine maps between activation
layers: every chain of Linear/Conv2d/Normalize/Flatten layers becomes z = A h + b, found by
applying the chain to the identity basis. Each activation adds its own constraints between z
and its output a: :meth:`DualActivation.lp_constraints` (ReLU: the triangle) for the LP,
:meth:`DualActivation.milp_constraints` (ReLU: big-M with binaries) for the MILP; an activation
without an exact encoding makes :func:`milp_bounds` raise UnsupportedLayerError. Meant for
small networks and a few examples.
"""
from __future__ import annotations

import time
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from .activations import DualActivation
from .base import UnsupportedLayerError
from .dual import _pre_bounds
from .layers import _numel
from .spec import BoundResult, Eps, PreBounds, Problem, check_pre_bounds, prepare

NumpyBounds = List[Tuple[np.ndarray, np.ndarray]]  # per activation: (l, u) float64 (n,)

__all__ = ["lp_bounds", "milp_bounds", "SolverError"]


class SolverError(RuntimeError):
    """The LP/MILP solver did not report an optimal solution; no bound is returned."""


_LP_OPTS = dict(primal_feasibility_tolerance=1e-9, dual_feasibility_tolerance=1e-9,
                output_flag=False)
_MILP_OPTS = dict(output_flag=False, mip_rel_gap=1e-9, mip_abs_gap=1e-9, mip_feasibility_tolerance=1e-9,
                  primal_feasibility_tolerance=1e-9)


def _affine_blocks(P: Problem) -> List[Tuple[sp.csr_matrix, np.ndarray]]:
    """(A (n_out, n_in), b (n_out,)) float64 for each affine chain: before activation 1, ...,
    after the last activation."""
    blocks, chain = [], []
    shape = P.layers[0].in_shape
    for layer in P.layers + [None]:
        if layer is None or isinstance(layer, DualActivation):
            n = _numel(shape)
            with torch.no_grad():
                v = torch.eye(n, dtype=P.x.dtype, device=P.x.device).view(1, n, *shape)
                b = torch.zeros(1, *shape, dtype=P.x.dtype, device=P.x.device)
                for c in chain:
                    v, b = c.linear(v), c.forward(b)
            A = v.reshape(n, -1).t().double().cpu().numpy()
            blocks.append((sp.csr_matrix(A), b.reshape(-1).double().cpu().numpy()))
            chain = []
            if layer is not None:
                shape = layer.out_shape
        else:
            chain.append(layer)
    return blocks


def _solve(prob, opts: dict, what: str) -> None:
    import cvxpy as cp
    try:
        with warnings.catch_warnings():  # "may be inaccurate": any non-optimal status raises below
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=cp.HIGHS, **opts)
    except cp.error.SolverError as e:
        raise SolverError(f"HiGHS failed on {what}: {e}") from e
    if prob.status != cp.OPTIMAL:
        raise SolverError(f"HiGHS returned status {prob.status!r} on {what}; no bound is reported "
                          "(invalid pre-activation bounds make the problem infeasible)")


def _solve_example(blocks: List[Tuple[sp.csr_matrix, np.ndarray]], acts: Sequence[DualActivation],
                   pre: NumpyBounds, lo: np.ndarray, hi: np.ndarray, C: np.ndarray, integer: bool,
                   opts: dict, tag: str) -> Tuple[List[float], List[np.ndarray], List[float]]:
    """Minimise each row of C (m, K) @ logits for one example over the box [lo, hi] (n0,).

    Returns (values (m), x per row (m, each (n0,)), the MILP's proven lower bounds (m) or [])."""
    import cvxpy as cp
    x = cp.Variable(lo.size)
    cons = [x >= lo, x <= hi]
    h = x
    for (A, b), act, (l, u) in zip(blocks[:-1], acts, pre):
        a = cp.Variable(l.size)
        z_of = lambda i, A=A, b=b, h=h: A[i] @ h + b[i]
        cons += (act.milp_constraints if integer else act.lp_constraints)(a, z_of, l, u)
        h = a
    A, b = blocks[-1]
    CA, Cb = sp.csr_matrix(C) @ A, C @ b
    c = cp.Parameter(A.shape[1])
    prob = cp.Problem(cp.Minimize(c @ h), cons)
    vals, xs, mip = [], [], []
    for r in range(C.shape[0]):
        c.value = np.asarray(CA[r].todense()).ravel()
        _solve(prob, opts, f"{tag}, spec row {r}")
        vals.append(prob.value + Cb[r])
        xs.append(np.clip(x.value, lo, hi))
        if integer:
            mip.append(_mip_lower(prob, prob.value, f"{tag}, spec row {r}") + Cb[r])
    return vals, xs, mip


def _mip_lower(prob, obj: float, what: str) -> float:
    """The solver's proven lower bound; the objective itself when no binaries were needed."""
    if not prob.variables() or not any(v.attributes.get("boolean") for v in prob.variables()):
        return obj
    bound = getattr(prob.solver_stats.extra_stats, "mip_dual_bound", np.nan)
    if not np.isfinite(bound):
        return obj
    if bound < obj - 1e-6 * (1 + abs(obj)):
        raise SolverError(f"HiGHS stopped with MIP gap open on {what} (objective {obj}, "
                          f"bound {bound}); no exact value is reported")
    return min(bound, obj)


def _setup(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps, spec: Optional[Tensor],
           clip: Optional[Tuple[float, float]], pre_bounds, intersect: bool, exact: bool = False
           ) -> Tuple[Problem, PreBounds, List[NumpyBounds], List[Tuple[sp.csr_matrix, np.ndarray]]]:
    """Checked problem, pre-activation bounds (torch and per example numpy) and affine blocks."""
    P = prepare(model, x, y, eps, spec, clip)
    if exact:
        for act in P.activations:
            if not act.exact_encoding:
                raise UnsupportedLayerError(
                    f"{type(act).__name__} has no exact MILP encoding (exact_encoding = False), "
                    "which milp_bounds needs for every activation; use lp_bounds or the dual "
                    "bounds instead")
    with torch.no_grad():
        if pre_bounds is None:
            pre = _pre_bounds(P, None, intersect_ibp=intersect)
        else:
            pre = check_pre_bounds(P, pre_bounds)
        pre = [(l.detach(), u.detach()) for l, u in pre]
    np_pre = [[(l[n].reshape(-1).double().cpu().numpy(), u[n].reshape(-1).double().cpu().numpy())
               for l, u in pre] for n in range(x.shape[0])]
    return P, pre, np_pre, _affine_blocks(P)


def _to_t(a, P: Problem) -> Tensor:
    return torch.as_tensor(np.asarray(a), dtype=P.x.dtype, device=P.x.device)


def lp_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
              spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
              pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None) -> BoundResult:
    """Exact optimum of the triangle-relaxation LP (the convex outer adversarial polytope).

    x: (N, *input_shape); y: (N,) or None with spec (N, m, K) / (m, K); eps as in dual_bounds.
    Pre-activation bounds: ``pre_bounds`` (list of (l, u) per activation, each (N, *shape)) or
    the dual network's. For ReLUs stable neurons are fixed (a = z or a = 0), unstable ones
    relaxed, exactly the primal of the dual network, so LP >= dual at the same pre-bounds.
    Solved with HiGHS per example and spec row; a non-optimal status raises SolverError.
    Returns BoundResult(lower (N, m)); info['seconds'].
    """
    t0 = time.perf_counter()
    P, pre, np_pre, blocks = _setup(model, x, y, eps, spec, clip, pre_bounds, False)
    lows = []
    for n in range(x.shape[0]):
        vals, _, _ = _solve_example(blocks, P.activations, np_pre[n], P.lo[n].reshape(-1).double().cpu().numpy(),
                                    P.hi[n].reshape(-1).double().cpu().numpy(),
                                    P.C[n].double().cpu().numpy(), False, _LP_OPTS, f"LP example {n}")
        lows.append(vals)
    return BoundResult(lower=_to_t(lows, P), pre_bounds=pre, method="lp",
                       info={"seconds": time.perf_counter() - t0})


def milp_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None,
                time_limit: Optional[float] = None) -> BoundResult:
    """Exact minimum of each spec row over the input set (MILP, binary ReLU indicators).

    Shapes as in :func:`lp_bounds`. Every activation must have an exact encoding
    (``exact_encoding``; ReLU does), else UnsupportedLayerError. Big-M constants come from
    ``pre_bounds`` (must be valid) or, by default, the dual network's bounds intersected with
    interval bounds. HiGHS with gaps 1e-9; a status other
    than optimal (e.g. time_limit seconds hit) raises SolverError.
    Returns BoundResult with lower (N, m) (the solver's proven lower bound, equal to the
    optimum up to the gap), x_worst (N, m, *input_shape) inside the ball and box attaining it,
    info['attained'] (N, m) the objective at x_worst, info['seconds'].
    """
    t0 = time.perf_counter()
    P, pre, np_pre, blocks = _setup(model, x, y, eps, spec, clip, pre_bounds, True, exact=True)
    opts = dict(_MILP_OPTS)
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    lows, att, xw = [], [], []
    for n in range(x.shape[0]):
        vals, xs, mip = _solve_example(blocks, P.activations, np_pre[n], P.lo[n].reshape(-1).double().cpu().numpy(),
                                       P.hi[n].reshape(-1).double().cpu().numpy(),
                                       P.C[n].double().cpu().numpy(), True, opts, f"MILP example {n}")
        att.append(vals)
        lows.append(mip)
        xw.append(np.stack(xs))
    N, m = x.shape[0], P.C.shape[1]
    x_worst = _to_t(np.stack(xw), P).view(N, m, *x.shape[1:])
    return BoundResult(lower=_to_t(lows, P), pre_bounds=pre, method="milp", x_worst=x_worst,
                       info={"attained": _to_t(att, P), "seconds": time.perf_counter() - t0})
