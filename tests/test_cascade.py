"""Cascades of certified models: the routing, Wong et al.'s (unsound) certificate, the sound one,
and the cascade attack (tutorial_lib.defenses.cascade, tutorial_lib.attacks.cascade)."""
import math

import pytest
import torch
from torch import nn

from tutorial_lib import cascade_model as CM, data as D
from tutorial_lib.attacks import cascade as CA, pgd as PG
from tutorial_lib.bounds import dual_bounds, is_certified
from tutorial_lib.checkpoints import load_checkpoint
from tutorial_lib.defenses import cascade as C

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.1


def margin_net(w, b):
    """A 2-class Linear-ReLU-Linear net on [0, 1]^2 whose margin z_0 - z_1 is w . x + b.

    The hidden layer is the identity (its ReLUs are stable on the box: inputs are >= 0), so the
    dual bound of the margin over a box is its exact minimum, which the tests compute by hand."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[w[0], w[1]], [0.0, 0.0]]))
        net[2].bias.copy_(torch.tensor([b, 0.0]))
    return net.eval()


X0 = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
Y0 = torch.tensor([0])


def constructed_cascades():
    """Three cascades where the paper certifies x = (0.5, 0.5) for label 0 at eps 0.1 (l_inf), and a
    point of the ball gets label 1. In each, the margins are linear and the certificates exact:

    * 'fallback': stage 0 (margin 0.65 - x1) accepts x (min 0.05 on x1 in [0.4, 0.6]); at
      x' = (0.6, .) it does not (min -0.05), the fallback (0.55 - x1) answers 1.
    * 'earlier stage': stage 0 (margin x1 - 0.55) predicts 1 at x and does not accept it, stage 1
      (1 - x1) accepts x; at x' = (0.4, .) stage 0 accepts label 1 (its margin for 1 is >= 0.05).
    * 'hinge needed': stage 0 (x2 - 0.47), stage 1 (0.67 - x1; accepts x), fallback
      (0.85 - x1 - x2 / 2). Plain PGD on the fallback goes to the corner (0.6, 0.6), where stage 0
      accepts label 0; the fallback is wrong and nobody accepts only near (0.6, x2), 0.5 < x2 < 0.57,
      which the objective reaches only through the hinge on stage 0's certificate.
    """
    return {
        "fallback": C.Cascade([margin_net((-1, 0), 0.65), margin_net((-1, 0), 0.55)], EPS),
        "earlier stage": C.Cascade([margin_net((1, 0), -0.55), margin_net((-1, 0), 1.0)], EPS),
        "hinge needed": C.Cascade([margin_net((0, 1), -0.47), margin_net((-1, 0), 0.67),
                                   margin_net((-1, -0.5), 0.85)], EPS),
    }


@pytest.mark.parametrize("name", ["fallback", "earlier stage", "hinge needed"])
def test_constructed_case_paper_certifies_attack_breaks_sound_refuses(name):
    cascade = constructed_cascades()[name]
    cert = C.certify_cascade(cascade, X0, Y0)
    assert cert.paper.item() and not cert.sound.item()
    assert C.paper_certified(cascade, X0, Y0).item() and not C.sound_certified(cascade, X0, Y0).item()
    attack = CA.CascadeAttack(EPS, steps=20)
    x_adv = attack(cascade, X0, Y0)
    assert attack.last_report.broken.item()
    assert (x_adv - X0).abs().max() <= EPS + 1e-12 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert cascade.predict(x_adv).item() == 1
    expected_stage = {"fallback": (1, False), "earlier stage": (0, True), "hinge needed": (2, False)}[name]
    assert (attack.last_report.stage.item(), attack.last_report.accepted.item()) == expected_stage


def test_hinge_on_the_earlier_certificates_is_what_breaks_the_third_case():
    cascade = constructed_cascades()["hinge needed"]
    without = CA.CascadeAttack(EPS, steps=20, penalty=0.0)
    without(cascade, X0, Y0)
    assert not without.last_report.broken.item()
    with_hinge = CA.CascadeAttack(EPS, steps=20)
    with_hinge(cascade, X0, Y0)
    assert with_hinge.last_report.broken.item()


def test_l2_and_targeted_attacks_break_the_earlier_stage_case():
    cascade = constructed_cascades()["earlier stage"]
    attack = CA.CascadeAttack(EPS, norm="l2", steps=20)
    x_adv = attack(cascade, X0, Y0)
    assert attack.last_report.broken.item() and (x_adv - X0).norm() <= EPS + 1e-12
    targeted = CA.CascadeAttack(EPS, steps=20)
    targeted(cascade, X0, Y0, target=torch.tensor([1]))
    assert targeted.last_report.broken.item() and targeted.last_report.pred.item() == 1
    # stage 0 accepts label 1 only where x1 < 0.45 (its margin for 1 is 0.55 - x1): outside a ball of 0.04
    small = CA.CascadeAttack(0.04, steps=20)
    small(cascade, X0, Y0)
    assert not small.last_report.broken.item()


def test_attack_cascade_function_returns_the_report():
    cascade = constructed_cascades()["earlier stage"]
    x_adv, broken, stage = CA.attack_cascade(cascade, X0, Y0, steps=20)
    assert broken.tolist() == [True] and stage.tolist() == [0]
    assert cascade.predict(x_adv).item() == 1


# ---------------------------------------------------------------- random tiny cascades

def random_cascade(seed, fallback=-1, stages=3, hidden=8, classes=3):
    """Stages = one random Linear-ReLU-Linear net on [0, 1]^2 (its hidden units' hyperplanes pass
    through random points of the box) with each parameter multiplied by 1 + 0.3 N(0, 1), afresh
    per stage: the stages mostly agree, and disagree near their decision boundaries. Float64,
    eps 0.05 (l_inf)."""
    gen = torch.Generator().manual_seed(seed)

    def net():
        return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, classes)).double()

    base = net()
    with torch.no_grad():
        w = torch.randn(hidden, 2, generator=gen, dtype=torch.float64)
        centre = torch.rand(hidden, 2, generator=gen, dtype=torch.float64)
        base[0].weight.copy_(w)
        base[0].bias.copy_(-(w * centre).sum(1))
        base[2].weight.copy_(torch.randn(classes, hidden, generator=gen, dtype=torch.float64))
        base[2].bias.zero_()
    models = []
    for _ in range(stages):
        m = net()
        with torch.no_grad():
            for p, q in zip(m.parameters(), base.parameters()):
                p.copy_(q * (1 + 0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64)))
        models.append(m.eval())
    return C.Cascade(models, 0.05, fallback=fallback, batch_size=20000)


def random_points(seed, n=200):
    gen = torch.Generator().manual_seed(1000 + seed)
    return torch.rand(n, 2, generator=gen, dtype=torch.float64)


SEEDS = (0, 4, 5)  # seeds whose points fall in several classes, some answered by the fallback


def reference_answer(cascade, x):
    """The cascade's answer at each point, by the definition, one point at a time."""
    out = []
    for xi in x:
        xi = xi[None]
        for model in cascade.stages:
            p = model(xi).argmax(1)
            if is_certified(dual_bounds(model, xi, p, cascade.eps, clip=cascade.clip).lower).item():
                out.append(p.item())
                break
        else:
            out.append(cascade.stages[cascade.fallback](xi).argmax(1).item())
    return torch.tensor(out)


