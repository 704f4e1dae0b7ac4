"""Every bound method on networks with residual and dense-skip blocks (tutorial_lib.bounds on
models.Residual / models.DenseSkip): the soundness chain against the MILP and attacks (ReLU),
sampling and attacks (sigmoid, tanh), l2/l1 balls, exact rewrites as one wide Sequential, the
forward pass of the projections against the backward pass, certified error and the robust loss
on mnist_residual, and the guards. Float64 tiny networks unless said otherwise."""
import copy

import pytest
import torch
import torch.nn.functional as F
from bound_checks import attack_min
from torch import nn

from tutorial_lib.attacks import PGD
from tutorial_lib.attacks.l1 import SparseL1Descent
from tutorial_lib.bounds import (
    UnsupportedLayerError,
    certified_bounds,
    certified_error,
    dual_bounds,
    estimated_dual_bounds,
    interval_bounds,
    is_certified,
    lp as lp_mod,
    lp_bounds,
    margin_spec,
    margins_to_logits,
    milp_bounds,
    node_bounds,
    optimized_dual_bounds,
    robust_loss,
)
from tutorial_lib.bounds.spec import prepare
from tutorial_lib.defenses import RobustTrainingLoss
from tutorial_lib.models import DenseSkip, Residual, mnist_residual

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def row_attack(net, x, y, lo, hi):
    """The attack's smallest margin z_y - z_j of every row, (N, K-1), over the box [lo, hi]."""
    return attack_min(net, margin_spec(y, 3).to(DT), lo, hi, steps=50, restarts=3)


def _init(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g, dtype=DT))
    return net.eval()


def res_mlp():  # identity shortcut
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(),
                         Residual(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))), nn.ReLU(),
                         nn.Linear(6, 3))


def res_conv():  # a strided body and a strided 1x1 conv shortcut
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                         Residual(nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.ReLU(),
                                                nn.Conv2d(2, 2, 3, padding=1)),
                                  nn.Conv2d(2, 2, 1, stride=2)), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8, 3))


def dense_nested():  # a dense skip inside a residual body, then a dense skip of an activation
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(),
                         Residual(nn.Sequential(DenseSkip(nn.Sequential(nn.Linear(4, 3), nn.ReLU())),
                                                nn.Linear(7, 4))), nn.ReLU(),
                         DenseSkip(nn.Sequential(nn.Linear(4, 3), nn.ReLU())),
                         nn.Linear(7, 3))


def s_curve_net():  # tanh and sigmoid in and around both kinds of block
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(),
                         Residual(nn.Sequential(nn.Linear(6, 6), nn.Sigmoid(), nn.Linear(6, 6))), nn.Tanh(),
                         DenseSkip(nn.Sequential(nn.Linear(6, 3), nn.Sigmoid())), nn.Linear(9, 3))


NETS = {"res_mlp": (res_mlp, (4,)), "res_conv": (res_conv, (1, 4, 4)), "dense_nested": (dense_nested, (4,))}


def make(name, seed, n=2):
    build, shape = NETS[name] if name in NETS else (s_curve_net, (4,))
    net = _init(build().to(DT), seed)
    g = torch.Generator().manual_seed(50 + seed)
    x = torch.rand(n, *shape, generator=g, dtype=DT) * 0.8 + 0.1
    y = torch.randint(0, 3, (n,), generator=g)
    return net, x, y


def tol(v):
    return 1e-6 * (1 + v.abs())


def count_unstable(pre_bounds):
    """Neurons whose pre-activation interval straddles 0 (a ReLU relaxed, not exact)."""
    return sum(int(((lo < 0) & (hi > 0)).sum()) for lo, hi in pre_bounds)


def spec_values(net, xs, y):
    """The margins z_y - z_j (j != y) at points xs (N, k, *shape): (N, k, K-1)."""
    N, k = xs.shape[:2]
    with torch.no_grad():
        logits = net(xs.reshape(N * k, *xs.shape[2:])).view(N, k, -1)
    return torch.einsum("nmk,nsk->nsm", margin_spec(y, logits.shape[-1]).to(DT), logits)


