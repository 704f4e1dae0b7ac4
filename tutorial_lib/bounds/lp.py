"""LP (triangle relaxation) and MILP (exact) bounds with cvxpy + HiGHS, one example at a time.

The network is rewritten as dense (sparse-stored, scipy.sparse) affine maps between activation
layers: every chain of Linear/Conv2d/Normalize/Flatten layers becomes z = A h + b, found by
applying the chain to the identity basis. With residual or dense-skip blocks an activation's
input can depend on several earlier sources (the input, activations' outputs): z = sum_s A_s h_s
+ b, one A_s per source that reaches it through sums and concatenations. Each activation adds
its own constraints between z and its output a: :meth:`DualActivation.lp_constraints` (ReLU:
the triangle) for the LP,
:meth:`DualActivation.milp_constraints` (ReLU: big-M with binaries) for the MILP; an activation
without an exact encoding makes :func:`milp_bounds` raise UnsupportedLayerError. Meant for
small networks and a few examples.

Threat models (``norm``): the l_inf ball is the box [lo, hi] (intersected with the pixel box);
the l1 ball is linear (t >= |x - x0|, sum t <= eps), so the LP and MILP stay HiGHS problems; the
l2 ball is a second-order cone ||x - x0||_2 <= eps, which HiGHS cannot solve: the LP is then
solved by Clarabel (an interior-point conic solver shipped with cvxpy), and the MILP is refused
(it would need a mixed-integer SOCP solver). The l2/l1 LP/MILP keep the pixel box (the dual and
interval bounds drop it), so they are at least as tight as the dual there.
"""
from __future__ import annotations

import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from .activations import DualActivation
from .base import DualLayer, UnsupportedLayerError
from .dual import _pre_bounds
from .joins import DualJoin
from .layers import _numel
from .spec import Ball, BoundResult, Eps, PreBounds, Problem, check_norm, check_pre_bounds, prepare

NumpyBounds = List[Tuple[np.ndarray, np.ndarray]]  # per activation: (l, u) float64 (n,)
#: one affine map to an activation's input or to the logits from the sources it depends on:
#: ([(source, A (n_out, n_source)), ...], b (n_out,)); source 0 is the input, k + 1 activation k's output
Affine = Tuple[List[Tuple[int, sp.csr_matrix]], np.ndarray]

__all__ = ["lp_bounds", "milp_bounds", "SolverError"]


class SolverError(RuntimeError):
    """The LP/MILP solver did not report an optimal solution; no bound is returned."""


_LP_OPTS = dict(primal_feasibility_tolerance=1e-9, dual_feasibility_tolerance=1e-9,
                output_flag=False)
# HiGHS's default feasibility tolerances: tightening them (1e-9) made HiGHS accept big-M
# "solutions" of badly scaled networks that the network does not attain (margins of +800 where
# an attack reaches -4e11). The gaps only decide when branch and bound stops (sound).
_MILP_OPTS = dict(output_flag=False, mip_rel_gap=1e-9, mip_abs_gap=1e-9)
#: Clarabel (the l2 LP, a second-order cone program): tolerances 10x tighter than its defaults
#: (1e-8), which are used instead when it cannot reach them (status "optimal_inaccurate")
_SOCP_OPTS = dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, verbose=False)

#: every MILP answer is checked by running the network (float64, the weights the MILP saw) at
#: the returned worst-case input: the margin there must equal the reported optimum within
#: CHECK_RTOL * max(1, max |logit|) + CHECK_FEAS * (a bound on how far feasibility slack moves
#: the margin) + the solver's gap (attained - proven lower bound + the gap tolerances)
CHECK_RTOL = 1e-6
CHECK_FEAS = 1e-7  # HiGHS's default primal feasibility tolerance


