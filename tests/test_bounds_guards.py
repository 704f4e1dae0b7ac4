"""A certificate guards itself: inputs, models and solver answers the bounds must refuse
rather than certify (tutorial_lib.bounds). Tiny networks; float64 unless a test says otherwise."""
import copy
import math

import pytest
import torch
from torch import nn

from tutorial_lib.bounds import (
    SolverError,
    UnsupportedLayerError,
    certified_accuracy_vs_eps,
    certified_bounds,
    certified_error,
    dual_bounds,
    float64_copy,
    interval_bounds,
    is_certified,
    lp_bounds,
    milp_bounds,
    robust_loss,
    spec as spec_mod,
)
from tutorial_lib.bounds.spec import prepare
from tutorial_lib.models import Normalize

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _init(net, seed, gain=1.0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    net = net.to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_((torch.randn(m.weight.shape, generator=g, dtype=DT)
                                * gain * math.sqrt(2.0 / fan_in)).to(dtype))
                m.bias.copy_((0.2 * torch.randn(m.bias.shape, generator=g, dtype=DT)).to(dtype))
    return net


def mlp(seed=0, dtype=DT):
    return _init(nn.Sequential(nn.Flatten(), nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(),
                               nn.Linear(8, 3)), seed, dtype=dtype)


def data(n=4, seed=1, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 6, generator=g, dtype=DT).to(dtype), torch.arange(n) % 3


def conv_net(seed=0):
    return _init(nn.Sequential(Normalize((0.5,), (0.25,)), nn.Conv2d(1, 3, 3), nn.ReLU(),
                               nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU(),
                               nn.Flatten(), nn.Linear(8, 3)), seed)


# ---------------------------------------------------------------- 1. non-finite inputs, eps, weights
@pytest.mark.parametrize("fn", [interval_bounds, dual_bounds, lp_bounds])
def test_nan_pixel_is_refused(fn):
    net, (x, y) = mlp(), data()
    x[2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fn(net, x, y, 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        certified_error(net, x, y, 0.1)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), torch.tensor([0.1, float("inf"), 0.1, 0.1], dtype=DT)])
def test_non_finite_eps_is_refused(eps):
    net, (x, y) = mlp(), data()
    for clip in (None, (0.0, 1.0)):
        with pytest.raises(ValueError, match="finite"):
            dual_bounds(net, x, y, eps, clip=clip)


def test_eps_inf_without_box_reports_no_certified_error_zero():
    net, (x, y) = mlp(), data()
    with pytest.raises(ValueError, match="finite"):
        certified_error(net, x, y, float("inf"), clip=None)
    with pytest.raises(ValueError, match="finite"):
        robust_loss(net, x, y, float("inf"), clip=None)


def test_eps_overflowing_the_dtype_is_refused():
    net, (x, y) = mlp(dtype=torch.float32), data(dtype=torch.float32)
    with pytest.raises(ValueError):
        dual_bounds(net, x, y, 1e39, clip=None)  # inf in float32


def test_non_numeric_eps_is_refused():
    net, (x, y) = mlp(), data()
    with pytest.raises(TypeError):
        dual_bounds(net, x, y, "0.1")


@pytest.mark.parametrize("fn", [interval_bounds, dual_bounds])
def test_nan_weight_is_named_and_never_certified(fn, monkeypatch):
    net, (x, y) = mlp(), data()
    with torch.no_grad():
        net[1].weight[1, 2] = float("nan")  # a hidden layer: today's dual bound treats it as dead
    with pytest.warns(UserWarning, match=r"'1\.weight'"):
        assert not fn(net, x, y, 0.1).certified.any()
    with pytest.warns(UserWarning, match=r"'1\.weight'"):
        assert certified_error(net, x, y, 0.1) == 1.0
    with pytest.warns(UserWarning, match=r"'1\.weight'"):
        assert float(robust_loss(net, x, y, 0.1)[1]) == 1.0
    with pytest.raises(ValueError, match=r"'1\.weight'"), pytest.warns(UserWarning):
        lp_bounds(net, x, y, 0.1)


