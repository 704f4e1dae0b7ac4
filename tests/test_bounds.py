"""Certified bounds (tutorial_lib.bounds): soundness chain, tightness order, errors.

Everything runs in float64 on tiny random networks so LP/MILP optima can be compared with
the dual network at tight tolerances.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from bound_checks import attack_min
from torch import nn

from tutorial_lib.bounds import (
    SolverError,
    UnsupportedLayerError,
    certified_error,
    certified_mask,
    crown_bounds,
    dual_bounds,
    estimated_dual_bounds,
    interval_bounds,
    lp_bounds,
    margin_spec,
    milp_bounds,
    optimized_dual_bounds,
    robust_loss,
)
from tutorial_lib.bounds.layers import build_layers
from tutorial_lib.models import Normalize

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _init(net, seed, gain=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT)
                               * gain * math.sqrt(2.0 / fan_in))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g, dtype=DT))
    return net


def toy_mlp2d():  # 2-D inputs that are not pixels: clip=None
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def pixel_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(),      # 6 -> 3
                         nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(27, 6), nn.ReLU(), nn.Linear(6, 3))


def odd_cnn():  # 7x7 with a 4x4 stride-2 conv: the transpose needs output_padding
    return nn.Sequential(Normalize((0.4,), (0.3,)), nn.Conv2d(1, 2, 4, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(18, 6), nn.ReLU(), nn.Linear(6, 3))


def stacked_mlp():  # two mixing layers before the first ReLU: interval arithmetic is not exact
    return nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                         nn.Linear(6, 3))


NETS = {  # name: (builder, input shape, clip)
    "toy_mlp2d": (toy_mlp2d, (2,), None),
    "pixel_mlp": (pixel_mlp, (1, 6, 6), (0.0, 1.0)),
    "small_cnn": (small_cnn, (1, 6, 6), (0.0, 1.0)),
    "odd_cnn": (odd_cnn, (1, 7, 7), (0.0, 1.0)),
    "stacked_mlp": (stacked_mlp, (3,), (0.0, 1.0)),
}


def make(name, seed=0, n=2):
    build, shape, clip = NETS[name]
    net = _init(build().to(DT), seed)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(n, *shape, generator=g, dtype=DT)
    if clip is None:
        x = 2 * x - 1
    y = torch.randint(0, 3, (n,), generator=g)
    return net, x, y, clip


def box(x, eps, clip):
    lo, hi = x - eps, x + eps
    if clip is not None:
        lo, hi = lo.clamp(min=clip[0]), hi.clamp(max=clip[1])
    return lo, hi


def relu_inputs(net, xs):
    """Actual inputs of every ReLU for a batch xs."""
    out, h = [], xs
    for m in net:
        if isinstance(m, nn.ReLU):
            out.append(h)
        h = m(h)
    return out


def tol(v):
    return 1e-6 * (1 + v.abs())


# --------------------------------------------------------------------------- soundness chain

@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("eps", [0.05, 0.15])
def test_soundness_chain(name, eps):
    """interval, dual, LP <= exact MILP optimum <= margin found by an attack, for every row."""
    net, x, y, clip = make(name, seed=1)
    ib = interval_bounds(net, x, y, eps, clip=clip).lower.detach()
    du = dual_bounds(net, x, y, eps, clip=clip)
    d = du.lower.detach()
    lp = lp_bounds(net, x, y, eps, clip=clip, pre_bounds=du.pre_bounds).lower
    mi = milp_bounds(net, x, y, eps, clip=clip)
    C = margin_spec(y, 3).to(DT)
    lo, hi = box(x, eps, clip)
    adv = attack_min(net, C, lo, hi, restarts=6)
    exact = mi.lower
    for name_, b in (("interval", ib), ("dual", d), ("lp", lp)):
        assert (b <= exact + tol(exact)).all(), (name_, b, exact)
    assert (lp >= d - tol(d)).all()                      # LP is the dual's primal, optimised
    assert (mi.info["attained"] <= adv + tol(adv)).all(), (mi.info["attained"], adv)
    assert (mi.info["attained"] - exact).abs().max() < 1e-6
    # the MILP's worst inputs lie in the ball and the box and attain the reported optimum
    xw = mi.x_worst
    assert (xw >= lo.unsqueeze(1) - 1e-12).all() and (xw <= hi.unsqueeze(1) + 1e-12).all()
    assert ((xw - x.unsqueeze(1)).abs() <= eps + 1e-12).all()
    with torch.no_grad():
        margin = (net(xw.flatten(0, 1)) * C.flatten(0, 1)).sum(-1).view_as(exact)
    assert torch.allclose(margin, exact, atol=1e-6), (margin, exact)


def test_relaxations_are_exercised():
    """Guard for the chain above: the networks have unstable ReLUs and real gaps."""
    net, x, y, clip = make("pixel_mlp", seed=1)
    du = dual_bounds(net, x, y, 0.15, clip=clip)
    mi = milp_bounds(net, x, y, 0.15, clip=clip)
    assert sum(((l < 0) & (u > 0)).sum() for l, u in du.pre_bounds) > 5
    assert (mi.lower - du.lower).max() > 1e-3


# --------------------------------------------------------------------------- LP vs dual

def test_optimized_dual_between_paper_dual_and_lp():
    net, x, y, clip = make("small_cnn", seed=3, n=3)
    eps = 0.15
    du = dual_bounds(net, x, y, eps, clip=clip)
    lp = lp_bounds(net, x, y, eps, clip=clip, pre_bounds=du.pre_bounds).lower
    opt = optimized_dual_bounds(net, x, y, eps, clip=clip, steps=100, lr=0.1)
    paper = du.lower.detach()
    assert torch.allclose(opt.info["paper"], paper, atol=1e-12)
    gap = lp - paper
    assert gap.max() > 1e-2                                    # a case where slopes matter
    assert (opt.lower >= paper - 1e-12).all()
    assert (opt.lower <= lp + tol(lp)).all()                    # never above the LP
    assert (lp - opt.lower).sum() <= 0.01 * gap.sum()           # closes >= 99% of the gap
    assert all(((a >= 0) & (a <= 1)).all() for a in opt.alpha)
    # slopes outside [0, 1] would be unsound: the returned alphas reproduce the bound
    from tutorial_lib.bounds.dual import _final_lower
    from tutorial_lib.bounds.spec import prepare
    P = prepare(net, x, y, eps, None, clip)
    for layer, (l, u) in zip(P.relus, opt.pre_bounds):
        layer.set_bounds(l, u)
    again = _final_lower(P, dict(zip(P.relu_idx, opt.alpha)))
    assert torch.allclose(again, opt.lower, atol=1e-10)


# --------------------------------------------------------------------------- dual network

@pytest.mark.parametrize("name", ["pixel_mlp", "small_cnn", "odd_cnn"])
def test_dual_batched_equals_per_example(name):
    net, x, y, clip = make(name, seed=4, n=4)
    eps = torch.tensor([0.02, 0.05, 0.1, 0.2], dtype=DT)
    full = dual_bounds(net, x, y, eps, clip=clip)
    for i in range(4):
        one = dual_bounds(net, x[i:i + 1], y[i:i + 1], float(eps[i]), clip=clip)
        assert torch.allclose(one.lower, full.lower[i:i + 1], atol=1e-12)
        for (l1, u1), (l, u) in zip(one.pre_bounds, full.pre_bounds):
            assert torch.allclose(l1, l[i:i + 1], atol=1e-12)
            assert torch.allclose(u1, u[i:i + 1], atol=1e-12)
    # max_rows splits the identity into chunks without changing anything
    chunked = dual_bounds(net, x, y, eps, clip=clip, max_rows=5)
    assert torch.allclose(chunked.lower, full.lower, atol=1e-12)


@pytest.mark.parametrize("name", ["toy_mlp2d", "small_cnn", "odd_cnn", "stacked_mlp"])
def test_dual_pre_bounds_contain_samples_and_match_interval_first_layer(name):
    net, x, y, clip = make(name, seed=5, n=2)
    eps = 0.1
    du = dual_bounds(net, x, y, eps, clip=clip)
    ib = interval_bounds(net, x, y, eps, clip=clip)
    tight = dual_bounds(net, x, y, eps, clip=clip, intersect_ibp=True)
    lo, hi = box(x, eps, clip)
    g = torch.Generator().manual_seed(0)
    for n in range(x.shape[0]):
        r = torch.rand(3000, *x.shape[1:], generator=g, dtype=DT)
        corners = torch.randint(0, 2, (500, *x.shape[1:]), generator=g).to(DT)
        xs = lo[n] + (hi[n] - lo[n]) * torch.cat([r, corners])
        with torch.no_grad():
            acts = relu_inputs(net, xs)
        for k, z in enumerate(acts):
            for res in (du, ib, tight):
                l, u = res.pre_bounds[k]
                assert (z >= l[n] - 1e-9).all() and (z <= u[n] + 1e-9).all(), (res.method, k)
            # the intersected bounds are inside both
            lt, ut = tight.pre_bounds[k]
            assert (lt >= torch.maximum(du.pre_bounds[k][0], ib.pre_bounds[k][0]) - 1e-12).all()
            assert (ut <= torch.minimum(du.pre_bounds[k][1], ib.pre_bounds[k][1]) + 1e-12).all()
    (l_d, u_d), (l_i, u_i) = du.pre_bounds[0], ib.pre_bounds[0]
    if name == "stacked_mlp":  # two affine layers: the dual is exact, intervals are not
        with torch.no_grad():
            A = net[1].weight @ net[0].weight
            c = net[1](net[0]((lo + hi) / 2))
            r = ((hi - lo) / 2) @ A.abs().t()
        assert torch.allclose(l_d, c - r, atol=1e-12) and torch.allclose(u_d, c + r, atol=1e-12)
        assert ((u_i - l_i) > (u_d - l_d) + 1e-6).any()
    else:  # first ReLU: one affine layer of the box, where both methods are exact
        assert torch.allclose(l_d, l_i, atol=1e-12) and torch.allclose(u_d, u_i, atol=1e-12)
    # deeper layers: the dual is much tighter than interval arithmetic on these nets overall
    for (l_d, u_d), (l_i, u_i) in zip(du.pre_bounds[1:], ib.pre_bounds[1:]):
        assert (u_d - l_d).sum() < (u_i - l_i).sum()


def test_paper_dual_is_not_always_inside_interval_bounds():
    """With the paper's slopes an intermediate dual bound can be looser than IBP, so the
    requirement "dual within IBP layer-wise" only holds with intersect_ibp=True.

    z1 = x in [-1, 1], a = relu(z1), z2 = a: IBP gives z2 >= 0, the dual d * l = -0.5.
    """
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.fill_(1.0)
                m.bias.zero_()
    x = torch.zeros(1, 1)
    spec = torch.tensor([[1.0, 0.0]])
    du = dual_bounds(net, x, None, 1.0, spec=spec, clip=None)
    ib = interval_bounds(net, x, None, 1.0, spec=spec, clip=None)
    assert du.pre_bounds[1][0].item() == pytest.approx(-0.5)
    assert ib.pre_bounds[1][0].item() == pytest.approx(0.0)
    assert du.pre_bounds[1][1].item() == pytest.approx(1.0)
    tight = dual_bounds(net, x, None, 1.0, spec=spec, clip=None, intersect_ibp=True)
    assert tight.pre_bounds[1][0].item() == pytest.approx(0.0)


@pytest.mark.parametrize("name", ["toy_mlp2d", "small_cnn", "odd_cnn", "stacked_mlp"])
def test_forward_and_backward_dual_agree(name):
    """The exact forward pass (convex_adversarial's direction) equals the backward pass."""
    net, x, y, clip = make(name, seed=6, n=3)
    du = dual_bounds(net, x, y, 0.1, clip=clip)
    fw = estimated_dual_bounds(net, x, y, 0.1, clip=clip, proj=None)
    assert torch.allclose(fw.lower, du.lower, atol=1e-10)
    for (lf, uf), (l, u) in zip(fw.pre_bounds, du.pre_bounds):
        assert torch.allclose(lf, l, atol=1e-10) and torch.allclose(uf, u, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("cin", [2, 4])  # 2: fold-based transpose on CPU, 4: conv_transpose2d
@pytest.mark.parametrize("make_conv", [
    lambda c: nn.Conv2d(c, 4, 4, stride=2, padding=1),       # 7 -> 3, output_padding 1
    lambda c: nn.Conv2d(c, 3, 3, stride=3, padding=0),       # 7x5 -> 2x1, drops a row
    lambda c: nn.Conv2d(c, 4, 3, stride=2, padding=2, dilation=2),
    lambda c: nn.Conv2d(c, 4, (3, 2), stride=(2, 1), padding=(1, 0), groups=2),
    lambda c: nn.Conv2d(c, 3, 4, padding="same"),            # asymmetric zero padding
    lambda c: nn.Conv2d(c, 3, 3, padding="valid", bias=False),
])
def test_layer_transpose_is_adjoint(make_conv, cin):
    """<A v, nu> == <v, A^T nu> and the bias term, for awkward conv sizes (7x5 input)."""
    torch.manual_seed(0)
    conv = make_conv(cin)
    n_out = conv(torch.zeros(1, cin, 7, 5)).numel()
    net = nn.Sequential(Normalize([0.1] * cin, [0.5 + i for i in range(cin)]), conv, nn.Flatten(),
                        nn.Linear(n_out, 3))
    net = net.to(DT)
    layers, _ = build_layers(net, torch.zeros(1, cin, 7, 5, dtype=DT))
    assert layers[1].use_fold == (cin == 2 and conv.groups == 1 and conv.padding != "same")
    assert [type(m).__name__ for m in layers] == ["DualNormalize", "DualConv2d", "DualFlatten",
                                                   "DualLinear"]
    for layer in layers:
        v = torch.randn(3, 4, *layer.in_shape, dtype=DT)
        nu = torch.randn(3, 4, *layer.out_shape, dtype=DT)
        lhs = (layer.linear(v) * nu).flatten(2).sum(-1)
        rhs = (v * layer.transpose(nu)).flatten(2).sum(-1)
        assert torch.allclose(lhs, rhs, atol=1e-10), layer
        h = torch.randn(3, *layer.in_shape, dtype=DT)
        assert torch.allclose(layer.forward(h), layer.module(h), atol=1e-12)
        bias = layer.forward(torch.zeros(1, *layer.in_shape, dtype=DT))
        b_dot = layer.bias_dot(nu)
        expect = (bias.unsqueeze(1) * nu).flatten(2).sum(-1)
        assert torch.allclose(expect, torch.zeros_like(expect) if b_dot is None else b_dot,
                              atol=1e-10)


def test_normalize_matches_folded_network():
    """Normalize then conv gives the same bounds as the conv with the normalisation folded in."""
    net, x, y, clip = make("odd_cnn", seed=7, n=3)
    norm, conv = net[0], net[1]
    folded = nn.Conv2d(1, 2, 4, stride=2, padding=1).to(DT)
    with torch.no_grad():
        folded.weight.copy_(conv.weight / norm.std.view(1, -1, 1, 1))
        # padding sees zeros of the normalised image, i.e. raw pixel `mean`: fold by shifting
        # the input instead of the bias, so compare on a network with padding=0
    conv0 = nn.Conv2d(1, 2, 4, stride=2, padding=0).to(DT)
    with torch.no_grad():
        conv0.weight.copy_(conv.weight)
        conv0.bias.copy_(conv.bias)
        folded = nn.Conv2d(1, 2, 4, stride=2, padding=0).to(DT)
        folded.weight.copy_(conv.weight / norm.std.view(1, -1, 1, 1))
        folded.bias.copy_(conv.bias - (conv.weight * (norm.mean / norm.std).view(1, -1, 1, 1))
                          .sum(dim=(1, 2, 3)))
    lin = nn.Linear(8, 6).to(DT)
    _init(lin, 8)
    tail = [nn.ReLU(), nn.Flatten(), lin, nn.ReLU(), net[-1]]
    a = nn.Sequential(norm, conv0, *tail)
    b = nn.Sequential(folded, *tail)
    assert torch.allclose(a(x), b(x), atol=1e-12)
    for fn in (interval_bounds, dual_bounds):
        ra, rb = fn(a, x, y, 0.1, clip=clip), fn(b, x, y, 0.1, clip=clip)
        assert torch.allclose(ra.lower, rb.lower, atol=1e-10), fn.__name__
    la = lp_bounds(a, x[:1], y[:1], 0.1, clip=clip).lower
    lb = lp_bounds(b, x[:1], y[:1], 0.1, clip=clip).lower
    assert torch.allclose(la, lb, atol=1e-6)


def test_user_spec_and_gradients():
    net, x, y, clip = make("small_cnn", seed=9, n=2)
    spec = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0], [-1.0, 0.0, 0.0]], dtype=DT)
    du = dual_bounds(net, x, None, 0.05, spec=spec, clip=clip)
    assert du.lower.shape == (2, 3)
    mi = milp_bounds(net, x, None, 0.05, spec=spec, clip=clip)
    assert (du.lower <= mi.lower + tol(mi.lower)).all()
    # eps = 0: the bound is the value at x itself
    z = dual_bounds(net, x, None, 0.0, spec=spec, clip=clip).lower
    assert torch.allclose(z, net(x) @ spec.t(), atol=1e-10)
    du.lower.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# --------------------------------------------------------------------------- robust loss

