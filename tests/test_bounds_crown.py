"""CROWN bounds (tutorial_lib.bounds.crown): sound (exact MILP, attacks, sampling), equal to a
hand-written CROWN pass, equal to the dual network where their lines coincide, refusing what
the dual refuses. Small float64 networks, seeded."""
import copy
import math

import pytest
import torch
from bound_checks import attack_min
from torch import nn

from tutorial_lib.bounds import (
    UnsupportedLayerError,
    crown_bounds,
    dual_bounds,
    interval_bounds,
    lp_bounds,
    margin_spec,
    milp_bounds,
)
from tutorial_lib.models import DenseSkip, Residual

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def _init(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                std = math.sqrt(2.0 / m.weight[0].numel())
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT) * std)
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g, dtype=DT))
    return net


def mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),  # 6 -> 3
                         nn.Linear(18, 6), nn.ReLU(), nn.Linear(6, 3))


NETS = {  # name: (builder, input shape)
    "mlp1": (lambda: mlp([4, 10, 3]), (4,)),
    "mlp2": (lambda: mlp([4, 8, 8, 3]), (4,)),
    "mlp3": (lambda: mlp([5, 8, 8, 6, 3]), (5,)),
    "cnn": (tiny_cnn, (1, 6, 6)),
}


def make(name, seed=0, n=3):
    build, shape = NETS[name]
    net = _init(build().to(DT), seed)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(n, *shape, generator=g, dtype=DT)
    y = torch.randint(0, 3, (n,), generator=g)
    return net, x, y


def box(x, eps):
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def tol(v):
    return 1e-9 * (1 + v.abs())


def _crown_pass(Ws, bs, ls, us, lo, hi, k, Lam):
    """Lower bound of Lam @ z_k, z_k = W_k h_{k-1} + b_k, h_j = relu(z_j) with bounds ls[j] <= z_j
    <= us[j], h_{-1} = x in [lo, hi] (one example): each neuron's coefficient a >= 0 takes the lower
    line alpha z (alpha = 1 if u >= -l else 0), a < 0 the upper line d (z - l), d = u / (u - l)."""
    const, A = Lam @ bs[k], Lam @ Ws[k]
    for j in range(k - 1, -1, -1):
        lb, ub = ls[j], us[j]
        B = torch.zeros_like(A)
        for r in range(A.shape[0]):
            for n in range(A.shape[1]):
                a = float(A[r, n])
                if lb[n] >= 0:
                    B[r, n] = a
                elif ub[n] > 0:
                    d = float(ub[n] / (ub[n] - lb[n]))
                    if a >= 0:
                        B[r, n] = a * (1.0 if ub[n] >= -lb[n] else 0.0)
                    else:
                        B[r, n] = a * d
                        const[r] = const[r] - a * d * lb[n]
        const, A = const + B @ bs[j], B @ Ws[j]
    return const + A @ ((lo + hi) / 2) - A.abs() @ ((hi - lo) / 2)


def reference_crown(net, x, y, eps, pre="crown"):
    """CROWN (Zhang et al. 2018) for an MLP (Linear, ReLU, ..., Linear), written out neuron by
    neuron, one example at a time (:func:`_crown_pass`). pre='interval': intermediate bounds by
    intervals. Returns (N, K - 1) margin lower bounds."""
    Ws = [m.weight.detach() for m in net if isinstance(m, nn.Linear)]
    bs = [m.bias.detach() for m in net if isinstance(m, nn.Linear)]
    C = margin_spec(y, Ws[-1].shape[0]).to(DT)
    out = []
    for e in range(x.shape[0]):
        lo, hi = box(x[e], eps)
        ls, us = [], []
        bl, bu = lo, hi  # interval box of h_{k-1}
        for k in range(len(Ws) - 1):
            if pre == "crown":
                eye = torch.eye(Ws[k].shape[0], dtype=DT)
                ls.append(_crown_pass(Ws, bs, ls, us, lo, hi, k, eye))
                us.append(-_crown_pass(Ws, bs, ls, us, lo, hi, k, -eye))
            else:
                mid, rad = Ws[k] @ ((bl + bu) / 2) + bs[k], Ws[k].abs() @ ((bu - bl) / 2)
                ls.append(mid - rad)
                us.append(mid + rad)
                bl, bu = ls[-1].clamp(min=0), us[-1].clamp(min=0)
        out.append(_crown_pass(Ws, bs, ls, us, lo, hi, len(Ws) - 1, C[e]))
    return torch.stack(out)


