"""Paths of the bounds that the other bound tests do not walk.

1. **Per-coordinate radii**: eps a tensor of x's shape (l_inf only). ``bounds.spec._check_eps``
   takes a number, an (N,) tensor (one radius per example) or a tensor of exactly x's shape;
   nothing merely broadcastable. In every method (interval, dual, optimised dual, LP, MILP,
   certified_bounds) the bound is sound on the box x +- eps (clipped) against its corners, uniform
   points and an attack; a constant tensor gives the scalar bound; a zero radius fixes its
   coordinate (the bound of the network with those inputs folded into the first layer's bias).
2. **models.DenseSkip on conv feature maps**: sound against every corner of the box; the
   receptive-field fast path (``bounds.patches``, taken for the block body's ReLU) equals the
   dense pass.
3. **certified_error** with per-example (and per-coordinate) eps and batch sizes that do not
   divide N: the example-by-example answer, whatever the batch size.
4. **The CIFAR ResNet** (``models._block``, the blocks of ``models.cifar_resnet``) at reduced
   width on 3 x 8 x 8 inputs: the dual bound equals the dense pass and is sound. The real network
   is not run: its exact dual bound takes 45-70 s for ONE input in float32 on one core
   (data/results/cifar_resnet_cost.json), and tens of GB if autograd is left on.
5. **The shipped mnist_residual_robust checkpoint** at eps 0.1 on 4 test images: the dual bound
   lies below the margins PGD and random sampling find, the fast path equals the dense pass, and
   certified_bounds (float64) makes the float32 bound's decisions.

Small networks in float64 where two paths are compared; seeded; no timing asserts.
"""
import copy
import math

import pytest
import torch
from bound_checks import attack_min
from torch import nn

from tutorial_lib import data as D, models as M
from tutorial_lib.attacks import PGD
from tutorial_lib.bounds import (
    DualConcat,
    certified_bounds,
    certified_error,
    dual_bounds,
    interval_bounds,
    is_certified,
    lp_bounds,
    margin_spec,
    milp_bounds,
    optimized_dual_bounds,
    patches,
)
from tutorial_lib.bounds.activations import DualActivation
from tutorial_lib.bounds.layers import build_layers, is_chain
from tutorial_lib.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

DT = torch.float64


# ---------------------------------------------------------------- shared helpers
def _init(net, seed, gain=1.0, bias=0.2):
    """He-scaled Gaussian weights and N(0, bias^2) biases from one seed, float64, eval mode."""
    g = torch.Generator().manual_seed(seed)
    net = net.to(DT)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT) * gain * math.sqrt(2.0 / fan_in))
                m.bias.copy_(bias * torch.randn(m.bias.shape, generator=g, dtype=DT))
    return net.eval()


def _mlp(seed=0):
    """6 -> 10 -> 8 -> 3, input (N, 6): small enough for the LP, the MILP and all 64 corners."""
    return _init(nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3)), seed)


def _cnn(seed=0):
    """Three convs (the fast path applies to the 2nd and 3rd) on (N, 1, 6, 6), 3 classes."""
    return _init(nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(27, 3)), seed)


def _data(shape, n, seed, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g, dtype=DT), torch.randint(0, classes, (n,), generator=g)


def _coord_eps(x, seed, top, zero_frac=0.3):
    """A radius per coordinate in [0, top], about zero_frac of them exactly 0."""
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(x.shape, generator=g, dtype=x.dtype) * top
    return torch.where(torch.rand(x.shape, generator=g) < zero_frac, torch.zeros_like(e), e)


def _box(x, eps):
    """The input set of the l_inf ball of radius eps (a number or x's shape) in the pixel box."""
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def _margins(net, xs, y):
    """Rows of the default spec (z_y - z_j, j != y, increasing j) at every point: xs (P, *in), y (P,)."""
    with torch.no_grad():
        z = net(xs)
    return torch.einsum("pjk,pk->pj", margin_spec(y, z.shape[1]).to(z.dtype), z)


def _corners(lo, hi):
    """Every corner of the box [lo, hi] (one example, *shape): (2**n, *shape)."""
    n = lo.numel()
    bits = ((torch.arange(2 ** n).unsqueeze(1) >> torch.arange(n)) & 1).to(lo.dtype)
    return (lo.flatten() + (hi - lo).flatten() * bits).view(-1, *lo.shape)