def test_robust_loss_exact_and_certified_error():
    net, x, y, clip = make("small_cnn", seed=10, n=6)
    for eps in (0.0, 0.02, 0.1):
        loss, err = robust_loss(net, x, y, eps, clip=clip)
        J = dual_bounds(net, x, y, eps, clip=clip).lower
        K = 3
        z = torch.zeros(6, K, dtype=DT)
        for n in range(6):
            others = [j for j in range(K) if j != y[n]]
            z[n, others] = -J[n]
        assert torch.allclose(loss, F.cross_entropy(z, y), atol=1e-12)
        expect = float(((J <= 0) | J.isnan()).any(1).double().mean())  # a tie is not certified
        assert float(err) == expect == certified_error(net, x, y, eps, clip=clip)
    # at eps = 0 the certified error is the clean error
    assert certified_error(net, x, y, 0.0) == float((net(x).argmax(1) != y).double().mean())
    # certification is monotone in eps and rises to 1 on these random networks
    errs = [certified_error(net, x, y, e, clip=clip) for e in (0.0, 0.05, 0.5)]
    assert errs == sorted(errs) and errs[-1] == 1.0
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_certified_mask_per_method_and_batched():
    net, x, y, clip = make("small_cnn", seed=12, n=7)
    eps = 0.03
    for method in ("interval", "dual", "crown", "crown-ibp"):
        mask = certified_mask(net, x, y, eps, clip=clip, method=method, batch_size=3)
        fn = {"interval": interval_bounds, "dual": dual_bounds, "crown": crown_bounds,
              "crown-ibp": lambda *a, **k: crown_bounds(*a, pre="interval", **k)}[method]
        J = fn(net, x, y, eps, clip=clip).lower
        assert mask.dtype == torch.bool and mask.tolist() == ((J > 0).all(1)).tolist(), method
        err = certified_error(net, x, y, eps, clip=clip, method=method)
        assert err == pytest.approx(1 - mask.double().mean().item())
    with pytest.raises(ValueError, match="method"):
        certified_mask(net, x, y, eps, method="projections")


