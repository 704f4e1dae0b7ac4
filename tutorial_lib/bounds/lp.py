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

Soundness of the LP's answer (:func:`lp_bounds`): a solver's objective value is not a lower
bound (an interior-point method stops near, not at, the optimum; "optimal_inaccurate" is
further off; presolve with tight tolerances called some feasible LPs infeasible). What is
reported is weak duality evaluated in float64 at the solver's multipliers, over boxes that
contain the LP's feasible set (:class:`_Lagrangian`; Neumaier and Shcherbina 2004): a lower
bound for any multipliers, equal to the optimum at exact ones. The solver's accuracy decides
only whether that bound is tight enough to accept (else the next settings are tried). The LP
is written in the shifts from the network's values at the centre, and each objective is scaled
by a power of two, so that the solvers' absolute tolerances meet numbers of a sensible size.
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
from .precision import without_tf32
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
#: the MILP's second try, when the first answer fails :func:`_check_answer` (e.g. tiny weights,
#: where HiGHS's absolute tolerances are large against the margins): feasibility and
#: integrality tolerances 1e-9; its answer is checked the same way
_MILP_TIGHTER = dict(primal_feasibility_tolerance=1e-9, dual_feasibility_tolerance=1e-9,
                     mip_feasibility_tolerance=1e-9)
#: Clarabel (the l2 LP, a second-order cone program): tolerances 10x tighter than its defaults
_SOCP_OPTS = dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, verbose=False)
_SOLVER_NAMES = {"HIGHS": "HiGHS", "CLARABEL": "Clarabel", "SCS": "SCS"}

#: what lp_bounds tries on each spec row, in order, until an answer passes the checks of
#: :func:`_lp_row` (a verified lower bound within LP_GAP_RTOL of the solver's optimum): (what, solver,
#: options). A linear ball (l_inf, l1): HiGHS (whose presolve with 1e-9 tolerances sometimes
#: calls a feasible LP infeasible), then Clarabel; an l2 ball (a second-order cone): Clarabel, SCS.
LP_TRIES_LINEAR: Tuple[Tuple[str, str, dict], ...] = (
    ("HiGHS, tolerances 1e-9", "HIGHS", _LP_OPTS),
    ("HiGHS, tolerances 1e-9, presolve off", "HIGHS", dict(_LP_OPTS, presolve="off")),
    ("HiGHS, default tolerances", "HIGHS", dict(output_flag=False)),
    ("HiGHS, default tolerances, presolve off", "HIGHS", dict(output_flag=False, presolve="off")),
    ("HiGHS interior point", "HIGHS", dict(output_flag=False, highs_options={"solver": "ipm"})),
    ("Clarabel, tolerances 1e-9", "CLARABEL", _SOCP_OPTS),
    ("Clarabel, default tolerances", "CLARABEL", dict(verbose=False)),
)
LP_TRIES_CONIC: Tuple[Tuple[str, str, dict], ...] = (
    ("Clarabel, tolerances 1e-9", "CLARABEL", _SOCP_OPTS),
    ("Clarabel, default tolerances", "CLARABEL", dict(verbose=False)),
    ("Clarabel, tolerances 1e-9, no equilibration", "CLARABEL", dict(_SOCP_OPTS, equilibrate_enable=False)),
    ("Clarabel, default tolerances, no presolve", "CLARABEL", dict(verbose=False, presolve_enable=False)),
    ("SCS, tolerances 1e-9", "SCS", dict(eps_abs=1e-9, eps_rel=1e-9, max_iters=200_000, verbose=False)),
)
#: an LP answer is accepted when the verified lower bound (weak duality at the solver's
#: multipliers, :class:`_Lagrangian`) is within LP_GAP_RTOL * max(|optimum|, max |logit|) +
#: LP_GAP_ATOL of the solver's optimum (see :func:`_lp_row`; LP_GAP_ATOL: the solvers' absolute
#: tolerances are 1e-9); the bound reported is the verified one
LP_GAP_RTOL, LP_GAP_ATOL = 1e-7, 1e-9

#: every MILP answer is checked by running the network (float64, the weights the MILP saw) at
#: the returned worst-case input: the margin there must equal the reported optimum within
#: CHECK_RTOL * (max |logit| there) + CHECK_FEAS * (a bound on how far feasibility slack moves
#: the margin) + the solver's gap (attained - proven lower bound + the gap tolerances): relative
#: to the logits' scale, so that tiny weights (logits ~1e-3) are held to the same standard
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
    """The MILP with HiGHS (its answer is then checked by :func:`_check_answer`)."""
    _solve_with(prob, "HIGHS", opts, what)


_BANNER_SILENCED = False