def _sampled_min(net, lo, hi, y, k=1000, seed=0, max_corners=16):
    """(N, K-1): the smallest margin per row over k uniform points of each example's box, k random
    corners, and all its corners when it has at most max_corners coordinates."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in range(lo.shape[0]):
        t = torch.rand(2 * k, *lo.shape[1:], generator=g, dtype=lo.dtype)
        t[k:] = t[k:].round()
        pts = lo[n] + (hi[n] - lo[n]) * t
        if lo[n].numel() <= max_corners:
            pts = torch.cat([pts, _corners(lo[n], hi[n])])
        out.append(torch.cat([_margins(net, pts[a:a + 8192], y[n].expand(len(pts[a:a + 8192])))
                              for a in range(0, len(pts), 8192)]).min(0).values)
    return torch.stack(out)


def _reached_min(net, lo, hi, y, steps=40, restarts=2):
    """Per row, the smallest margin over sampled points and a signed-gradient attack of the box."""
    C = margin_spec(y, net(lo[:1]).shape[1]).to(lo.dtype)
    return torch.minimum(_sampled_min(net, lo, hi, y), attack_min(net, C, lo, hi, steps=steps, restarts=restarts))


# ---------------------------------------------------------------- 1. per-coordinate eps
def _lower(method, net, x, y, eps):
    if method == "interval":
        return interval_bounds(net, x, y, eps).lower
    if method == "dual":
        return dual_bounds(net, x, y, eps).lower
    if method == "dual-opt":
        return optimized_dual_bounds(net, x, y, eps, steps=15).lower
    if method == "lp":
        return lp_bounds(net, x, y, eps).lower
    if method == "milp":
        return milp_bounds(net, x, y, eps).lower
    if method == "certified":
        return certified_bounds(net, x, y, eps).lower
    raise AssertionError(method)


ALL = ("interval", "dual", "dual-opt", "lp", "milp", "certified")
#: the LP/MILP answers: verified within 1e-7 relative of the solver's optimum (lp.LP_GAP_RTOL)
SOLVED = {"lp": 1e-6, "milp": 1e-6}


def test_per_coordinate_eps_is_sound_in_every_method():
    net = _mlp(0)
    x, y = _data((6,), 4, seed=1)
    eps = _coord_eps(x, seed=2, top=0.3)
    eps[:, 0] = 0.0  # every example has a fixed coordinate
    lo, hi = _box(x, eps)
    reached = _reached_min(net, lo, hi, y)
    res = milp_bounds(net, x, y, eps)
    with torch.no_grad():
        low = {m: _lower(m, net, x, y, eps).detach() for m in ALL if m != "milp"}
    low["milp"] = res.lower
    for m in ALL:
        assert (low[m] <= reached + 1e-9).all(), (m, (low[m] - reached).max())
    # the order the methods promise: dual <= optimised dual <= LP <= MILP; interval <= MILP
    assert (low["dual"] <= low["dual-opt"] + 1e-9).all()
    assert (low["dual-opt"] <= low["lp"] + 1e-6).all()
    assert (low["lp"] <= low["milp"] + 1e-6).all()
    assert (low["interval"] <= low["milp"] + 1e-9).all()
    torch.testing.assert_close(low["certified"], low["dual"], rtol=0, atol=1e-12)  # float64 net: the same pass
    # the MILP is the exact minimum: its worst inputs lie in the per-coordinate box and attain it
    xw = res.x_worst  # (N, m, 6)
    assert ((xw >= lo.unsqueeze(1) - 1e-9) & (xw <= hi.unsqueeze(1) + 1e-9)).all()
    assert torch.equal(xw[..., 0], x[:, None, 0].expand_as(xw[..., 0]))  # the fixed coordinate did not move
    at = _margins(net, xw.reshape(-1, 6), y.repeat_interleave(xw.shape[1])).view(*xw.shape[:2], -1)
    attained = torch.diagonal(at, dim1=1, dim2=2)  # row j of the spec at the input found for row j
    torch.testing.assert_close(attained, res.info["attained"], rtol=1e-6, atol=1e-6)
    assert (res.lower <= attained + 1e-9).all()
    # the attack and the sampling come close to the exact minimum (the comparison is not vacuous)
    assert (reached - res.lower).max() < 0.05 * (1 + res.lower.abs().max())


@pytest.mark.parametrize("method", ["interval", "dual", "dual-opt", "certified"])
def test_per_coordinate_eps_is_sound_on_a_conv_chain(method):
    """Through the receptive-field fast path (the windows of lo and hi per coordinate)."""
    net = _cnn(3)
    x, y = _data((1, 6, 6), 3, seed=4)
    eps = _coord_eps(x, seed=5, top=0.08)
    layers, _ = build_layers(net, x[:1])
    assert patches.applies(layers, 3) and patches.applies(layers, 5)
    lo, hi = _box(x, eps)
    with torch.no_grad():
        low = _lower(method, net, x, y, eps)
    reached = _reached_min(net, lo, hi, y)
    assert (low <= reached + 1e-9).all(), (low - reached).max()
    if method == "dual":  # the bound is informative, not -inf-like: within reach of the attack
        assert (low > reached - 10 * (1 + reached.abs())).all()


def test_certified_bounds_on_float32_per_coordinate_eps_are_the_float64_pass():
    """certified_bounds casts a float32 model, x and a per-coordinate eps to float64 exactly: the
    bound is dual_bounds of the float64 copy, and sound for the float32 weights read as reals."""
    net32 = copy.deepcopy(_cnn(6)).float()
    x, y = _data((1, 6, 6), 3, seed=7)
    x32, eps32 = x.float(), _coord_eps(x, seed=8, top=0.08).float()
    cert = certified_bounds(net32, x32, y, eps32)
    assert cert.lower.dtype == DT and next(net32.parameters()).dtype == torch.float32
    net64 = copy.deepcopy(net32).double()
    with torch.no_grad():
        ref = dual_bounds(net64, x32.double(), y, eps32.double()).lower
    torch.testing.assert_close(cert.lower, ref, rtol=0, atol=1e-12)
    lo, hi = _box(x32.double(), eps32.double())
    assert (cert.lower <= _reached_min(net64, lo, hi, y) + 1e-9).all()


@pytest.mark.parametrize("net_name", ["mlp", "cnn"])
def test_constant_eps_tensor_equals_the_scalar(net_name):
    """A constant tensor of x's shape, an (N,) tensor and the number give one bound (float64);
    an (N,) tensor of different radii equals the per-coordinate tensor filled with them."""
    if net_name == "mlp":
        net, (x, y), methods = _mlp(1), _data((6,), 3, seed=9), ALL
    else:
        net, (x, y), methods = _cnn(2), _data((1, 6, 6), 3, seed=10), ("interval", "dual", "dual-opt", "certified")
    N, eps = x.shape[0], 0.07
    per_example = torch.tensor([0.02, 0.07, 0.12], dtype=DT)
    filled = per_example.view(-1, *([1] * (x.dim() - 1))).expand_as(x).clone()
    with torch.no_grad():
        for m in methods:
            tol = SOLVED.get(m, 1e-9)
            ref = _lower(m, net, x, y, eps)
            for e in (torch.full_like(x, eps), torch.full((N,), eps, dtype=DT)):
                torch.testing.assert_close(_lower(m, net, x, y, e), ref, rtol=tol, atol=tol, msg=m)
            a, b = _lower(m, net, x, y, per_example), _lower(m, net, x, y, filled)
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=m)
            # and each example's radius is its own: example 1 (eps 0.07) has the scalar bound
            torch.testing.assert_close(a[1], ref[1], rtol=tol, atol=tol, msg=m)


def _fold_fixed(net, x_n, fixed):
    """The network of the free inputs when the ``fixed`` inputs of x_n (6,) are held at their
    values: the first Linear's fixed columns folded into its bias."""
    free = [i for i in range(x_n.numel()) if i not in fixed]
    red = copy.deepcopy(net)
    first = net[0]
    lin = nn.Linear(len(free), first.out_features).to(DT)
    with torch.no_grad():
        lin.weight.copy_(first.weight[:, free])
        lin.bias.copy_(first.bias + first.weight[:, fixed] @ x_n[fixed])
    red[0] = lin
    return red.eval(), free