def test_random_projections_estimate_the_exact_bound():
    net, x, y, clip = make("small_cnn", seed=11, n=4)
    eps = 0.1
    exact = dual_bounds(net, x, y, eps, clip=clip)
    g = torch.Generator().manual_seed(0)
    est = estimated_dual_bounds(net, x, y, eps, clip=clip, proj=200, generator=g)
    # intermediate bounds within 20% of the widths on average (the first ReLU is exact)
    for k, ((le, ue), (l, u)) in enumerate(zip(est.pre_bounds, exact.pre_bounds)):
        rel = ((le - l).abs() + (ue - u).abs()).sum() / (2 * (u - l).sum())
        assert rel < (1e-12 if k == 0 else 0.1), (k, rel)
    # final bounds close relative to their spread across rows
    scale = exact.lower.abs().mean()
    assert (est.lower - exact.lower).abs().mean() < 0.2 * scale
    with pytest.raises(ValueError, match="not certificates"):
        _ = est.certified
    lp, _ = robust_loss(net, x, y, eps, clip=clip, proj=200, generator=g)
    le, _ = robust_loss(net, x, y, eps, clip=clip)
    lp, le = float(lp.detach()), float(le.detach())
    assert abs(lp - le) < 0.2 * le
    # the estimate is random (proves projections are used) but the exact path is not
    lp2, _ = robust_loss(net, x, y, eps, clip=clip, proj=5, generator=g)
    assert float(lp2.detach()) != lp
    assert float(robust_loss(net, x, y, eps, clip=clip)[0].detach()) == le


