"""Deep conv chains: the receptive-field fast path (bounds.patches) against the dense pass and
against attacks.

The older fast-path tests (tests/test_bounds_fast_path.py) use two convs and batches of several
examples. With one example and three or more convs the fast path once read the ReLU intercepts
of every output position with the coefficients of position 0 (a batch of one looked like
coefficients shared by all positions) and returned pre-activation bounds that the network
exceeds: a false certificate (``test_three_conv_chain_is_not_falsely_certified``). The fuzz
tests compare both passes on seeded random chains (1-5 convs, kernel 1-5, stride 1-2, padding
0-2, dilation and groups where the fast path must step aside, residual and dense-skip blocks)
and check that every bound stays below what an attack or the box's corners reach. CROWN
(``crown_bounds``: ReLU lines that differ, two passes per conv layer on the receptive fields)
goes through the same checks, its gradients too.
"""
from typing import List, Tuple

import pytest
import torch
from bound_checks import attack_min
from torch import nn

from tutorial_lib.bounds import crown_bounds, dual_bounds, interval_bounds, optimized_dual_bounds, patches
from tutorial_lib.bounds.activations import DualActivation
from tutorial_lib.bounds.crown import CrownReLU
from tutorial_lib.bounds.layers import build_layers
from tutorial_lib.models import DenseSkip, Residual

pytestmark = pytest.mark.usefixtures("one_thread")

DT = torch.float64