def test_zero_eps_fixes_the_coordinate():
    net = _mlp(2)
    x, y = _data((6,), 3, seed=11)
    fixed = [0, 2, 5]
    eps = _coord_eps(x, seed=12, top=0.25, zero_frac=0.0)
    eps[:, fixed] = 0.0
    with torch.no_grad():
        full = {m: _lower(m, net, x, y, eps) for m in ALL}
        for n in range(x.shape[0]):
            red, free = _fold_fixed(net, x[n], fixed)
            xr, er = x[n:n + 1, free], eps[n:n + 1, free]
            torch.testing.assert_close(red(xr), net(x[n:n + 1]), rtol=1e-12, atol=1e-12)
            for m in ALL:
                tol = SOLVED.get(m, 1e-9)
                torch.testing.assert_close(full[m][n:n + 1], _lower(m, red, xr, y[n:n + 1], er),
                                           rtol=tol, atol=tol, msg=f"{m}, example {n}")
        # a smaller input set: the exact minimum and the interval bound can only rise
        wide = eps.max().item()
        for m in ("interval", "milp"):
            assert (full[m] >= _lower(m, net, x, y, wide) - 1e-9).all(), m
        assert (full["milp"] > _lower("milp", net, x, y, wide) + 1e-6).any()  # and here they do