def _push(layers: Sequence[DualLayer], v: int, start: Tensor, bias: bool) -> Dict[int, Tensor]:
    """Push ``start`` forward from value v through the nodes after it, an activation's output
    counting as zero (it is a source of its own): the linear parts applied to coefficient rows
    (1, n, *shape of v) (bias False), or the nodes themselves applied to a zero input (1, *shape)
    (bias True; then every value is reached). Returns {value: what reaches it}."""
    vals = {v: start}
    for i in range(v, len(layers)):
        layer = layers[i]
        if isinstance(layer, DualActivation):
            if bias:
                vals[i + 1] = start.new_zeros(1, *layer.out_shape)
            continue
        ins = [vals.get(j) for j in layer.inputs]
        if bias:
            vals[i + 1] = layer.forward(*ins)
        elif isinstance(layer, DualJoin):
            out = layer.linear(ins)
            if out is not None:
                vals[i + 1] = out
        elif ins[0] is not None:
            vals[i + 1] = layer.linear(ins[0])
    return vals


def _affine_blocks(P: Problem) -> List[Affine]:
    """The affine map (float64) to each activation's input, in order, then to the logits, from
    the sources it depends on (the input and the activations' outputs; on a chain only the one
    just before it), found by pushing the identity basis of every source forward."""
    layers, acts = P.layers, P.act_idx
    targets = [layers[i].inputs[0] for i in acts] + [len(layers)]
    sources = [0] + [i + 1 for i in acts]
    with torch.no_grad():
        b = _push(layers, 0, torch.zeros(1, *P.x.shape[1:], dtype=P.x.dtype, device=P.x.device), True)
        reach = []
        for v in sources:
            shape = P.x.shape[1:] if v == 0 else layers[v - 1].out_shape
            n = _numel(shape)
            eye = torch.eye(n, dtype=P.x.dtype, device=P.x.device).view(1, n, *shape)
            reach.append(_push(layers, v, eye, False))
    blocks = []
    for t in targets:
        terms = [(k, sp.csr_matrix(r[t].reshape(r[t].shape[1], -1).t().double().cpu().numpy()))
                 for k, r in enumerate(reach) if t in r]
        blocks.append((terms, b[t].reshape(-1).double().cpu().numpy()))
    return blocks


def _apply(terms: List[Tuple[int, sp.csr_matrix]], hs: Sequence, rows=None, absolute: bool = False):
    """sum over terms of A[rows] @ hs[source] (|A| with ``absolute``); hs: numpy vectors or cvxpy
    expressions, one per source."""
    out = None
    for k, A in terms:
        A = A if rows is None else A[rows]
        t = (abs(A) if absolute else A) @ hs[k]
        out = t if out is None else out + t
    return out


def _solve(prob, opts: dict, what: str) -> None:
    _solve_with(prob, "HIGHS", opts, what)


def _solve_socp(prob, what: str) -> None:
    """The l2 LP (a second-order cone program) with Clarabel."""
    _solve_with(prob, "CLARABEL", _SOCP_OPTS, what)


def _solve_with(prob, solver: str, opts: dict, what: str) -> None:
    import cvxpy as cp
    name = {"HIGHS": "HiGHS", "CLARABEL": "Clarabel"}.get(solver, solver)
    try:
        with warnings.catch_warnings():  # "may be inaccurate": any non-optimal status raises below
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=solver, **opts)
            if solver == "CLARABEL" and prob.status == cp.OPTIMAL_INACCURATE:
                prob.solve(solver=solver, verbose=False)  # Clarabel's own tolerances (1e-8)
    except cp.error.SolverError as e:
        raise SolverError(f"{name} failed on {what}: {e}") from e
    if prob.status != cp.OPTIMAL:
        raise SolverError(f"{name} returned status {prob.status!r} on {what}; no bound is reported "
                          "(invalid pre-activation bounds make the problem infeasible)")


def _ball_constraints(x, x0: np.ndarray, eps: float, norm: str) -> List:
    """cvxpy constraints ||x - x0|| <= eps for an l2 (second-order cone) or l1 (linear) ball."""
    import cvxpy as cp
    if norm == "l2":
        return [cp.SOC(cp.Constant(eps), x - x0)]
    t = cp.Variable(x0.size)  # l1: t >= |x - x0|, sum t <= eps
    return [t >= x - x0, t >= x0 - x, cp.sum(t) <= eps]