@pytest.mark.parametrize("name", ["mlp1", "mlp2", "mlp3"])
@pytest.mark.parametrize("pre", ["crown", "interval"])
def test_equals_hand_written_crown(name, pre):
    net, x, y = make(name, seed=2)
    eps = 0.2
    got = crown_bounds(net, x, y, eps, pre=pre).lower
    want = reference_crown(net, x, y, eps, pre)
    assert torch.allclose(got, want, atol=1e-10, rtol=1e-10), (got, want)
    # guard: the case is not one where CROWN and the dual network coincide
    assert (got - dual_bounds(net, x, y, eps).lower).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_sound_below_milp_and_attacks(name, eps):
    """CROWN (both pre modes) <= exact MILP minimum <= attack margin, and
    <= the triangle LP at CROWN's own pre-activation bounds (any lower slope in [0, 1] is one
    of the LP's dual feasible points)."""
    net, x, y = make(name, seed=1)
    mi = milp_bounds(net, x, y, eps)
    C = margin_spec(y, 3).to(DT)
    adv = attack_min(net, C, *box(x, eps), restarts=2, steps=30)
    assert (mi.lower <= adv + 1e-7).all()
    for pre in ("crown", "interval"):
        cb = crown_bounds(net, x, y, eps, pre=pre)
        low = cb.lower.detach()
        assert (low <= mi.lower + tol(mi.lower)).all(), (pre, low, mi.lower)
        lp = lp_bounds(net, x, y, eps, pre_bounds=cb.pre_bounds).lower
        assert (low <= lp + 1e-7 * (1 + lp.abs())).all(), (pre, low, lp)
        # its pre-activation bounds contain the values the network takes at sampled inputs
        lo, hi = box(x, eps)
        xs = lo + (hi - lo) * torch.rand(64, *x.shape, generator=torch.Generator().manual_seed(3), dtype=DT)
        h, k = xs.flatten(0, 1), 0
        for m in net:
            if isinstance(m, nn.ReLU):
                lb, ub = cb.pre_bounds[k]
                hv = h.view(64, *lb.shape)
                assert (hv >= lb - 1e-9).all() and (hv <= ub + 1e-9).all()
                k += 1
            h = m(h)


def test_l2_and_l1_sound_by_sampling():
    """Other norms follow dual_bounds (the box dropped): below margins at points sampled on the
    sphere of radius eps (inside the pixel box, which is not needed: the bound holds on the ball)."""
    net, x, y = make("mlp2", seed=4)
    C = margin_spec(y, 3).to(DT)
    g = torch.Generator().manual_seed(5)
    for norm, eps in (("l2", 0.5), ("l1", 0.8)):
        d = torch.randn(2000, *x.shape, generator=g, dtype=DT)
        if norm == "l1":
            d = d.sign() * torch.empty_like(d).exponential_(generator=g)
        d = d / d.norm(p=1 if norm == "l1" else 2, dim=-1, keepdim=True) * eps
        with torch.no_grad():
            m = (net((x + d).flatten(0, 1)).view(2000, *C.shape[:1], 3).unsqueeze(2) * C).sum(-1).amin(0)
        for pre in ("crown", "interval"):
            low = crown_bounds(net, x, y, eps, pre=pre, norm=norm).lower
            assert (low <= m + 1e-9).all(), (norm, pre, low, m)
            assert (low > m - 50).all()  # not vacuous


def test_equal_to_dual_where_the_lines_coincide():
    """With no unstable ReLU (eps tiny) every relaxation is exact: CROWN = dual = the MILP
    minimum. And on a tanh network (only the ReLU's lower line changes) CROWN = dual."""
    net, x, y = make("mlp2", seed=6)
    eps = 1e-4
    cb = crown_bounds(net, x, y, eps)
    assert all(((lb >= 0) | (ub <= 0)).all() for lb, ub in cb.pre_bounds)
    d = dual_bounds(net, x, y, eps).lower
    assert torch.allclose(cb.lower, d, atol=1e-12, rtol=0)
    mi = milp_bounds(net, x, y, eps).lower
    assert torch.allclose(cb.lower, mi, atol=1e-8, rtol=0)
    tanh = _init(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT), 7)
    assert torch.allclose(crown_bounds(tanh, x, y, 0.2).lower, dual_bounds(tanh, x, y, 0.2).lower, atol=1e-12, rtol=0)
    # ... while on ReLU networks they differ (guard for the equality above being informative)
    assert (crown_bounds(net, x, y, 0.2).lower - dual_bounds(net, x, y, 0.2).lower).abs().max() > 1e-3