def test_eps_shapes_that_only_broadcast_are_refused():
    """Only a number, (N,) or x's shape: (1, 6), (3, 1) and (3, 6, 1) would broadcast against x
    (3, 6), and (6,) is a radius per feature without the batch dim. certified_error took the (6,)
    one (its batch slice eps[0:3] looked like one radius per example) before it checked eps."""
    net = _mlp(0)
    x, y = _data((6,), 3, seed=1)
    for bad in (torch.full((1, 6), 0.1, dtype=DT), torch.full((6,), 0.1, dtype=DT),
                torch.full((3, 1), 0.1, dtype=DT), torch.full((3, 6, 1), 0.1, dtype=DT)):
        for fn in (interval_bounds, dual_bounds, lp_bounds):
            with pytest.raises(ValueError, match="eps must be"):
                fn(net, x, y, bad)
        with pytest.raises(ValueError, match="eps must be"):
            certified_error(net, x, y, bad)
    with pytest.raises(ValueError, match=">= 0"):
        dual_bounds(net, x, y, torch.full_like(x, 0.1).index_fill(1, torch.tensor([3]), -1e-3))


# ---------------------------------------------------------------- 2. DenseSkip on conv feature maps
def _dense_skip_cnn(where, seed):
    """A dense skip on conv feature maps of (N, 1, 4, 4) inputs: "after_conv" (conv, ReLU, the
    block; the fast path takes the body's ReLU) or "at_input" (the block reads the image)."""
    body = nn.Sequential(nn.Conv2d(3 if where == "after_conv" else 1, 2, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(2, 2, 3, padding=1))
    if where == "after_conv":
        head, c = [nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()], 5
    else:
        head, c = [], 3
    return _init(nn.Sequential(*head, M.DenseSkip(body), nn.ReLU(), nn.Conv2d(c, 3, 3, stride=2, padding=1),
                               nn.ReLU(), nn.Flatten(), nn.Linear(12, 3)), seed)


@pytest.mark.parametrize("where", ["after_conv", "at_input"])
def test_dense_skip_on_feature_maps_is_sound_against_every_corner(where):
    net = _dense_skip_cnn(where, seed=20)
    x, y = _data((1, 4, 4), 2, seed=21)
    layers, _ = build_layers(net, x[:1])
    assert any(isinstance(node, DualConcat) for node in layers) and not is_chain(layers)
    eps = 0.06 if where == "after_conv" else 0.1  # ~90 unstable ReLUs: the MILP in ~2 s
    lo, hi = _box(x, eps)
    with torch.no_grad():
        low = {m: _lower(m, net, x, y, eps) for m in ("interval", "dual", "dual-opt", "milp")}
    assert x[0].numel() == 16  # _reached_min takes all 2**16 corners of each box, uniform points, an attack
    reached = _reached_min(net, lo, hi, y)
    for m, v in low.items():
        assert (v <= reached + 1e-9).all(), (m, (v - reached).max())
    assert (low["dual"] <= low["dual-opt"] + 1e-9).all() and (low["dual-opt"] <= low["milp"] + 1e-6).all()
    assert (low["interval"] <= low["milp"] + 1e-9).all()
    # the MILP (exact) reaches what the corners and the attack reach, not far below it
    assert (reached - low["milp"]).max() < 0.05 * (1 + reached.abs().max())
    # and the bounds are not vacuous: the dual bound separates from the interval bound somewhere
    assert (low["dual"] > low["interval"] + 1e-6).any()


def _grads_and_bound(net, x, y, eps):
    net.zero_grad(set_to_none=True)
    res = dual_bounds(net, x, y, eps)
    res.lower.sum().backward()
    return res, [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("eps", ["small", "large", "per_coordinate"])
def test_dense_skip_fast_path_equals_the_dense_pass(eps, plain):
    net = _dense_skip_cnn("after_conv", seed=22)
    x, y = _data((1, 4, 4), 3, seed=23)
    e = {"small": 0.01, "large": 0.2, "per_coordinate": _coord_eps(x, seed=24, top=0.2)}[eps]
    layers, _ = build_layers(net, x[:1])
    # the fast path is really taken for the block body's ReLU (node 3), not after the concatenation
    assert patches.applies(layers, 3)
    assert not any(patches.applies(layers, i) for i, node in enumerate(layers)
                   if isinstance(node, DualActivation) and i > 3)
    fast, gf = _grads_and_bound(net, x, y, e)
    slow, gs = plain(lambda: _grads_and_bound(net, x, y, e))
    torch.testing.assert_close(fast.lower, slow.lower, rtol=1e-9, atol=1e-9)
    for (lf, uf), (ls, us) in zip(fast.pre_bounds, slow.pre_bounds):
        torch.testing.assert_close(lf, ls, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(uf, us, rtol=1e-9, atol=1e-9)
    for a, b in zip(gf, gs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    # at the larger radii the body's ReLU (activation 1) has unstable neurons: its bounds matter
    l3, u3 = fast.pre_bounds[1]
    if eps != "small":
        assert ((l3 < 0) & (u3 > 0)).any()


# ---------------------------------------------------------------- 3. certified_error: eps per example, batches
def _error_setup():
    """A float32 conv net, 7 examples labelled with its prediction but example 5 (a wrong label),
    and per-example radii alternating small (certified when correct) and large (never)."""
    net = copy.deepcopy(_cnn(30)).float()
    x, _ = _data((1, 6, 6), 7, seed=31)
    x = x.float()
    with torch.no_grad():
        y = net(x).argmax(1)
    y[5] = (y[5] + 1) % 3
    eps = torch.tensor([0.002, 0.3] * 3 + [0.002])
    return net, x, y, eps


def _one_at_a_time(net, x, y, eps, method="dual"):
    return [certified_error(net, x[i:i + 1], y[i:i + 1], eps[i:i + 1], method=method) for i in range(x.shape[0])]


def test_certified_error_per_example_eps_and_batches():
    net, x, y, eps = _error_setup()
    each = _one_at_a_time(net, x, y, eps)
    assert set(each) == {0.0, 1.0} and each[5] == 1.0
    # the radius of each example is its own: shifted by one, the radii give other decisions
    assert _one_at_a_time(net, x, y, eps.roll(1)) != each
    # each example alone with its radius as a number gives the same decision
    assert each == [certified_error(net, x[i:i + 1], y[i:i + 1], float(eps[i])) for i in range(7)]
    want = sum(each) / 7
    for bs in (None, 1, 2, 3, 4, 5, 6, 7, 10):
        assert certified_error(net, x, y, eps, batch_size=bs) == want, bs
    # the same as the certification rule applied to certified_bounds on the whole batch
    low = certified_bounds(net, x, y, eps).lower
    assert want == float((~is_certified(low)).double().mean())


@pytest.mark.parametrize("method", ["interval", "dual-opt"])
def test_certified_error_other_methods_per_example_eps_and_batches(method):
    net, x, y, eps = _error_setup()
    want = sum(_one_at_a_time(net, x, y, eps, method)) / 7
    assert 0 < want < 1
    for bs in (None, 3, 4):
        assert certified_error(net, x, y, eps, method=method, batch_size=bs) == want, bs


@pytest.mark.parametrize("batch_size", [None, 3, 7])
def test_certified_error_refuses_an_eps_for_other_examples(batch_size):
    """certified_error slices eps with the batch: an eps longer than x (radii of another set of
    examples) once passed, each batch's slice having the batch's length, and certified the first N
    examples at radii that were not theirs. It is checked against the whole x first."""
    net, x, y, eps = _error_setup()
    longer = torch.cat([eps.roll(1), eps[:2]])  # 9 radii for 7 examples
    coord = longer.view(-1, 1, 1, 1).expand(9, *x.shape[1:]).clone()
    for bad in (longer, coord, eps[:1].expand(7, 1).clone()):
        with pytest.raises(ValueError, match="eps must be"):
            certified_error(net, x, y, bad, batch_size=batch_size)


def test_certified_error_per_coordinate_eps_and_batches():
    """eps of x's shape is sliced with the batch too (certified_error slices any eps with a dim)."""
    net, x, y, eps = _error_setup()
    coord = eps.view(-1, 1, 1, 1).expand_as(x).clone()
    coord[1, 0, :3] = 0.0  # not constant within an example
    each = [certified_error(net, x[i:i + 1], y[i:i + 1], coord[i:i + 1]) for i in range(7)]
    assert set(each) == {0.0, 1.0}
    for bs in (None, 2, 3, 4):
        assert certified_error(net, x, y, coord, batch_size=bs) == sum(each) / 7, bs


# ---------------------------------------------------------------- 4. the CIFAR ResNet's blocks
def _resnet(widths=(16, 16, 16, 32, 64), side=32, hidden=1000, seed=0):
    """models.cifar_resnet built from its own blocks (models._block) at other widths and input
    sides, initialised as there (conv weights N(0, 2 / (k*k*out)), conv biases 0); float64."""
    c0, c1, c2, c3, c4 = widths
    layers = [nn.Conv2d(3, c0, 3, stride=1, padding=1), nn.ReLU()]
    layers += M._block(c0, c1, False) + M._block(c1, c2, False) + M._block(c2, c3, True) + M._block(c3, c4, True)
    layers += [nn.Flatten(), nn.Linear(c4 * (side // 4) ** 2, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
    net = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                std = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)  # PyTorch's default range, seeded here
                m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * bound)
    return net.to(DT).eval()


def test_the_reduced_resnet_is_the_cifar_resnet_architecture():
    full, ref = _resnet(), M.cifar_resnet()
    assert [type(m) for m in full.modules()] == [type(m) for m in ref.modules()]
    assert [(n, p.shape) for n, p in full.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    for a, b in zip(full.modules(), ref.modules()):
        if isinstance(a, nn.Conv2d):
            assert (a.kernel_size, a.stride, a.padding) == (b.kernel_size, b.stride, b.padding)


@pytest.fixture(scope="module")
def small_resnet():
    net = _resnet(widths=(4, 4, 4, 6, 8), side=8, hidden=20, seed=40)
    x, y = _data((3, 8, 8), 2, seed=41, classes=10)
    return net, x, y


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_resnet_dual_bound_equals_the_dense_pass_and_is_sound(eps, small_resnet, plain):
    net, x, y = small_resnet
    layers, _ = build_layers(net, x[:1])
    assert patches.applies(layers, 3)  # the first block's body ReLU: the receptive-field path
    with torch.no_grad():
        fast = dual_bounds(net, x, y, eps)
        slow = plain(lambda: dual_bounds(net, x, y, eps))
    torch.testing.assert_close(fast.lower, slow.lower, rtol=1e-9, atol=1e-9)
    for (lf, uf), (ls, us) in zip(fast.pre_bounds, slow.pre_bounds):
        torch.testing.assert_close(lf, ls, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(uf, us, rtol=1e-9, atol=1e-9)
    unstable = sum(int(((lo_ < 0) & (up_ > 0)).sum()) for lo_, up_ in fast.pre_bounds)
    assert unstable > 0
    lo, hi = _box(x, eps)
    reached = _reached_min(net, lo, hi, y, steps=30, restarts=2)
    assert (fast.lower <= reached + 1e-9).all(), (fast.lower - reached).max()


# ---------------------------------------------------------------- 5. the shipped residual checkpoint
EPS = 0.1


@pytest.fixture(scope="module")
def residual():
    """The checkpoint, 4 test images, and its float32 dual and float64 certified bounds at EPS."""
    net, _ = load_checkpoint("mnist_residual_robust", device="cpu")
    x, y = D.test_subset("mnist", 4)
    with torch.no_grad():
        dual = dual_bounds(net, x, y, EPS)
        cert = certified_bounds(net, x, y, EPS)
    return net, x, y, dual, cert


def test_mnist_residual_bound_is_below_pgd_and_sampled_margins(residual):
    net, x, y, dual, cert = residual
    N, K = x.shape[0], 10
    # PGD on the cross-entropy, and targeted at every other class (one row of the spec each)
    points = [PGD(EPS, steps=40, restarts=2, seed=0)(net, x, y)]
    targets = torch.tensor([[j for j in range(K) if j != int(c)] for c in y])  # (N, K-1)
    xt = x.repeat_interleave(K - 1, 0)
    adv_t = PGD(EPS, steps=40, seed=1)(net, xt, y.repeat_interleave(K - 1), targets.flatten())
    points.append(adv_t.view(N, K - 1, *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:]))
    # random points of the ball: uniform and corners (clipped to the pixel box)
    g = torch.Generator().manual_seed(2)
    for kind in ("uniform", "corner"):
        for _ in range(50):
            t = torch.rand(x.shape, generator=g) * 2 - 1
            points.append((x + EPS * (t.sign() if kind == "corner" else t)).clamp(0, 1))
    pts = torch.cat([p.view(-1, N, *x.shape[1:]) for p in points])  # (P, N, ...)
    assert ((pts - x).abs() <= EPS + 1e-6).all() and (pts >= 0).all() and (pts <= 1).all()
    flat, lab = pts.reshape(-1, *x.shape[1:]), y.repeat(pts.shape[0])
    m32 = _margins(net, flat, lab).view(-1, N, K - 1)  # float32 network
    net64 = copy.deepcopy(net).double()
    m64 = _margins(net64, flat.double(), lab).view(-1, N, K - 1)
    reached32, reached64 = m32.min(0).values, m64.min(0).values
    scale = 1e-4 * (1 + m32.abs().max())
    assert (dual.lower <= reached32 + scale).all(), (dual.lower - reached32).max()
    assert (cert.lower <= reached64).all(), (cert.lower - reached64).max()
    # the attack did its job (it moved every example's worst margin below the clean one)
    clean = _margins(net, x, y)
    targeted = _margins(net, points[1], y.repeat(K - 1)).view(K - 1, N, K - 1)
    assert (targeted.min(0).values.min(1).values < clean.min(1).values).all()


def test_mnist_residual_fast_path_equals_the_dense_pass(residual, plain):
    net, x, y, dual, _ = residual
    layers, _ = build_layers(net, x[:1])
    assert patches.applies(layers, 3) and not is_chain(layers)
    with torch.no_grad():
        dense = plain(lambda: dual_bounds(net, x, y, EPS))
    scale = 1 + dual.lower.abs().max()
    torch.testing.assert_close(dual.lower, dense.lower, rtol=1e-4, atol=1e-4 * float(scale))
    for (lf, uf), (ls, us) in zip(dual.pre_bounds, dense.pre_bounds):
        torch.testing.assert_close(lf, ls, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(uf, us, rtol=1e-4, atol=1e-4)


def _agree(low32, low64, tol=1e-4):
    """Where no float32 row lies within tol of 0, the certified decisions agree; every row's sign
    agrees where the row is not within tol of 0; the values are close."""
    far = low32.abs() > tol
    assert torch.equal((low32 > 0)[far], (low64 > 0)[far])
    clear = far.all(1)
    assert torch.equal(is_certified(low32)[clear], is_certified(low64)[clear])
    torch.testing.assert_close(low64, low32.double(), rtol=1e-4, atol=1e-4)
    return clear


def test_mnist_residual_float64_certificate_agrees_with_float32(residual):
    net, x, y, dual, cert = residual
    assert cert.lower.dtype == DT and next(net.parameters()).dtype == torch.float32
    clear = _agree(dual.lower, cert.lower)
    assert clear.all() and bool(is_certified(cert.lower).all())  # at 0.1 the robust net certifies all 4
    # per-example radii on two of them: 0.1 (certified) and 0.15 (not): both decisions occur
    eps = torch.tensor([EPS, 0.15], dtype=DT)  # float64: 0.1 exactly, as the number EPS
    with torch.no_grad():
        low32 = dual_bounds(net, x[:2], y[:2], eps).lower
        low64 = certified_bounds(net, x[:2], y[:2], eps).lower
    _agree(low32, low64)
    assert is_certified(low64).tolist() == [True, False]
    torch.testing.assert_close(low64[0], cert.lower[0], rtol=1e-12, atol=1e-12)  # radius 0.1: the batch's bound