def box_samples(x, lo, hi, k=600, seed=0):
    """k points per example of the box [lo, hi], half uniform, half at random corners: (N, k, *shape)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(x.shape[0], k, *x.shape[1:], generator=g, dtype=DT)
    t[:, k // 2:] = t[:, k // 2:].round()
    return lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * t


def ball_samples(x, eps, norm, k=600, seed=0):
    """k points per example of the l2 / l1 ball clamped to [0, 1] (half on the sphere): (N, k, *shape)."""
    g = torch.Generator().manual_seed(seed)
    N, n = x.shape[0], x[0].numel()
    if norm == "l2":
        d = torch.randn(N, k, n, generator=g, dtype=DT)
        d = d / d.norm(dim=-1, keepdim=True)
    else:
        sign = 2 * torch.randint(0, 2, (N, k, n), generator=g) - 1
        d = -torch.log(torch.rand(N, k, n, generator=g, dtype=DT)) * sign
        d = d / d.abs().sum(-1, keepdim=True)
    r = torch.rand(N, k, 1, generator=g, dtype=DT) ** (1.0 / n)
    r[:, k // 2:] = 1.0
    return (x.flatten(1)[:, None] + eps * r * d).clamp(0, 1).view(N, k, *x.shape[1:])


# ------------------------------------------------------------------ 1. ReLU: the soundness chain
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(NETS))
def test_relu_chain_against_the_milp(name, seed):
    """interval, dual <= optimised dual <= LP <= MILP optimum <= the attack, per example and row;
    the MILP's worst inputs lie in the ball and attain its optimum."""
    net, x, y = make(name, seed)
    eps = 0.15
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    ib = interval_bounds(net, x, y, eps).lower.detach()
    du = dual_bounds(net, x, y, eps)
    d = du.lower.detach()
    opt = optimized_dual_bounds(net, x, y, eps, steps=30).lower
    lp = lp_bounds(net, x, y, eps).lower  # at the dual's own pre-activation bounds
    lp_same = lp_bounds(net, x, y, eps, pre_bounds=du.pre_bounds).lower
    mi = milp_bounds(net, x, y, eps)
    exact = mi.lower
    torch.testing.assert_close(lp, lp_same, rtol=0, atol=1e-7)
    assert (d <= opt + 1e-12).all() and (opt <= lp + tol(lp)).all()
    for what, b in (("interval", ib), ("dual", d), ("opt", opt), ("lp", lp)):
        assert (b <= exact + tol(exact)).all(), (what, b, exact)
    adv = torch.minimum(row_attack(net, x, y, lo, hi), spec_values(net, box_samples(x, lo, hi), y).min(1).values)
    assert (mi.info["attained"] <= adv + tol(adv)).all(), (mi.info["attained"], adv)
    assert (mi.info["attained"] - exact).abs().max() < 1e-6
    xw = mi.x_worst
    assert (xw >= lo.unsqueeze(1) - 1e-12).all() and (xw <= hi.unsqueeze(1) + 1e-12).all()
    attained = torch.diagonal(spec_values(net, xw, y), dim1=1, dim2=2)  # row j at its own worst input
    torch.testing.assert_close(attained, exact, rtol=0, atol=1e-6)
    # the relaxations are exercised: unstable neurons in the blocks, a real gap to the MILP
    assert count_unstable(du.pre_bounds) >= 3
    assert (exact - d).max() > 1e-3


def test_the_dual_is_tighter_than_intervals_on_blocks():
    for name in NETS:
        net, x, y = make(name, 3, n=4)
        assert dual_bounds(net, x, y, 0.05).lower.mean() > interval_bounds(net, x, y, 0.05).lower.mean(), name


def test_the_lp_network_reproduces_the_model():
    """The affine maps the LP/MILP build (several sources per activation on a graph) and the
    float64 network that checks every MILP answer give the model's margins."""
    for name in NETS:
        net, x, y = make(name, 4, n=3)
        P = prepare(net, x, y, 0.1)
        blocks = lp_mod._affine_blocks(P)
        assert any(len(terms) > 1 for terms, _ in blocks), name  # a skip: two sources
        want = spec_values(net, x[:, None], y)[:, 0]
        for n in range(3):
            for r in range(2):
                got, _, _ = lp_mod._network_margin(blocks, P.activations, x[n].reshape(-1).numpy(), P.C[n, r].numpy())
                assert abs(got - float(want[n, r])) < 1e-12