def _into_ball(x: np.ndarray, x0: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """x moved onto the segment towards x0 until ||x - x0|| <= eps (a solver's feasibility slack);
    x0 and x in the box keep the result in the box."""
    d = x - x0
    size = float(np.abs(d).sum() if norm == "l1" else np.sqrt((d * d).sum()))
    return x0 + d * (eps / size) if size > eps else x


def _network_margin(blocks: List[Affine], acts: Sequence[DualActivation],
                    x: np.ndarray, c: np.ndarray) -> Tuple[float, float, float]:
    """Run the network the MILP encodes (float64) at x (n0,): (c @ logits, max |logit|, a bound
    on |c @ logits| moved by a slack of 1 in every constraint (the sum of |path weights|))."""
    hs, ss = [x], [np.ones_like(x)]
    for (terms, b), act in zip(blocks[:-1], acts):
        z = _apply(terms, hs) + b
        hs.append(act.forward(torch.from_numpy(z).view(1, *act.in_shape)).reshape(-1).numpy())
        ss.append(_apply(terms, ss, absolute=True) + 1.0)
    terms, b = blocks[-1]
    logits = _apply(terms, hs) + b
    s = _apply(terms, ss, absolute=True) + 1.0
    return float(c @ logits), float(np.abs(logits).max()), float(np.abs(c) @ s)


def _check_answer(blocks, acts, x: np.ndarray, c: np.ndarray, attained: float, lower: float,
                  what: str) -> None:
    """Raise SolverError unless the network's margin at the returned input x equals the MILP's
    optimum (see CHECK_RTOL): a big-M answer the network does not attain is not a certificate."""
    margin, scale, slack = _network_margin(blocks, acts, x, c)
    gap = abs(attained - lower) + _MILP_OPTS["mip_abs_gap"] + _MILP_OPTS["mip_rel_gap"] * abs(attained)
    tol = CHECK_RTOL * max(1.0, scale) + CHECK_FEAS * slack + gap
    if not (np.isfinite(margin) and abs(margin - attained) <= tol):
        raise SolverError(f"HiGHS's answer on {what} does not hold: its optimum is {attained:.10g} but "
                          f"the network's margin at the returned input is {margin:.10g} (difference "
                          f"{abs(margin - attained):.3g} > tolerance {tol:.3g}; largest |logit| "
                          f"{scale:.3g}); the network is probably too badly scaled for the MILP")


def _solve_example(blocks: List[Affine], acts: Sequence[DualActivation],
                   pre: NumpyBounds, lo: np.ndarray, hi: np.ndarray, C: np.ndarray, integer: bool,
                   opts: dict, tag: str, deadline: Optional[float] = None,
                   ball: Optional[Tuple[np.ndarray, float, str]] = None
                   ) -> Tuple[List[float], List[np.ndarray], List[float]]:
    """Minimise each row of C (m, K) @ logits for one example over the box [lo, hi] (n0,),
    intersected with ``ball`` = (x0 (n0,), eps, 'l2' | 'l1') if given.

    deadline: time.perf_counter() value after which SolverError is raised (HiGHS gets the time
    left as its time_limit for each row). The MILP's answers are checked (:func:`_check_answer`).
    An l2 ball makes the problem a second-order cone program, solved by Clarabel (LP only).
    Returns (values (m), x per row (m, each (n0,)), the MILP's proven lower bounds (m) or [])."""
    import cvxpy as cp
    x = cp.Variable(lo.size)
    cons = [x >= lo, x <= hi]
    if ball is not None:
        cons += _ball_constraints(x, *ball)
    conic = ball is not None and ball[2] == "l2"  # a second-order cone: Clarabel, not HiGHS
    hs = [x]  # the sources: the input, then each activation's output
    for (terms, b), act, (l, u) in zip(blocks[:-1], acts, pre):
        a = cp.Variable(l.size)
        z_of = lambda i, terms=terms, b=b, hs=list(hs): _apply(terms, hs, i) + b[i]
        cons += (act.milp_constraints if integer else act.lp_constraints)(a, z_of, l, u)
        hs.append(a)
    terms, b = blocks[-1]
    Csp, Cb = sp.csr_matrix(C), C @ b
    CAs = [Csp @ A for _, A in terms]
    cs = [cp.Parameter(A.shape[1]) for _, A in terms]
    objective = None
    for c, (k, _) in zip(cs, terms):
        objective = c @ hs[k] if objective is None else objective + c @ hs[k]
    prob = cp.Problem(cp.Minimize(objective), cons)
    vals, xs, mip = [], [], []
    for r in range(C.shape[0]):
        for c, CA in zip(cs, CAs):
            c.value = np.asarray(CA[r].todense()).ravel()
        what = f"{tag}, spec row {r}"
        if deadline is not None:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise SolverError(f"time_limit exceeded (user_limit) before {what}; no bound is reported")
            opts = dict(opts, time_limit=left)
        if conic:
            _solve_socp(prob, what)
        else:
            _solve(prob, opts, what)
        if deadline is not None and time.perf_counter() > deadline:
            raise SolverError(f"time_limit exceeded (user_limit) on {what}; no bound is reported")
        vals.append(prob.value + Cb[r])
        xs.append(np.clip(x.value, lo, hi) if ball is None else _into_ball(np.clip(x.value, lo, hi), *ball))
        if integer:
            mip.append(_mip_lower(prob, prob.value, what) + Cb[r])
            _check_answer(blocks, acts, xs[-1], C[r], vals[-1], mip[-1], what)
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
           clip: Optional[Tuple[float, float]], pre_bounds, intersect: bool, exact: bool = False,
           norm: str = "linf"
           ) -> Tuple[Problem, PreBounds, List[NumpyBounds], List[Affine]]:
    """Checked problem, pre-activation bounds (torch and per example numpy) and affine blocks."""
    P = prepare(model, x, y, eps, spec, clip, norm)
    if P.nonfinite is not None:
        raise ValueError(P.nonfinite)
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