def test_batched_differentiable_and_float32():
    net, x, y = make("cnn", seed=8)
    for pre in ("crown", "interval"):
        full = crown_bounds(net, x, y, 0.1, pre=pre).lower
        one = torch.cat([crown_bounds(net, x[i:i + 1], y[i:i + 1], 0.1, pre=pre).lower for i in range(3)])
        assert torch.allclose(full, one, atol=1e-12, rtol=0)
    # gradient in the weights equals a central difference along a random direction
    W = net[0].weight
    D = torch.randn(W.shape, generator=torch.Generator().manual_seed(9), dtype=DT)
    for pre in ("crown", "interval"):
        (grad,) = torch.autograd.grad(crown_bounds(net, x, y, 0.1, pre=pre).lower.sum(), W)
        assert grad.abs().sum() > 0
        h = 1e-6
        with torch.no_grad():
            W += h * D
            fp = crown_bounds(net, x, y, 0.1, pre=pre).lower.sum()
            W -= 2 * h * D
            fm = crown_bounds(net, x, y, 0.1, pre=pre).lower.sum()
            W += h * D
        assert abs(float((fp - fm) / (2 * h)) - float((grad * D).sum())) < 1e-5 * (1 + float(grad.abs().sum()))
    low64 = crown_bounds(net, x, y, 0.1).lower
    low32 = crown_bounds(net.float(), x.float(), y, 0.1).lower
    assert low32.dtype == torch.float32 and torch.allclose(low32.double(), low64, atol=1e-4)


def test_not_ordered_with_interval_per_row():
    """CROWN is usually tighter than interval bounds, not always: seeded cases, numbers measured
    (float64, one thread) when the test was written. Both are always below the MILP (above)."""
    net, x, y = make("cnn", seed=0, n=6)
    d = crown_bounds(net, x, y, 0.05).lower - interval_bounds(net, x, y, 0.05).lower
    assert d.min() > 0.1  # eps 0.05: tighter on every row (CROWN - interval in [0.112, 0.786])
    d = crown_bounds(net, x, y, 0.2).lower - interval_bounds(net, x, y, 0.2).lower
    assert d.min() < -0.5 and d.max() > 1.5  # eps 0.2: in [-0.645, 1.600], looser on some rows
    net, x, y = make("mlp2", seed=0, n=6)
    c, ib = crown_bounds(net, x, y, 0.2).lower, interval_bounds(net, x, y, 0.2).lower
    assert c.mean() < ib.mean() - 0.05  # looser even on average here: -0.031 against 0.079


def test_refusals():
    net, x, y = make("mlp2", seed=0)
    bad = [nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(DT),
           nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).to(DT)]
    hooked = make("mlp2", seed=0)[0]
    hooked[1].register_forward_hook(lambda m, i, o: o * 2)
    bad.append(hooked)
    for model in bad:
        with pytest.raises(Exception) as dual_err:
            dual_bounds(model, x, y, 0.1)
        for pre in ("crown", "interval"):
            with pytest.raises(type(dual_err.value)):
                crown_bounds(model, x, y, 0.1, pre=pre)
    with pytest.raises(UnsupportedLayerError):
        crown_bounds(bad[0], x, y, 0.1)
    xn = x.clone()
    xn[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite|NaN"):
        crown_bounds(net, xn, y, 0.1)
    with pytest.raises(ValueError, match="pre must be one of"):
        crown_bounds(net, x, y, 0.1, pre="dual")


def test_graphs_sound_below_milp():
    """Residual and dense-skip blocks go through the dual's graph walk: still below the MILP."""
    net = _init(nn.Sequential(nn.Linear(4, 6), nn.ReLU(),
                              Residual(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))), nn.ReLU(),
                              DenseSkip(nn.Sequential(nn.Linear(6, 4), nn.ReLU())), nn.Linear(10, 3)).to(DT), 11)
    _, x, y = make("mlp2", seed=11)
    mi = milp_bounds(net, x, y, 0.2).lower
    for pre in ("crown", "interval"):
        low = crown_bounds(net, x, y, 0.2, pre=pre).lower
        assert (low <= mi + tol(mi)).all(), (pre, low, mi)
        assert (low > mi - 3).all()  # not vacuous (measured gaps up to 1.7)