def ball_samples(x, eps, n, gen):
    """n uniform points of the l_inf ball around x (d,) intersected with [0, 1]^d, plus the box's
    2^d corners."""
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    inside = lo + (hi - lo) * torch.rand(n, x.shape[0], generator=gen, dtype=x.dtype)
    d = x.shape[0]
    bits = torch.tensor([[(k >> i) & 1 for i in range(d)] for k in range(2 ** d)], dtype=x.dtype)
    return torch.cat([inside, lo + (hi - lo) * bits])


@pytest.mark.parametrize("seed", SEEDS)
def test_sound_certificate_holds_on_samples_and_against_the_attack(seed):
    cascade = random_cascade(seed)
    x = random_points(seed)
    y = cascade.predict(x)
    cert = C.certify_cascade(cascade, x, y)
    sound_opt = C.sound_certified(cascade, x, y, method="dual-opt")
    assert not (cert.sound & ~sound_opt).any()  # the optimised bound is never looser
    # sound implies paper (proof in sound_certified's docstring) and the paper claims more here
    assert not (cert.sound & ~cert.paper).any()
    assert (cert.paper & ~cert.sound).any()
    checked = (cert.sound | sound_opt).nonzero().flatten()[:12]
    assert checked.numel() >= 5, "too few soundly certified examples for the test to mean anything"
    gen = torch.Generator().manual_seed(seed)
    for i in checked.tolist():
        pts = ball_samples(x[i], cascade.eps, 10_000, gen)
        assert (cascade.predict(pts) == y[i]).all(), f"example {i} is certified but a sample changes the answer"
    attack = CA.CascadeAttack(cascade.eps, steps=15, prune=False)
    attack(cascade, x[checked], y[checked])
    assert not attack.last_report.broken.any()