# --------------------------------------------------------------------------- bad input

def test_bad_inputs():
    net, x, y, clip = make("small_cnn", seed=0, n=2)
    with pytest.raises(UnsupportedLayerError, match=r"MaxPool2d.*supported layers: Linear, Conv2d"):
        dual_bounds(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(8, 3)).to(DT), x, y, 0.1)
    with pytest.raises(UnsupportedLayerError, match="Sequential"):
        interval_bounds(nn.Linear(36, 3).to(DT), x.flatten(1), y, 0.1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        dual_bounds(net, x, y, -0.1)
    with pytest.raises(ValueError, match="last layer must be nn.Linear"):
        dual_bounds(nn.Sequential(*list(net), nn.ReLU()), x, y, 0.1)
    with pytest.raises(ValueError, match="does not fit the model"):
        dual_bounds(net, torch.rand(2, 1, 4, 4, dtype=DT), y, 0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        dual_bounds(net, x, y[:1], 0.1)
    with pytest.raises(ValueError, match="labels must be in"):
        dual_bounds(net, x, torch.tensor([0, 3]), 0.1)
    with pytest.raises(ValueError, match="spec must have shape"):
        dual_bounds(net, x, None, 0.1, spec=torch.ones(2, 2, 4, dtype=DT))
    with pytest.raises(ValueError, match="outside the box"):
        dual_bounds(net, x + 2.0, y, 0.1)
    with pytest.raises(ValueError, match="float32 on cpu but x is torch.float64|float64"):
        dual_bounds(net.float(), x, y, 0.1)
    net.double()
    with pytest.raises(ValueError, match="pre_bounds"):
        lp_bounds(net, x, y, 0.1, pre_bounds=[])


def test_solver_failure_is_never_a_certificate(monkeypatch):
    """Invalid pre-activation bounds are refused by the check that they hold the network's values
    (ValueError); past that check they make the LP/MILP infeasible: an error, not a bound."""
    from tutorial_lib.bounds import spec as spec_mod
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)).to(DT)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-5.0)   # z = x - 5 in [-5, -4] for x in [0, 1]
    x, y = torch.full((1, 1), 0.5, dtype=DT), torch.tensor([0])
    bad = [(torch.full((1, 1), -1.0, dtype=DT), torch.full((1, 1), 1.0, dtype=DT))]
    for fn in (lp_bounds, milp_bounds):
        with pytest.raises(ValueError, match="do not contain the network's values"):
            fn(net, x, y, 0.5, pre_bounds=bad)
    monkeypatch.setattr(spec_mod, "_check_contains_network_values", lambda *a: None)
    with pytest.raises(SolverError, match="infeasible"):
        lp_bounds(net, x, y, 0.5, pre_bounds=bad)
    with pytest.raises(SolverError, match="infeasible"):
        milp_bounds(net, x, y, 0.5, pre_bounds=bad)


