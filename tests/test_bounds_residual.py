"""Residual networks (tutorial_lib.models.Residual) in the main bound methods: the node list
(a chain without blocks, join nodes with them), an exact flat rewrite of a residual MLP at the
input, soundness against PGD and dense sampling, dual vs interval, the container and the
refusals. Float64 tiny networks throughout. The other methods (LP/MILP, optimised dual,
projections, l2/l1) on blocks: test_bounds_graph.py."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tutorial_lib.attacks import PGD
from tutorial_lib.bounds import UnsupportedLayerError, dual_bounds, interval_bounds
from tutorial_lib.bounds.joins import DualAdd
from tutorial_lib.bounds.layers import build_layers, is_chain
from tutorial_lib.models import Residual, cifar_resnet, mnist_residual

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def _init(net, seed, gain=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT) * gain / fan_in ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=DT) * 0.1)
    return net.eval()


def _flat_cnn(seed=0):
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, 5)).to(DT)
    return _init(net, seed)


def _res_mlp(seed, d=6, h=10, k=4, blocks=2):
    layers = [nn.Linear(d, h), nn.ReLU()]
    for _ in range(blocks):
        layers += [Residual(nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h))), nn.ReLU()]
    layers += [nn.Linear(h, k)]
    return _init(nn.Sequential(*layers).to(DT), seed)


def _res_cnn(seed):
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(3, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)),
                 nn.Conv2d(3, 4, 2, stride=2)), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 5)).to(DT)
    return _init(net, seed)


def _data(shape, n, seed, k):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g, dtype=DT) * 0.8 + 0.1
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _margins(model, x, y):
    with torch.no_grad():
        z = model(x)
    K = z.shape[1]
    rows = [z[:, [j]] for j in range(K)]
    m = z.gather(1, y[:, None]) - torch.cat(rows, 1)
    keep = torch.ones_like(m, dtype=torch.bool)
    keep[torch.arange(len(y)), y] = False
    return m[keep].view(len(y), K - 1)


def _dual(net, x, y, eps, **kw):
    return dual_bounds(net, x, y, eps, **kw).lower


def _ibp(net, x, y, eps, **kw):
    return interval_bounds(net, x, y, eps, **kw).lower


# (1) the node list and the former entry points ------------------------------------------
def test_node_list_is_a_chain_without_blocks_and_a_graph_with_them():
    flat = _flat_cnn()
    layers, _ = build_layers(flat, torch.zeros(1, 1, 8, 8, dtype=DT))
    assert is_chain(layers) and [n.inputs for n in layers] == [(i,) for i in range(len(layers))]
    net = _res_mlp(0, blocks=1)  # Linear, ReLU, [Linear, ReLU, Linear, +], ReLU, Linear
    layers, out = build_layers(net, torch.zeros(1, 6, dtype=DT))
    assert out == (4,) and not is_chain(layers)
    assert isinstance(layers[5], DualAdd) and layers[5].inputs == (5, 2)  # body output + block input
    assert [n.inputs for n in layers] == [(0,), (1,), (2,), (3,), (4,), (5, 2), (6,), (7,)]


# (2) an exact flat rewrite -------------------------------------------------------------------
def test_residual_at_input_equals_flat_rewrite():
    """y = W2 relu(W1 x + b1) + b2 + x with x >= 0 (the pixel box) is exactly
    [W2, I, -I] relu([W1; I; -I] x + [b1; 0; 0]) + b2: relu(x) = x and relu(-x) = 0 are stable
    neurons on the box, so the relaxations (and the bounds) coincide."""
    d, h, k = 5, 7, 4
    W1 = nn.Linear(d, h)
    W2 = nn.Linear(h, d)
    head = [nn.ReLU(), nn.Linear(d, 6), nn.ReLU(), nn.Linear(6, k)]
    res = _init(nn.Sequential(Residual(nn.Sequential(W1, nn.ReLU(), W2)), *head).to(DT), 5)
    A = nn.Linear(d, h + 2 * d).to(DT)
    B = nn.Linear(h + 2 * d, d).to(DT)
    eye = torch.eye(d, dtype=DT)
    with torch.no_grad():
        A.weight.copy_(torch.cat([W1.weight, eye, -eye]))
        A.bias.copy_(torch.cat([W1.bias, torch.zeros(2 * d, dtype=DT)]))
        B.weight.copy_(torch.cat([W2.weight, eye, -eye], 1))
        B.bias.copy_(W2.bias)
    flat = nn.Sequential(A, nn.ReLU(), B, *head).eval()
    x, y = _data((d,), 6, 4, k)
    torch.testing.assert_close(res(x), flat(x))
    for eps in (0.05, 0.2):
        torch.testing.assert_close(_dual(res, x, y, eps), _dual(flat, x, y, eps),
                                   rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(_ibp(res, x, y, eps),
                                   _ibp(flat, x, y, eps), rtol=1e-6, atol=1e-6)


# (3) soundness ----------------------------------------------------------------------------
def _empirical_min(model, x, y, eps, n_samples, seed):
    """Min margin over PGD (two restarts) and dense uniform samples of the ball within [0, 1]."""
    adv = PGD(eps, steps=30, restarts=2, seed=seed)(model, x, y)
    best = _margins(model, adv, y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_samples // 200):
        xs = x.unsqueeze(1) + eps * (2 * torch.rand(x.shape[0], 200, *x.shape[1:], generator=g, dtype=DT) - 1)
        xs = xs.clamp(0, 1)
        # corners are where the extremes of near-linear nets sit: include sign vectors
        corner = (x.unsqueeze(1) + eps * torch.sign(torch.randn(xs.shape, generator=g, dtype=DT))).clamp(0, 1)
        for pts in (xs, corner):
            flat = pts.reshape(-1, *x.shape[1:])
            m = _margins(model, flat, y.repeat_interleave(200)).view(x.shape[0], 200, -1)
            best = torch.minimum(best, m.min(1).values)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_residual_mlp(seed):
    net = _res_mlp(seed)
    x, y = _data((6,), 5, 10 + seed, 4)
    for eps in (0.02, 0.1):
        emp = _empirical_min(net, x, y, eps, 2000, seed)
        assert (_dual(net, x, y, eps) <= emp + 1e-9).all()
        assert (_ibp(net, x, y, eps) <= emp + 1e-9).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_sound_residual_cnn(seed):
    net = _res_cnn(seed)
    x, y = _data((1, 8, 8), 3, 20 + seed, 5)
    for eps in (0.01, 0.05):
        emp = _empirical_min(net, x, y, eps, 1000, seed)
        dual = _dual(net, x, y, eps)
        assert (dual <= emp + 1e-9).all()
        assert (_ibp(net, x, y, eps) <= emp + 1e-9).all()


def test_eps_zero_is_exact():
    net = _res_cnn(3)
    x, y = _data((1, 8, 8), 3, 7, 5)
    m = _margins(net, x, y)
    torch.testing.assert_close(_dual(net, x, y, 0.0), m)
    torch.testing.assert_close(_ibp(net, x, y, 0.0), m)


# (4) dual tighter than interval -------------------------------------------------------------
@pytest.mark.parametrize("make,shape,k", [(_res_mlp, (6,), 4), (_res_cnn, (1, 8, 8), 5)])
def test_dual_tighter_than_interval(make, shape, k):
    net = make(4)
    x, y = _data(shape, 6, 30, k)
    eps = 0.02
    dual, ibp = _dual(net, x, y, eps), _ibp(net, x, y, eps)
    assert dual.mean() > ibp.mean()


def test_dual_is_differentiable():
    net = _res_mlp(0)
    x, y = _data((6,), 3, 1, 4)
    _dual(net, x, y, 0.05).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# (5) the container and the builders ---------------------------------------------------------
def test_residual_forward():
    body = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)).to(DT)
    short = nn.Linear(4, 4).to(DT)
    x = torch.randn(3, 4, dtype=DT)
    torch.testing.assert_close(Residual(body)(x), body(x) + x)
    torch.testing.assert_close(Residual(body, short)(x), body(x) + short(x))
    with pytest.raises(TypeError):
        Residual(lambda t: t)


def test_builders_shapes():
    assert mnist_residual()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert cifar_resnet()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    blocks = [m for m in cifar_resnet().modules() if isinstance(m, Residual)]
    assert [b.body[0].out_channels for b in blocks] == [16, 16, 32, 64]
    assert [b.shortcut.stride for b in blocks] == [(1, 1), (1, 1), (2, 2), (2, 2)]
    assert Residual(nn.Identity()).shortcut is None


def _ibp_by_hand(net, lo, hi, C):
    """Interval propagation written directly from the modules of mnist_residual (not through the
    library's node list): centre/radius through each Conv2d/Linear (radius through |W|), ReLU
    clamps, the identity-shortcut block adds its input box to its body's; the spec C (N, m, K) is
    folded into the last Linear. Returns (lower (N, m), the box of every ReLU's input in order)."""
    pre = []

    def run(mods, lb, ub):
        for m in mods:
            if isinstance(m, nn.ReLU):
                pre.append((lb, ub))
                lb, ub = lb.clamp(min=0), ub.clamp(min=0)
            elif isinstance(m, Residual):
                assert m.shortcut is None
                bl, bu = run(m.body, lb, ub)
                lb, ub = bl + lb, bu + ub
            elif isinstance(m, nn.Flatten):
                lb, ub = m(lb), m(ub)
            else:
                c, r = (ub + lb) / 2, (ub - lb) / 2
                if isinstance(m, nn.Conv2d):
                    r = F.conv2d(r, m.weight.abs(), None, m.stride, m.padding)
                else:
                    r = r @ m.weight.abs().t()
                c = m(c)
                lb, ub = c - r, c + r
        return lb, ub

    with torch.no_grad():
        lb, ub = run(net[:-1], lo, hi)
        c, r = (ub + lb) / 2, (ub - lb) / 2
        CW = C @ net[-1].weight
        low = (CW @ c[..., None]).squeeze(-1) - (CW.abs() @ r[..., None]).squeeze(-1) + C @ net[-1].bias
    return low, pre


def test_mnist_residual_bounds_run():
    """The interval bounds on mnist_residual (the dual takes seconds on this size) against references
    computed without the library: the forward margins at eps=0, a hand-written interval propagation
    (every pre-activation box and the bound), and PGD + sampling in the ball (the bound below every
    margin found, every activation found inside its box). Labels are not the predictions."""
    net = _init(mnist_residual().to(DT), 0)
    x, y = _data((1, 28, 28), 3, 5, 10)
    C = -torch.eye(10, dtype=DT)[None].repeat(3, 1, 1)
    C[torch.arange(3), :, y] += 1
    keep = torch.ones(3, 10, dtype=torch.bool)
    keep[torch.arange(3), y] = False
    C = C[keep].view(3, 9, 10)  # the margins z_y - z_j, j != y
    clean = _margins(net, x, y)
    assert (clean < 0).any() and (clean > 0).any()
    torch.testing.assert_close(_ibp(net, x, y, 0.0), clean, rtol=1e-12, atol=1e-12)
    for eps in (0.0, 0.003):
        res = interval_bounds(net, x, y, eps)
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        low, pre = _ibp_by_hand(net, lo, hi, C)
        assert len(res.pre_bounds) == len(pre) == 5
        for (lb, ub), (lh, uh) in zip(res.pre_bounds, pre):
            torch.testing.assert_close(lb, lh, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(ub, uh, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(res.lower, low, rtol=1e-10, atol=1e-10)
    # soundness in the ball (eps = 0.003): attacks and samples stay above the bound and inside the boxes
    emp = _empirical_min(net, x, y, eps, 400, 0)
    assert (emp < clean).all()  # the attack did move the margins
    assert (res.lower <= emp + 1e-9).all()
    g = torch.Generator().manual_seed(1)
    base = x.repeat_interleave(32, 0)
    pts = torch.cat([PGD(eps, steps=30, seed=0)(net, x, y),
                     (base + eps * (2 * torch.rand(base.shape, generator=g, dtype=DT) - 1)).clamp(0, 1)])
    idx = torch.cat([torch.arange(3), torch.arange(3).repeat_interleave(32)])  # the example each point is around
    acts = []
    hooks = [m.register_forward_hook(lambda m, i, o: acts.append(i[0].detach()))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(pts)
    for h in hooks:
        h.remove()
    assert len(acts) == 5
    for a, (lb, ub) in zip(acts, res.pre_bounds):
        assert (a >= lb[idx] - 1e-9).all() and (a <= ub[idx] + 1e-9).all()


# (6) refusals ---------------------------------------------------------------------------
def test_refuses_bad_inputs():
    net = _res_mlp(0)
    x, y = _data((6,), 2, 0, 4)
    bad = x.clone()
    bad[0, 0] = float("nan")
    for f in (dual_bounds, interval_bounds):
        with pytest.raises(ValueError):
            f(net, bad, y, 0.1)
        with pytest.raises(ValueError):
            f(net, x, y, -0.1)
        with pytest.raises(ValueError):
            f(net, x, y.float(), 0.1)
        with pytest.raises(ValueError):
            f(net, x.float(), y, 0.1)  # dtype mismatch
        with pytest.raises(ValueError):
            f(net, x + 2, y, 0.1)  # outside the box


def test_refuses_unknown_modules_and_hooks():
    x, y = _data((6,), 2, 0, 4)
    net = _init(nn.Sequential(nn.Linear(6, 6), Residual(nn.Sequential(nn.Linear(6, 6), nn.ELU())),
                              nn.Linear(6, 4)).to(DT), 0)
    with pytest.raises(UnsupportedLayerError, match="ELU"):
        _dual(net, x, y, 0.1)

    class MyRes(Residual):
        def forward(self, t):
            return 2 * super().forward(t)

    net = _init(nn.Sequential(nn.Linear(6, 6), MyRes(nn.Sequential(nn.Linear(6, 6))), nn.Linear(6, 4)).to(DT), 0)
    with pytest.raises(UnsupportedLayerError, match="overrides forward"):
        _dual(net, x, y, 0.1)

    net = _res_mlp(0)
    h = net[2].body[1].register_forward_hook(lambda m, i, o: o * 2)
    try:
        with pytest.raises(UnsupportedLayerError, match="hook"):
            _dual(net, x, y, 0.1)
    finally:
        h.remove()
    with pytest.raises(UnsupportedLayerError):
        _ibp(Residual(nn.Linear(6, 6)).to(DT), x, y, 0.1)
    with pytest.raises(ValueError, match="last layer"):
        _dual(nn.Sequential(nn.Linear(6, 4), nn.ReLU()).to(DT), x, y, 0.1)
    nan_net = _res_mlp(0)
    with torch.no_grad():
        nan_net[0].weight[0, 0] = float("nan")
    with pytest.warns(UserWarning, match="non-finite"):  # NaN bounds: never a certificate
        assert _dual(nan_net, x, y, 0.1).isnan().all()


def test_sigmoid_tanh_bodies():
    """Non-parallel relaxations (chord/tangent lines) go through the same pull-back: sound in a
    block, and tighter than intervals."""
    x, y = _data((6,), 4, 3, 4)
    net = _init(nn.Sequential(nn.Linear(6, 8), nn.Tanh(),
                              Residual(nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8))), nn.Tanh(),
                              nn.Linear(8, 4)).to(DT), 3)
    for eps in (0.02, 0.1):
        emp = _empirical_min(net, x, y, eps, 2000, 0)
        dual, ibp = _dual(net, x, y, eps), _ibp(net, x, y, eps)
        assert (dual <= emp + 1e-9).all() and (ibp <= emp + 1e-9).all()
        assert dual.mean() > ibp.mean()