# ------------------------------------------------------------------ 2. sigmoid / tanh
@pytest.mark.parametrize("seed", [0, 1])
def test_sigmoid_tanh_blocks_are_sound(seed):
    net, x, y = make("s_curve", seed, n=3)
    eps = 0.1
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    ib = interval_bounds(net, x, y, eps).lower.detach()
    du = dual_bounds(net, x, y, eps)
    opt = optimized_dual_bounds(net, x, y, eps, steps=5).lower   # fixed lines: the paper's bound
    lp = lp_bounds(net, x, y, eps, pre_bounds=du.pre_bounds).lower
    sampled = spec_values(net, box_samples(x, lo, hi, 2000), y).min(1).values
    found = torch.minimum(row_attack(net, x, y, lo, hi), sampled)
    for what, b in (("interval", ib), ("dual", du.lower.detach()), ("opt", opt), ("lp", lp)):
        assert (b <= found + tol(found)).all(), (what, b, found)
    assert (du.lower.detach() <= lp + tol(lp)).all()
    torch.testing.assert_close(opt, du.lower.detach())
    assert du.lower.mean() > ib.mean()
    with pytest.raises(UnsupportedLayerError, match="exact MILP"):
        milp_bounds(net, x, y, eps)


# ------------------------------------------------------------------ 3. l2 and l1 balls
@pytest.mark.parametrize("norm,eps", [("l2", 0.3), ("l1", 0.5)])
@pytest.mark.parametrize("name", ["res_mlp", "dense_nested", "s_curve"])
def test_l2_l1_bounds_below_the_attack(name, norm, eps):
    net, x, y = make(name, 2, n=3)
    ib = interval_bounds(net, x, y, eps, norm=norm).lower.detach()
    du = dual_bounds(net, x, y, eps, norm=norm)
    opt = optimized_dual_bounds(net, x, y, eps, norm=norm, steps=15).lower
    lp = lp_bounds(net, x, y, eps, norm=norm).lower
    assert (du.lower.detach() <= opt + 1e-12).all() and (opt <= lp + tol(lp)).all()
    if norm == "l2":
        atk = PGD(eps, norm="l2", steps=40, restarts=2)
    else:
        atk = SparseL1Descent(eps, steps=40, alpha=eps / 5, q=50.0, random_start=True)
    x_adv = atk(net, x, y)
    d = (x_adv - x).flatten(1)
    assert ((d.norm(dim=1) if norm == "l2" else d.abs().sum(1)) <= eps * (1 + 1e-6)).all()
    found = torch.cat([spec_values(net, x_adv[:, None], y), spec_values(net, ball_samples(x, eps, norm), y)], 1)
    found = found.min(1).values
    bounds = [("interval", ib), ("dual", du.lower.detach()), ("opt", opt), ("lp", lp)]
    if norm == "l1" and name != "s_curve":
        mi = milp_bounds(net, x, y, eps, norm=norm)
        assert (lp <= mi.lower + tol(mi.lower)).all()
        assert (mi.info["attained"] <= found + tol(found)).all()
        bounds.append(("milp", mi.lower))
    for what, b in bounds:
        assert (b <= found + tol(found)).all(), (what, b, found)
    assert (du.lower > -100).all()