def _corners(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Every corner of the box [lo, hi] (1, *shape): (2**n, *shape), n = lo.numel() (small)."""
    n = lo.numel()
    bits = ((torch.arange(2 ** n).unsqueeze(1) >> torch.arange(n)) & 1).to(DT)
    return (lo.flatten() + (hi - lo).flatten() * bits).view(-1, *lo.shape[1:])


def _margins(net: nn.Module, xs: torch.Tensor, y: int) -> torch.Tensor:
    """Margins z_y - z_j (j != y) of every row of xs: (M, K-1)."""
    with torch.no_grad():
        z = net(xs)
    keep = [j for j in range(z.shape[1]) if j != y]
    return z[:, y:y + 1] - z[:, keep]


# ---------------------------------------------------------------- the reported false certificate
#: seed, the conv3 neuron read out (channel 1, row 3, col 0 of the 2 x 4 x 4 map) and its bias shift:
#: with the shift, the old fast path's upper bound of that neuron was -0.009 (the ReLU looked
#: dead) while the box's corners drive it to +0.071
_SEED, _NEURON, _SHIFT = 4, (1, 3, 0), -0.39


def _reported_net() -> Tuple[nn.Sequential, torch.Tensor]:
    """The reported layout: Conv(1,2,3,1,1), ReLU, Conv(2,2,3,1,1), ReLU, Conv(2,2,3,1,1), ReLU,
    Flatten, Linear(32, 2), float64, seeded; logit 0 is the constant 0.01 and logit 1 the ReLU
    of one conv3 neuron, so the margin z_0 - z_1 is certified exactly when that neuron is
    proved dead. Returns (net, x (1, 1, 4, 4))."""
    g = torch.Generator().manual_seed(_SEED)
    body = nn.Sequential(nn.Conv2d(1, 2, 3, 1, 1), nn.ReLU(), nn.Conv2d(2, 2, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(2, 2, 3, 1, 1)).double()
    with torch.no_grad():
        for m in body.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT) / 3)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=DT) * 0.1)
        body[4].bias[_NEURON[0]] += _SHIFT
    x = torch.rand(1, 1, 4, 4, generator=g, dtype=DT)
    head = nn.Linear(32, 2).double()
    with torch.no_grad():
        head.weight.zero_()
        c, r, col = _NEURON
        head.weight[1, c * 16 + r * 4 + col] = 1.0
        head.bias.copy_(torch.tensor([0.01, 0.0], dtype=DT))
    return nn.Sequential(*body, nn.ReLU(), nn.Flatten(), head).eval(), x


def test_three_conv_chain_is_not_falsely_certified(plain):
    net, x = _reported_net()
    y, eps = torch.zeros(1, dtype=torch.long), 0.2
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    worst = _margins(net, _corners(lo, hi), 0).min()
    assert worst < -0.05  # a point of the ball: the neuron is alive there, the margin negative
    res = dual_bounds(net, x, y, eps)
    assert float(res.lower.detach().min()) <= float(worst)
    assert not bool(res.certified.any())
    # the neuron's pre-activation upper bound covers every corner's value
    with torch.no_grad():
        z = net[:5](_corners(lo, hi))[:, _NEURON[0], _NEURON[1], _NEURON[2]]
    assert float(res.pre_bounds[2][1][0, _NEURON[0], _NEURON[1], _NEURON[2]]) >= float(z.max())
    crown = crown_bounds(net, x, y, eps)
    for other in (optimized_dual_bounds(net, x, y, eps, steps=20), interval_bounds(net, x, y, eps), crown):
        assert float(other.lower.min()) <= float(worst)
    assert float(crown.pre_bounds[2][1][0, _NEURON[0], _NEURON[1], _NEURON[2]]) >= float(z.max())
    dense = plain(lambda: dual_bounds(net, x, y, eps))
    _compare(res, dense)
    _compare(crown, plain(lambda: crown_bounds(net, x, y, eps)))


@pytest.mark.parametrize("padding", [0, 1])
def test_one_example_deep_chain_equals_dense_pass(padding, plain):
    """The cause was the batch of one, not the padding: three unpadded convs on a 12 x 12 input
    (a 6 x 6 output map) went wrong the same way."""
    g = torch.Generator().manual_seed(3)
    body = [nn.Conv2d(1, 2, 3, padding=padding), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=padding), nn.ReLU(),
            nn.Conv2d(2, 2, 3, padding=padding), nn.ReLU(), nn.Flatten()]
    n = nn.Sequential(*body).double()(torch.zeros(1, 1, 12, 12, dtype=DT)).shape[1]
    net = _init(nn.Sequential(*body, nn.Linear(n, 3)), g)
    x, y = torch.rand(1, 1, 12, 12, generator=g, dtype=DT), torch.tensor([2])
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        _fast_and_dense(net, x, y, eps, norm, plain)


# ---------------------------------------------------------------- seeded random conv chains
def _init(net: nn.Module, g: torch.Generator) -> nn.Module:
    """Weights N(0, 1/fan_in) * 1.2, biases N(0, 0.3^2): active, dead and unstable ReLUs mixed."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                scale = 1.2 * m.weight[0].numel() ** -0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DT) * scale)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=DT) * 0.3)
    return net.double().eval()


def _rand(g: torch.Generator, a: int, b: int) -> int:
    """An integer in [a, b], from g."""
    return int(torch.randint(a, b + 1, (1,), generator=g))


def _random_chain(seed: int) -> Tuple[nn.Sequential, torch.Tensor, List[bool]]:
    """A seeded chain of 1-5 convs (kernel 1-5, stride 1-2, padding 0-2; now and then a dilated
    or grouped conv), each followed by a ReLU, then Flatten, Linear(., 3). Input 1-2 channels,
    5x5 to 9x9, one or two examples whose pixels sit near 0, near 1 or anywhere in between.
    Returns (net, x (N, C, H, W), plain[c]: conv c has groups 1 and no dilation)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        c_in, size = _rand(g, 1, 2), _rand(g, 5, 9)
        n_conv = _rand(g, 1, 5)
        layers, plain, c, h = [], [], c_in, size
        for _ in range(n_conv):
            k, s, p = _rand(g, 1, 5), _rand(g, 1, 2), _rand(g, 0, 2)
            dil, groups = 1, 1
            odd = float(torch.rand(1, generator=g))
            c_out = _rand(g, 1, 3)
            if odd < 0.1 and k > 1:
                dil = 2
            elif odd < 0.2 and c % 2 == 0:
                groups, c_out = 2, 2 * _rand(g, 1, 2)
            h_next = (h + 2 * p - dil * (k - 1) - 1) // s + 1
            if h_next < 1:
                break
            layers += [nn.Conv2d(c, c_out, k, stride=s, padding=p, dilation=dil, groups=groups), nn.ReLU()]
            plain.append(dil == 1 and groups == 1)
            c, h = c_out, h_next
        if len(plain) == n_conv and c * h * h <= 200:
            break
    n = _rand(g, 1, 2)
    net = _init(nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * h, 3)), g)
    x = torch.rand(n, c_in, size, size, generator=g, dtype=DT)
    u = torch.rand(x.shape, generator=g, dtype=DT)
    x = torch.where(u < 0.3, x * 0.05, torch.where(u < 0.6, 1 - x * 0.05, x))  # near the box edges
    return net, x, plain


def _block_net(seed: int, block: str) -> Tuple[nn.Sequential, torch.Tensor, List[bool]]:
    """conv, ReLU, a Residual or DenseSkip block of two padded convs, ReLU, conv, ReLU, Linear:
    the fast path holds below the block and must step aside after it."""
    g = torch.Generator().manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    blk = Residual(body) if block == "residual" else DenseSkip(body)
    c = 2 if block == "residual" else 4
    net = _init(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), blk, nn.ReLU(),
                              nn.Conv2d(c, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(2 * 3 * 3, 3)), g)
    x = torch.rand(1, 1, 6, 6, generator=g, dtype=DT)
    return net, x, []


def _compare(fast, dense) -> None:
    """Same bounds (lower and every pre-activation pair) to float64 rounding, relative to scale."""
    pairs = [(fast.lower, dense.lower)] + [(a, b) for p, q in zip(fast.pre_bounds, dense.pre_bounds)
                                           for a, b in zip(p, q)]
    for a, b in pairs:
        scale = float(b.abs().max()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, scale))


def _fast_and_dense(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, plain):
    """dual_bounds and crown_bounds with the fast paths, each checked against the dense pass
    (``plain``); returns the dual's."""
    fast = dual_bounds(net, x, y, eps, norm=norm)
    _compare(fast, plain(lambda: dual_bounds(net, x, y, eps, norm=norm)))
    _compare(crown_bounds(net, x, y, eps, norm=norm), plain(lambda: crown_bounds(net, x, y, eps, norm=norm)))
    return fast


def _crown_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> List[torch.Tensor]:
    """Gradients of the sum of CROWN's lower bounds and of its pre-activation bounds (upper bounds
    weighted 1/2, so a swapped pair shows) w.r.t. the weights and x."""
    x = x.clone().requires_grad_(True)
    res = crown_bounds(net, x, y, eps, norm=norm)
    total = res.lower.sum() + sum(lo.sum() + 0.5 * up.sum() for lo, up in res.pre_bounds)
    return list(torch.autograd.grad(total, list(net.parameters()) + [x]))


def _compare_crown_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, plain) -> None:
    for a, b in zip(_crown_grads(net, x, y, eps, norm), plain(lambda: _crown_grads(net, x, y, eps, norm))):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, float(b.abs().max())))


