"""General activations in the bounds: nn.Sigmoid and nn.Tanh (chord/tangent relaxation).

The relaxation itself (lower(z) <= act(z) <= upper(z) on dense points of many intervals, in
float64 and float32), then small sigmoid/tanh networks through every bound method against
sampling and an attack, the LP against the dual, the MILP's refusal and the entry points that
decide certification. Float64, tiny networks.
"""
import math

import pytest
import torch
from bound_checks import attack_min
from torch import nn

from tutorial_lib.bounds import (
    LAYER_TYPES,
    UnsupportedLayerError,
    certified_accuracy_vs_eps,
    certified_error,
    dual_bounds,
    estimated_dual_bounds,
    interval_bounds,
    is_certified,
    lp_bounds,
    margin_spec,
    milp_bounds,
    optimized_dual_bounds,
    robust_loss,
)
from tutorial_lib.bounds.activations import DualActivation, DualSigmoid, DualTanh
from tutorial_lib.bounds.layers import supported_layer_names

DT = torch.float64
ACTS = {"sigmoid": (nn.Sigmoid, DualSigmoid, torch.sigmoid),
        "tanh": (nn.Tanh, DualTanh, torch.tanh)}

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- the relaxation

def _intervals(dtype, n=6000, seed=0):
    """(l, u), each (n + edges,): centres at every scale around the inflection point, widths
    from 1e-6 to 1e2, and edge cases (ties, [-50, 50], saturated, huge)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(n, generator=g, dtype=DT) * torch.tensor([0.1, 1.0, 5.0, 30.0], dtype=DT)[
        torch.randint(0, 4, (n,), generator=g)]
    width = torch.rand(n, generator=g, dtype=DT) * 10.0 ** torch.randint(-6, 3, (n,), generator=g).to(DT)
    skew = torch.rand(n, generator=g, dtype=DT)
    l, u = centre - skew * width, centre + (1 - skew) * width
    edge = torch.tensor([[-50, 50], [-1, -1], [0, 0], [2, 2], [-3, 0], [0, 3], [-1e-12, 1e-12],
                         [-1e-7, 2e-7], [-60, -50], [50, 60], [-0.1, 100], [-100, 0.1], [-1e30, 1e30],
                         [-1e30, -1e29], [1e29, 1e30], [-40, 1e-3], [-1e-3, 40]], dtype=DT)
    return torch.cat([l, edge[:, 0]]).to(dtype), torch.cat([u, edge[:, 1]]).to(dtype)


def _layer(cls, n):
    return cls(nn.Identity(), (n,), (n,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("act", list(ACTS))
def test_relaxation_contains_the_activation(act, dtype):
    """lower(z) <= act(z) <= upper(z) at 300 points of each [l, u] (endpoints, 0, the midpoint
    included), in the dtype itself and without tolerance (the lines carry their own rounding
    pad); no NaN; the lines are the tangent where l == u; interval image is (f(l), f(u))."""
    _, cls, f = ACTS[act]
    l, u = _intervals(dtype)
    n = l.numel()
    layer = _layer(cls, n)
    assert isinstance(layer, DualActivation) and not layer.parallel and not layer.exact_encoding
    ls, li, us, ui = layer.relax(l, u)
    for t in (ls, li, us, ui):
        assert t.dtype == dtype and t.shape == l.shape and torch.isfinite(t).all()
    assert (ls >= 0).all() and (us >= 0).all()
    g = torch.Generator().manual_seed(1)
    frac = torch.cat([torch.tensor([0.0, 0.5, 1.0], dtype=DT).view(3, 1).expand(3, n),
                      torch.rand(296, n, generator=g, dtype=DT)]).to(dtype)
    z = torch.cat([torch.minimum(torch.maximum(l + frac * (u - l), l), u),
                   torch.where((l < 0) & (u > 0), 0.0, l).unsqueeze(0)])         # (300, n)
    a = f(z)
    assert (ls * z + li <= a).all() and (a <= us * z + ui).all()
    # the brief's check at 1e-6 in float64 as well, on the exact sigmoid/tanh
    z64, a64 = z.double(), f(z.double())
    assert (ls.double() * z64 + li.double() <= a64 + 1e-6).all()
    assert (a64 <= us.double() * z64 + ui.double() + 1e-6).all()
    # ties: both lines are the tangent at l (up to the rounding pad)
    tie = l == u
    assert tie.sum() >= 3
    eps = 100 * torch.finfo(dtype).eps
    d = layer.df(l[tie])
    for s, b in ((ls, li), (us, ui)):
        assert torch.allclose(s[tie], d, rtol=eps, atol=eps)
        assert torch.allclose(s[tie] * l[tie] + b[tie], f(l[tie]), rtol=0, atol=eps)
    lo, hi = layer.interval(l, u)
    assert torch.equal(lo, f(l)) and torch.equal(hi, f(u))
    assert torch.equal(layer.forward(z), a)


@pytest.mark.parametrize("act", list(ACTS))
def test_relaxation_uses_chords_and_tangents(act):
    """Which line is used where: convex part (u <= 0) upper = chord, lower = tangent at the
    midpoint; concave part the mirror; straddling: the chord when it is valid, else a tangent
    that still touches f; narrow intervals are tight (gap O(width^2))."""
    _, cls, f = ACTS[act]
    layer = _layer(cls, 1)
    t = lambda v: torch.tensor([float(v)], dtype=DT)
    close = lambda x, y: abs(float(x) - float(y)) < 1e-12
    for lo_, hi_ in ((-3.0, -1.0), (-0.5, -0.1)):
        l, u = t(lo_), t(hi_)
        ls, li, us, ui = layer.relax(l, u)
        k = (f(u) - f(l)) / (u - l)
        m = (l + u) / 2
        assert close(us, k) and close(us * l + ui, f(l))                  # chord
        assert close(ls, layer.df(m)) and close(ls * m + li, f(m))         # tangent at midpoint
        ls2, li2, us2, ui2 = layer.relax(-u, -l)                           # the mirror image
        assert close(ls2, k) and close(ls2 * -l + li2, f(-l))
        assert close(us2, layer.df(-m)) and close(us2 * -m + ui2, f(-m))
    # straddling, nearly symmetric: the chord is above f on the left half, so both lines are
    # tangents; each touches f somewhere in [l, u] and lies on its side
    l, u = t(-4.0), t(4.5)
    ls, li, us, ui = layer.relax(l, u)
    z = torch.linspace(-4.0, 4.5, 20001, dtype=DT)
    assert (us * z + ui - f(z)).min() < 1e-9 and (f(z) - ls * z - li).min() < 1e-9
    # straddling, mostly concave: the chord is the lower line (it is valid there)
    l, u = t(-0.2), t(3.0)
    ls, li, us, ui = layer.relax(l, u)
    assert close(ls, (f(u) - f(l)) / (u - l))
    # tight on narrow intervals: the gap shrinks like width^2
    gaps = []
    for w in (1e-1, 1e-2):
        l, u = t(-0.3 - w / 2), t(-0.3 + w / 2)
        ls, li, us, ui = layer.relax(l, u)
        zz = torch.linspace(float(l), float(u), 101, dtype=DT)
        gaps.append(float(((us - ls) * zz + ui - li).max()))
    assert gaps[1] < gaps[0] / 50


@pytest.mark.parametrize("act", list(ACTS))
def test_relaxation_of_wide_and_non_finite_bounds(act):
    """Saturation: [-50, 50], [-1e30, 1e30] and bounds at +-inf give finite, valid lines
    (constant lines f(l) <= f(z) <= f(u) for non-finite bounds), never NaN; gradients too."""
    _, cls, f = ACTS[act]
    inf = float("inf")
    l = torch.tensor([-50.0, -1e30, -inf, -inf, 3.0, -1e300], dtype=DT, requires_grad=True)
    u = torch.tensor([50.0, 1e30, 2.0, inf, inf, 1e300], dtype=DT, requires_grad=True)
    layer = _layer(cls, 6)
    ls, li, us, ui = layer.relax(l, u)
    for v in (ls, li, us, ui):
        assert torch.isfinite(v).all()
    ld, ud = l.detach(), u.detach()
    nf = ~(torch.isfinite(ld) & torch.isfinite(ud))
    assert (ls[nf] == 0).all() and (us[nf] == 0).all()
    assert torch.allclose(li[nf], f(ld[nf]), atol=1e-14) and torch.allclose(ui[nf], f(ud[nf]), atol=1e-14)
    z = torch.linspace(-50, 50, 1001, dtype=DT).unsqueeze(1)
    assert (ls[0] * z + li[0] <= f(z)).all() and (f(z) <= us[0] * z + ui[0]).all()
    (ls.sum() + li.sum() + us.sum() + ui.sum()).backward()
    assert torch.isfinite(l.grad).all() and torch.isfinite(u.grad).all()


def test_backward_pulls_back_through_both_lines():
    """The dual pull-back of one sigmoid layer: nu' . z + c_lo <= nu . act(z) for sampled z,
    with nu of both signs (the lower line where nu >= 0, the upper where nu < 0)."""
    g = torch.Generator().manual_seed(2)
    N, m, n = 3, 5, 40
    l = 4 * torch.randn(N, n, generator=g, dtype=DT)
    u = l + torch.rand(N, n, generator=g, dtype=DT) * 6
    for cls, f in ((DualSigmoid, torch.sigmoid), (DualTanh, torch.tanh)):
        layer = _layer(cls, n)
        layer.set_bounds(l, u)
        nu = torch.randn(1, m, n, generator=g, dtype=DT)
        z = l.unsqueeze(1) + torch.rand(N, 200, n, generator=g, dtype=DT) * (u - l).unsqueeze(1)
        val = (f(z).unsqueeze(2) * nu.unsqueeze(1)).sum(-1)                   # (N, 200, m)
        nu2, c_lo, c_up = layer.backward(nu, upper=False)
        assert c_up is None and nu2.shape == (N, m, n)
        lin = (z.unsqueeze(2) * nu2.unsqueeze(1)).sum(-1) + c_lo.unsqueeze(1)
        assert (lin <= val + 1e-12).all()
        assert (val - lin).min() < 0.5                                        # and not vacuous


# --------------------------------------------------------------------------- networks

def _init(net, seed, gain=1.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT) * gain * math.sqrt(2.0 / fan_in))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=DT))
    return net


def sigmoid_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Sigmoid(), nn.Linear(12, 10), nn.Sigmoid(),
                         nn.Linear(10, 3))


def tanh_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(),
                         nn.Linear(10, 3))


def mixed_cnn():  # conv + tanh, conv + sigmoid, a ReLU at the end: one interface for all three
    return nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Tanh(),          # 4 -> 2
                         nn.Conv2d(2, 3, 3, padding=1), nn.Sigmoid(), nn.Flatten(),
                         nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))


NETS = {"sigmoid_mlp": sigmoid_mlp, "tanh_mlp": tanh_mlp, "mixed_cnn": mixed_cnn}


def make(name, seed=0, n=2):
    net = _init(NETS[name]().to(DT), seed)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=DT)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def sample_min(net, C, lo, hi, n=4000, seed=0):
    """Smallest C @ net(x') over random points and corners of the box, (N, m)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(lo.shape[0]):
        t = torch.rand(n, *lo.shape[1:], generator=g, dtype=DT)
        t[: n // 2] = t[: n // 2].round()                                   # corners
        with torch.no_grad():
            out.append((net(lo[i] + t * (hi[i] - lo[i])) @ C[i].t()).min(0).values)
    return torch.stack(out)


def activation_inputs(net, xs):
    out, h = [], xs
    for m in net:
        if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU)):
            out.append(h)
        h = m(h)
    return out


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("eps", [0.03, 0.1])
def test_every_bound_is_below_sampling_and_attack(name, eps):
    """interval, dual, optimised dual, LP <= the smallest margin found by dense sampling and
    PGD, for every row; LP >= dual, and LP == dual without ReLUs (the LP over the same lines,
    whose exact dual the dual network is); the dual's pre-activation bounds contain the sampled pre-activations."""
    net, x, y = make(name, seed=1)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    C = margin_spec(y, 3).to(DT)
    ib = interval_bounds(net, x, y, eps).lower
    du = dual_bounds(net, x, y, eps)
    d = du.lower
    opt = optimized_dual_bounds(net, x, y, eps, steps=3)
    lp = lp_bounds(net, x, y, eps, pre_bounds=du.pre_bounds).lower
    found = torch.minimum(sample_min(net, C, lo, hi), attack_min(net, C, lo, hi))
    for what, b in (("interval", ib), ("dual", d), ("dual-opt", opt.lower), ("lp", lp)):
        assert torch.isfinite(b).all(), what
        assert (b <= found + 1e-9).all(), (what, b, found)
    assert (lp >= d - 1e-6 * (1 + d.abs())).all()
    n_relu = sum(isinstance(m, nn.ReLU) for m in net)
    if n_relu == 0:  # with ReLUs the LP has the whole triangle, the dual the paper's slopes
        assert torch.allclose(lp, d, atol=1e-6)
    # ReLUs are optimised, the sigmoid/tanh lines stay fixed
    assert len(opt.alpha) == n_relu and (opt.lower >= d - 1e-12).all()
    # pre-activation bounds contain the pre-activations of sampled inputs
    g = torch.Generator().manual_seed(3)
    for i in range(x.shape[0]):
        xs = lo[i] + (hi[i] - lo[i]) * torch.rand(500, *x.shape[1:], generator=g, dtype=DT)
        with torch.no_grad():
            zs = activation_inputs(net, xs)
        for (l, u), z in zip(du.pre_bounds, zs):
            assert (z >= l[i] - 1e-9).all() and (z <= u[i] + 1e-9).all()