def test_certificates_from_crown_are_float64_and_never_broken():
    # certified_error(method='crown' / 'crown-ibp') is the float64 CROWN bound, and every example it certifies has a
    # positive exact (MILP) minimum margin
    from tutorial_lib.bounds import certified_bounds, certified_error, crown_bounds, is_certified, milp_bounds

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12),
                              torch.nn.ReLU(), torch.nn.Linear(12, 3)).eval()
    x = torch.rand(8, 1, 2, 3)
    with torch.no_grad():
        y = net(x).argmax(1)
    for method, pre in (("crown", "crown"), ("crown-ibp", "interval")):
        res = certified_bounds(net, x, y, 0.05, method=method)
        assert res.lower.dtype == torch.float64
        ref = crown_bounds(copy.deepcopy(net).double(), x.double(), y, 0.05, pre=pre).lower
        assert torch.allclose(res.lower, ref, atol=1e-12)
        certified = is_certified(res.lower)
        assert certified_error(net, x, y, 0.05, method=method) == pytest.approx(1 - certified.double().mean().item())
        assert 0 < int(certified.sum()) < len(y)  # the case certifies some examples, not all
        exact = milp_bounds(net, x[certified], y[certified], 0.05).lower
        assert (exact > 0).all()
    with pytest.raises(ValueError, match="crown"):
        certified_error(net, x, y, 0.05, method="crown-opt")


# --------------------------------------------------------------------------- receptive-field fast path
def _crown_layers(net, x, y, eps):
    """CROWN's nodes for net at (x, y, eps) with every activation's bounds set (dense pass)."""
    from tutorial_lib.bounds import patches
    from tutorial_lib.bounds.crown import _use_crown_lines
    from tutorial_lib.bounds.dual import _pre_bounds
    from tutorial_lib.bounds.spec import prepare

    P = prepare(net, x, y, eps)
    _use_crown_lines(P)
    orig = patches.applies
    patches.applies = lambda layers, i: False
    try:
        _pre_bounds(P)
    finally:
        patches.applies = orig
    return P


def _crown_and_grads(net, x, y, eps, norm="linf"):
    """CROWN's result and the gradient w.r.t. the weights and x of its lower bounds plus its
    pre-activation bounds (upper bounds weighted 1/2, so a swapped pair shows)."""
    x = x.clone().requires_grad_(True)
    res = crown_bounds(net, x, y, eps, norm=norm)
    total = res.lower.sum() + sum(lo.sum() + 0.5 * up.sum() for lo, up in res.pre_bounds)
    return res, torch.autograd.grad(total, list(net.parameters()) + [x])


def _assert_same(fast, slow, tol):
    (rf, gf), (rs, gs) = fast, slow
    pairs = [(rf.lower, rs.lower)] + [(a, b) for p, q in zip(rf.pre_bounds, rs.pre_bounds) for a, b in zip(p, q)]
    pairs += list(zip(gf, gs))
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, float(b.detach().abs().max())))


def _counting(monkeypatch):
    """Count the calls of patches.conv_neuron_bounds (the fast path really taken)."""
    from tutorial_lib.bounds import patches

    calls, orig = [], patches.conv_neuron_bounds

    def spy(layers, i, *args, **kwargs):
        calls.append(i)
        return orig(layers, i, *args, **kwargs)
    monkeypatch.setattr(patches, "conv_neuron_bounds", spy)
    return calls


def _mnist_small_random(n, seed=0):
    """mnist_small with random float64 weights: many unstable ReLUs at eps 0.1."""
    from tutorial_lib.models import mnist_small

    torch.manual_seed(seed)
    net = mnist_small().to(DT).eval()
    g = torch.Generator().manual_seed(seed)
    return net, torch.rand(n, 1, 28, 28, generator=g, dtype=DT), torch.randint(0, 10, (n,), generator=g)