def _np_ball(ball: Optional[Ball], n: int) -> Optional[Tuple[np.ndarray, float, str]]:
    """Example n's ball as (x0 (n0,) float64, eps, norm), or None for l_inf."""
    if ball is None:
        return None
    return (ball.center[n].detach().reshape(-1).double().cpu().numpy(), float(ball.radius[n, 0]), ball.norm)


_L2_MILP_MSG = ("milp_bounds cannot do norm='l2': the l2 ball is a second-order cone, so exact "
                "verification is a mixed-integer second-order cone program, and none of the installed "
                "solvers does that (HiGHS: LP/MILP only; Clarabel, SCS: continuous conic only); use "
                "lp_bounds or dual_bounds (sound, not exact) or norm='l1' / 'linf'")


def lp_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
              spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
              pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None,
              norm: str = "linf") -> BoundResult:
    """Exact optimum of the triangle-relaxation LP (the convex outer adversarial polytope).

    x: (N, *input_shape); y: (N,) or None with spec (N, m, K) / (m, K); eps as in dual_bounds.
    Pre-activation bounds: ``pre_bounds`` (list of (l, u) per activation, each (N, *shape)) or
    the dual network's. For ReLUs stable neurons are fixed (a = z or a = 0), unstable ones
    relaxed, exactly the primal of the dual network, so LP >= dual at the same pre-bounds.
    Solved with HiGHS per example and spec row; a non-optimal status raises SolverError.
    norm: 'linf' (default), 'l1' (a linear ball: HiGHS) or 'l2' (a second-order cone: solved
    by Clarabel, an interior-point solver, to about 1e-9 relative: a tolerance, not exact). The
    input set is the ball intersected with the box clip for every norm (the dual bounds drop
    the box for l2/l1, so LP >= dual still holds there, by more).
    Returns BoundResult(lower (N, m)); info['seconds'].
    """
    t0 = time.perf_counter()
    P, pre, np_pre, blocks = _setup(model, x, y, eps, spec, clip, pre_bounds, False, norm=norm)
    lows = []
    for n in range(x.shape[0]):
        lo_n, hi_n = (t[n].detach().reshape(-1).double().cpu().numpy() for t in (P.lo, P.hi))
        vals, _, _ = _solve_example(blocks, P.activations, np_pre[n], lo_n, hi_n,
                                    P.C[n].double().cpu().numpy(), False, _LP_OPTS, f"LP example {n}",
                                    ball=_np_ball(P.ball, n))
        lows.append(vals)
    return BoundResult(lower=_to_t(lows, P), pre_bounds=pre, method="lp",
                       info={"seconds": time.perf_counter() - t0}, norm=P.norm)


