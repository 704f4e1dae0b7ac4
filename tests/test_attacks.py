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
