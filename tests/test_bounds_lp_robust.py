"""The LP answers on every ordinary network, and what it reports is a sound bound however the
solver fares (tutorial_lib.bounds.lp): a seeded fuzz over small random networks, weak duality
at any multipliers, solver failures and inaccurate answers. Tiny networks; float32 and float64."""
import copy
import itertools

import cvxpy as cp
import numpy as np
import pytest
import torch
from bound_checks import attack_min
from torch import nn

from tutorial_lib.bounds import SolverError, dual_bounds, lp as lp_mod, lp_bounds, margin_spec
from tutorial_lib.models import Residual

pytestmark = pytest.mark.usefixtures("one_thread")

ACTS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def random_net(seed, act, scale, dtype, residual):
    """Linear, act, (Linear, act | a residual block), Linear to 3 logits; weights N(0, scale^2 /
    fan_in), biases N(0, (0.3 scale)^2). Inputs: 2 points in [0.1, 0.9]^n0, n0 in 2..5."""
    g = torch.Generator().manual_seed(seed)
    n0, h = int(torch.randint(2, 6, (1,), generator=g)), int(torch.randint(3, 8, (1,), generator=g))
    A = ACTS[act]
    mid = ([Residual(nn.Sequential(nn.Linear(h, h), A(), nn.Linear(h, h))), A()] if residual
           else [nn.Linear(h, h), A()])
    net = nn.Sequential(nn.Linear(n0, h), A(), *mid, nn.Linear(h, 3)).to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64)
                               * scale / m.weight.shape[1] ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.3 * scale)
    x = (torch.rand(2, n0, generator=g, dtype=torch.float64) * 0.8 + 0.1).to(dtype)
    return net.eval(), x, torch.randint(0, 3, (2,), generator=g)