# ------------------------------------------------------------------ 4. exact rewrites as one wide Sequential
def _flat_rewrite(kind, seed):
    """A block after an affine layer h = W0 x + b0, and the same network as one Sequential whose
    first Linear computes [W1 h + b1; h + s] (s > -h on the box: ReLU passes the copy exactly)
    and whose second Linear adds the copy back (residual: + h or + S h; dense skip: concatenates)."""
    d, h, k = 4, 5, 3
    L0, L1, L2 = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, h if kind != "dense" else 4)
    S = nn.Linear(h, h)
    if kind == "identity":
        block = Residual(nn.Sequential(L1, nn.ReLU(), L2))
    elif kind == "shortcut":
        block = Residual(nn.Sequential(L1, nn.ReLU(), L2), S)
    else:
        block = DenseSkip(nn.Sequential(L1, nn.ReLU(), L2))
    width = h if kind != "dense" else h + 4
    head = [nn.ReLU(), nn.Linear(width, 6), nn.ReLU(), nn.Linear(6, k)]
    res = _init(nn.Sequential(L0, block, *head).to(DT), seed)
    W0, b0, W1, b1, W2, b2 = (t.detach() for t in (L0.weight, L0.bias, L1.weight, L1.bias, L2.weight, L2.bias))
    s = 1 + W0.abs().sum(1) + b0.abs()  # h + s >= 1 for x in [0, 1]
    A, B = nn.Linear(d, 2 * h).to(DT), nn.Linear(2 * h, width).to(DT)
    eye, zero = torch.eye(h, dtype=DT), torch.zeros(4, h, dtype=DT)
    with torch.no_grad():
        A.weight.copy_(torch.cat([W1 @ W0, W0]))
        A.bias.copy_(torch.cat([W1 @ b0 + b1, b0 + s]))
        if kind == "identity":
            B.weight.copy_(torch.cat([W2, eye], 1))
            B.bias.copy_(b2 - s)
        elif kind == "shortcut":
            Sw = S.weight.detach()
            B.weight.copy_(torch.cat([W2, Sw], 1))
            B.bias.copy_(b2 + S.bias.detach() - Sw @ s)
        else:
            B.weight.copy_(torch.cat([torch.cat([torch.zeros(h, h, dtype=DT), eye], 1), torch.cat([W2, zero], 1)]))
            B.bias.copy_(torch.cat([-s, b2]))
    flat = nn.Sequential(A, nn.ReLU(), B, *head).eval()
    return res, flat


@pytest.mark.parametrize("kind", ["identity", "shortcut", "dense"])
def test_block_equals_its_wide_sequential_rewrite(kind):
    res, flat = _flat_rewrite(kind, 7)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(4, 4, generator=g, dtype=DT)
    y = torch.randint(0, 3, (4,), generator=g)
    torch.testing.assert_close(res(x), flat(x), rtol=0, atol=1e-12)
    unstable = 0
    for eps in (0.05, 0.2):
        dr, df = dual_bounds(res, x, y, eps), dual_bounds(flat, x, y, eps)
        unstable += count_unstable(dr.pre_bounds)
        torch.testing.assert_close(dr.lower, df.lower, rtol=0, atol=1e-9)
        torch.testing.assert_close(lp_bounds(res, x, y, eps).lower, lp_bounds(flat, x, y, eps).lower,
                                   rtol=0, atol=1e-6)
    torch.testing.assert_close(optimized_dual_bounds(res, x, y, 0.2, steps=10).lower,
                               optimized_dual_bounds(flat, x, y, 0.2, steps=10).lower, rtol=0, atol=1e-5)
    assert unstable >= 3  # the relaxation is exercised


# ------------------------------------------------------------------ 5. bounds at every node
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.3)])
@pytest.mark.parametrize("name", ["res_mlp", "res_conv", "dense_nested", "s_curve"])
def test_every_node_has_sound_bounds(name, norm, eps):
    """The value of every node at points of the ball lies within its dual and interval bounds;
    the dual's bounds at an activation's input are those dual_bounds uses."""
    net, x, y = make(name, 9)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    pts = (box_samples(x, lo, hi, 300) if norm == "linf" else ball_samples(x, eps, norm, 300)).flatten(0, 1)
    dual, ibp = node_bounds(net, x, eps, norm=norm), node_bounds(net, x, eps, method="interval", norm=norm)
    assert [n.module for n, _, _ in dual] == [n.module for n, _, _ in ibp]
    values = {0: pts}
    for i, (node, lower, upper) in enumerate(dual):
        values[i + 1] = node.forward(*[values[j] for j in node.inputs])
        v = values[i + 1].view(x.shape[0], -1, *node.out_shape)
        for what, (bl, bu) in (("dual", (lower, upper)), ("interval", ibp[i][1:])):
            assert (v >= bl.unsqueeze(1) - 1e-9).all() and (v <= bu.unsqueeze(1) + 1e-9).all(), (what, i, node)
    torch.testing.assert_close(values[len(dual)], net(pts))
    pre = dual_bounds(net, x, y, eps, norm=norm).pre_bounds
    acts = [i for i, (node, _, _) in enumerate(dual) if node.affine is False]
    for (lower, upper), i in zip(pre, acts):
        src = dual[i][0].inputs[0] - 1  # the node whose output the activation reads
        torch.testing.assert_close(dual[src][1], lower, rtol=0, atol=1e-12)
        torch.testing.assert_close(dual[src][2], upper, rtol=0, atol=1e-12)
    width = lambda b: sum(float((hi - lo).detach().sum()) for _, lo, hi in b)
    assert width(dual) < width(ibp)
    with pytest.raises(ValueError, match="method"):
        node_bounds(net, x, eps, method="lp")