def test_receptive_fields_take_crowns_relu():
    """CROWN's ReLU (lines that differ) is taken by the fast path on the conv chain, as the
    dual's; after the Linear the dense pass remains."""
    from tutorial_lib.bounds import patches
    from tutorial_lib.bounds.crown import CrownReLU

    net, x, y = _mnist_small_random(1)
    layers = _crown_layers(net, x, y, 0.1).layers
    assert isinstance(layers[1], CrownReLU) and not layers[1].parallel
    assert patches.applies(layers, 1) and patches.applies(layers, 3) and not patches.applies(layers, 6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_fast_path_equals_dense_pass_random_weights(norm, eps, plain, monkeypatch):
    """mnist_small, random float64 weights (a fifth or more of the second conv's ReLUs unstable):
    CROWN's bounds, pre-activation bounds and gradients with the receptive-field path equal the
    dense identity pass's, and the path is taken for the conv layers."""
    net, x, y = _mnist_small_random(3)
    calls = _counting(monkeypatch)
    fast = _crown_and_grads(net, x, y, eps, norm)
    taken = [3] if norm == "linf" else [1, 3]  # l_inf: the first conv's bounds are intervals (exact)
    assert calls == taken
    l2, u2 = fast[0].pre_bounds[1]
    assert ((l2 < 0) & (u2 > 0)).double().mean() > 0.2
    slow = plain(lambda: _crown_and_grads(net, x, y, eps, norm))
    assert calls == taken  # the dense pass did not use it
    _assert_same(fast, slow, 1e-9)


def test_fast_path_equals_dense_pass_on_the_shipped_checkpoint(plain):
    """mnist_small_robust (its float64 copy, as certificates run): same bounds and gradients."""
    from tutorial_lib import data as Dat
    from tutorial_lib.checkpoints import load_checkpoint

    net = copy.deepcopy(load_checkpoint("mnist_small_robust")[0]).to(DT)
    x, y = Dat.test_subset("mnist", 4)
    x = x.to(DT)
    fast = _crown_and_grads(net, x, y, 0.1)
    assert any(((lo < 0) & (up > 0)).any() for lo, up in fast[0].pre_bounds[1:2])  # unstable ReLUs
    _assert_same(fast, plain(lambda: _crown_and_grads(net, x, y, 0.1)), 1e-9)


@pytest.mark.parametrize("budget", [2 ** 25, 300])
def test_windows_take_any_lines(budget, monkeypatch):
    """The window pull-back follows the relaxation's slopes and intercepts, as
    DualActivation.backward: with the gate opened to every activation, a conv chain of tanh,
    CROWN's ReLU and sigmoid (lines that differ, non-zero lower intercepts, tight neurons)
    gets the dense pass's bounds of every conv neuron, also when the channels are chunked."""
    from tutorial_lib.bounds import patches
    from tutorial_lib.bounds.activations import DualActivation
    from tutorial_lib.bounds.dual import _identity_bounds

    g = torch.Generator().manual_seed(12)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(4, 3, 2, stride=2), nn.Sigmoid(), nn.Conv2d(3, 2, 3, padding=2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).to(DT)
    _init(net, 12)
    with torch.no_grad():
        net[2].bias[0] = 4.0  # a channel whose ReLUs are all active: tight neurons in the windows
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=DT)
    y = torch.tensor([0, 2])
    P = _crown_layers(net, x, y, 0.2)
    assert not any(patches.applies(P.layers, i) for i in (3, 5, 7))  # S-curves: the dense pass
    monkeypatch.setattr(patches, "_windowed_activation", lambda layer: isinstance(layer, DualActivation))
    kinds = set()
    for i in (3, 5, 7):
        assert patches.applies(P.layers, i)
        act = P.layers[i - 2]
        kinds.add(type(act).__name__)
        assert not act.parallel
        lw, uw = patches.conv_neuron_bounds(P.layers, i, P.lo, P.hi, budget=budget)
        ld, ud = _identity_bounds(P, i, None)
        assert (ld < ud - 1e-3).any()
        torch.testing.assert_close(lw, ld, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(uw, ud, rtol=1e-9, atol=1e-9)
    assert kinds == {"DualTanh", "CrownReLU", "DualSigmoid"}
    assert P.layers[3].tight.any() and not P.layers[3].tight.all()  # the ReLU: one line and two
    assert not P.layers[1].zero_lower_intercept


def test_tight_neurons_keep_one_line_in_the_gradient(plain):
    """Exact zeros in nu (zero weights of the second conv) on active ReLUs: the relaxation's one
    line there, as DualActivation.backward, so the derivative in nu at 0 is the slope (taking
    both lines would double it). Gradients with the fast path equal the dense pass's."""
    g = torch.Generator().manual_seed(21)
    net = _init(nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1),
                              nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).to(DT), 21)
    with torch.no_grad():
        net[0].bias[0] = 3.0  # channel 0 of the first ReLU always active (tight)
        net[2].weight[torch.rand(net[2].weight.shape, generator=g) < 0.4] = 0.0
    x = torch.rand(2, 1, 10, 10, generator=g, dtype=DT)
    y = torch.tensor([1, 0])
    fast = _crown_and_grads(net, x, y, 0.15)
    lo, up = fast[0].pre_bounds[0]
    assert (lo[:, 0] > 0).all() and ((lo < 0) & (up > 0)).any()
    _assert_same(fast, plain(lambda: _crown_and_grads(net, x, y, 0.15)), 1e-9)