def _silence_highs_banner() -> None:
    """Let HiGHS print its banner ("Running HiGHS 1.x ...: Copyright ...") into /dev/null.

    HiGHS prints it from the C++ constructor of the first ``Highs`` object of a process, before
    any option can be set, so ``output_flag=False`` (which silences everything else and is set
    on every solve) cannot stop it, and in Jupyter it lands in the notebook's stored output. We
    construct that first object here with the process's file descriptor 1 pointed at /dev/null
    for the duration of the constructor only; every later ``Highs`` prints nothing. Once per
    process; a no-op without highspy."""
    global _BANNER_SILENCED
    if _BANNER_SILENCED:
        return
    _BANNER_SILENCED = True
    try:
        import highspy
    except ImportError:
        return
    import ctypes
    import os
    import sys
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            try:
                highspy.Highs()
                libc.fflush(None)
            finally:
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def _solve_with(prob, solver: str, opts: dict, what: str) -> None:
    """One solve; SolverError unless the status is optimal (a failure of the solver, cvxpy's
    "Cannot unpack invalid solution" included)."""
    import cvxpy as cp
    name = _SOLVER_NAMES.get(solver, solver)
    if solver == "HIGHS":
        _silence_highs_banner()
    try:
        with warnings.catch_warnings():  # "may be inaccurate": any non-optimal status raises below
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=solver, **opts)
    except (cp.error.SolverError, ValueError, ArithmeticError) as e:
        raise SolverError(f"{name} failed on {what}: {e}") from e
    if prob.status != cp.OPTIMAL:
        raise SolverError(f"{name} returned status {prob.status!r} on {what}; no bound is reported "
                          "(pre-activation bounds that exclude the network's values make the problem infeasible)")


def _ball_constraints(x, x0: np.ndarray, eps: float, norm: str) -> Tuple[List, Optional[object]]:
    """cvxpy constraints ||x - x0|| <= eps for an l2 (second-order cone) or l1 (linear) ball, and
    the l1 ball's extra variable t (n0,) (|x - x0| <= t, sum t <= eps: t lies in [0, eps]) or None."""
    import cvxpy as cp
    if norm == "l2":
        return [cp.SOC(cp.Constant(eps), x - x0)], None
    t = cp.Variable(x0.size)
    return [t >= x - x0, t >= x0 - x, cp.sum(t) <= eps], t


