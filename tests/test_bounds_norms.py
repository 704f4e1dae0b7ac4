"""Bounds for l2 and l1 balls (``norm=``): soundness chain, dual norms, the box, projections.

float64 tiny random networks, as tests/test_bounds.py. For l2/l1 the dual and interval bounds
drop the pixel box and the LP/MILP keep it, so every bound <= LP <= MILP <= any point of the
ball intersected with the box still holds (by more).
"""
import math

import pytest
import torch
from torch import nn

from tutorial_lib.attacks import PGD
from tutorial_lib.attacks.l1 import SparseL1Descent
from tutorial_lib.bounds import (
    DUAL_NORMS,
    NORMS,
    certified_accuracy_vs_eps,
    certified_error,
    dual_bounds,
    estimated_dual_bounds,
    interval_bounds,
    lp_bounds,
    margin_spec,
    milp_bounds,
    optimized_dual_bounds,
    robust_loss,
)
from tutorial_lib.defenses import RobustTrainingLoss
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
    return net.eval()


NETS = {  # name: (builder, input shape, clip)
    "toy_mlp2d": (lambda: nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                                        nn.Linear(8, 3)), (2,), None),
    "pixel_mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 8),
                                        nn.ReLU(), nn.Linear(8, 3)), (1, 6, 6), (0.0, 1.0)),
    # conv first: the receptive-field (patches) path for the conv neurons
    "small_cnn": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(),
                                        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                        nn.Linear(27, 6), nn.ReLU(), nn.Linear(6, 3)), (1, 6, 6), (0.0, 1.0)),
    # Normalize before the conv: the dense (identity) path; two mixing layers before a ReLU
    "odd_cnn": (lambda: nn.Sequential(Normalize((0.4,), (0.3,)), nn.Conv2d(1, 2, 4, stride=2, padding=1),
                                      nn.ReLU(), nn.Flatten(), nn.Linear(18, 6), nn.ReLU(), nn.Linear(6, 3)),
                (1, 7, 7), (0.0, 1.0)),
    "stacked_mlp": (lambda: nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6),
                                          nn.ReLU(), nn.Linear(6, 3)), (3,), (0.0, 1.0)),
    # non-parallel relaxations (two backward passes), no MILP
    "tanh_mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, 6),
                                       nn.Sigmoid(), nn.Linear(6, 3)), (1, 6, 6), (0.0, 1.0)),
}
#: a radius per norm and input size where some bounds are positive and some negative
EPS = {("l2", 2): 0.3, ("l2", 3): 0.2, ("l2", 36): 0.3, ("l2", 49): 0.3,
       ("l1", 2): 0.4, ("l1", 3): 0.3, ("l1", 36): 0.6, ("l1", 49): 0.6}
#: the MILP for l1 (HiGHS); the CNNs' MILPs take too long for a quick test
MILP_NETS = ("toy_mlp2d", "pixel_mlp", "stacked_mlp")


def make(name, seed=0, n=3):
    build, shape, clip = NETS[name]
    net = _init(build().to(DT), seed)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(n, *shape, generator=g, dtype=DT)
    if clip is None:
        x = 2 * x - 1
    with torch.no_grad():
        y = net(x).argmax(1)  # correctly classified: positive margins at x
    return net, x, y, clip


def tol(v):
    return 1e-6 * (1 + v.abs())


def lp_norm(d, norm):
    d = d.flatten(1)
    return {"l2": d.norm(dim=1), "l1": d.abs().sum(1), "linf": d.abs().amax(1)}[norm]