@pytest.mark.parametrize("seed", SEEDS)
def test_every_reported_break_is_real(seed):
    cascade = random_cascade(seed)
    x = random_points(seed, 120)
    y = cascade.predict(x)
    paper = C.paper_certified(cascade, x, y)
    attack = CA.CascadeAttack(cascade.eps, steps=15)
    x_adv = attack(cascade, x, y)
    broken = attack.last_report.broken
    assert (broken & paper).any(), "the attack should break some examples the paper certifies"
    assert (x_adv[~broken] == x[~broken]).all()
    idx = broken.nonzero().flatten()
    assert ((x_adv[idx] - x[idx]).abs().amax(1) <= cascade.eps + 1e-12).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    answer = reference_answer(cascade, x_adv[idx])
    assert (answer != y[idx]).all()
    assert (answer == attack.last_report.pred[idx]).all()


def test_route_forward_predict_agree_and_gradients_flow():
    cascade = random_cascade(0)
    x = random_points(0, 150).requires_grad_(True)
    decision = cascade.route(x)
    logits = cascade(x)
    assert torch.equal(logits.argmax(1), decision.pred)
    assert torch.equal(cascade.predict(x), decision.pred)
    assert torch.equal(reference_answer(cascade, x.detach()), decision.pred)
    assert decision.accepted.any() and (~decision.accepted).any()
    assert len(set(decision.stage.tolist())) >= 2
    for k, model in enumerate(cascade.stages):
        rows = decision.stage == k
        assert torch.allclose(logits[rows], model(x[rows]))
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    expected = torch.zeros_like(x)
    for k, model in enumerate(cascade.stages):
        rows = (decision.stage == k).nonzero().flatten()
        xk = x.detach()[rows].clone().requires_grad_(True)
        (gk,) = torch.autograd.grad(model(xk)[:, 0].sum(), xk)
        expected[rows] = gk
    assert torch.allclose(grad, expected)
    # an ordinary attack runs on a cascade
    x_pgd = PG.PGD(cascade.eps, steps=3)(cascade, x.detach(), decision.pred)
    assert (x_pgd - x.detach()).abs().max() <= cascade.eps + 1e-12


def test_stage_k_is_bounded_only_on_what_earlier_stages_left(monkeypatch):
    cascade = random_cascade(4)
    x = random_points(4, 150)
    sizes = []
    real = C.stage_accepts

    def counting(model, xb, *args, **kwargs):
        sizes.append(xb.shape[0])
        return real(model, xb, *args, **kwargs)

    monkeypatch.setattr(CM, "stage_accepts", counting)
    decision = cascade.route(x)
    left = x.shape[0]
    for k, size in enumerate(sizes):
        assert size == left
        left -= int(((decision.stage == k) & decision.accepted).sum())
    assert left == int((~decision.accepted).sum())


def test_fallback_choice_changes_only_the_unaccepted():
    last, first = random_cascade(5, fallback=-1), random_cascade(5, fallback=0)
    x = random_points(5, 300)
    a, b = last.route(x), first.route(x)
    assert torch.equal(a.accepted, b.accepted)
    acc = a.accepted
    assert torch.equal(a.pred[acc], b.pred[acc]) and torch.equal(a.stage[acc], b.stage[acc])
    assert (a.stage[~acc] == 2).all() and (b.stage[~acc] == 0).all()
    preds = last.stage_predictions(x)
    assert torch.equal(a.pred[~acc], preds[2][~acc]) and torch.equal(b.pred[~acc], preds[0][~acc])
    assert (a.pred != b.pred).any(), "the two fallbacks should disagree somewhere for the test to mean anything"


def test_dual_bounds_are_differentiable_in_x_with_the_right_gradient():
    cascade = random_cascade(0)
    model = cascade.stages[0]
    x = random_points(3, 40)
    y = model(x).argmax(1)
    for norm in ("linf", "l2"):
        xs = x.clone().requires_grad_(True)
        low = CA._dual_lower(model, xs, y, 0.05, norm, (0.0, 1.0))
        assert low.requires_grad
        assert torch.equal(low.detach(), dual_bounds(model, x, y, 0.05, norm=norm).lower)
        (grad,) = torch.autograd.grad(low.sum(), xs)
        assert grad.abs().sum() > 0
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
        h = 1e-6
        xp, xm = (x + h * v).clamp(0, 1), (x - h * v).clamp(0, 1)
        fd = (CA._dual_lower(model, xp, y, 0.05, norm, (0.0, 1.0)).sum(1)
              - CA._dual_lower(model, xm, y, 0.05, norm, (0.0, 1.0)).sum(1)) / (2 * h)
        inner = ((x - 2 * h > 0) & (x + 2 * h < 1)).all(1)
        directional = (grad * v).sum(1)
        assert torch.allclose(fd[inner], directional[inner], rtol=1e-4, atol=1e-6)