def _l2_attack_min(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 40,
                   restarts: int = 3, seed: int = 0) -> torch.Tensor:
    """Smallest margin z_y - z_j per (example, j) found by normalised-gradient PGD in the l2
    ball of radius eps intersected with [0, 1]: (N, K-1), an upper bound on each minimum."""
    g = torch.Generator().manual_seed(seed)
    N, K = x.shape[0], net(x).shape[1]
    rows = [(i, j) for i in range(N) for j in range(K) if j != int(y[i])]
    xi = x[[i for i, _ in rows]]
    sel = torch.zeros(len(rows), K, dtype=DT)
    for r, (i, j) in enumerate(rows):
        sel[r, int(y[i])], sel[r, j] = 1.0, -1.0
    best = torch.full((len(rows),), float("inf"), dtype=DT)
    dims = tuple(range(1, x.dim()))
    for _ in range(restarts):
        d = torch.randn(xi.shape, generator=g, dtype=DT)
        xa = (xi + eps * 0.5 * d / d.flatten(1).norm(dim=1).view(-1, *[1] * len(dims))).clamp(0, 1)
        for t in range(steps):
            xa.requires_grad_(True)
            val = (net(xa) * sel).sum(-1)
            best = torch.minimum(best, val.detach())
            (grad,) = torch.autograd.grad(val.sum(), xa)
            gn = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * len(dims))
            xa = xa.detach() - eps * (0.5 * (1 - t / steps) + 0.05) * grad / gn
            delta = xa - xi
            dn = delta.flatten(1).norm(dim=1).view(-1, *[1] * len(dims))
            xa = (xi + delta * torch.clamp(eps / dn.clamp(min=1e-12), max=1.0)).clamp(0, 1)
    return best.view(N, K - 1)


def _check_sound(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, fast) -> None:
    """interval, dual, optimised dual and CROWN lower bounds <= the margins an attack reaches."""
    if norm == "linf":
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        K = net(x).shape[1]
        C = torch.stack([torch.stack([torch.eye(K, dtype=DT)[int(t)] - torch.eye(K, dtype=DT)[j]
                                      for j in range(K) if j != int(t)]) for t in y])
        reached = attack_min(net, C, lo, hi, steps=40, restarts=3)
    else:
        reached = _l2_attack_min(net, x, y, eps)
    opt = optimized_dual_bounds(net, x, y, eps, steps=10, norm=norm)
    for res in (fast, opt, interval_bounds(net, x, y, eps, norm=norm), crown_bounds(net, x, y, eps, norm=norm)):
        assert (res.lower <= reached + 1e-9).all(), (res.method, res.lower, reached)


@pytest.mark.parametrize("block", range(6))
def test_random_conv_chains_fast_path_equals_dense_pass(block, plain):
    """30 seeded chains (5 per block), each on an l_inf and an l2 ball: fast path == dense pass
    for the dual and CROWN, values and (CROWN) gradients (which layers the fast path takes is
    checked against the layout, with the dual's and with CROWN's ReLUs), and every bound below
    the margins that PGD reaches."""
    for seed in range(5 * block, 5 * block + 5):
        net, x, plain_convs = _random_chain(seed)
        layers, _ = build_layers(net, x[:1])
        crown_layers = [CrownReLU.from_relu(m) if isinstance(m, DualActivation) else m for m in layers]
        for c in range(len(plain_convs)):  # activation 2c + 1 follows conv c
            assert patches.applies(layers, 2 * c + 1) == all(plain_convs[:c + 1])
            assert patches.applies(crown_layers, 2 * c + 1) == all(plain_convs[:c + 1])
        y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
        for norm, eps in (("linf", 0.05 + 0.05 * (seed % 4)), ("l2", 0.3 + 0.2 * (seed % 3))):
            fast = _fast_and_dense(net, x, y, eps, norm, plain)
            _compare_crown_grads(net, x, y, eps, norm, plain)
            if seed % 2 == 0:
                _check_sound(net, x, y, eps, norm, fast)