# ------------------------------------------------------------------ 6. forward pass and projections
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_forward_pass_equals_the_backward_pass(norm):
    """The exact forward pass (estimated_dual_bounds with proj=None: the joins' linear maps) and
    the dual network (their transposes) give the same pre-activation and final bounds."""
    for name in NETS:
        net, x, y = make(name, 5)
        eps = {"linf": 0.1, "l2": 0.3, "l1": 0.5}[norm]
        fw = estimated_dual_bounds(net, x, y, eps, proj=None, norm=norm)
        bw = dual_bounds(net, x, y, eps, norm=norm)
        torch.testing.assert_close(fw.lower, bw.lower, rtol=0, atol=1e-12)
        for (lf, uf), (lb, ub) in zip(fw.pre_bounds, bw.pre_bounds):
            torch.testing.assert_close(lf, lb, rtol=0, atol=1e-12)
            torch.testing.assert_close(uf, ub, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projections_approach_the_exact_bound(norm):
    net, x, y = make("dense_nested", 6, n=4)
    eps = 0.1 if norm == "linf" else 0.3
    exact = dual_bounds(net, x, y, eps, norm=norm).lower.detach()
    err = {}
    for k in (10, 3000):
        est = [estimated_dual_bounds(net, x, y, eps, proj=k, norm=norm,
                                     generator=torch.Generator().manual_seed(s)).lower.detach() for s in range(3)]
        err[k] = float(torch.stack([(e - exact).abs().mean() for e in est]).mean())
    assert err[3000] < 0.3 * err[10], err
    assert err[3000] < 0.02 * (1 + float(exact.abs().mean())), err
    est = estimated_dual_bounds(net, x, y, eps, proj=5, norm=norm)
    with pytest.raises(ValueError, match="not certificates"):
        _ = est.certified


# ------------------------------------------------------------------ 7. mnist_residual end to end
def test_mnist_residual_certified_error_and_robust_loss():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = mnist_residual().eval()
        x = torch.rand(2, 1, 28, 28)
    y = net(x).argmax(1)
    eps = 0.002
    res = dual_bounds(net, x, y, eps)
    assert torch.isfinite(res.lower).all() and len(res.pre_bounds) == 5
    # the dual is sound: below the smallest margin an attack and box sampling find in the ball (on a
    # float64 copy of the same weights). The clean margins are no test: they sit ~2e-3 above the
    # dual, the attack's ~3e-4 (a bound too high by 1e-3 passed the clean check)
    net64, x64, C = copy.deepcopy(net).double(), x.double(), margin_spec(y, 10).to(DT)
    lo, hi = (x64 - eps).clamp(0, 1), (x64 + eps).clamp(0, 1)
    found = torch.minimum(attack_min(net64, C, lo, hi), spec_values(net64, box_samples(x64, lo, hi), y).min(1).values)
    with torch.no_grad():
        clean = C.matmul(net64(x64).unsqueeze(-1)).squeeze(-1)
    assert (clean > 0).all() and (found < clean - 1e-3).all()  # the attack moved every margin
    assert (res.lower.double() <= found + 1e-5).all()  # float32 bound: its rounding is ~1e-6 here
    cert = certified_bounds(net, x, y, eps).lower  # float64: no rounding slack
    assert (cert <= found + 1e-9).all()
    torch.testing.assert_close(cert, res.lower.double(), rtol=0, atol=1e-5)
    want = float((~is_certified(res.lower.detach())).float().mean())
    assert certified_error(net, x, y, eps, batch_size=1) == want
    assert certified_error(net, x, y, 0.0, method="interval") == 0.0  # y is the prediction
    loss, err = robust_loss(net, x, y, eps)
    torch.testing.assert_close(loss, F.cross_entropy(margins_to_logits(res.lower, y), y))
    assert float(err) == want
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.zero_grad()
    train_loss, logits = RobustTrainingLoss(eps=eps, proj=10)(net, x, y)  # projections, through the block
    train_loss.backward()
    assert torch.isfinite(train_loss) and logits.shape == (2, 10)
    assert net[2].body[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ 8. the container and the guards
def test_dense_skip_is_a_plain_module():
    body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()).to(DT)
    x = torch.rand(2, 2, 5, 5, dtype=DT)
    out = DenseSkip(body)(x)
    assert out.shape == (2, 5, 5, 5)
    torch.testing.assert_close(out, torch.cat([x, body(x)], 1))
    with pytest.raises(TypeError, match="body"):
        DenseSkip(lambda t: t)



def test_guards_on_blocks():
    net, x, y = make("res_mlp", 0)

    class DoubledResidual(Residual):
        def forward(self, t):
            return 2 * super().forward(t)

    class MyDense(DenseSkip):
        def forward(self, t):
            return super().forward(t)

    for block, kind in ((DoubledResidual(nn.Sequential(nn.Linear(6, 6))), "Residual"),
                        (MyDense(nn.Sequential(nn.Linear(6, 2))), "DenseSkip")):
        bad = _init(nn.Sequential(nn.Linear(4, 6), block, nn.Linear(6 if kind == "Residual" else 8, 3)).to(DT), 0)
        for fn in (interval_bounds, dual_bounds, lp_bounds):
            with pytest.raises(UnsupportedLayerError, match=f"a {kind} subclass that overrides forward"):
                fn(bad, x, y, 0.1)
    # a forward hook (or pre-hook) inside a block, or on the block itself
    for mod, pre in ((net[2].body[1], False), (net[2], True)):
        h = mod.register_forward_pre_hook(lambda m, i: i) if pre else mod.register_forward_hook(lambda m, i, o: o)
        try:
            for fn in (dual_bounds, milp_bounds):
                with pytest.raises(UnsupportedLayerError, match="hook"):
                    fn(net, x, y, 0.1)
        finally:
            h.remove()
    dual_bounds(net, x, y, 0.1)  # fine once removed
    # an instance whose forward was replaced: caught by the check that the nodes give model(x)
    net2, _, _ = make("res_mlp", 0)
    net2[2].forward = lambda t: net2[2].body(t)
    with pytest.raises(ValueError, match="differs"):
        dual_bounds(net2, x, y, 0.1)
    # unsupported layers name where they sit; shapes that cannot be added or concatenated
    elu = _init(nn.Sequential(nn.Linear(4, 6), Residual(nn.Sequential(nn.Linear(6, 6), nn.ELU())),
                              nn.Linear(6, 3)).to(DT), 0)
    with pytest.raises(UnsupportedLayerError, match=r"ELU.*model\[1\]\.body\[1\]"):
        dual_bounds(elu, x, y, 0.1)
    with pytest.raises(ValueError, match="must match to be added"):
        dual_bounds(nn.Sequential(nn.Linear(4, 6), Residual(nn.Linear(6, 5)), nn.Linear(5, 3)).to(DT), x, y, 0.1)
    with pytest.raises(ValueError, match="last layer must be nn.Linear"):
        dual_bounds(nn.Sequential(nn.Linear(4, 3), Residual(nn.Linear(3, 3))).to(DT), x, y, 0.1)
    bad_x = x.clone()
    bad_x[0, 0] = float("nan")
    with pytest.raises(ValueError):
        dual_bounds(net, bad_x, y, 0.1)
    # sigmoid in a block: no projections (the lines are not parallel), a clear message
    s_net, xs, ys = make("s_curve", 0)
    with pytest.raises(UnsupportedLayerError, match="slopes"):
        estimated_dual_bounds(s_net, xs, ys, 0.1, proj=10)