def _into_ball(x: np.ndarray, x0: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """x moved onto the segment towards x0 until ||x - x0|| <= eps (a solver's feasibility slack);
    x0 and x in the box keep the result in the box."""
    d = x - x0
    size = float(np.abs(d).sum() if norm == "l1" else np.sqrt((d * d).sum()))
    return x0 + d * (eps / size) if size > eps else x


def _network_margin(blocks: List[Affine], acts: Sequence[DualActivation],
                    x: np.ndarray, c: np.ndarray) -> Tuple[float, float, float]:
    """Run the network the MILP encodes (float64) at x (n0,): (c @ logits, max |logit|, a bound
    on how far c @ logits moves when every constraint on the input and the activations' outputs
    is off by 1: the sum of |path weights| from them to the margin). The logits are expressions,
    not variables (no slack of their own), so the bound scales with the weights."""
    hs, ss = [x], [np.ones_like(x)]
    for (terms, b), act in zip(blocks[:-1], acts):
        z = _apply(terms, hs) + b
        hs.append(act.forward(torch.from_numpy(z).view(1, *act.in_shape)).reshape(-1).numpy())
        ss.append(_apply(terms, ss, absolute=True) + 1.0)
    terms, b = blocks[-1]
    logits = _apply(terms, hs) + b
    s = _apply(terms, ss, absolute=True)
    return float(c @ logits), float(np.abs(logits).max()), float(np.abs(c) @ s)


def _check_answer(blocks, acts, x: np.ndarray, c: np.ndarray, attained: float, lower: float,
                  what: str) -> float:
    """Raise SolverError unless the network's margin at the returned input x equals the MILP's
    optimum (see CHECK_RTOL): a big-M answer the network does not attain is not a certificate.

    The tolerance is relative to the problem's scale: CHECK_RTOL * max |logit| at x, plus
    CHECK_FEAS (HiGHS's feasibility tolerance) * the margin's sensitivity to a slack of 1 in
    every constraint (scales with the weights), plus the solver's own gap. (It was
    1e-6 * max(1, max |logit|) + ...: on weights x 1e-3 that let through answers 2e-7 above a
    margin the network attains, a relative error of 6e-4.) Returns the network's margin at x."""
    margin, scale, slack = _network_margin(blocks, acts, x, c)
    gap = abs(attained - lower) + _MILP_OPTS["mip_rel_gap"] * (abs(attained) + scale)
    tol = CHECK_RTOL * scale + CHECK_FEAS * slack + gap
    if not (np.isfinite(margin) and abs(margin - attained) <= tol):
        raise SolverError(f"HiGHS's answer on {what} does not hold: its optimum is {attained:.10g} but "
                          f"the network's margin at the returned input is {margin:.10g} (difference "
                          f"{abs(margin - attained):.3g} > tolerance {tol:.3g}, relative to the largest "
                          f"|logit| {scale:.3g} there); the network is probably too badly scaled for the MILP")
    return margin


def _activation_boxes(blocks: List[Affine], acts: Sequence[DualActivation], pre: NumpyBounds,
                      lo: np.ndarray, hi: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
    """A box [a_lo, a_hi] (each (n_k,), float64) around every activation's output in the LP.

    Interval arithmetic on the LP itself: z's box is the image of its sources' boxes (the input
    box [lo, hi] (n0,) first), and the activation's output lies between its relaxation's lower
    line at the lower end and upper line at the upper end of z's box (the relaxation's lines on
    the pre-activation bounds ``pre``; the ReLU's LP constraints imply them). Widened by 1e-10
    relative against rounding, so the network's values lie inside (given valid pre-bounds). The
    LP gets these boxes as constraints, so its feasible set lies in them: :class:`_Lagrangian`
    minimises over them. Entries that are not finite are +-inf (no constraint)."""
    mid, rad = [(lo + hi) / 2], [(hi - lo) / 2]
    size = [np.maximum(np.abs(lo), np.abs(hi))]
    out = []
    for (terms, b), act, (l, u) in zip(blocks[:-1], acts, pre):
        zc, zr = _apply(terms, mid) + b, _apply(terms, rad, absolute=True)
        pad = 1e-10 * (_apply(terms, size, absolute=True) + np.abs(b))
        zl, zu = zc - zr - pad, zc + zr + pad
        t = lambda v: torch.from_numpy(np.asarray(v, dtype=np.float64)).unsqueeze(0)
        with torch.no_grad():
            ls, li, us, ui = (r[0].double().numpy() for r in act.relax(t(l), t(u)))
        a_lo = np.minimum(ls * zl, ls * zu) + li
        a_hi = np.maximum(us * zl, us * zu) + ui
        pad = 1e-10 * (np.maximum(np.abs(ls), np.abs(us)) * np.maximum(np.abs(zl), np.abs(zu))
                       + np.abs(li) + np.abs(ui)) + 1e-300
        a_lo, a_hi = a_lo - pad, a_hi + pad
        a_lo = np.where(np.isfinite(a_lo), a_lo, -np.inf)
        a_hi = np.where(np.isfinite(a_hi), a_hi, np.inf)
        out.append((a_lo, a_hi))
        mid.append(np.where(np.isfinite(a_lo + a_hi), (a_lo + a_hi) / 2, 0.0))
        rad.append(np.where(np.isfinite(a_lo + a_hi), (a_hi - a_lo) / 2, np.inf))
        size.append(np.maximum(np.abs(a_lo), np.abs(a_hi)))
    return out


class _Lagrangian:
    """A lower bound on an LP's (or second-order cone program's) optimum that holds whatever the
    solver's accuracy: weak duality, evaluated in float64.

    Write every constraint as g(v) <= 0 (an inequality), h(v) = 0 (an equality) or (t(v), X(v))
    in the second-order cone, with affine g, h, t, X of the stacked variables v. For ANY
    multipliers lam >= 0, nu, and (mu, w) with ||w|| <= mu, every feasible v has
    lam . g(v) <= 0, nu . h(v) = 0 and mu t(v) + w . X(v) >= 0, so the objective satisfies
    f(v) >= f(v) + lam . g(v) + nu . h(v) - (mu t(v) + w . X(v)) =: L(v) >= min over B of L,
    where B is any box that contains the feasible set (L is affine: its minimum over a box is
    a sum of one end per coordinate). The multipliers are the solver's (dual values, projected
    onto the valid set: lam clipped at 0, mu raised to ||w||), so an inaccurate solve gives a
    looser bound, never a wrong one; an accurate one gives the optimum up to its gap. The
    rounding of the float64 arithmetic is bounded by a standard error bound for sums
    (:meth:`bound` subtracts it).

    Built once per problem (the coefficients of every constraint, from cvxpy's canonical form
    of the affine expressions, see :meth:`_affine_all`); ``box``: variable id -> (lo, hi) (each
    (size,)); a variable without a box gets (-inf, inf) (then its coefficient in L must vanish
    exactly, else -inf).
    ``skip``: ids of constraints that only say v >= lo or v <= hi for a box in ``box``: they are
    left out of L (minimising over the box accounts for them exactly; Neumaier and Shcherbina
    2004, "Safe bounds in linear and mixed-integer linear programming").
    """

    def __init__(self, prob, box: Dict[int, Tuple[np.ndarray, np.ndarray]], skip: Sequence[int] = ()):
        from cvxpy.constraints import SOC, Equality, Inequality
        self.variables = list(prob.variables())
        self.offset: Dict[int, int] = {}
        n = 0
        for v in self.variables:
            self.offset[v.id] = n
            n += v.size
        self.n = n
        self.lo, self.hi = np.full(n, -np.inf), np.full(n, np.inf)
        for v in self.variables:
            if v.id in box:
                o = self.offset[v.id]
                self.lo[o:o + v.size], self.hi[o:o + v.size] = box[v.id]
        kinds, exprs = [], []
        for con in prob.constraints:
            if con.id in skip:
                continue
            if isinstance(con, SOC):
                kinds.append((con, "soc", 2))
                exprs += [con.args[0], con.args[1]]
            elif isinstance(con, Inequality):
                kinds.append((con, "ineq", 1))
                exprs.append(con.expr)
            elif isinstance(con, Equality):
                kinds.append((con, "eq", 1))
                exprs.append(con.expr)
            else:
                raise TypeError(f"no weak-duality term for a {type(con).__name__} constraint")
        parts = self._affine_all(exprs)
        self.parts = []  # (constraint, kind, [(G^T (n, m) csr, h (m,)) per affine part])
        for con, kind, k in kinds:
            self.parts.append((con, kind, parts[:k]))
            parts = parts[k:]
        self.rows = sum(h.size for _, _, ps in self.parts for _, h in ps)

    def _affine_all(self, exprs: Sequence) -> List[Tuple[sp.csr_matrix, np.ndarray]]:
        """Each affine expression e (m entries) as G v + h: (G^T (n, m), h (m,)).

        cvxpy's own canonicalisation (one sparse matrix for all of them, as cvxpy builds the
        solver's data), checked against cvxpy's evaluation at a random point; expression by
        expression from cvxpy's gradients (slower) if that fails."""
        try:
            out = self._canonical(exprs)
        except Exception:  # an internal cvxpy API that moved: the public, slower way
            out = None
        if out is None or not self._agrees(exprs, out):
            out = [self._by_gradient(e) for e in exprs]
            if not self._agrees(exprs, out):
                raise ValueError("could not extract the LP's constraint coefficients from cvxpy")
        return out

    def _canonical(self, exprs: Sequence) -> List[Tuple[sp.csr_matrix, np.ndarray]]:
        import cvxpy.lin_ops.lin_op as lo
        from cvxpy.cvxcore.python import canonInterface
        sizes = [max(1, e.size) for e in exprs]
        total = sum(sizes)
        if not total:
            return []
        lins = [e.canonical_form[0] for e in exprs]
        mat = canonInterface.get_problem_matrix(lins, self.n, dict(self.offset), {lo.CONSTANT_ID: 1},
                                                {lo.CONSTANT_ID: 0}, total)
        full = sp.csc_matrix(mat).reshape((self.n + 1, total)).tocsc()
        out, start = [], 0
        for m in sizes:
            block = full[:, start:start + m]
            out.append((block[:-1].tocsr(), block[-1].toarray().ravel()))
            start += m
        return out

    def _by_gradient(self, e) -> Tuple[sp.csr_matrix, np.ndarray]:
        saved = [v.value for v in self.variables]
        try:
            for v in self.variables:
                v.value = np.zeros(v.shape)
            h = np.asarray(e.value, dtype=np.float64).reshape(-1, order="F")
            grads = e.grad or {}
            blocks = []
            for v in self.variables:
                g = grads.get(v)
                blocks.append(sp.csr_matrix((v.size, h.size)) if g is None else sp.csr_matrix(g))
            return sp.vstack(blocks).tocsr(), h
        finally:
            for v, val in zip(self.variables, saved):
                v.value = val

    def _agrees(self, exprs: Sequence, parts: List[Tuple[sp.csr_matrix, np.ndarray]]) -> bool:
        """G v + h equals cvxpy's value of each expression at a random v (to rounding)."""
        saved = [v.value for v in self.variables]
        rng = np.random.default_rng(0)
        v_all = rng.standard_normal(self.n)
        try:
            for v in self.variables:
                o = self.offset[v.id]
                v.value = v_all[o:o + v.size].reshape(v.shape, order="F")
            for e, (GT, h) in zip(exprs, parts):
                want = np.asarray(e.value, dtype=np.float64).reshape(-1, order="F")
                got = GT.T @ v_all + h
                scale = abs(GT).T @ np.abs(v_all) + np.abs(h) + 1e-300
                if want.shape != got.shape or not (np.abs(got - want) <= 1e-9 * scale).all():
                    return False
            return True
        finally:
            for v, val in zip(self.variables, saved):
                v.value = val

    def bound(self, coef: np.ndarray, const: float) -> float:
        """min over the box of L for the objective coef . v + const, at the current dual values
        (after a solve); -inf when a multiplier is missing or not finite, or the box is open
        where L's coefficient is not exactly zero."""
        d, d_abs = coef.astype(np.float64).copy(), np.abs(coef).astype(np.float64)
        c0, c_abs = float(const), abs(float(const))
        for con, kind, parts in self.parts:
            dual = con.dual_value
            if dual is None:
                return -np.inf
            if kind == "soc":
                mu = float(np.asarray(dual[0], dtype=np.float64).reshape(-1)[0])
                w = np.asarray(dual[1], dtype=np.float64).reshape(-1, order="F")
                mu = max(mu, float(np.linalg.norm(w)) * (1 + 4e-16 * w.size))  # (mu, w) in the cone
                ys = [-np.array([mu]), -w]
            else:
                y = np.asarray(dual, dtype=np.float64).reshape(-1, order="F")
                ys = [np.maximum(y, 0.0) if kind == "ineq" else y]
            for (GT, h), y in zip(parts, ys):
                if y.size != h.size or not np.isfinite(y).all():
                    return -np.inf
                d += GT @ y
                d_abs += abs(GT) @ np.abs(y)
                c0 += float(h @ y)
                c_abs += float(np.abs(h) @ np.abs(y))
        # |rounding| <= gamma_k * (the sum of |terms| of every sum taken), k the longest sum; an
        # error delta in d_j moves min(d_j lo_j, d_j hi_j) by at most |delta| max(|lo_j|, |hi_j|)
        k = self.n + self.rows + 4
        gamma = 2 * k * np.finfo(np.float64).eps
        end = np.where(d > 0, self.lo, self.hi)
        with np.errstate(invalid="ignore"):
            terms = np.where(d == 0, 0.0, d * end)
        closed = np.isfinite(self.lo) & np.isfinite(self.hi)
        # an open side: d_j's sign must be certain despite rounding (else the true min may be -inf)
        if not np.isfinite(terms).all() or ((~closed) & (d_abs > 0) & (np.abs(d) <= 2 * gamma * d_abs)).any():
            return -np.inf
        size = np.where(closed, np.maximum(np.abs(self.lo), np.abs(self.hi)), np.abs(np.where(d == 0, 0.0, end)))
        return c0 + float(terms.sum()) - gamma * (c_abs + float(d_abs @ size) + abs(c0))


def _centre_values(blocks: List[Affine], acts: Sequence[DualActivation], x0: np.ndarray) -> List[np.ndarray]:
    """The sources' values (float64) when the network runs at x0 (n0,): [x0, each activation's output]."""
    hs = [x0]
    for (terms, b), act in zip(blocks[:-1], acts):
        z = _apply(terms, hs) + b
        hs.append(act.forward(torch.from_numpy(z).view(1, *act.in_shape)).reshape(-1).numpy())
    return hs


def _widen(lo: np.ndarray, hi: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """[lo, hi] one float64 step wider on each side (against the rounding of a shift)."""
    return np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)


class _Model:
    """The LP or MILP of one example, built once; its spec rows are solved one at a time.

    Minimises each row of C (m, K) @ logits over the box [lo, hi] (n0,) intersected with
    ``ball`` = (x0 (n0,), eps, 'l2' | 'l1') if given: cvxpy variables for the input and for each
    activation's output, the objective c . sources with one Parameter c per source of the logits.

    The LP (``centre`` x0 (n0,) given) is written in the shifts from the network's values at
    x0: input x = x0 + dx, activation output a = a0 + da (a0 the network's at x0), objective
    c . d + c . (centre values) (the constant kept out of the solver). The solver then works
    on numbers of the size of what changes over the ball rather than of the values themselves
    (large weights and small eps made Clarabel and HiGHS fail on the plain form). The LP also
    bounds every activation's output by :func:`_activation_boxes` (implied by its constraints;
    they make the weak-duality bound of :class:`_Lagrangian` finite)."""

    def __init__(self, blocks: List[Affine], acts: Sequence[DualActivation], pre: NumpyBounds,
                 lo: np.ndarray, hi: np.ndarray, C: np.ndarray, integer: bool,
                 ball: Optional[Tuple[np.ndarray, float, str]], centre: Optional[np.ndarray] = None):
        import cvxpy as cp
        self.blocks, self.acts, self.lo, self.hi, self.C, self.ball = blocks, acts, lo, hi, C, ball
        h0 = (_centre_values(blocks, acts, centre) if centre is not None
              else [np.zeros(lo.size)] + [np.zeros(l.size) for l, _ in pre])
        self.h0 = h0
        #: the network's values at the centre satisfy the pre-activation bounds: then the LP is
        #: feasible (the centre's values are a feasible point), and "infeasible" is numerical
        self.centre_inside = centre is not None and all(
            bool(((l <= z) & (z <= u)).all())
            for (terms, b), (l, u) in zip(blocks[:-1], pre) for z in [_apply(terms, h0) + b])
        shifted = centre is not None
        self.x = x = cp.Variable(lo.size)
        x_lo, x_hi = _widen(lo - h0[0], hi - h0[0]) if shifted else (lo, hi)
        cons = [x >= x_lo, x <= x_hi]
        box = {x.id: (x_lo, x_hi)}
        self.box_cons = [con.id for con in cons]  # covered by ``box`` (see _Lagrangian)
        if ball is not None:
            ball_cons, t = _ball_constraints(x + h0[0] if shifted else x, *ball)
            cons += ball_cons
            if t is not None:
                box[t.id] = (np.zeros(lo.size), np.full(lo.size, float(ball[1])))
        self.conic = ball is not None and ball[2] == "l2"  # a second-order cone: no HiGHS
        abox = None if integer else _activation_boxes(blocks, acts, pre, lo, hi)
        self.vars = [x]
        for k, ((terms, b), act, (l, u)) in enumerate(zip(blocks[:-1], acts, pre)):
            a = cp.Variable(l.size)
            a_src = a + h0[k + 1] if shifted else a
            b0 = b + _apply(terms, h0) if shifted else b  # z = A (h0 + d) + b = A d + b0
            z_of = lambda i, terms=terms, b0=b0, vs=list(self.vars): _apply(terms, vs, i) + b0[i]
            cons += (act.milp_constraints if integer else act.lp_constraints)(a_src, z_of, l, u)
            if abox is not None:
                a_lo, a_hi = abox[k]
                if shifted:
                    a_lo, a_hi = _widen(a_lo - h0[k + 1], a_hi - h0[k + 1])
                box[a.id] = (a_lo, a_hi)
                for side, bound in zip((1, -1), (a_lo, a_hi)):
                    i = np.flatnonzero(np.isfinite(bound))
                    if i.size:
                        v = a if i.size == a.size else a[i]
                        cons.append(v >= bound[i] if side == 1 else v <= bound[i])
                        self.box_cons.append(cons[-1].id)
            self.vars.append(a)
        terms, b = blocks[-1]
        Csp = sp.csr_matrix(C)
        self.Cb = C @ b
        self.Cb_err = np.abs(C) @ np.abs(b)
        self.CAs = [Csp @ A for _, A in terms]
        self.cs = [cp.Parameter(A.shape[1]) for _, A in terms]
        self.sources = [k for k, _ in terms]
        objective = None
        for c, k in zip(self.cs, self.sources):
            objective = c @ self.vars[k] if objective is None else objective + c @ self.vars[k]
        self.prob = cp.Problem(cp.Minimize(objective), cons)
        self.box = box
        # how far each source moves over the input set: the input box, each activation's
        # interval image of its pre-activation bounds (for the objective's scale, set_row)
        with torch.no_grad():
            self.widths = [hi - lo] + [
                (lambda iv: (iv[1] - iv[0]).reshape(-1).double().numpy())(
                    act.interval(torch.from_numpy(l).view(1, -1), torch.from_numpy(u).view(1, -1)))
                for act, (l, u) in zip(acts, pre)]
        self.f = 1.0

    def set_row(self, r: int) -> Tuple[float, float]:
        """Make row r the objective, scaled by a power of two ``self.f`` chosen so that it moves by
        about 1 over the input set (sum |c| * the sources' widths), but with coefficients at most
        ~2^10 (larger ones made HiGHS and Clarabel fail on saturated sigmoid / tanh networks,
        whose objective barely moves): the solvers' tolerances are absolute (HiGHS: gaps 1e-9,
        feasibility 1e-7), so a network with tiny weights (margins ~1e-4, moving by ~1e-7) was
        solved to about 1 % of that movement (the MILP missed minima by 1e-9). The solver's
        values are divided by ``f`` again (exact: a power of two). Returns
        (the objective's constant (C b and c . the centre values, float64, unscaled), a bound on
        its rounding error)."""
        const, err = float(self.Cb[r]), 4 * np.finfo(np.float64).eps * float(self.Cb_err[r])
        rows = [np.asarray(CA[r].todense()).ravel() for CA in self.CAs]
        for c, k in zip(rows, self.sources):
            const += float(c @ self.h0[k])
            err += 2 * self.h0[k].size * np.finfo(np.float64).eps * float(np.abs(c) @ np.abs(self.h0[k]))
        moves = sum(float(np.abs(c) @ np.where(np.isfinite(self.widths[k]), self.widths[k], 0.0))
                    for c, k in zip(rows, self.sources))
        cmax = max(float(np.abs(c).max()) if c.size else 0.0 for c in rows)
        target = max(moves, cmax * 2.0 ** -10)  # coefficients at most ~2^10
        self.f = 2.0 ** int(np.clip(-np.round(np.log2(target)), -60, 60)) if 0 < target < np.inf else 1.0
        for p, c in zip(self.cs, rows):
            p.value = c * self.f
        return const, err

    def x_value(self) -> Optional[np.ndarray]:
        """The solver's input, moved into the box and the ball; None without one."""
        v = self.x.value
        if v is None or not np.isfinite(v).all():
            return None
        v = np.clip(v + self.h0[0], self.lo, self.hi)
        return v if self.ball is None else _into_ball(v, *self.ball)

    def coef(self, lag: "_Lagrangian") -> np.ndarray:
        """The (scaled) objective's coefficients on lag's stacked variables."""
        d = np.zeros(lag.n)
        for c, k in zip(self.cs, self.sources):
            o = lag.offset[self.vars[k].id]
            d[o:o + self.vars[k].size] += c.value
        return d


def _lp_row(M: _Model, lag: _Lagrangian, r: int, what: str) -> Tuple[float, float, str, List[str]]:
    """The LP's verified lower bound on spec row r: (bound, the solver's optimum, the settings
    that gave it, what was tried before).

    Each setting of :data:`LP_TRIES_LINEAR` (l_inf, l1) or :data:`LP_TRIES_CONIC` (l2) is tried in
    turn; an answer (status optimal or optimal_inaccurate) is accepted when

    * its weak-duality bound (:class:`_Lagrangian`, a lower bound on the LP for any
      multipliers) is finite and within LP_GAP_RTOL * max(|optimum|, max |logit|) + LP_GAP_ATOL
      of the solver's optimum (so an inaccurate answer is used only where its own dual proves it), and
    * the bound is <= the network's margin at the solver's input (moved into the ball and box)
      plus CHECK_RTOL of the logits' scale: every input of the set attains a margin above
      the LP's minimum, so a bound above a value the network attains means the pre-activation
      bounds do not contain the network's values; that raises SolverError at once.

    The bound reported is the verified one (<= the solver's optimum). SolverError, listing every
    try and its outcome, when none is accepted."""
    import cvxpy as cp
    const, const_err = M.set_row(r)
    coef = M.coef(lag)
    tries = LP_TRIES_CONIC if M.conic else LP_TRIES_LINEAR
    log: List[str] = []
    for label, solver, opts in tries:
        try:
            if solver == "HIGHS":
                _silence_highs_banner()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                M.prob.solve(solver=solver, **opts)
        except (cp.error.SolverError, ValueError, ArithmeticError) as e:
            log.append(f"{label}: failed ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
            continue
        status = M.prob.status
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or M.prob.value is None:
            log.append(f"{label}: status {status!r}")
            continue
        opt = float(M.prob.value) / M.f + const
        bound = lag.bound(coef, 0.0) / M.f + const - const_err
        xv = M.x_value()
        margin, scale = (np.nan, 0.0) if xv is None else _network_margin(M.blocks, M.acts, xv, M.C[r])[:2]
        tol = LP_GAP_RTOL * max(abs(opt), scale) + LP_GAP_ATOL
        if not np.isfinite(bound) or not np.isfinite(opt) or opt - bound > tol:
            log.append(f"{label}: status {status!r}, optimum {opt:.10g} but the verified bound is only "
                       f"{bound:.10g} (gap {opt - bound:.3g} > {tol:.3g})")
            continue
        if np.isfinite(margin) and bound > margin + CHECK_RTOL * max(scale, abs(margin)) + 1e-300:
            raise SolverError(
                f"the LP bound on {what} ({bound:.10g}) exceeds the network's margin {margin:.10g} at an "
                "input of the set: the pre-activation bounds do not contain the network's values "
                "(invalid or too tight pre_bounds); no bound is reported")
        return bound, opt, label, log
    why = ("the LP is feasible (the network's values at the centre satisfy its constraints), so the "
           "solvers failed numerically" if M.centre_inside else
           "the pre-activation bounds exclude the network's values at the centre")
    raise SolverError(f"no LP answer on {what}; no bound is reported ({why}). Tried: " + "; ".join(log))


def _lp_example(blocks: List[Affine], acts: Sequence[DualActivation], pre: NumpyBounds, lo: np.ndarray,
                hi: np.ndarray, C: np.ndarray, tag: str, x0: np.ndarray,
                ball: Optional[Tuple[np.ndarray, float, str]] = None) -> Tuple[List[float], List[float], List[str]]:
    """The LP's verified lower bounds of each row of C (m, K) @ logits for one example (see
    :class:`_Model` and :func:`_lp_row`): (bounds (m), the solvers' optima (m), the settings that
    answered each row (m))."""
    M = _Model(blocks, acts, pre, lo, hi, C, False, ball, centre=x0)
    try:
        lag = _Lagrangian(M.prob, M.box, M.box_cons)
    except (TypeError, ValueError) as e:
        raise SolverError(f"no verified LP bound on {tag}: {e}") from e
    vals, opts, used = [], [], []
    for r in range(C.shape[0]):
        bound, opt, label, _ = _lp_row(M, lag, r, f"{tag}, spec row {r}")
        vals.append(bound)
        opts.append(opt)
        used.append(label)
    return vals, opts, used


def _milp_example(blocks: List[Affine], acts: Sequence[DualActivation], pre: NumpyBounds, lo: np.ndarray,
                  hi: np.ndarray, C: np.ndarray, opts: dict, tag: str, deadline: Optional[float] = None,
                  ball: Optional[Tuple[np.ndarray, float, str]] = None
                  ) -> Tuple[List[float], List[np.ndarray], List[float]]:
    """The MILP's minimum of each row of C (m, K) @ logits for one example (see :class:`_Model`).

    deadline: time.perf_counter() value after which SolverError is raised (HiGHS gets the time
    left as its time_limit for each row). Every answer is checked (:func:`_check_answer`); one
    that fails is solved again with feasibility tolerances 1e-9 (:data:`_MILP_TIGHTER`) and
    checked again, and SolverError is raised if that fails too.
    Returns (values attained (m), x per row (m, each (n0,)), proven lower bounds (m))."""
    M = _Model(blocks, acts, pre, lo, hi, C, True, ball)
    prob = M.prob
    vals, xs, mip = [], [], []
    for r in range(C.shape[0]):
        const = M.set_row(r)[0]
        what = f"{tag}, spec row {r}"
        for attempt, base in enumerate((opts, dict(opts, **_MILP_TIGHTER))):
            run = dict(base)
            if deadline is not None:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise SolverError(f"time_limit exceeded (user_limit) before {what}; no bound is reported")
                run["time_limit"] = left
            _solve(prob, run, what)
            if deadline is not None and time.perf_counter() > deadline:
                raise SolverError(f"time_limit exceeded (user_limit) on {what}; no bound is reported")
            attained = prob.value / M.f + const
            xw = M.x_value()
            if xw is None:
                raise SolverError(f"HiGHS returned no input on {what}; no bound is reported")
            lower = _mip_lower(prob, prob.value, what) / M.f + const
            try:
                margin = _check_answer(blocks, acts, xw, C[r], attained, lower, what)
            except SolverError:
                if attempt == 1:
                    raise
                continue
            break
        vals.append(attained)
        xs.append(xw)
        mip.append(min(lower, margin))  # the network attains margin: the minimum is below it
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


@without_tf32
def lp_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
              spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
              pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None,
              norm: str = "linf") -> BoundResult:
    """Exact optimum of the triangle-relaxation LP (the convex outer adversarial polytope).

    x: (N, *input_shape); y: (N,) or None with spec (N, m, K) / (m, K); eps as in dual_bounds.
    Pre-activation bounds: ``pre_bounds`` (list of (l, u) per activation, each (N, *shape);
    checked at sampled points of the input set, not proven: the result is then marked
    ``conditional_on_user_bounds`` and ``.certified`` refuses it, see
    :func:`~tutorial_lib.bounds.spec.check_pre_bounds`) or the dual network's. For ReLUs stable
    neurons are fixed (a = z or a = 0), unstable ones relaxed, exactly the primal of the dual
    network (plus the boxes its constraints imply on the activations' outputs), so LP >= dual
    at the same pre-bounds.
    norm: 'linf' (default), 'l1' (a linear ball) or 'l2' (a second-order cone). The input set is
    the ball intersected with the box clip for every norm (the dual bounds drop the box for
    l2/l1, so LP >= dual still holds there, by more).

    Solving, per example and spec row (:func:`_lp_row`): HiGHS (l_inf, l1) or Clarabel (l2)
    with tolerances 1e-9, then safer settings in turn (:data:`LP_TRIES_LINEAR`,
    :data:`LP_TRIES_CONIC`: presolve off, default tolerances, interior point, another solver)
    when a try fails or is not verified. The bound reported is never the solver's claim: it is
    the weak-duality bound at the solver's multipliers (:class:`_Lagrangian`), a lower bound on
    the LP whatever the solver's accuracy (an 'optimal_inaccurate' answer included), accepted
    when it lies within LP_GAP_RTOL (1e-7) of the logits' scale (+ 1e-9) below the solver's
    optimum and not above the network's margin at the solver's input. SolverError, listing
    every try and its outcome, when none is accepted.
    Returns BoundResult(lower (N, m)); info['seconds'], info['optimum'] (N, m) the solvers'
    optima (>= lower), info['solver'] the settings that answered each example's rows.
    """
    t0 = time.perf_counter()
    P, pre, np_pre, blocks = _setup(model, x, y, eps, spec, clip, pre_bounds, False, norm=norm)
    lows, optima, used = [], [], []
    for n in range(x.shape[0]):
        lo_n, hi_n = (t[n].detach().reshape(-1).double().cpu().numpy() for t in (P.lo, P.hi))
        vals, opt, how = _lp_example(blocks, P.activations, np_pre[n], lo_n, hi_n,
                                     P.C[n].double().cpu().numpy(), f"LP example {n}",
                                     P.x[n].detach().reshape(-1).double().cpu().numpy(), ball=_np_ball(P.ball, n))
        lows.append(vals)
        optima.append(opt)
        used.append(how)
    return BoundResult(lower=_to_t(lows, P), pre_bounds=pre, method="lp",
                       info={"seconds": time.perf_counter() - t0, "optimum": _to_t(optima, P), "solver": used},
                       norm=P.norm, conditional_on_user_bounds=pre_bounds is not None)


@without_tf32
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
    returned worst-case input, and the answer is solved again with tolerances 1e-9, then
    refused (SolverError), when its margin there differs from the reported optimum by more
    than ``CHECK_RTOL`` (1e-6) * max |logit| there (relative: the same standard for tiny
    weights) plus ``CHECK_FEAS`` (1e-7) * the sum of |path weights| (what feasibility slack can
    move) plus the solver's gap. The objective is scaled by a power of two so that it moves by
    about 1 over the input set (HiGHS's gap and feasibility tolerances are absolute: on weights
    x 1e-3 the minimum was missed by 1e-9, relative 1e-5). Scale range: big-M constants are the
    pre-activation bounds, so the MILP is exact for networks whose pre-activation bounds and
    logits are at most about 1e4 in magnitude (typical trained or randomly initialised
    networks); beyond that (e.g. weights scaled x1000, logits ~1e11) answers may be wrong, and
    are then refused by the check above, not reported. ``pre_bounds`` as in :func:`lp_bounds`
    (checked at sampled points; the result is conditional on them).
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
        vals, xs, mip = _milp_example(blocks, P.activations, np_pre[n], lo_n, hi_n,
                                      P.C[n].double().cpu().numpy(), opts, f"MILP example {n}",
                                      deadline, ball=_np_ball(P.ball, n))
        att.append(vals)
        lows.append(mip)
        xw.append(np.stack(xs))
    N, m = x.shape[0], P.C.shape[1]
    x_worst = _to_t(np.stack(xw), P).view(N, m, *x.shape[1:])
    return BoundResult(lower=_to_t(lows, P), pre_bounds=pre, method="milp", x_worst=x_worst,
                       info={"attained": _to_t(att, P), "seconds": time.perf_counter() - t0}, norm=P.norm,
                       conditional_on_user_bounds=pre_bounds is not None)