def test_infinite_bounds_are_never_certified():
    low = torch.tensor([[float("inf"), 1.0], [1.0, 2.0], [float("nan"), 1.0], [float("-inf"), 1.0]])
    assert is_certified(low).tolist() == [False, True, False, False]


def _overflowing_mlp():
    """mlp() with its weights x300, in float32: its logits (~1e7) overflow float16 (max 65504)."""
    net = mlp(dtype=torch.float32)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(300.0)
    return net


def test_float16_overflow_never_reports_certified_error_zero():
    """The certificates run on a float64 copy, exact for float16 weights but not for the float16
    network as run: there the logits overflow, and example 2 is misclassified at x itself (its
    margins are NaN) while the float64 copy certifies it. So the certificate paths refuse float16
    models, as the bounds do, instead of certifying a network that is not the one that runs."""
    net = _overflowing_mlp().half()
    x, y = data(dtype=torch.float16)
    # why a certificate of the copy would be false: the float16 network is broken where the copy is certified
    with torch.no_grad():
        z = net(x)
    margins = z.gather(1, y[:, None]) - z
    assert not torch.isfinite(margins[2]).all() and int(z[2].argmax()) != int(y[2])
    exact = dual_bounds(copy.deepcopy(net).double(), x.double(), y, 0.01)
    assert bool(exact.certified[2])  # what certified_error returned (0.5, example 2 certified) before it refused
    for call in (lambda: certified_error(net, x, y, 0.01),
                 lambda: certified_error(net, x, y, 0.01, method="interval"),
                 lambda: certified_error(net, x.float(), y, 0.01),  # a float32 x does not make the model float32
                 lambda: certified_bounds(net, x, y, 0.01),
                 lambda: certified_accuracy_vs_eps(net, x, y, [0.0, 0.01]),
                 lambda: float64_copy(net),
                 lambda: robust_loss(net, x, y, 0.01)):
        with pytest.raises(ValueError, match=r"refuse float16 models.*model\.float\(\)"):
            call()
    assert all(p.dtype == torch.float16 for p in net.parameters())  # the caller's model untouched
    # the same (float16-exact) weights in float32 are certified, on the same float64 copy: the refusal is the dtype's
    assert certified_error(copy.deepcopy(net).float(), x.float(), y, 0.01) == float((~exact.certified).double().mean())


# ---------------------------------------------------------------- 2. the model that runs
class Residual(nn.Sequential):
    def forward(self, x):
        h = x
        for m in self:
            h = m(h)
        return h + x[:, :3]


