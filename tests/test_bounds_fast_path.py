"""The fast paths of the exact dual bound give the numbers of the plain backward pass.

Fast paths: conv neurons bounded on their receptive fields with dense window matrices
(bounds.patches), the ReLU's constant terms summed over its unstable neurons only
(DualReLU.unstable_idx), and DualConv2d.transpose without a sliced copy (checked against
F.conv2d's adjoint). Each test computes
the same bound with the fast paths switched off (the dense identity pass, the dense dot
products) and compares values and gradients, on the shipped robust checkpoint (few unstable
ReLUs) and on random weights (many), on chains and on a residual net.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tutorial_lib import data as D
from tutorial_lib.bounds import dual_bounds, patches
from tutorial_lib.bounds.activations import DualActivation, DualReLU
from tutorial_lib.bounds.layers import DualConv2d, build_layers
from tutorial_lib.checkpoints import load_checkpoint
from tutorial_lib.models import Residual, mnist_small

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(n):
    net = load_checkpoint("mnist_small_robust")[0]
    x, y = D.test_subset("mnist", n)
    return net, x, y


def _random(n, seed=0):
    """Random weights in float64: with many unstable ReLUs, float32 rounding flips a neuron with a
    bound within rounding of 0 between stable and unstable in one pass and not the other (the
    gradients then differ by ~4e-4: a kink, not a bug)."""
    torch.manual_seed(seed)
    net = mnist_small().double().eval()
    g = torch.Generator().manual_seed(seed)
    return net, torch.rand(n, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def _bounds_and_grads(net, x, y, eps, norm="linf"):
    """The dual bound (lower, pre_bounds) and the gradient of its sum w.r.t. the weights and x."""
    x = x.clone().requires_grad_(True)
    net.zero_grad(set_to_none=True)
    res = dual_bounds(net, x, y, eps, norm=norm)
    res.lower.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]
    return res, grads


def _assert_close(fast, slow, tol):
    (rf, gf), (rs, gs) = fast, slow
    torch.testing.assert_close(rf.lower, rs.lower, atol=tol, rtol=tol)
    for (lf, uf), (ls, us) in zip(rf.pre_bounds, rs.pre_bounds):
        torch.testing.assert_close(lf, ls, atol=tol, rtol=tol)
        torch.testing.assert_close(uf, us, atol=tol, rtol=tol)
    for a, b in zip(gf, gs):
        scale = b.abs().max().clamp(min=1.0)
        assert (a - b).abs().max() <= tol * scale


@pytest.mark.parametrize("weights", ["trained", "random"])
def test_fast_paths_equal_the_plain_pass(weights, plain):
    net, x, y = _trained(6) if weights == "trained" else _random(6)
    fast = _bounds_and_grads(net, x, y, 0.1)
    # the fast paths are really taken: receptive fields for the second conv, the sparse ReLU
    # terms on every layer with trained weights (few unstable ReLUs), not on all with random ones
    layers, _ = build_layers(net, x[:1])
    assert patches.applies(layers, 3) and not patches.applies(layers, 6)
    sparse = []
    for lower, upper in fast[0].pre_bounds:
        relu = DualReLU(nn.ReLU(), tuple(lower.shape[1:]), tuple(lower.shape[1:]))
        relu.set_bounds(lower, upper)
        sparse.append(relu.unstable_idx is not None)
    assert all(sparse) if weights == "trained" else not all(sparse)
    slow = plain(lambda: _bounds_and_grads(net, x, y, 0.1))
    _assert_close(fast, slow, 1e-4)


@pytest.mark.parametrize("norm, eps", [("l2", 1.0), ("l1", 2.0)])
def test_fast_paths_equal_the_plain_pass_on_l2_l1_balls(norm, eps, plain):
    net, x, y = _trained(4)
    fast = _bounds_and_grads(net, x, y, eps, norm)
    slow = plain(lambda: _bounds_and_grads(net, x, y, eps, norm))
    _assert_close(fast, slow, 1e-4)


def _init(net, g):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                scale = m.weight[0].numel() ** -0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64) * scale)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.1)
    return net.eval()


def _res_cnn(seed):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))),
        nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5 * 5, 20), nn.ReLU(), nn.Linear(20, 5)).double()
    x = torch.rand(5, 1, 10, 10, generator=g, dtype=torch.float64)
    return _init(net, g), x, torch.randint(0, 5, (5,), generator=g)


@pytest.mark.parametrize("eps", [0.002, 0.1])
def test_residual_net_equals_the_plain_pass(eps, plain):
    net, x, y = _res_cnn(0)
    fast = _bounds_and_grads(net, x, y, eps)
    slow = plain(lambda: _bounds_and_grads(net, x, y, eps))
    _assert_close(fast, slow, 1e-9)


@pytest.mark.parametrize("conv1, conv2", [((4, 2, 1), (4, 2, 1)), ((3, 1, 0), (3, 2, 0)), ((5, 1, 2), (2, 2, 0)),
                                          ((3, 2, 0), (3, 1, 2)), ((2, 2, 0), (5, 1, 2))])
def test_conv_chain_geometries_equal_the_plain_pass(conv1, conv2, plain):
    """Kernel, stride, padding of both convs: windows that reach past the image, or stop short;
    the last pair's input window is too large for the dense window matrix (conv_transpose2d)."""
    g = torch.Generator().manual_seed(1)
    (k1, s1, p1), (k2, s2, p2) = conv1, conv2
    body = nn.Sequential(nn.Conv2d(2, 3, k1, stride=s1, padding=p1), nn.ReLU(),
                         nn.Conv2d(3, 4, k2, stride=s2, padding=p2), nn.ReLU(), nn.Flatten())
    x = torch.rand(3, 2, 11, 11, generator=g, dtype=torch.float64)
    n = body.double()(x).shape[1]
    net = _init(nn.Sequential(*body, nn.Linear(n, 7), nn.ReLU(), nn.Linear(7, 3)).double(), g)
    y = torch.randint(0, 3, (3,), generator=g)
    fast = _bounds_and_grads(net, x, y, 0.01)
    layers, _ = build_layers(net, x[:1])
    assert patches.applies(layers, 3)
    _assert_close(fast, plain(lambda: _bounds_and_grads(net, x, y, 0.01)), 1e-9)


