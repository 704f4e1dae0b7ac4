"""Certificates hold for the real-valued network, not only for its float32 evaluation.

A float32 bound carries rounding errors of its largest terms (~6e-8 relative); with large
cancelling terms a margin bound can be > 0 in float32 while its exact value is < 0. Certificates
are therefore computed in float64 on a copy of the model (``bounds.certified_bounds``, used by
``certified_error``), and every exact bound runs with TF32 off (``bounds.no_tf32``): TF32 tensor
cores (GPU) round the operands of matmuls and convolutions to 10 mantissa bits, ~1e-3 relative.
No GPU here: the TF32 switches are checked on CPU, and TF32's rounding is emulated.
"""
import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from tutorial_lib.bounds import (
    certified_accuracy_vs_eps,
    certified_bounds,
    certified_error,
    dual,
    dual_bounds,
    float64_copy,
    interval,
    interval_bounds,
    no_tf32,
    optimized_dual_bounds,
)
from tutorial_lib.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

B = torch.backends


@pytest.fixture
def tf32_state():
    """Restores the process's TF32 switches (legacy API) after the test."""
    saved = (torch.get_float32_matmul_precision(), B.cudnn.allow_tf32)
    yield
    torch.set_float32_matmul_precision(saved[0])
    B.cudnn.allow_tf32 = saved[1]


def _flags():
    return B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32, torch.get_float32_matmul_precision()


# ---------------------------------------------------------------- the TF32 guard
@pytest.mark.parametrize("precision, cudnn", [("high", True), ("medium", False), ("highest", True)])
def test_no_tf32_turns_both_off_and_restores(precision, cudnn, tf32_state):
    torch.set_float32_matmul_precision(precision)
    B.cudnn.allow_tf32 = cudnn
    before = _flags()
    with no_tf32():
        assert _flags() == (False, False, "highest")
    assert _flags() == before
    with pytest.raises(KeyError):  # restored on an exception too
        with no_tf32():
            raise KeyError("x")
    assert _flags() == before