def test_sequential_with_overridden_forward_is_refused():
    net = Residual(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(DT)
    x, y = data()
    with pytest.raises((UnsupportedLayerError, ValueError), match="forward"):
        dual_bounds(net, x, y, 0.05)


@pytest.mark.parametrize("where", ["model", "sub"])
@pytest.mark.parametrize("pre", [False, True])
def test_forward_hooks_are_refused(where, pre):
    net, (x, y) = mlp(), data()
    mod = net if where == "model" else net[2]
    if pre:
        h = mod.register_forward_pre_hook(lambda m, inp: (inp[0] * 2,))
    else:
        h = mod.register_forward_hook(lambda m, inp, out: out * 2)
    try:
        with pytest.raises(UnsupportedLayerError, match="hook"):
            dual_bounds(net, x, y, 0.05)
    finally:
        h.remove()
    dual_bounds(net, x, y, 0.05)  # fine once removed


def test_global_forward_hook_is_refused():
    net, (x, y) = mlp(), data()
    h = nn.modules.module.register_module_forward_hook(lambda m, inp, out: out)
    try:
        with pytest.raises(UnsupportedLayerError, match="global"):
            interval_bounds(net, x, y, 0.05)
    finally:
        h.remove()


def test_layer_list_must_reproduce_the_model():
    net, (x, y) = mlp(), data()
    layers = prepare(net, x, y, 0.05).layers
    # a model whose layers disagree with its forward: monkeypatch the class-level forward of a
    # Linear subclass is refused by the layer table, so break the comparison directly
    h = x
    for layer in layers:
        h = layer.forward(h)
    torch.testing.assert_close(h, net(x))

    class Shifted(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner(z) + 1.0

    with pytest.raises(ValueError, match="differs"):
        spec_mod._check_layers_reproduce_model(Shifted(net), layers, x)


# ---------------------------------------------------------------- 3. Normalize with std <= 0
@pytest.mark.parametrize("std", [0.0, -0.25, float("nan")])
@pytest.mark.parametrize("fn", [interval_bounds, dual_bounds])
def test_normalize_with_bad_std_is_refused(std, fn):
    net = conv_net()
    x = torch.rand(2, 1, 8, 8, dtype=DT)
    fn(net, x, torch.tensor([0, 1]), 0.05)  # fine with std > 0
    net[0].load_state_dict({"mean": net[0].mean, "std": torch.full_like(net[0].std, std)})
    with pytest.raises(ValueError, match="std"):
        fn(net, x, torch.tensor([0, 1]), 0.05)


# ---------------------------------------------------------------- 4. low precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_models_are_refused(dtype):
    net, (x, y) = mlp(dtype=dtype), data(dtype=dtype)
    with pytest.raises(ValueError, match=r"model\.float\(\)"):
        dual_bounds(net, x, y, 0.05)
    name = str(dtype).replace("torch.", "")
    for call in (lambda: certified_error(net, x, y, 0.05), lambda: certified_bounds(net, x, y, 0.05),
                 lambda: certified_accuracy_vs_eps(net, x, y, [0.05])):  # their float64 copy must not hide the dtype
        with pytest.raises(ValueError, match=rf"refuse {name} models.*model\.float\(\)"):
            call()


# ---------------------------------------------------------------- 5. MILP answers are checked
def _sampled_margins(net, x, y, eps, n=3000):
    """The smallest margin over n corners and uniform points of each ball (an attack's bound)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(x.shape[0]):
        d = (torch.rand(n, *x.shape[1:], generator=g, dtype=x.dtype) * 2 - 1) * eps
        d[:n // 2] = d[:n // 2].sign() * eps
        z = net((x[i] + d).clamp(0, 1))
        m = z[:, y[i]:y[i] + 1] - z
        m[:, y[i]] = float("inf")
        out.append(float(m.detach().min()))
    return torch.tensor(out, dtype=DT)


def scaled_mlp(seed=0, scale=1000.0):
    net = _init(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)), seed)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
                m.bias.mul_(scale)
    return net


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_milp_optimum_is_below_every_attack(scale):
    """x1000 weights (logits ~1e9): with tightened feasibility tolerances HiGHS reported a
    minimum above a margin that sampling reaches; now the optimum is <= the attack or refused."""
    net, (x, y) = scaled_mlp(0, scale), data(3, 1)
    att = _sampled_margins(net, x, y, 0.1)
    try:
        res = milp_bounds(net, x, y, 0.1)
    except SolverError:
        assert scale > 1
        return
    low = res.lower.min(1).values
    assert (low <= att + 1e-9 * att.abs().clamp(min=1)).all(), (low, att)
    # the attained values are the network's margins at x_worst
    N, m = res.lower.shape
    z = net(res.x_worst.view(N * m, -1)).view(N, m, -1)
    from tutorial_lib.bounds import margin_spec
    got = (margin_spec(y, 3).to(DT) * z).sum(-1)
    torch.testing.assert_close(got, res.info["attained"], rtol=1e-6, atol=1e-6 * float(z.abs().max()))


def test_milp_answer_the_network_does_not_attain_is_refused(monkeypatch):
    from tutorial_lib.bounds import lp as lp_mod
    net, (x, y) = mlp(), data(2)
    real = lp_mod._check_answer

    def lying(blocks, acts, xw, c, attained, lower, what):  # as if HiGHS reported +1 too much
        return real(blocks, acts, xw, c, attained + 1.0, lower + 1.0, what)

    monkeypatch.setattr(lp_mod, "_check_answer", lying)
    with pytest.raises(SolverError, match="does not hold"):
        milp_bounds(net, x, y, 0.1)


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_milp_on_tiny_weights_is_exact_relative_to_the_margins(seed):
    """Weights x 1e-3 (margins ~1e-4; the objective moves by ~1e-7 over the ball): HiGHS's
    absolute tolerances (gaps 1e-9, feasibility 1e-7) were as large as that, and the "exact"
    minimum sat 3e-10..2e-9 above a margin that sampling reaches (relative 2e-6..2e-5). The
    objective is now scaled to move by about 1, so the minimum is exact relative to the margins."""
    net, (x, y) = scaled_mlp(seed, 1e-3), data(3, 1)
    att = _sampled_margins(net, x, y, 0.1)
    res = milp_bounds(net, x, y, 0.1)
    low = res.lower.min(1).values
    assert (low <= att + 1e-9 * att.abs()).all(), (low - att) / att.abs()
    from tutorial_lib.bounds import margin_spec
    N, m = res.lower.shape
    with torch.no_grad():
        z = net(res.x_worst.view(N * m, -1)).view(N, m, -1)
    got = (margin_spec(y, 3).to(DT) * z).sum(-1)  # the network's margins at x_worst
    scale = float(z.abs().max())
    assert scale < 1e-2
    torch.testing.assert_close(got, res.info["attained"], rtol=0, atol=1e-6 * scale)
    assert (res.lower <= got).all()


def test_milp_answer_check_is_relative_to_the_logits(monkeypatch):
    """An answer off by 1e-3 of itself (~1e-7 on a tiny-weight network, inside the old absolute
    tolerance 1e-6) is solved again with tighter tolerances, and refused if still off."""
    from tutorial_lib.bounds import lp as lp_mod
    net, (x, y) = scaled_mlp(0, 1e-3), data(2, 1)
    real = lp_mod._check_answer
    calls = []

    def off(blocks, acts, xw, c, attained, lower, what, first_only=False):
        calls.append(what)
        d = 0.0 if first_only and len(calls) > 1 else 1e-3 * abs(attained)
        return real(blocks, acts, xw, c, attained + d, lower + d, what)

    monkeypatch.setattr(lp_mod, "_check_answer", off)
    with pytest.raises(SolverError, match="does not hold"):
        milp_bounds(net, x[:1], y[:1], 0.1)
    assert len(calls) == 2 and calls[0] == calls[1]  # one re-solve of the same row, then refused
    calls.clear()
    monkeypatch.setattr(lp_mod, "_check_answer", real)
    want = milp_bounds(net, x[:1], y[:1], 0.1).lower
    monkeypatch.setattr(lp_mod, "_check_answer", lambda *a: off(*a, first_only=True))
    got = milp_bounds(net, x[:1], y[:1], 0.1).lower  # the first answer fails, the re-solve passes
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)


def test_milp_time_limit_is_a_hard_limit(monkeypatch):
    """time_limit covers all examples and rows together (it was given to HiGHS per row). A fake
    clock that advances 0.15 s per solve makes this independent of the machine's speed."""
    import types

    from tutorial_lib.bounds import lp as lp_mod
    net, (x, y) = mlp(), data(3)
    real = lp_mod._solve
    clock = {"now": 1000.0, "solves": 0}

    def slow(prob, opts, what):
        clock["now"] += 0.15
        clock["solves"] += 1
        return real(prob, opts, what)

    monkeypatch.setattr(lp_mod, "_solve", slow)
    monkeypatch.setattr(lp_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    with pytest.raises(SolverError, match="time_limit|user_limit"):
        milp_bounds(net, x, y, 0.1, time_limit=0.5)  # 6 rows x 0.15 s > 0.5 s
    assert clock["solves"] <= 4  # stopped at the first check past the deadline, not after all 6 rows


# ---------------------------------------------------------------- 6. receptive-field branch
def plain_cnn(seed=0):
    return _init(nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
                               nn.Conv2d(4, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)), seed)


def test_receptive_field_branch_intersects_with_interval_bounds(monkeypatch):
    from tutorial_lib.bounds import patches
    net = plain_cnn()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(3, 1, 8, 8, generator=g, dtype=DT), torch.tensor([0, 1, 2])
    P = prepare(net, x, y, 0.3)
    assert patches.applies(P.layers, 3) and patches.applies(P.layers, 5)
    plain = dual_bounds(net, x, y, 0.3).pre_bounds
    inter = dual_bounds(net, x, y, 0.3, intersect_ibp=True).pre_bounds
    ibp = interval_bounds(net, x, y, 0.3).pre_bounds
    for (l1, u1), (li, ui) in zip(inter, ibp):  # "dual intersected with interval" everywhere
        assert (l1 >= li).all() and (u1 <= ui).all()
    # the first receptive-field layer sees the same (exact) bounds below it in both runs
    (l0, u0), (l1, u1), (li, ui) = plain[1], inter[1], ibp[1]
    assert torch.equal(l1, torch.maximum(l0, li)) and torch.equal(u1, torch.minimum(u0, ui))
    assert (li > l0).any() or (ui < u0).any()  # interval is tighter somewhere at this radius
    # intersect_ibp=False is untouched: the plain run equals the dense pass (receptive fields off)
    fast = dual_bounds(net, x, y, 0.3).lower
    monkeypatch.setattr(patches, "applies", lambda layers, i: False)
    torch.testing.assert_close(fast, dual_bounds(net, x, y, 0.3).lower, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- 7. in-place activations
def _in_place_net(kind, inplace):
    """A Linear, then a block whose body starts with a ReLU (in place or not), then the logits."""
    from tutorial_lib.models import DenseSkip, Residual
    act = nn.ReLU(inplace=inplace)
    if kind == "residual":
        block, width = Residual(nn.Sequential(act, nn.Linear(5, 5))), 5
    elif kind == "dense":
        block, width = DenseSkip(nn.Sequential(act, nn.Linear(5, 2))), 7
    else:  # nested: in place deep inside a residual block's dense skip
        block, width = Residual(nn.Sequential(DenseSkip(nn.Sequential(act, nn.Linear(5, 2))), nn.Linear(7, 5))), 5
    return _init(nn.Sequential(nn.Linear(4, 5), block, nn.Linear(width, 3)), 3).eval()


@pytest.mark.parametrize("kind", ["residual", "dense", "nested"])
def test_in_place_activation_in_a_block_is_refused(kind):
    """nn.ReLU(inplace=True) first in a block's body overwrites the block's input, which the
    shortcut / concatenation reads afterwards: the model that runs is not the one bounded."""
    bad, good = _in_place_net(kind, True), _in_place_net(kind, False)
    good.load_state_dict(bad.state_dict())
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 4, generator=g, dtype=DT), torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert not torch.allclose(bad(x), good(x))  # the hazard is real: two different functions
    for fn in (interval_bounds, dual_bounds, lp_bounds, milp_bounds):
        with pytest.raises(UnsupportedLayerError, match=r"in place.*inside a (Residual|DenseSkip) block"):
            fn(bad, x, y, 0.05)
        fn(good, x, y, 0.05)  # the same network without in-place activations is bounded


def test_in_place_activation_in_a_chain_is_bounded_and_first_layer_refused():
    """In a plain chain nothing reads an activation's input again: inplace=True there gives the
    same bounds; on the network's input it would overwrite the caller's x: refused."""
    chain = _init(nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)), 1).eval()
    plain = _init(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), 1).eval()
    x, y = torch.rand(2, 4, dtype=DT), torch.tensor([0, 1])
    torch.testing.assert_close(dual_bounds(chain, x, y, 0.1).lower, dual_bounds(plain, x, y, 0.1).lower)
    first = nn.Sequential(nn.ReLU(inplace=True), *_init(nn.Sequential(nn.Linear(4, 3)), 1)).eval()
    x0 = x - 0.5
    kept = x0.clone()
    with pytest.raises(UnsupportedLayerError, match="network's input"):
        dual_bounds(first, x0, y, 0.1, clip=None)
    assert torch.equal(x0, kept)  # the caller's tensor is untouched