def test_milp_time_limit_is_an_error_not_a_bound():
    net, x, y, clip = make("small_cnn", seed=1, n=1)
    with pytest.raises(SolverError, match="user_limit|gap"):
        milp_bounds(net, x, y, 0.15, clip=clip, time_limit=1e-9)


def test_fold_transpose_gradients_match_conv_transpose():
    """The CPU fast path for transposed convs has a hand-written backward: check it."""
    from tutorial_lib.bounds.layers import _FoldTranspose
    torch.manual_seed(0)
    for cin, cout, k, s, p, d, H in [(1, 3, 4, 2, 1, 1, 7), (2, 4, 3, 2, 2, 2, 9)]:
        W = torch.randn(cout, cin, k, k, dtype=DT, requires_grad=True)
        Ho = (H + 2 * p - d * (k - 1) - 1) // s + 1
        nu = torch.randn(3, cout, Ho, Ho, dtype=DT, requires_grad=True)
        def fn(a, b, H=H, s=s, p=p, d=d):
            return _FoldTranspose.apply(a, b, (H, H), (s, s), (p, p), (d, d))

        assert torch.autograd.gradcheck(fn, (nu, W), atol=1e-9, rtol=1e-7)


def test_robust_training_loss_follows_its_eps_schedule():
    from tutorial_lib.defenses import RobustTrainingLoss
    from tutorial_lib.training import LOSSES

    assert LOSSES["robust"] is RobustTrainingLoss
    net, x, y, clip = make("small_cnn", seed=12, n=5)
    loss_fn = RobustTrainingLoss(eps=0.1, proj=None, start_eps=0.01, ramp_steps=10, clip=clip)
    for step, eps in ((0, 0.01), (5, 0.055), (10, 0.1), (99, 0.1)):
        loss_fn.on_step(step)
        assert abs(loss_fn.eps - eps) < 1e-12
        value, logits = loss_fn(net, x, y)
        assert torch.allclose(value, robust_loss(net, x, y, eps, clip=clip)[0], atol=1e-12)
        # the robust loss upper-bounds the clean loss (the bounds are below the clean margins)
        assert value >= F.cross_entropy(logits, y) - 1e-12
    with pytest.raises(ValueError):
        RobustTrainingLoss(eps=-0.1)
    with pytest.raises(ValueError):
        RobustTrainingLoss(eps=0.1, proj=0)