def test_no_tf32_keeps_to_the_new_precision_api():
    """A caller who set TF32 with the fp32_precision attributes (PyTorch then refuses to read the
    legacy flags) gets them back; run in a fresh process, since the two APIs cannot be mixed."""
    code = ("import torch; from tutorial_lib.bounds import no_tf32; B = torch.backends\n"
            "B.cuda.matmul.fp32_precision = 'tf32'; B.cudnn.conv.fp32_precision = 'tf32'\n"
            "with no_tf32(): inside = (B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision)\n"
            "print(inside, (B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('ieee', 'ieee') ('tf32', 'tf32')"


def test_exact_bounds_run_with_tf32_off(monkeypatch, tf32_state):
    torch.set_float32_matmul_precision("high")
    B.cudnn.allow_tf32 = True
    seen = []
    final, boxes = dual._final_lower, interval._interval
    monkeypatch.setattr(dual, "_final_lower", lambda *a, **k: (seen.append(_flags()), final(*a, **k))[1])
    monkeypatch.setattr(interval, "_interval", lambda *a, **k: (seen.append(_flags()), boxes(*a, **k))[1])
    net, x, y = _small_mlp(0)
    dual_bounds(net, x, y, 0.01)
    optimized_dual_bounds(net, x, y, 0.01, steps=2)
    interval_bounds(net, x, y, 0.01)
    assert len(seen) >= 3 and all(s == (False, False, "highest") for s in seen)
    assert _flags() == (True, True, "high")


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """t (float32) rounded to TF32's 10-bit mantissa (round to nearest on the 13 dropped bits)."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def test_tf32_rounding_would_change_the_bound(mnist_test):
    """The dual bound of the shipped robust CNN with weights and inputs rounded as TF32 rounds a
    matmul's operands moves by orders of magnitude more than float32's own rounding, and in both
    directions: some bounds rise above the exact (float64) bound of the real network."""
    net = load_checkpoint("mnist_small_robust")[0].eval()
    x, y = mnist_test[0][:8], mnist_test[1][:8]
    tf = copy.deepcopy(net)
    with torch.no_grad():
        for p in tf.parameters():
            p.copy_(_tf32(p))
        low32 = dual_bounds(net, x, y, 0.1).lower.double()
        low_tf = dual_bounds(tf, _tf32(x), y, 0.1).lower.double()
    low64 = certified_bounds(net, x, y, 0.1).lower
    err32, err_tf = (low32 - low64).abs().max(), (low_tf - low64).abs().max()
    assert err_tf > 100 * err32
    assert (low_tf - low64).max() > 1e-4  # an over-estimate: TF32 claims more than is true


# ---------------------------------------------------------------- float32 vs the real network
def _cancelling_net() -> nn.Sequential:
    """Two hidden units 1e8 x_1 + 4.5 and 1e8 x_2, ReLU, margin h_1 - h_2 - 6 (float32 weights).
    At x = (1, 1) float32 rounds h_1 = 100000004.5 up to 100000008 (its spacing there is 8), and
    h_1 - h_2 - 6 = 2 > 0; the real network's margin is 4.5 - 6 = -1.5 < 0."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1e8, 0.0], [0.0, 1e8]]))
        net[0].bias.copy_(torch.tensor([4.5, 0.0]))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
        net[2].bias.copy_(torch.tensor([-6.0, 0.0]))
    return net.eval()


def test_float32_interval_certificate_of_a_false_margin_is_refused():
    net, x, y = _cancelling_net(), torch.ones(1, 2), torch.tensor([0])
    assert float(net(x)[0, 0] - net(x)[0, 1]) == 2.0  # float32 says class 0 ...
    exact = 1e8 + 4.5 - 1e8 - 6.0                      # ... the real network says class 1
    f32 = interval_bounds(net, x, y, 0.0)
    assert float(f32.lower) == 2.0 and bool(f32.certified)  # the false certificate
    sound = certified_bounds(net, x, y, 0.0, method="interval")
    assert sound.lower.dtype == torch.float64 and float(sound.lower) == exact
    assert not bool(sound.certified)
    assert certified_error(net, x, y, 0.0, method="interval") == 1.0
    assert certified_accuracy_vs_eps(net, x, y, [0.0], method="interval") == [0.0]
    assert net[0].weight.dtype == torch.float32  # the caller's model is untouched


def _small_mlp(seed: int, scale: float = 1.0):
    """A seeded float32 MLP 30-40-40-2 with N(0, scale^2) weights and biases (large, cancelling
    terms), one input in [0, 1]^30 and label 0."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 2))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * scale)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * scale)
    return net.eval(), torch.rand(1, 30, generator=g), torch.tensor([0])


def _just_above_zero_in_float32(eps: float):
    """A seeded MLP whose last bias is shifted so that its float32 dual bound is > 0 while the
    float64 bound of the same weights is < 0 (by much more than float64's rounding). The float32
    error depends on the BLAS's summation order, so the seed is searched here."""
    for seed in range(40):
        net, x, y = _small_mlp(seed, scale=30.0)
        with torch.no_grad():
            a = float(dual_bounds(net, x, y, eps).lower)
            b = float(dual_bounds(float64_copy(net), x.double(), y, eps).lower)
            if a <= b:  # float32 below the float64 bound here: rounding on the safe side
                continue
            net[4].bias[0] -= (a + b) / 2  # both bounds move by the (float32) shift
            a2 = float(dual_bounds(net, x, y, eps).lower)
            b2 = float(dual_bounds(float64_copy(net), x.double(), y, eps).lower)
        if a2 > 0 and b2 < -1e-9 * abs(b):
            return net, x, y
    raise AssertionError("no seed gave a float32 dual bound above 0 with a float64 bound below")


def test_float32_dual_certificate_of_a_negative_bound_is_refused():
    eps = 0.01
    net, x, y = _just_above_zero_in_float32(eps)
    assert bool(dual_bounds(net, x, y, eps).certified)  # float32: a false certificate
    sound = certified_bounds(net, x, y, eps)
    assert float(sound.lower) < 0 and not bool(sound.certified)
    assert certified_error(net, x, y, eps) == 1.0
    assert net[0].weight.dtype == torch.float32 and net[0].weight.requires_grad


def test_float64_copy_leaves_the_model_alone():
    net, _, _ = _small_mlp(1)
    w = net[0].weight.detach().clone()
    twin = float64_copy(net)
    assert twin is not net and twin[0].weight.dtype == torch.float64
    assert not any(p.requires_grad for p in twin.parameters())
    assert torch.equal(twin[0].weight, w.double()) and torch.equal(net[0].weight, w)
    assert float64_copy(twin) is twin


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.58)])
def test_float64_certificates_of_the_shipped_cnn_match_float32(norm, eps, mnist_test):
    """On the shipped robust CNN the float64 certificates are those of float32 (no margin bound
    within float32 rounding of 0 on these 40 images): the switch changes no reported number."""
    name = "mnist_small_robust_l2" if norm == "l2" else "mnist_small_robust"
    net = load_checkpoint(name)[0].eval()
    x, y = mnist_test[0][:40], mnist_test[1][:40]
    with torch.no_grad():
        low32 = dual_bounds(net, x, y, eps, norm=norm).lower
    low64 = certified_bounds(net, x, y, eps, norm=norm).lower
    assert torch.equal((low32 > 0).all(1), (low64 > 0).all(1))
    assert (low32.double() - low64).abs().max() < 1e-4 * max(1.0, float(low64.abs().max()))


def test_every_bound_method_checks_the_model_with_tf32_off(monkeypatch, tf32_state):
    """The check that the model equals the composition of its layers (bounds.spec.prepare) runs
    inside every method with TF32 off: with TF32 on a GPU the two differ by ~1e-3 and the bounds of
    a plain model would be refused (estimated_dual_bounds, lp/milp and node_bounds ran outside)."""
    from tutorial_lib.bounds import estimated_dual_bounds, lp_bounds, milp_bounds, node_bounds, spec
    torch.set_float32_matmul_precision("high")
    B.cudnn.allow_tf32 = True
    seen = []
    real = spec._check_layers_reproduce_model
    monkeypatch.setattr(spec, "_check_layers_reproduce_model",
                        lambda *a, **k: (seen.append(_flags()), real(*a, **k))[1])
    net, x, y = _small_mlp(0)
    calls = [lambda: estimated_dual_bounds(net, x, y, 0.01, proj=5), lambda: lp_bounds(net, x[:1], y[:1], 0.01),
             lambda: milp_bounds(net, x[:1], y[:1], 0.01), lambda: node_bounds(net, x, 0.01),
             lambda: dual_bounds(net, x, y, 0.01)]
    for call in calls:
        n = len(seen)
        call()
        assert len(seen) > n and all(s == (False, False, "highest") for s in seen[n:])
    assert _flags() == (True, True, "high")