@pytest.mark.parametrize("name", list(NETS))
def test_dual_is_tighter_than_interval_on_small_balls(name):
    """The relaxation is really used: for a small ball the dual beats interval arithmetic."""
    net, x, y = make(name, seed=2, n=4)
    ib = interval_bounds(net, x, y, 0.02).lower
    d = dual_bounds(net, x, y, 0.02).lower
    assert (d - ib).mean() > 0


def test_float32_network_is_sound():
    """A float32 sigmoid network: the dual bound stays below the float64 sampled margins."""
    net, x, y = make("sigmoid_mlp", seed=4, n=3)
    d = dual_bounds(net.float(), x.float(), y, 0.1).lower.double()
    net = net.double()
    lo, hi = (x - 0.1).clamp(min=0), (x + 0.1).clamp(max=1)
    assert (d <= sample_min(net, margin_spec(y, 3).to(DT), lo, hi) + 1e-5).all()


@pytest.mark.parametrize("name", ["sigmoid_mlp", "tanh_mlp", "mixed_cnn"])
def test_milp_and_projections_refuse(name):
    """No exact MILP for sigmoid/tanh: the MILP refuses, naming the activation; random
    projections need parallel lines and refuse too (the exact dual is the training loss)."""
    net, x, y = make(name)
    first = next(m for m in net if isinstance(m, (nn.Sigmoid, nn.Tanh)))
    with pytest.raises(UnsupportedLayerError, match=f"Dual{type(first).__name__} has no exact MILP"):
        milp_bounds(net, x, y, 0.05)
    with pytest.raises(UnsupportedLayerError, match="slopes"):
        estimated_dual_bounds(net, x, y, 0.05, proj=10)
    with pytest.raises(UnsupportedLayerError, match="slopes"):
        robust_loss(net, x, y, 0.05, proj=10)