def _relu_with_bounds(n_ex, shape, unstable_frac, seed):
    g = torch.Generator().manual_seed(seed)
    mid = torch.randn(n_ex, *shape, generator=g, dtype=torch.float64)
    rad = torch.rand(n_ex, *shape, generator=g, dtype=torch.float64) * 0.5
    crossing = torch.rand(n_ex, *shape, generator=g) < unstable_frac
    mid = torch.where(crossing, mid * 0.1, mid.sign() * (mid.abs() + 0.6))  # others stay on one side
    mid[0] = mid[0].abs() + 1.0  # example 0: no unstable neuron at all
    relu = DualReLU(nn.ReLU(), shape, shape)
    relu.set_bounds((mid - rad).requires_grad_(True), mid + rad)
    return relu


@pytest.mark.parametrize("rows", ["shared", "per_example"])
def test_sparse_relu_terms_equal_the_dense_dot_products(rows):
    relu = _relu_with_bounds(5, (3, 4, 4), 0.1, seed=1)
    assert relu.unstable_idx is not None and relu.unstable_idx.shape[0] == 5
    assert relu.unstable_idx.shape[1] == int(relu.unstable.flatten(1).sum(1).max())
    g = torch.Generator().manual_seed(2)
    nu = torch.randn(1 if rows == "shared" else 5, 7, 3, 4, 4, generator=g, dtype=torch.float64)
    nu.requires_grad_(True)
    s, a = relu._intercept_dots(nu)
    s0, a0 = DualActivation._intercept_dots(relu, nu)
    torch.testing.assert_close(s, s0)
    torch.testing.assert_close(a, a0)
    assert (a[0] == 0).all() and (a[1:] > 0).any()  # example 0 has no unstable neuron
    w = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((w[0] * s + w[1] * a).sum(), (nu, relu.l), retain_graph=True)
    grads0 = torch.autograd.grad((w[0] * s0 + w[1] * a0).sum(), (nu, relu.l))
    for a_, b_ in zip(grads, grads0):
        torch.testing.assert_close(a_, b_)


def test_dense_relu_terms_when_most_neurons_are_unstable():
    relu = _relu_with_bounds(4, (30,), 0.9, seed=3)
    assert relu.unstable_idx is None and relu.unstable_w is None
    nu = torch.randn(4, 2, 30, dtype=torch.float64)
    s, a = relu._intercept_dots(nu)
    torch.testing.assert_close(s, (nu * relu.w.unsqueeze(1)).sum(-1))
    torch.testing.assert_close(a, (nu.abs() * relu.w.unsqueeze(1)).sum(-1))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("cin, k, stride, padding", [(1, 4, 2, 1), (5, 4, 2, 1), (5, 3, 1, 1), (5, 4, 1, "same"),
                                                      (2, 4, 2, 0)])
def test_conv_transpose_is_the_adjoint(cin, k, stride, padding):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(cin, 3, k, stride=stride, padding=padding).double()
    x = torch.randn(1, cin, 9, 9, generator=g, dtype=torch.float64)
    out_shape = tuple(conv(x).shape[1:])
    layer = DualConv2d(conv, (cin, 9, 9), out_shape)
    v = torch.randn(2, 3, cin, 9, 9, generator=g, dtype=torch.float64)
    nu = torch.randn(2, 3, *out_shape, generator=g, dtype=torch.float64)
    lhs = (layer.linear(v) * nu).sum()
    rhs = (v * layer.transpose(nu)).sum()
    torch.testing.assert_close(lhs, rhs)
    # and the transpose is F.conv2d's own adjoint, entry by entry
    ref = torch.autograd.functional.vjp(lambda t: F.conv2d(F.pad(t, layer.pads), conv.weight, None, stride),
                                        v[0], nu[0])[1]
    torch.testing.assert_close(layer.transpose(nu)[0], ref)