def reached_margins(net, x, y, eps, norm, k=400, seed=0):
    """The smallest margin z_y - z_j (N, 2) the network reaches at the centre, at k points of
    the input set and (l_inf) at a signed-gradient attack's points. The set is the one the
    bounds see (eps and the box x +- eps in x's dtype); the network runs in float64 (the LP
    bounds the network of these weights in exact arithmetic, not the float32 rounding of it)."""
    g = torch.Generator().manual_seed(seed)
    net64 = copy.deepcopy(net).double()
    N, n = x.shape
    e = float(torch.tensor(eps, dtype=x.dtype))
    C = margin_spec(y, 3).double()
    lo, hi = (x - e).clamp(0, 1).double(), (x + e).clamp(0, 1).double()
    if norm == "linf":
        t = torch.rand(N, k, n, generator=g, dtype=torch.float64)
        t[:, k // 2:] = t[:, k // 2:].round()  # corners
        pts = lo[:, None] + (hi - lo)[:, None] * t
    else:
        if norm == "l2":
            d = torch.randn(N, k, n, generator=g, dtype=torch.float64)
            d = d / d.norm(dim=-1, keepdim=True)
        else:  # the l1 ball's vertices and points inside
            d = torch.zeros(N, k, n, dtype=torch.float64)
            d.scatter_(2, torch.randint(0, n, (N, k, 1), generator=g), 1.0)
            d = d * (2 * torch.randint(0, 2, (N, k, 1), generator=g) - 1)
        r = torch.rand(N, k, 1, generator=g, dtype=torch.float64)
        r[:, k // 2:] = 1.0
        pts = (x.double()[:, None] + e * r * d).clamp(0, 1)
    pts = torch.cat([x.double()[:, None], pts], 1)
    with torch.no_grad():
        z = net64(pts.reshape(-1, n)).view(N, k + 1, 3)
    found = torch.einsum("nmk,nsk->nsm", C, z).min(1).values
    if norm == "linf":
        found = torch.minimum(found, attack_min(net64, C, lo, hi, steps=20, restarts=1))
    return found


def _configs():
    """18 cells (activation x norm x dtype), 5 networks each: every eps and weight scale."""
    eps = [1e-3, 0.01, 0.03, 0.1, 0.3]
    scales = [1.0, 30.0, 0.01, 100.0, 3.0]
    out = []
    for i, (act, norm, dtype) in enumerate(itertools.product(ACTS, ["linf", "l2", "l1"],
                                                            [torch.float32, torch.float64])):
        for j in range(5):
            out.append((100 * i + j, act, norm, dtype, eps[(i + j) % 5], scales[(2 * i + j) % 5], (i + j) % 2 == 1))
    return out


def test_the_lp_answers_on_every_small_network_with_a_sound_bound():
    """90 seeded networks (relu / sigmoid / tanh; l_inf / l2 / l1; eps 1e-3..0.3; float32 and
    float64; weights x 0.01..100, up to logits ~1e6; with and without a residual block). Before
    the LP's answers were verified and retried, about 6 % of such calls raised (HiGHS's presolve
    "infeasible", Clarabel's "optimal_inaccurate", a raw cvxpy ValueError)."""
    fails, retried = [], 0
    for seed, act, norm, dtype, eps, scale, res in _configs():
        net, x, y = random_net(seed, act, scale, dtype, res)
        what = (seed, act, norm, str(dtype), eps, scale, res)
        try:
            r = lp_bounds(net, x, y, eps, norm=norm)
        except Exception as e:  # noqa: BLE001 - collect, then report every failure at once
            fails.append((what, f"{type(e).__name__}: {e}"))
            continue
        low = r.lower.double()
        assert torch.isfinite(low).all(), what
        found = reached_margins(net, x, y, eps, norm)
        with torch.no_grad():
            logits = net(x).double().abs().amax(1, keepdim=True)
        # float64: to the LP's own accuracy; float32: the pre-activation bounds come from the
        # float32 dual network, whose rounding (~1e-7 of the values it adds) the LP inherits
        slack = 1e-9 * (1 + found.abs()) if dtype == torch.float64 else 1e-6 * (found.abs() + logits)
        assert (low <= found + slack).all(), (what, low, found)
        # as tight as the LP: at the optimum up to the accepted gap, and >= the dual bound at the
        # same pre-activation bounds (the LP is the dual's primal; the dual drops the box for l2/l1)
        opt = r.info["optimum"].double()
        assert (opt - low <= 1e-6 * (opt.abs() + logits) + 1e-8).all(), (what, opt, low)
        dual = dual_bounds(net, x, y, eps, norm=norm, pre_bounds=r.pre_bounds).lower.double()
        assert (dual <= low + 1e-6 * (1 + low.abs())).all(), (what, dual, low)
        retried += any(s not in (lp_mod.LP_TRIES_LINEAR[0][0], lp_mod.LP_TRIES_CONIC[0][0])
                       for row in r.info["solver"] for s in row)
    assert not fails, "\n".join(f"{w}: {m}" for w, m in fails)
    assert retried < 10  # the first settings answer nearly everything (measured: 0-3 of 90)


def _solved_example(norm="l2"):
    """A solved LP of one example of a small sigmoid network: (model, its Lagrangian, optimum)."""
    net, x, y = random_net(7, "sigmoid", 3.0, torch.float64, True)
    P, _, np_pre, blocks = lp_mod._setup(net, x, y, 0.1, None, (0.0, 1.0), None, False, norm=norm)
    lo, hi = (t[0].detach().reshape(-1).double().numpy() for t in (P.lo, P.hi))
    M = lp_mod._Model(blocks, P.activations, np_pre[0], lo, hi, P.C[0].double().numpy(), False,
                      lp_mod._np_ball(P.ball, 0), centre=x[0].double().numpy())
    lag = lp_mod._Lagrangian(M.prob, M.box, M.box_cons)
    M.set_row(0)
    M.prob.solve(solver="CLARABEL" if norm == "l2" else "HIGHS")
    assert M.prob.status == cp.OPTIMAL
    return M, lag, float(M.prob.value)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_weak_duality_bound_holds_for_any_multipliers(norm):
    """The verified bound is a lower bound on the LP's optimum for ANY multipliers (projected
    onto the valid set), equal to it at the solver's: random, scaled and sign-flipped
    multipliers never give a bound above the optimum."""
    M, lag, opt = _solved_example(norm)
    tol = 1e-8 * (1 + abs(opt))  # the solvers' accuracy: opt itself is known to about this
    coef = M.coef(lag)
    at_solver = lag.bound(coef, 0.0)
    assert at_solver <= opt + tol and opt - at_solver < 1e-7 * (1 + abs(opt))
    rng = np.random.default_rng(0)
    duals = [dv for con, _, _ in lag.parts for dv in con.dual_variables]
    saved = [dv.value for dv in duals]
    try:
        for trial in range(30):
            for dv, v in zip(duals, saved):
                v = np.asarray(v, dtype=float)
                dv.save_value(v * rng.choice([-3.0, 0.5, 1.0, 2.0])
                              + rng.standard_normal(v.shape) * 10.0 ** rng.integers(-6, 2))
            assert lag.bound(coef, 0.0) <= opt + tol, trial
    finally:
        for dv, v in zip(duals, saved):
            dv.save_value(v)


def _patch_solve(monkeypatch, after):
    """Replace cvxpy's Problem.solve by the real solve followed by ``after(problem)``."""
    real = cp.Problem.solve

    def solve(self, *a, **k):
        out = real(self, *a, **k)
        after(self)
        return out

    monkeypatch.setattr(cp.Problem, "solve", solve)


def test_a_claimed_optimum_its_multipliers_do_not_prove_is_not_reported(monkeypatch):
    """Every solver "answers" 1.0 above its optimum (as an inaccurate solve may): the multipliers
    prove only the real optimum, no try is accepted, and the SolverError lists every try."""
    net, x, y = random_net(3, "relu", 1.0, torch.float64, False)

    def lie(prob):
        if prob.value is not None:
            prob._value = prob.value + 1.0
            prob._status = cp.OPTIMAL_INACCURATE

    _patch_solve(monkeypatch, lie)
    with pytest.raises(SolverError, match="no LP answer") as info:
        lp_bounds(net, x, y, 0.05)
    for label, _, _ in lp_mod.LP_TRIES_LINEAR:
        assert label in str(info.value)
    assert "verified bound" in str(info.value)


def test_an_inaccurate_answer_is_used_with_its_proof(monkeypatch):
    """A status "optimal_inaccurate" with multipliers that prove the optimum is accepted; the bound
    reported is the verified one (never above the solver's claim)."""
    net, x, y = random_net(3, "relu", 1.0, torch.float64, False)
    want = lp_bounds(net, x, y, 0.05)
    _patch_solve(monkeypatch, lambda prob: setattr(prob, "_status", cp.OPTIMAL_INACCURATE))
    got = lp_bounds(net, x, y, 0.05)
    torch.testing.assert_close(got.lower, want.lower, rtol=0, atol=1e-8)
    assert (got.lower <= got.info["optimum"]).all()


@pytest.mark.parametrize("error", [ValueError("Cannot unpack invalid solution: Solution(status=UNKNOWN)"),
                                   cp.error.SolverError("Solver 'HIGHS' failed.")])
def test_solver_crashes_are_solver_errors_naming_every_try(monkeypatch, error):
    """A solver that crashes on every try (cvxpy raised a raw ValueError on some networks) gives
    one SolverError saying what was tried, never a traceback from cvxpy."""
    net, x, y = random_net(4, "tanh", 1.0, torch.float64, False)

    def crash(self, *a, **k):
        raise error

    monkeypatch.setattr(cp.Problem, "solve", crash)
    for norm, tries in (("linf", lp_mod.LP_TRIES_LINEAR), ("l2", lp_mod.LP_TRIES_CONIC)):
        with pytest.raises(SolverError) as info:
            lp_bounds(net, x, y, 0.05, norm=norm)
        msg = str(info.value)
        assert all(label in msg for label, _, _ in tries) and type(error).__name__ in msg
        assert "failed numerically" in msg  # not blamed on the (valid) pre-activation bounds


def test_a_failing_first_try_falls_back_to_the_next(monkeypatch):
    """HiGHS with 1e-9 tolerances and presolve called valid LPs "infeasible" (sigmoid, small
    eps); then the next settings answer, and the answer names them."""
    net, x, y = random_net(5, "sigmoid", 1.0, torch.float64, False)
    want = lp_bounds(net, x, y, 1e-3)
    real = cp.Problem.solve

    def first_fails(self, *a, **k):
        out = real(self, *a, **k)
        if k.get("presolve") != "off" and k.get("primal_feasibility_tolerance") == 1e-9:
            self._status = cp.INFEASIBLE
        return out

    monkeypatch.setattr(cp.Problem, "solve", first_fails)
    got = lp_bounds(net, x, y, 1e-3)
    torch.testing.assert_close(got.lower, want.lower, rtol=0, atol=1e-7)
    assert {s for row in got.info["solver"] for s in row} == {lp_mod.LP_TRIES_LINEAR[1][0]}