def test_entry_points_accept_sigmoid_and_tanh():
    """prepare/build_layers map nn.Sigmoid/nn.Tanh to their dual activations; certification
    entry points work on such networks (small eps certifies, large does not); the robust loss
    is differentiable."""
    from tutorial_lib.bounds import patches
    from tutorial_lib.bounds.dual import _pre_bounds
    from tutorial_lib.bounds.spec import prepare

    assert LAYER_TYPES[nn.Sigmoid] is DualSigmoid and LAYER_TYPES[nn.Tanh] is DualTanh
    assert "Sigmoid" in supported_layer_names() and "Tanh" in supported_layer_names()
    net, x, y = make("mixed_cnn", seed=3, n=6)
    P = prepare(net, x, y, 0.05)
    assert [type(a).__name__ for a in P.activations] == ["DualTanh", "DualSigmoid", "DualReLU"]
    _pre_bounds(P)
    assert not patches.applies(P.layers, 3)          # not parallel: the dense pass is used
    res = dual_bounds(net, x, y, 1e-3)
    assert torch.equal(res.certified, is_certified(res.lower)) and res.certified.all()
    assert certified_error(net, x, y, 1e-3) == 0.0
    assert certified_error(net, x, y, 1e-3, method="interval") == 0.0
    assert certified_error(net, x, y, 1e-3, method="dual-opt") == 0.0
    assert certified_error(net, x, y, 0.5) == 1.0
    acc = certified_accuracy_vs_eps(net, x, y, [0.0, 1e-3, 0.5])
    assert acc[0] == acc[1] == 1.0 and acc[2] == 0.0
    loss, err = robust_loss(net, x, y, 0.05)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # still refused: a layer type that is not registered, with the new names in the message
    with pytest.raises(UnsupportedLayerError, match="Sigmoid, Tanh"):
        dual_bounds(nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.GELU(), nn.Linear(3, 3)).double(),
                    x, y, 0.05)