def ball_samples(x, eps, norm, clip, k=1500, seed=0):
    """k points per example of the ball intersected with the box, (N, k, *shape): half inside,
    half on the sphere (l1: a third at the vertices +- eps e_i), clamped to the box (clamping
    towards x keeps them in the ball)."""
    g = torch.Generator().manual_seed(seed)
    N, n = x.shape[0], x[0].numel()
    if norm == "l2":
        d = torch.randn(N, k, n, generator=g, dtype=DT)
        d = d / d.norm(dim=-1, keepdim=True)
    else:
        d = -torch.log(torch.rand(N, k, n, generator=g, dtype=DT))
        d = d * (2 * torch.randint(0, 2, (N, k, n), generator=g) - 1)
        d = d / d.abs().sum(-1, keepdim=True)
        idx = torch.randint(0, n, (N, k // 3), generator=g)
        vert = torch.zeros(N, k // 3, n, dtype=DT).scatter_(2, idx[..., None], 1.0)
        d[:, :k // 3] = vert * (2 * torch.randint(0, 2, (N, k // 3, 1), generator=g) - 1)
    r = torch.rand(N, k, 1, generator=g, dtype=DT) ** (1.0 / n)
    r[:, k // 2:] = 1.0
    xs = x.flatten(1)[:, None] + eps * r * d
    if clip is not None:
        xs = xs.clamp(*clip)
    return xs.view(N, k, *x.shape[1:])


def spec_values(net, xs, y):
    """The margins z_y - z_j (j != y) at points xs (N, k, *shape), (N, k, K-1)."""
    N, k = xs.shape[:2]
    with torch.no_grad():
        logits = net(xs.reshape(N * k, *xs.shape[2:])).view(N, k, -1)
    C = margin_spec(y, logits.shape[-1]).to(DT)
    return torch.einsum("nmk,nsk->nsm", C, logits)


def attack(norm, eps, clip):
    if norm == "l2":
        return PGD(eps, norm="l2", steps=40, restarts=2, clip=clip)
    return SparseL1Descent(eps, steps=40, alpha=eps / 5, q=50.0, random_start=True, clip=clip)


# --------------------------------------------------------------------------- soundness chain

@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("name", list(NETS))
def test_soundness_chain(name, norm):
    """interval, dual <= optimised dual <= LP (<= MILP for l1) <= attacks and samples."""
    net, x, y, clip = make(name, seed=3)
    eps = EPS[(norm, x[0].numel())]
    ibp = interval_bounds(net, x, y, eps, clip=clip, norm=norm)
    dual = dual_bounds(net, x, y, eps, clip=clip, norm=norm)
    opt = optimized_dual_bounds(net, x, y, eps, clip=clip, norm=norm, steps=15)
    lp = lp_bounds(net, x, y, eps, clip=clip, norm=norm)
    assert {r.norm for r in (ibp, dual, opt, lp)} == {norm}
    assert torch.isfinite(dual.lower).all() and torch.isfinite(ibp.lower).all()
    assert (dual.lower <= opt.lower + 1e-12).all()
    assert (opt.lower <= lp.lower + tol(lp.lower)).all()
    best = lp.lower
    if norm == "l1" and name in MILP_NETS:
        milp = milp_bounds(net, x, y, eps, clip=clip, norm=norm)
        assert (lp.lower <= milp.lower + tol(milp.lower)).all()
        assert (ibp.lower <= milp.lower + tol(milp.lower)).all()
        # the worst-case inputs lie in the ball and the box and attain the optimum
        xw = milp.x_worst.flatten(0, 1)
        x_rep = x.repeat_interleave(milp.x_worst.shape[1], 0)
        assert (lp_norm(xw - x_rep, "l1") <= eps * (1 + 1e-9)).all()
        if clip is not None:
            assert xw.min() >= clip[0] and xw.max() <= clip[1]
        at = spec_values(net, milp.x_worst, y)  # (N, m, m): row j at its own worst input
        attained = torch.diagonal(at, dim1=1, dim2=2)
        assert torch.allclose(attained, milp.info["attained"], atol=1e-6, rtol=1e-6)
        best = milp.info["attained"]
    # everything below the margins of the attack's point and of samples of the ball
    x_adv = attack(norm, eps, clip)(net, x, y)
    assert (lp_norm(x_adv - x, norm) <= eps * (1 + 1e-6)).all()
    found = torch.cat([spec_values(net, x_adv[:, None], y), spec_values(net, ball_samples(x, eps, norm, clip), y)], 1)
    found = found.min(1).values
    for r in (ibp, dual, opt, lp):
        assert (r.lower <= found + tol(found)).all(), r.method
    assert (best <= found + tol(found)).all()
    # the bounds are not vacuous: the dual is within reach of what is attained
    assert (dual.lower > -100).all()


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("name", ["pixel_mlp", "small_cnn", "tanh_mlp"])
def test_dual_below_lp_at_equal_pre_bounds(name, norm):
    """The LP is the primal of the dual at the same pre-activation bounds; with the box kept in
    the LP and dropped in the dual the LP is higher still. Also with interval-intersected bounds."""
    net, x, y, clip = make(name, seed=5)
    eps = EPS[(norm, x[0].numel())]
    for kw in ({}, {"intersect_ibp": True}):
        dual = dual_bounds(net, x, y, eps, clip=clip, norm=norm, **kw)
        lp = lp_bounds(net, x, y, eps, clip=clip, norm=norm, pre_bounds=dual.pre_bounds)
        assert (dual.lower <= lp.lower + tol(lp.lower)).all()
        # without the box the LP's input set is the dual's: LP >= dual still, and <= the LP with the box
        # at the same pre-activation bounds (intersect_ibp's used the box clip: they do not hold on
        # the whole ball, so there the box-free LP gets the box-free dual's own)
        free = dual if not kw else dual_bounds(net, x, y, eps, clip=None, norm=norm, **kw)
        lp_free = lp_bounds(net, x, y, eps, clip=None, norm=norm, pre_bounds=free.pre_bounds)
        assert (free.lower <= lp_free.lower + tol(lp_free.lower)).all()
        if not kw:
            assert (lp_free.lower <= lp.lower + tol(lp.lower)).all()


def test_ball_bounds_are_tighter_than_the_linf_ball_that_contains_them():
    """The l2 and l1 balls of radius eps lie in the l_inf ball of radius eps: without the box the
    dual's input term eps ||nu||_2 and eps ||nu||_inf are <= eps ||nu||_1, layer by layer."""
    net, x, y, _ = make("pixel_mlp", seed=7)
    linf = dual_bounds(net, x, y, 0.05, clip=None).lower
    for norm in ("l2", "l1"):
        assert (dual_bounds(net, x, y, 0.05, clip=None, norm=norm).lower >= linf - 1e-12).all()
    l2 = dual_bounds(net, x, y, 0.05, clip=None, norm="l2").lower
    assert (dual_bounds(net, x, y, 0.05, clip=None, norm="l1").lower >= l2 - 1e-12).all()


# --------------------------------------------------------------------------- dual norms

def _dense_rows(module, shape):
    """The matrix of a linear map (bias removed) on inputs of ``shape``: (n_out, n_in)."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=DT).view(n, *shape)
    with torch.no_grad():
        out = module(eye) - module(torch.zeros(1, *shape, dtype=DT))
    return out.reshape(n, -1).t()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", ["linear", "normalize_linear"])
def test_one_affine_layer_has_the_closed_form(arch, norm):
    """A network without activations: every method gives min over the ball of c . (A x + b) =
    c . (A x0 + b) - eps ||A^T c||_* with the dual norm (l1 for linf, l2 for l2, l_inf for l1),
    the box dropped (clip=None; for l2/l1 the dual and interval drop it anyway)."""
    if arch == "linear":
        net, shape = _init(nn.Sequential(nn.Linear(5, 4)).to(DT), 1), (5,)
    else:
        net = _init(nn.Sequential(Normalize((0.4,), (0.3,)), nn.Flatten(), nn.Linear(16, 4)).to(DT), 2)
        shape = (1, 4, 4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, *shape, generator=g, dtype=DT)
    C = torch.randn(3, 4, generator=g, dtype=DT)
    eps = torch.tensor([0.3, 0.7], dtype=DT)  # one radius per example
    A = _dense_rows(net, shape)  # (4, n)
    with torch.no_grad():
        z0 = net(x)
    want = z0 @ C.t() - eps[:, None] * {"linf": lambda v: v.abs().sum(-1), "l2": lambda v: v.norm(dim=-1),
                                        "l1": lambda v: v.abs().amax(-1)}[norm](C @ A)[None]
    assert DUAL_NORMS[norm] == {"linf": "l1", "l2": "l2", "l1": "linf"}[norm]
    for fn in (dual_bounds, interval_bounds, lp_bounds):
        got = fn(net, x, None, eps, spec=C, clip=None, norm=norm).lower
        t = 1e-12 if fn is not lp_bounds else 1e-7
        assert torch.allclose(got, want, atol=t, rtol=t), (fn.__name__, got, want)
    if norm != "linf":  # the box is dropped by the dual (same value with clip), kept by the LP
        assert torch.allclose(dual_bounds(net, x, None, eps, spec=C, norm=norm).lower, want, atol=1e-12)
        assert (lp_bounds(net, x, None, eps, spec=C, norm=norm).lower >= want - 1e-7).all()
    if norm != "l2":
        got = milp_bounds(net, x, None, eps, spec=C, clip=None, norm=norm).lower
        assert torch.allclose(got, want, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("name", ["small_cnn", "odd_cnn", "pixel_mlp"])
def test_first_activation_bounds_are_the_exact_image_of_the_ball(name, norm):
    """The first activation's input (one affine map A x + b of the input, conv or dense, padding
    included) has exact bounds A x0 + b +- eps ||A_j||_*, in the dual, the interval bounds and the
    projected pass; the conv's receptive-field path equals this dense formula."""
    net, x, y, clip = make(name, seed=2)
    first = next(i for i, m in enumerate(net) if isinstance(m, (nn.ReLU, nn.Tanh)))
    prefix = net[:first]
    A = _dense_rows(prefix, x.shape[1:])
    with torch.no_grad():
        z0 = prefix(x).flatten(1)
    r = 0.3 * {"l2": A.norm(dim=1), "l1": A.abs().amax(1)}[norm]
    for fn, kw in ((dual_bounds, {}), (interval_bounds, {}), (estimated_dual_bounds, {"proj": None})):
        lo, up = fn(net, x, y, 0.3, clip=clip, norm=norm, **kw).pre_bounds[0]
        assert torch.allclose(lo.flatten(1), z0 - r, atol=1e-12) and torch.allclose(up.flatten(1), z0 + r, atol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_receptive_field_path_equals_the_dense_pass(norm):
    """Deeper conv neurons: the receptive-field bounds (window dual norm, padding masked) equal
    the dense identity pass."""
    from tutorial_lib.bounds import dual as D, patches
    from tutorial_lib.bounds.spec import prepare

    net, x, y, clip = make("small_cnn", seed=4)
    P = prepare(net, x, y, 0.3, None, clip, norm)
    D._pre_bounds(P)
    assert patches.applies(P.layers, 3)
    ld, ud = D._identity_bounds(P, 3, None)
    lq, uq = patches.conv_neuron_bounds(P.layers, 3, P.lo, P.hi, budget=100, ball=P.ball)  # chunked
    assert torch.allclose(ld, lq, atol=1e-12) and torch.allclose(ud, uq, atol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_exact_forward_pass_equals_the_dual(norm):
    net, x, y, clip = make("small_cnn", seed=6)
    fwd = estimated_dual_bounds(net, x, y, 0.3, clip=clip, norm=norm, proj=None)
    dual = dual_bounds(net, x, y, 0.3, clip=clip, norm=norm)
    for (lf, uf), (ld, ud) in zip(fwd.pre_bounds, dual.pre_bounds):
        assert torch.allclose(lf, ld, atol=1e-12) and torch.allclose(uf, ud, atol=1e-12)
    assert torch.allclose(fwd.lower, dual.lower, atol=1e-12)


# --------------------------------------------------------------------------- l_inf unchanged

def test_linf_is_the_default_bit_for_bit():
    net, x, y, clip = make("small_cnn", seed=8, n=2)
    for fn, kw in ((interval_bounds, {}), (dual_bounds, {}), (dual_bounds, {"intersect_ibp": True}),
                   (optimized_dual_bounds, {"steps": 3}), (lp_bounds, {}), (milp_bounds, {})):
        a, b = fn(net, x, y, 0.05, clip=clip, **kw), fn(net, x, y, 0.05, clip=clip, norm="linf", **kw)
        assert torch.equal(a.lower, b.lower) and a.norm == b.norm == "linf", fn.__name__
        for (la, ua), (lb, ub) in zip(a.pre_bounds, b.pre_bounds):
            assert torch.equal(la, lb) and torch.equal(ua, ub)
    a = estimated_dual_bounds(net, x, y, 0.05, clip=clip, proj=20, generator=torch.Generator().manual_seed(1))
    b = estimated_dual_bounds(net, x, y, 0.05, clip=clip, proj=20, generator=torch.Generator().manual_seed(1),
                              norm="linf")
    assert torch.equal(a.lower, b.lower)
    assert torch.equal(robust_loss(net, x, y, 0.05, clip=clip)[0],
                       robust_loss(net, x, y, 0.05, clip=clip, norm="linf")[0])


# --------------------------------------------------------------------------- projections

def test_gaussian_projections_estimate_the_l2_input_term():
    """With every first-layer ReLU active (no activation sources), the second layer's bounds are
    x0-terms +- eps ||a_j||_2, estimated with k = 1000 Gaussian projections by the root mean
    square: relative standard deviation 1 / sqrt(2k) = 2.2%; every radius within 12% (5 sd),
    their mean error under 4%; the centres are exact."""
    net = _init(nn.Sequential(nn.Flatten(), nn.Linear(36, 20), nn.ReLU(), nn.Linear(20, 12), nn.ReLU(),
                              nn.Linear(12, 3)).to(DT), 9)
    with torch.no_grad():
        net[1].bias.add_(20.0)  # all active for eps = 0.3
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 6, 6, generator=g, dtype=DT)
    exact = estimated_dual_bounds(net, x, None, 0.3, spec=torch.eye(3, dtype=DT), norm="l2", proj=None)
    est = estimated_dual_bounds(net, x, None, 0.3, spec=torch.eye(3, dtype=DT), norm="l2", proj=1000,
                                generator=torch.Generator().manual_seed(1))
    (l0, u0), (l1, u1) = exact.pre_bounds
    assert (l0 > 0).all()
    (e0l, e0u), (e1l, e1u) = est.pre_bounds
    assert torch.equal(e0l, l0) and torch.equal(e0u, u0)  # the first layer is exact
    rad, rad_est = (u1 - l1) / 2, (e1u - e1l) / 2
    rel = (rad_est - rad).abs() / rad
    assert rel.max() < 0.12 and rel.mean() < 0.04, (rel.max(), rel.mean())
    assert torch.allclose((e1u + e1l) / 2, (u1 + l1) / 2, atol=1e-12)
    # the exact forward pass is the dual network
    assert torch.allclose(exact.lower, dual_bounds(net, x, None, 0.3, spec=torch.eye(3, dtype=DT), norm="l2").lower,
                          atol=1e-12)


def test_l2_projections_in_training():
    """With unstable ReLUs (Cauchy terms too) the estimate stays close at k = 1000, is random,
    differentiable, and RobustTrainingLoss passes the norm through."""
    net, x, y, clip = make("pixel_mlp", seed=11, n=4)
    exact = dual_bounds(net, x, y, 0.3, clip=clip, norm="l2")
    est = estimated_dual_bounds(net, x, y, 0.3, clip=clip, norm="l2", proj=1000,
                                generator=torch.Generator().manual_seed(0))
    for (le, ue), (lo, up) in zip(est.pre_bounds, exact.pre_bounds):
        assert ((le - lo).abs() + (ue - up).abs()).sum() / (2 * (up - lo).sum()) < 0.1
    assert est.method == "dual-proj" and est.norm == "l2"
    with pytest.raises(ValueError, match="not certificates"):
        _ = est.certified
    loss_fn = RobustTrainingLoss(eps=0.3, proj=50, norm="l2", clip=clip)
    torch.manual_seed(0)
    loss, logits = loss_fn(net, x, y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())
    le, _ = robust_loss(net, x, y, 0.3, clip=clip, norm="l2")
    assert abs(float(loss.detach()) - float(le.detach())) < 0.2 * float(le.detach())
    # exact l1 training loss, with gradients
    net.zero_grad()
    loss, _ = RobustTrainingLoss(eps=0.5, proj=None, norm="l1", clip=clip)(net, x, y)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


# --------------------------------------------------------------------------- certificates

@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_certified_error_and_curve(norm):
    net, x, y, clip = make("small_cnn", seed=13, n=8)
    eps_values = [0.0, 0.1, 0.3, 0.6]
    curve = certified_accuracy_vs_eps(net, x, y, eps_values, clip=clip, batch_size=3, norm=norm)
    exact = [1 - certified_error(net, x, y, e, clip=clip, norm=norm) for e in eps_values]
    assert all(c <= e + 1e-12 for c, e in zip(curve, exact)) and curve[0] == exact[0] == 1.0
    assert exact[-1] < 1.0  # not everything is certified at the largest radius
    _, err = robust_loss(net, x, y, 0.3, clip=clip, norm=norm)
    assert float(err) == certified_error(net, x, y, 0.3, clip=clip, norm=norm)
    assert certified_error(net, x, y, 0.3, clip=clip, method="interval", norm=norm) >= float(err)
    assert certified_error(net, x, y, 0.3, clip=clip, method="dual-opt", norm=norm) <= float(err)


def test_shipped_model_certificates_are_never_broken(mnist_test):
    """The shipped (l_inf-trained) MNIST model: certified in l2 at 0.15 and l1 at 0.2 for most
    of a few test images; PGD-l2 and SLIDE break none of the certified ones and find margins
    above the certified lower bounds."""
    from tutorial_lib.attacks import margin
    from tutorial_lib.checkpoints import load_checkpoint

    model, _ = load_checkpoint("mnist_small_robust", device="cpu")
    x, y = mnist_test[0][:8], mnist_test[1][:8]
    for norm, eps, atk in (("l2", 0.15, PGD(0.15, norm="l2", steps=30, restarts=2)),
                           ("l1", 0.2, SparseL1Descent(0.2, steps=30, q=95.0))):
        with torch.no_grad():
            low = dual_bounds(model, x, y, eps, norm=norm).lower
        cert = (low > 0).all(1)
        assert cert.float().mean() >= 0.5, norm
        x_adv = atk(model, x[cert], y[cert])
        with torch.no_grad():
            m = margin(model(x_adv), y[cert])
        assert (m > 0).all()
        assert (m >= low[cert].min(1).values - 1e-4).all()


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", ["l3", "Linf", "L2", "inf", None, 2, "l_inf"])
def test_bad_norm_names_raise(bad):
    net, x, y, clip = make("pixel_mlp", n=1)
    for fn in (interval_bounds, dual_bounds, optimized_dual_bounds, lp_bounds, milp_bounds):
        with pytest.raises(ValueError, match="norm"):
            fn(net, x, y, 0.1, clip=clip, norm=bad)
    with pytest.raises(ValueError, match="norm"):
        estimated_dual_bounds(net, x, y, 0.1, clip=clip, norm=bad, proj=None)
    with pytest.raises(ValueError, match="norm"):
        robust_loss(net, x, y, 0.1, clip=clip, norm=bad)
    with pytest.raises(ValueError, match="norm"):
        certified_error(net, x, y, 0.1, clip=clip, norm=bad)
    with pytest.raises(ValueError, match="norm"):
        certified_accuracy_vs_eps(net, x, y, [0.1], clip=clip, norm=bad)
    with pytest.raises(ValueError, match="norm"):
        RobustTrainingLoss(0.1, norm=bad)


def test_refusals_name_why():
    net, x, y, clip = make("pixel_mlp", n=1)
    with pytest.raises(ValueError, match="mixed-integer second-order cone"):
        milp_bounds(net, x, y, 0.1, clip=clip, norm="l2")
    for call in (lambda: estimated_dual_bounds(net, x, y, 0.1, clip=clip, norm="l1", proj=10),
                 lambda: robust_loss(net, x, y, 0.1, clip=clip, norm="l1", proj=10),
                 lambda: RobustTrainingLoss(0.1, proj=10, norm="l1")):
        with pytest.raises(ValueError, match="projections"):
            call()
    with pytest.raises(ValueError, match="per-coordinate"):
        dual_bounds(net, x, y, torch.full_like(x, 0.1), clip=clip, norm="l2")
    with pytest.raises(ValueError, match=">= 0"):
        dual_bounds(net, x, y, -0.1, clip=clip, norm="l1")