@pytest.mark.parametrize("block", ["residual", "dense_skip"])
def test_blocks_fast_path_equals_dense_pass(block, plain):
    net, x, _ = _block_net(7, block)
    layers, _ = build_layers(net, x[:1])
    acts = [i for i, layer in enumerate(layers) if isinstance(layer, DualActivation)]
    # below the block (the first ReLU, the body's ReLU) the chain holds; from the join on it does not
    assert [patches.applies(layers, i) for i in acts] == [True, True, False, False]
    y = torch.tensor([1])
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        fast = _fast_and_dense(net, x, y, eps, norm, plain)
        _check_sound(net, x, y, eps, norm, fast)


@pytest.mark.parametrize("seed", range(4))
def test_tiny_conv_chains_below_every_corner(seed):
    """3-4 padded convs on a 1 x 4 x 4 input, one example: every bound method's lower bound is
    at most the smallest margin over the 2**16 corners of the l_inf box (and PGD's)."""
    g = torch.Generator().manual_seed(100 + seed)
    n_conv = 3 + seed % 2
    layers, c = [], 1
    for j in range(n_conv):
        c_out = _rand(g, 1, 3)
        pad = 2 if (seed, j) in ((0, 0), (1, n_conv - 1)) else 1  # a map that grows, once
        layers += [nn.Conv2d(c, c_out, 3, padding=pad), nn.ReLU()]
        c = c_out
    probe = nn.Sequential(*layers).double()(torch.zeros(1, 1, 4, 4, dtype=DT))
    net = _init(nn.Sequential(*layers, nn.Flatten(), nn.Linear(probe.numel(), 3)), g)
    x = torch.rand(1, 1, 4, 4, generator=g, dtype=DT)
    eps, y = 0.2, torch.tensor([seed % 3])
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    corner_min = _margins(net, _corners(lo, hi), int(y)).min(0).values
    res, crown = dual_bounds(net, x, y, eps), crown_bounds(net, x, y, eps)
    for other in (res, optimized_dual_bounds(net, x, y, eps, steps=20), interval_bounds(net, x, y, eps), crown):
        assert (other.lower[0] <= corner_min + 1e-12).all(), (other.method, other.lower, corner_min)
    # each activation's pre-bounds (the dual's and CROWN's) hold the values at the corners
    with torch.no_grad():
        h = _corners(lo, hi)
        k = 0
        for m in net:
            if isinstance(m, nn.ReLU):
                for b in (res, crown):
                    low, up = b.pre_bounds[k]
                    assert (h >= low - 1e-12).all() and (h <= up + 1e-12).all(), b.method
                k += 1
            h = m(h)
    _check_sound(net, x, y, eps, "linf", res)


def test_windows_equal_unfold():
    """patches._windows (strided views, one copy) gives F.unfold's windows, zero outside the map,
    on 300 seeded geometries (windows that start before the map, run past it, or skip rows)."""
    import torch.nn.functional as F

    from tutorial_lib.bounds.patches import _windows

    g = torch.Generator().manual_seed(5)
    for _ in range(300):
        N, C, H, W = _rand(g, 1, 3), _rand(g, 1, 3), _rand(g, 1, 9), _rand(g, 1, 9)
        t = torch.randn(N, C, H, W, generator=g, dtype=DT)
        (h, Sy, Oy), (w, Sx, Ox) = geom = [(_rand(g, 1, 6), _rand(g, 1, 3), _rand(g, -3, 2)) for _ in range(2)]
        Ho, Wo = _rand(g, 1, 5), _rand(g, 1, 5)
        P = 25  # the map inside zeros, wider than any span; then F.unfold over the windows' span
        big = F.pad(t, (P, P, P, P))
        span = big[:, :, P + Oy:P + Oy + (Ho - 1) * Sy + h, P + Ox:P + Ox + (Wo - 1) * Sx + w]
        assert span.shape[2:] == ((Ho - 1) * Sy + h, (Wo - 1) * Sx + w)
        want = F.unfold(span, (h, w), stride=(Sy, Sx)).transpose(1, 2)
        got = _windows(t, geom, Ho, Wo)
        assert got.is_contiguous() and torch.equal(got, want), (geom, Ho, Wo)
