import pytest
import torch

from tutorial_lib.attacks import FGSM, PGD, accuracy_vs_eps, evaluate, margin
from tutorial_lib.models import build_model


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:200], y[:200]


@pytest.mark.parametrize("attack", [FGSM(0.1), PGD(0.1, 0.01, 20), PGD(0.3, steps=10, restarts=2),
                                    PGD(1.5, steps=20, norm="l2"), PGD(0.1, steps=5, random_start=False)])
def test_outputs_stay_in_ball_and_box(natural_model, batch, attack):
    x, y = batch
    x_adv = attack(natural_model, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    if attack.norm == "linf":
        assert d.abs().max() <= attack.eps + 1e-6
    else:
        assert d.norm(dim=1).max() <= attack.eps + 1e-5
    assert d.abs().max() > 0  # it actually moved


def test_pgd_at_least_as_strong_as_fgsm(natural_model, batch):
    res = evaluate(natural_model, batch, {"fgsm": FGSM(0.1), "pgd": PGD(0.1, 0.01, 40)}, progress=False)
    assert res["clean"] > 0.97
    assert res["pgd"] <= res["fgsm"] and res["pgd"] < res["clean"] - 0.5


def test_targeted_hits_its_target(natural_model, batch):
    x, y = batch
    target = (y + 1) % 10
    x_adv = PGD(0.3, 0.01, 60)(natural_model, x, y, target=target)
    with torch.no_grad():
        hit = (natural_model(x_adv).argmax(1) == target).float().mean()
    assert hit > 0.9


def test_restarts_never_weaker_than_one_run(natural_model, batch):
    x, y = batch
    one = PGD(0.05, steps=10, restarts=1, seed=7)(natural_model, x, y)
    many = PGD(0.05, steps=10, restarts=4, seed=7)(natural_model, x, y)
    with torch.no_grad():
        fooled_one = natural_model(one).argmax(1) != y
        fooled_many = natural_model(many).argmax(1) != y
        loss = lambda z: torch.nn.functional.cross_entropy(natural_model(z), y, reduction="none")
        assert (loss(many) >= loss(one) - 1e-5)[~fooled_many].all()
    assert (fooled_many | ~fooled_one).all()  # every example fooled by one run stays fooled
    assert fooled_many.sum() >= fooled_one.sum()


def test_eps_zero_and_curve_monotone(natural_model, batch):
    x, y = batch
    assert torch.equal(PGD(0.0)(natural_model, x, y), x)
    acc = accuracy_vs_eps(natural_model, (x[:100], y[:100]), [0.0, 0.05, 0.1, 0.2], lambda e: PGD(e, steps=10))
    assert acc == sorted(acc, reverse=True) and acc[0] > 0.95


def test_margin():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert torch.allclose(margin(logits, torch.tensor([0, 0])), torch.tensor([1.0, -5.0]))


def test_bad_inputs(natural_model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="eps"):
        PGD(-0.1)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        FGSM(0.1)(natural_model, x * 2 - 0.5, y)
    with pytest.raises(ValueError, match="y must have shape"):
        FGSM(0.1)(natural_model, x, y[:5])
    with pytest.raises(ValueError, match="steps"):
        PGD(0.1, steps=0)
    with pytest.raises(ValueError, match="norm"):
        PGD(0.1, norm="l1")
    with pytest.raises(TypeError, match="integer"):
        FGSM(0.1)(natural_model, x, y.float())
    model = build_model("mnist_small").train()
    with pytest.raises(RuntimeError, match="training mode"):
        PGD(0.1)(model, x, y)
    with pytest.raises(ValueError, match="reserved"):
        evaluate(natural_model, (x, y), {"clean": FGSM(0.1)})


def test_transfer_attack_uses_only_the_source(natural_model, batch):
    from tutorial_lib.attacks import TransferAttack
    from tutorial_lib.models import build_model

    x, y = batch
    base = PGD(0.1, alpha=0.02, steps=10, seed=0)
    transfer = TransferAttack(natural_model, base)
    other = build_model("mnist_small").eval()  # random weights: a different target
    a, b = transfer(natural_model, x, y), transfer(other, x, y)
    assert torch.equal(a, b)  # the target's gradients are never used
    assert torch.equal(a, base(natural_model, x, y))  # white box when source = target
    assert (a - x).abs().max() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1
    with pytest.raises(TypeError):
        TransferAttack(natural_model, "pgd")


# ---------------------------------------------------------------------------------------------
# The package layout: two base classes, norms, eps-free attacks, robust accuracy.
# ---------------------------------------------------------------------------------------------

class _Threshold(torch.nn.Module):
    """Hand-made two-class model on x (N, 1, 1, 1): class 1 iff the pixel is above 0.5."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # attacks find the device from a parameter

    def forward(self, x):
        v = x.flatten(1)[:, 0] + 0 * self.dummy
        return torch.stack([0.5 - v, v - 0.5], 1)


def _fixed_point_attack(value):
    from tutorial_lib.attacks import Attack

    class FixedPoint(Attack):
        """Sends every input to the same point (inside the box)."""

        def _perturb(self, model, x, y, target):
            return torch.full_like(x, value)

    return FixedPoint()


def test_robust_accuracy_requires_clean_correct():
    """Robust = clean-correct AND adversarially-correct (AutoAttack / RobustBench): an example
    misclassified clean is not robust even if the attack's output lands on its true class."""
    model = _Threshold().eval()
    x = torch.tensor([0.2, 0.8, 0.2, 0.8]).view(4, 1, 1, 1)
    y = torch.tensor([0, 1, 1, 0])  # clean: right, right, wrong, wrong
    attacks = {"to 0.8": _fixed_point_attack(0.8),  # predicts 1 everywhere: right on 1 and 2
               "identity": lambda m, xb, yb: xb.clone()}
    for batch_size in (4, 3, 1):
        res = evaluate(model, (x, y), attacks, batch_size=batch_size, progress=False)
        assert res["clean"] == 0.5
        assert res["to 0.8"] == 0.25  # example 2 lands on its label but was wrong clean: not robust
        assert res["identity"] == 0.5
        assert all(res[name] <= res["clean"] for name in attacks)


def test_robust_accuracy_never_above_clean(natural_model, batch):
    x, y = batch
    res = evaluate(natural_model, (x[:100], y[:100]), {"fgsm": FGSM(0.3)}, progress=False)
    assert res["fgsm"] <= res["clean"]


@pytest.mark.parametrize("norm", ["l0", "l1", "L2", "inf", None])
def test_unknown_norm_raises(norm):
    from tutorial_lib.attacks import MarginPGD, NormBallAttack

    for make in (lambda: PGD(0.1, norm=norm), lambda: MarginPGD(0.1, norm=norm)):
        with pytest.raises(ValueError, match=r"norm.*'linf'.*'l2'"):
            make()

    class Noop(NormBallAttack):
        def _perturb(self, model, x, y, target):
            return x

    with pytest.raises(ValueError, match="known norms"):
        Noop(0.1, norm=norm)
    assert Noop(0.1, norm="l2").norm == "l2"


def test_norm_ball_and_eps_free_attacks(natural_model):
    from tutorial_lib.attacks import JSMA, NORMS, Attack, CarliniWagnerL2, MarginPGD, NormBallAttack, TransferAttack

    assert NORMS == ("linf", "l2")
    for attack in (FGSM(0.1), PGD(0.1), PGD(1.0, norm="l2"), MarginPGD(0.2)):
        assert isinstance(attack, NormBallAttack) and isinstance(attack, Attack)
        assert attack.norm in NORMS and attack.eps > 0
    assert FGSM(0.1).norm == "linf"
    for attack in (JSMA(), JSMA(gamma=0.3), CarliniWagnerL2(), TransferAttack(natural_model, PGD(0.1))):
        assert isinstance(attack, Attack) and not isinstance(attack, NormBallAttack)
        assert not hasattr(attack, "eps")
    assert JSMA(gamma=0.3).gamma == 0.3


def test_projection_onto_the_ball():
    from tutorial_lib.attacks import NormBallAttack

    class Noop(NormBallAttack):
        def _perturb(self, model, x, y, target):
            return x

    torch.manual_seed(0)
    x = torch.rand(5, 1, 4, 4)
    far = x + 3 * torch.randn_like(x)
    linf = Noop(0.1).project(far, x)
    assert (linf - x).abs().max() <= 0.1 + 1e-6 and linf.min() >= 0 and linf.max() <= 1
    l2 = Noop(0.5, norm="l2", clip=None).project(far, x)
    assert torch.allclose((l2 - x).flatten(1).norm(dim=1), torch.full((5,), 0.5), atol=1e-5)
    near = x + 1e-3
    assert torch.equal(Noop(0.5, norm="l2", clip=None).project(near, x), near)  # inside: unchanged


def test_random_targets_public():
    from tutorial_lib.attacks import random_targets

    y = torch.arange(10).repeat(20)
    t = random_targets(y, 10, seed=3)
    assert t.shape == y.shape and t.dtype == torch.long
    assert (t != y).all() and t.min() >= 0 and t.max() <= 9
    assert torch.equal(t, random_targets(y, 10, seed=3))
    assert not torch.equal(t, random_targets(y, 10, seed=4))


def test_package_reexports_every_public_name():
    import tutorial_lib.attacks as attacks
    from tutorial_lib.attacks import base, cw, evaluation, fgsm, jsma, pgd, transfer

    for name in ["FGSM", "PGD", "MarginPGD", "TransferAttack", "JSMA", "CarliniWagnerL2", "evaluate",
                 "accuracy_vs_eps", "margin", "check_inputs", "Attack", "NormBallAttack", "random_targets"]:
        assert name in attacks.__all__ and hasattr(attacks, name), name
    assert attacks.PGD is pgd.PGD and attacks.MarginPGD is pgd.MarginPGD and attacks.FGSM is fgsm.FGSM
    assert attacks.JSMA is jsma.JSMA and attacks.CarliniWagnerL2 is cw.CarliniWagnerL2
    assert attacks.TransferAttack is transfer.TransferAttack and attacks.Attack is base.Attack
    assert attacks.evaluate is evaluation.evaluate and callable(attacks.evaluate)
    assert attacks.accuracy_vs_eps is evaluation.accuracy_vs_eps


def test_margin_pgd_kappa_caps_the_loss_and_is_cw_plus(natural_model, batch):
    """kappa caps the margin the attack maximises (Carlini & Wagner's confidence): the loss never
    exceeds kappa, kappa = inf is the plain margin, and CW+ (kappa = 50) still breaks the natural model."""
    from tutorial_lib.attacks import MarginPGD

    x, y = batch
    logits = torch.tensor([[0.0, 80.0, 1.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0])
    capped = MarginPGD(0.1, kappa=50)._loss(logits, labels, None)
    assert capped.tolist() == [50.0, -5.0]
    assert MarginPGD(0.1)._loss(logits, labels, None).tolist() == [80.0, -5.0]
    with pytest.raises(ValueError, match="kappa"):
        MarginPGD(0.1, kappa=0)
    x_adv = MarginPGD(0.2, steps=20, kappa=50)(natural_model, x[:64], y[:64])
    assert (natural_model(x_adv).argmax(1) != y[:64]).float().mean() > 0.9


def test_robust_masks_are_evaluate_per_example(natural_model, batch):
    from tutorial_lib.attacks.evaluation import robust_masks

    x, y = batch[0][:100], batch[1][:100]
    attacks = {"fgsm": FGSM(0.1), "pgd": PGD(0.1, steps=10)}
    masks = robust_masks(natural_model, (x, y), attacks, batch_size=32, progress=False)
    acc = evaluate(natural_model, (x, y), attacks, batch_size=32, progress=False)
    assert set(masks) == {"clean", "fgsm", "pgd"}
    for name, m in masks.items():
        assert m.dtype == torch.bool and m.shape == (100,)
        assert m.float().mean().item() == pytest.approx(acc[name])
        assert not (m & ~masks["clean"]).any()  # robust implies clean-correct
    worst = masks["fgsm"] & masks["pgd"]
    assert worst.sum() <= min(masks["fgsm"].sum(), masks["pgd"].sum())