def test_bad_arguments_are_refused():
    m2 = margin_net((1, 0), 0.0)
    m3 = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    with pytest.raises(ValueError, match="at least one stage"):
        C.Cascade([], EPS)
    with pytest.raises(TypeError, match="sequence of models"):
        C.Cascade(m2, EPS)
    with pytest.raises(TypeError, match="not an nn.Module"):
        C.Cascade([m2, "model"], EPS)
    for eps in (0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive finite"):
            C.Cascade([m2], eps)
    with pytest.raises(TypeError, match="eps must be a number"):
        C.Cascade([m2], "0.1")
    with pytest.raises(ValueError, match="unknown norm"):
        C.Cascade([m2], EPS, norm="l3")
    for fallback in (2, -3):
        with pytest.raises(ValueError, match="fallback"):
            C.Cascade([m2, m2], EPS, fallback=fallback)
    with pytest.raises(TypeError, match="fallback"):
        C.Cascade([m2, m2], EPS, fallback=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        C.Cascade([m2], EPS, batch_size=0)
    with pytest.raises(ValueError, match="clip"):
        C.Cascade([m2], EPS, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="disagree on the number of classes"):
        C.Cascade([m2, m3], EPS).route(X0)
    cascade = C.Cascade([m2, m2], EPS)
    with pytest.raises(ValueError, match="shape"):
        C.paper_certified(cascade, X0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must be in"):
        C.sound_certified(cascade, X0, torch.tensor([2]))
    with pytest.raises(TypeError, match="integer"):
        C.certify_cascade(cascade, X0, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="unknown method"):
        C.sound_certified(cascade, X0, Y0, method="lp")
    with pytest.raises(TypeError, match="Cascade"):
        C.paper_certified(m2, X0, Y0)
    with pytest.raises(TypeError, match="Cascade"):
        CA.CascadeAttack(EPS)(m2, X0, Y0)
    with pytest.raises(ValueError, match="box"):
        CA.CascadeAttack(EPS, clip=(-1.0, 1.0))(cascade, X0, Y0)
    with pytest.raises(ValueError, match="steps"):
        CA.CascadeAttack(EPS, steps=0)
    cascade.train()
    with pytest.raises(RuntimeError, match="training mode"):
        CA.CascadeAttack(EPS)(cascade, X0, Y0)
    assert m2.training  # .train() reaches the stages
    trained = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    fresh = margin_net((1, 0), 0.0)
    assert C.Cascade([trained, fresh], EPS).training and not C.Cascade([fresh], EPS).training


# ---------------------------------------------------------------- MNIST

@pytest.fixture(scope="module")
def mnist64():
    return D.test_subset("mnist", 64)


def test_one_stage_cascade_is_the_stage_certificate(mnist64):
    x, y = mnist64
    model, _ = load_checkpoint("mnist_small_robust_full", device="cpu")
    cascade = C.Cascade([model], 0.1)
    cert = C.certify_cascade(cascade, x, y)
    own = is_certified(dual_bounds(model, x, y, 0.1).lower)
    assert torch.equal(cert.paper, own) and torch.equal(cert.sound, own)
    assert 0 < int(own.sum()) < len(y)  # both kinds of example occur
    summary = cert.summary()
    assert summary["n"] == 64 and summary["paper_not_sound"] == 0
    assert summary["paper_certified_accuracy"] == pytest.approx(float(own.double().mean()))
    assert summary["answered_by_stage"][0] + summary["answered_by_fallback"] == 64


def test_mnist_cascade_with_a_natural_fallback_is_broken_where_the_paper_certifies(mnist64):
    x, y = mnist64
    x, y = x[:8], y[:8]
    robust, _ = load_checkpoint("mnist_small_robust_full", device="cpu")
    natural, _ = load_checkpoint("mnist_small_natural", device="cpu")
    cascade = C.Cascade([robust, natural], 0.1)
    cert = C.certify_cascade(cascade, x, y)
    assert not (cert.sound & ~cert.paper).any()
    attack = CA.CascadeAttack(0.1, steps=10)
    x_adv = attack(cascade, x, y)
    broken = attack.last_report.broken
    assert (broken & cert.paper).any()
    assert not (broken & cert.sound).any()
    assert ((x_adv - x).abs().flatten(1).amax(1) <= 0.1 + 1e-6).all()
    assert (cascade.predict(x_adv[broken]) != y[broken]).all()