def milp_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None,
                time_limit: Optional[float] = None, norm: str = "linf") -> BoundResult:
    """Exact minimum of each spec row over the input set (MILP, binary ReLU indicators).

    Shapes as in :func:`lp_bounds`. Every activation must have an exact encoding
    (``exact_encoding``; ReLU does), else UnsupportedLayerError. Big-M constants come from
    ``pre_bounds`` (must be valid) or, by default, the dual network's bounds intersected with
    interval bounds. HiGHS with gaps 1e-9 and its default feasibility tolerances; a status
    other than optimal raises SolverError. ``time_limit`` (seconds, all examples and rows
    together, setup included) is a hard limit: HiGHS gets the time left, and SolverError is
    raised once it is spent.

    Every answer is checked: the network (float64, the weights the MILP saw) is run at each
    returned worst-case input, and SolverError is raised when its margin there differs from
    the reported optimum by more than ``CHECK_RTOL`` (1e-6) * max(1, max |logit|) plus
    ``CHECK_FEAS`` (1e-7) * the sum of |path weights| (what feasibility slack can move) plus the
    solver's gap. Scale range: big-M constants are the pre-activation bounds, and HiGHS's
    tolerances are absolute (about 1e-6 to 1e-7), so the MILP is exact for networks whose
    pre-activation bounds and logits are at most about 1e4 in magnitude (typical trained or
    randomly initialised networks); beyond that (e.g. weights scaled x1000, logits ~1e11)
    answers may be wrong, and are then refused by the check above, not reported.
    norm: 'linf' (default) or 'l1' (the ball is linear: still a HiGHS MILP; x_worst is moved
    onto the ball if the solver's slack left it just outside). 'l2' is refused (ValueError):
    it would need a mixed-integer second-order cone solver, and none is installed.
    Returns BoundResult with lower (N, m) (the solver's proven lower bound, equal to the
    optimum up to the gap), x_worst (N, m, *input_shape) inside the ball and box attaining it,
    info['attained'] (N, m) the objective at x_worst, info['seconds'].
    """
    t0 = time.perf_counter()
    if check_norm(norm) == "l2":
        raise ValueError(_L2_MILP_MSG)
    if time_limit is not None:
        time_limit = float(time_limit)
        if not time_limit >= 0:
            raise ValueError(f"time_limit must be a number of seconds >= 0 or None, got {time_limit}")
    deadline = None if time_limit is None else t0 + time_limit
    P, pre, np_pre, blocks = _setup(model, x, y, eps, spec, clip, pre_bounds, True, exact=True, norm=norm)
    opts = dict(_MILP_OPTS)
    lows, att, xw = [], [], []
    for n in range(x.shape[0]):
        lo_n, hi_n = (t[n].detach().reshape(-1).double().cpu().numpy() for t in (P.lo, P.hi))
        vals, xs, mip = _solve_example(blocks, P.activations, np_pre[n], lo_n, hi_n,
                                       P.C[n].double().cpu().numpy(), True, opts, f"MILP example {n}",
                                       deadline, ball=_np_ball(P.ball, n))
        att.append(vals)
        lows.append(mip)
        xw.append(np.stack(xs))
    N, m = x.shape[0], P.C.shape[1]
    x_worst = _to_t(np.stack(xw), P).view(N, m, *x.shape[1:])
    return BoundResult(lower=_to_t(lows, P), pre_bounds=pre, method="milp", x_worst=x_worst,
                       info={"attained": _to_t(att, P), "seconds": time.perf_counter() - t0}, norm=P.norm)