def test_certified_accuracy_curve_matches_certified_error():
    from tutorial_lib.bounds import certified_accuracy_vs_eps

    net, x, y, clip = make("small_cnn", seed=13, n=8)
    eps_values = [0.0, 0.01, 0.03, 0.1]
    curve = certified_accuracy_vs_eps(net, x, y, eps_values, clip=clip, batch_size=3)
    exact = [1 - certified_error(net, x, y, e, clip=clip) for e in eps_values]
    # the shortcut only skips examples already lost; it never reports more than exact
    assert all(c <= e + 1e-12 for c, e in zip(curve, exact))
    assert curve == sorted(curve, reverse=True) and curve[0] == exact[0]
    with pytest.raises(ValueError):
        certified_accuracy_vs_eps(net, x, y, [0.1, 0.05])


def test_shipped_robust_model_certificates_are_never_broken(mnist_test):
    """The shipped certifiably trained model: most test images are certified at eps = 0.1, and
    PGD with restarts (cross-entropy and margin loss) breaks none of the certified ones."""
    from tutorial_lib.attacks import PGD, MarginPGD, margin
    from tutorial_lib.checkpoints import load_checkpoint

    model, info = load_checkpoint("mnist_small_robust", device="cpu")
    assert info["recipe"]["loss"] == "robust" and info["recipe"]["loss_kwargs"]["eps"] == 0.1
    x, y = mnist_test[0][:200], mnist_test[1][:200]
    with torch.no_grad():
        low = dual_bounds(model, x, y, 0.1).lower
    cert = (low > 0).all(1)
    assert cert.float().mean() > 0.85
    xc, yc = x[cert], y[cert]
    for attack in (PGD(0.1, alpha=0.01, steps=100, restarts=3), MarginPGD(0.1, alpha=0.01, steps=100, restarts=3)):
        x_adv = attack(model, xc, yc)
        with torch.no_grad():
            m = margin(model(x_adv), yc)
        assert (m > 0).all()
        # the margin any attack finds is above the certified lower bound of the worst margin
        assert (m >= low[cert].min(1).values - 1e-4).all()


@pytest.mark.parametrize("arch", ["mnist_small_like", "odd_sizes"])
def test_receptive_field_bounds_equal_the_dense_pass(arch):
    """bounds.patches computes a conv layer's neuron bounds on receptive fields only; it must
    give the dense backward pass's values (odd sizes, stride 1/2, padding 0/1/2 included)."""
    from tutorial_lib.bounds import dual as D, patches
    from tutorial_lib.bounds.spec import prepare

    torch.manual_seed(3)
    if arch == "mnist_small_like":
        net, shape = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.ReLU(), nn.Conv2d(4, 6, 4, 2, 1), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(6 * 4 * 4, 5)), (1, 16, 16)
    else:
        net = nn.Sequential(nn.Conv2d(2, 3, 3, 2, 0), nn.ReLU(), nn.Conv2d(3, 4, 3, 1, 2), nn.ReLU(),
                            nn.Conv2d(4, 5, 2, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))
        shape = (2, 11, 9)
    net = net.double()
    x = torch.rand(3, *shape, dtype=DT)
    y = net(x).argmax(1)
    P = prepare(net, x, y, 0.05, None, (0.0, 1.0))
    D._pre_bounds(P)
    checked = 0
    for i in P.relu_idx[1:]:
        assert patches.applies(P.layers, i)
        ld, ud = D._identity_bounds(P, i, None)
        lp, up = patches.conv_neuron_bounds(P.layers, i, P.lo, P.hi, budget=200)  # force chunking
        assert torch.allclose(ld, lp, atol=1e-12) and torch.allclose(ud, up, atol=1e-12)
        checked += 1
    assert checked >= 1
    assert not patches.applies(P.layers, len(P.layers) - 1)  # after a Linear: dense pass


# --------------------------------------------------------------------------- activation interface

def _relu_layer(shape=(1,)):
    from tutorial_lib.bounds import DualReLU
    return DualReLU(nn.ReLU(), shape, shape)


def _random_intervals(n=4000, seed=0):
    """Pairs l <= u of both signs, ties l == u (negative, zero, positive), tiny and huge widths."""
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** torch.randint(-6, 7, (n,), generator=g).to(DT)
    a, b = torch.randn(n, generator=g, dtype=DT) * scale, torch.randn(n, generator=g, dtype=DT) * scale
    l, u = torch.minimum(a, b), torch.maximum(a, b)
    edge = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [2.0, 2.0], [-3.0, 0.0], [0.0, 3.0], [-1e-30, 1e30],
                         [-1e30, 1e-30], [-1e30, 1e30], [-1e-12, 1e-12], [-5.0, 1e-300]], dtype=DT)
    return torch.cat([l, edge[:, 0]]), torch.cat([u, edge[:, 1]])