# ---------------------------------------------------------------- 8. user-supplied pre-activation bounds
def _sample_hull_bounds(net, x, y, eps):
    """Pre-activation bounds that are feasible but too tight: per example, the range of each
    neuron over exactly the points check_pre_bounds samples (so they pass its check), which
    misses the corners of the box where the true range is attained."""
    P = prepare(net, x, y, eps)
    g = torch.Generator().manual_seed(0)
    per_layer = None
    for n in range(x.shape[0]):
        pts = spec_mod._input_set_samples(P, n, spec_mod.PRE_BOUNDS_SAMPLES, g)
        zs = spec_mod._activation_inputs(P.layers, pts)
        per_layer = per_layer or [[] for _ in zs]
        for k, z in enumerate(zs):
            per_layer[k].append((z.min(0).values, z.max(0).values))
    return [(torch.stack([a for a, _ in ex]), torch.stack([b for _, b in ex])) for ex in per_layer]


def _ten_input_mlp(seed):
    return _init(nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)),
                 seed).eval()


def test_too_tight_feasible_pre_bounds_give_conditional_results_that_are_not_certificates():
    """Bounds containing every sampled value pass the check, yet exclude values the network
    takes elsewhere: the MILP on them claims a minimum above what an attack reaches. So every
    result computed from user pre_bounds is marked conditional and never certifies."""
    from bound_checks import attack_min

    from tutorial_lib.bounds import ConditionalBoundsError, margin_spec, optimized_dual_bounds
    net = _ten_input_mlp(1)
    g = torch.Generator().manual_seed(1)
    x, y, eps = torch.rand(2, 10, generator=g, dtype=DT), torch.tensor([0, 1]), 0.1
    tight = _sample_hull_bounds(net, x, y, eps)
    mi = milp_bounds(net, x, y, eps, pre_bounds=tight)  # passes the sampled check ...
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    att = attack_min(net, margin_spec(y, 3).to(DT), lo, hi)
    assert (mi.lower > att + 0.05).any()  # ... and is unsound: the hazard the flag guards against
    assert (milp_bounds(net, x, y, eps).lower <= att + 1e-9).all()  # (without them: sound)
    results = [mi, dual_bounds(net, x, y, eps, pre_bounds=tight),
               optimized_dual_bounds(net, x, y, eps, steps=3, pre_bounds=tight)]
    try:
        results.append(lp_bounds(net, x, y, eps, pre_bounds=tight))
    except SolverError as e:  # the LP may also notice: its bound above a margin the network takes
        assert "pre_bounds" in str(e)
    for r in results:
        assert r.conditional_on_user_bounds, r.method
        with pytest.raises(ConditionalBoundsError, match="pre_bounds"):
            _ = r.certified
        with pytest.raises(ConditionalBoundsError):
            is_certified(r)
    # the same bounds computed by the library are not conditional, and certify as before
    own = dual_bounds(net, x, y, eps)
    assert not own.conditional_on_user_bounds
    assert torch.equal(own.certified, is_certified(own.lower)) and torch.equal(is_certified(own), own.certified)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_pre_bounds_that_miss_a_value_the_network_takes_are_refused(norm):
    """Bounds that exclude the network's value at the centre, or at a sampled point of the input
    set (the corners of the box / the ball's surface), or hold NaN: ValueError, no bound."""
    net = _ten_input_mlp(2)
    g = torch.Generator().manual_seed(2)
    x, y, eps = torch.rand(2, 10, generator=g, dtype=DT), torch.tensor([0, 1]), 0.2
    good = [(lo.detach(), up.detach()) for lo, up in dual_bounds(net, x, y, eps, norm=norm).pre_bounds]
    lp_bounds(net, x, y, eps, norm=norm, pre_bounds=good)  # valid bounds: accepted
    P = prepare(net, x, y, eps, norm=norm)
    z0 = spec_mod._activation_inputs(P.layers, x)  # the values at the centres
    centre_missed = list(good)
    centre_missed[1] = (good[1][0], torch.minimum(good[1][1], z0[1] - 1e-3))  # below the centre's value
    hull = _sample_hull_bounds(net, x, y, eps)
    centre_only = [(z.detach(), z.detach()) for z in z0]  # contains the centre, no other point
    nan = [(lo.clone(), up) for lo, up in good]
    nan[0][0][0, 0] = float("nan")
    for bad, what in ((centre_missed, "the centre"), (centre_only, "sampled point"), (nan, "NaN")):
        for fn in (dual_bounds, lp_bounds):
            with pytest.raises(ValueError, match=what):
                fn(net, x, y, eps, norm=norm, pre_bounds=bad)
    dual_bounds(net, x, y, eps, norm=norm, pre_bounds=hull)  # (the hull passes: it holds the samples)