def test_relu_relaxation_contains_the_relu():
    """lower(z) <= relu(z) <= upper(z) for z in [l, u], the paper's slopes on unstable neurons,
    exact lines on stable ones, and every alpha in [0, 1] a valid lower line."""
    from tutorial_lib.bounds import DualActivation
    l, u = _random_intervals()
    n = l.shape[0]
    layer = _relu_layer((n,))
    assert isinstance(layer, DualActivation) and layer.parallel and layer.exact_encoding
    layer.set_bounds(l.unsqueeze(0), u.unsqueeze(0))
    ls, li, us, ui = (t[0] for t in (layer.lower_slope, layer.lower_intercept, layer.upper_slope,
                                     layer.upper_intercept))
    g = torch.Generator().manual_seed(1)
    t = torch.cat([torch.tensor([0.0, 1.0], dtype=DT).view(2, 1).expand(2, n),
                   torch.rand(200, n, generator=g, dtype=DT)])
    z = l + t * (u - l)                                           # (201, n) points in [l, u]
    z = torch.cat([z, torch.where((l < 0) & (u > 0), 0.0, l).unsqueeze(0)])  # the kink
    slack = 1e-12 * (z.abs() + l.abs() + u.abs())
    a = torch.relu(z)
    assert (ls * z + li <= a + slack).all()
    assert (a <= us * z + ui + slack).all()
    unst = (l < 0) & (u > 0)
    assert unst.sum() > 1000 and (~unst).sum() > 1000
    d = u / (u - l)
    assert torch.allclose(us[unst], d[unst], rtol=1e-15, atol=0)           # u / (u - l)
    assert torch.allclose(ui[unst], -d[unst] * l[unst], rtol=1e-15, atol=0)
    assert torch.equal(ls, us) and (li == 0).all()                          # paper: alpha = d
    assert ((ls >= 0) & (ls <= 1)).all() and (ui >= 0).all()
    on, off = l >= 0, u <= 0
    assert (us[on] == 1).all() and (ui[on] == 0).all() and (us[off & ~on] == 0).all()
    assert (ui[off] == 0).all()
    # interval image and forward
    lo, hi = layer.interval(l, u)
    assert torch.equal(lo, torch.relu(l)) and torch.equal(hi, torch.relu(u))
    # any alpha in [0, 1] gives a lower line a >= alpha z on unstable neurons; the others are
    # tight (one line, a = z or a = 0) and keep it
    alpha = torch.rand(1, 3, n, generator=g, dtype=DT)
    slope, icpt = layer.lower_line(alpha)
    assert icpt is None and torch.equal(layer.tight[0], ~unst)
    za, aa, sa = z[:, unst].unsqueeze(1), a[:, unst].unsqueeze(1), slack[:, unst].unsqueeze(1)
    assert (slope[0][:, unst] * za <= aa + sa).all()
    assert torch.equal(ls[~unst], us[~unst]) and torch.equal(li[~unst], ui[~unst])


def test_generic_backward_matches_the_relaxation():
    """The dual pull-back of one activation: nu' . z + c_lo <= nu . act(z) <= nu' . z + c_up
    for sampled z in [l, u], with the paper's slopes and with random alpha in [0, 1]."""
    g = torch.Generator().manual_seed(2)
    N, m, n = 3, 5, 40
    l = torch.randn(N, n, generator=g, dtype=DT)
    u = l + torch.rand(N, n, generator=g, dtype=DT) * 2
    layer = _relu_layer((n,))
    layer.set_bounds(l, u)
    nu = torch.randn(1, m, n, generator=g, dtype=DT)
    z = l.unsqueeze(1) + torch.rand(N, 50, n, generator=g, dtype=DT) * (u - l).unsqueeze(1)
    val = (torch.relu(z).unsqueeze(2) * nu.unsqueeze(1)).sum(-1)            # (N, 50, m)
    nu2, c_lo, c_up = layer.backward(nu)
    lin = (z.unsqueeze(2) * nu2.unsqueeze(1)).sum(-1)
    assert (lin + c_lo.unsqueeze(1) <= val + 1e-12).all() and (val <= lin + c_up.unsqueeze(1) + 1e-12).all()
    alpha = torch.rand(N, m, n, generator=g, dtype=DT)
    nu3, c3, none = layer.backward(nu, alpha, upper=False)
    assert none is None
    lin3 = (z.unsqueeze(2) * nu3.unsqueeze(1)).sum(-1)
    assert (lin3 + c3.unsqueeze(1) <= val + 1e-12).all()


class _LeakyBase:
    """Test-only activations built from forward + relax alone: leaky ReLU, slope C below 0."""

    C = 0.1

    def forward(self, h):
        return torch.where(h >= 0, h, self.C * h)

    def _chord(self, l, u):
        unst = (l < 0) & (u > 0)
        safe = torch.where(unst, u - l, torch.ones_like(u))
        d = torch.where(unst, (u - self.C * l) / safe, torch.where(l >= 0, 1.0, self.C).to(u.dtype))
        return unst, d, torch.where(unst, (self.C - d) * l, torch.zeros_like(l))


def _leaky_classes():
    from tutorial_lib.bounds import DualActivation

    class ParallelLeaky(_LeakyBase, DualActivation):  # lower line parallel to the chord
        parallel = True

        def relax(self, l, u):
            unst, d, w = self._chord(l, u)
            return d, torch.zeros_like(l), d, w

    class AdaptiveLeaky(_LeakyBase, DualActivation):  # lower slope 1 or C: not parallel
        def relax(self, l, u):
            unst, d, w = self._chord(l, u)
            low = torch.where(unst, torch.where(u > -l, 1.0, self.C).to(u.dtype), d)
            return low, torch.zeros_like(l), d, w

    return ParallelLeaky, AdaptiveLeaky


@pytest.mark.parametrize("kind", [0, 1])
def test_a_new_activation_is_one_class(kind, monkeypatch):
    """An activation given only as forward + relax works in every method through the
    interface: dual (one pass if parallel, two otherwise) == the LP over the same lines, both
    below sampled outputs; the receptive-field path equals the dense one; the MILP refuses."""
    from tutorial_lib.bounds import dual as D, patches
    from tutorial_lib.bounds.layers import LAYER_TYPES
    from tutorial_lib.bounds.spec import prepare

    cls = _leaky_classes()[kind]
    monkeypatch.setitem(LAYER_TYPES, nn.LeakyReLU, cls)
    torch.manual_seed(0)
    act = lambda: nn.LeakyReLU(cls.C)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, 2, 1), act(), nn.Conv2d(2, 3, 3, 1, 1), act(), nn.Flatten(),
                        nn.Linear(27, 6), act(), nn.Linear(6, 3)).double()
    x = torch.rand(2, 1, 6, 6, dtype=DT)
    y = net(x).argmax(1)
    eps = 0.1
    du = dual_bounds(net, x, y, eps)
    ib = interval_bounds(net, x, y, eps)
    lp = lp_bounds(net, x, y, eps, pre_bounds=du.pre_bounds).lower
    assert torch.allclose(du.lower, lp, atol=1e-6)      # the LP over the same lines is the dual
    # the dual is tighter than the interval bound on every margin of this network (by >= 0.03; not a
    # theorem for every network, but for this seeded one, both kinds)
    assert (ib.lower <= du.lower + 1e-9).all()
    lo, hi = box(x, eps, (0.0, 1.0))
    g = torch.Generator().manual_seed(0)
    C = margin_spec(y, 3).to(DT)
    for n in range(2):
        xs = lo[n] + (hi[n] - lo[n]) * torch.rand(2000, 1, 6, 6, generator=g, dtype=DT)
        with torch.no_grad():
            vals = net(xs) @ C[n].t()
        assert (du.lower[n] <= vals.min(0).values + 1e-9).all()
        assert (ib.lower[n] <= vals.min(0).values + 1e-9).all()
    P = prepare(net, x, y, eps, None, (0.0, 1.0))
    D._pre_bounds(P)
    assert patches.applies(P.layers, 3) == cls.parallel
    if cls.parallel:
        ld, ud = D._identity_bounds(P, 3, None)
        lq, uq = patches.conv_neuron_bounds(P.layers, 3, P.lo, P.hi)
        assert torch.allclose(ld, lq, atol=1e-12) and torch.allclose(ud, uq, atol=1e-12)
        fw = estimated_dual_bounds(net, x, y, eps, proj=None)
        assert torch.allclose(fw.lower, du.lower, atol=1e-10)
    else:
        with pytest.raises(UnsupportedLayerError, match="slopes"):
            estimated_dual_bounds(net, x, y, eps, proj=None)
    opt = optimized_dual_bounds(net, x, y, eps, steps=3)      # nothing to optimise: the dual
    assert torch.allclose(opt.lower, du.lower, atol=1e-12) and opt.alpha == []
    with pytest.raises(UnsupportedLayerError, match="Leaky has no exact MILP encoding"):
        milp_bounds(net, x, y, eps)


# --------------------------------------------------------------------------- certification rule

def test_is_certified_is_strict_and_never_for_nan():
    from tutorial_lib.bounds import BoundResult, is_certified

    low = torch.tensor([[1.0, 2.0], [0.0, 1.0], [float("nan"), 1.0], [1e-12, 3.0], [-1.0, 1.0]])
    assert is_certified(low).tolist() == [True, False, False, True, False]
    assert BoundResult(lower=low, pre_bounds=[], method="dual").certified.tolist() == \
        [True, False, False, True, False]


@pytest.mark.parametrize("bias", [0.0, float("nan")])
def test_zero_or_nan_margin_bound_is_an_error(bias):
    """A network whose margins are exactly 0 (a tie) or NaN: nothing is certified, every
    example counts as a certified error, in every function that decides certification."""
    from tutorial_lib.bounds import certified_accuracy_vs_eps

    net, x, y, clip = make("small_cnn", seed=0, n=3)
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.fill_(bias)
    for fn in (dual_bounds, interval_bounds):
        low = fn(net, x, y, 0.05, clip=clip).lower
        assert (low == 0).all() if bias == 0 else torch.isnan(low).all()
        assert not fn(net, x, y, 0.05, clip=clip).certified.any()
    assert certified_error(net, x, y, 0.05, clip=clip) == 1.0
    assert certified_error(net, x, y, 0.05, clip=clip, method="interval") == 1.0
    assert float(robust_loss(net, x, y, 0.05, clip=clip)[1]) == 1.0
    assert certified_accuracy_vs_eps(net, x, y, [0.0, 0.05], clip=clip) == [0.0, 0.0]
