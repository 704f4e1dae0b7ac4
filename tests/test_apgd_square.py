"""APGD-CE, APGD-T, Square and the AutoAttack-style ensemble (tutorial_lib.attacks.apgd, square, ensemble).

Quick: 32-64 MNIST test images and small budgets."""
import pytest
import torch
from torch import nn

from tutorial_lib.attacks import (
    APGD,
    PGD,
    APGDTargeted,
    Square,
    default_ensemble,
    dlr_loss,
    dlr_loss_targeted,
    evaluate,
    evaluate_ensemble,
)
from tutorial_lib.attacks.apgd import apgd_checkpoints
from tutorial_lib.attacks.square import square_p_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:64], y[:64]


@pytest.fixture(scope="module")
def pgd_model():
    from tutorial_lib.checkpoints import load_checkpoint
    model, _ = load_checkpoint("mnist_small_pgd", device="cpu")
    return model


def robust_acc(model, x_adv, y):
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


class _NoBackward(torch.autograd.Function):
    """Identity whose backward raises: any gradient through it fails loudly."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward called on a model that forbids gradients")


class NoGradModel(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(_NoBackward.apply(x))


class Quantise(nn.Module):
    """x -> round(x * k) / k: a shattered gradient (zero almost everywhere)."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return torch.round(x * self.k) / self.k


def test_checkpoints_and_schedules():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < w < 10 for w in apgd_checkpoints(10)) and apgd_checkpoints(1) == []
    assert square_p_schedule(0, 10000, 0.8) == 0.8 and square_p_schedule(11, 10000, 0.8) == 0.4
    assert square_p_schedule(9999, 10000, 0.8) == pytest.approx(0.8 / 512)
    assert square_p_schedule(250, 500, 0.8) == square_p_schedule(5000, 10000, 0.8)  # rescaled


def test_dlr_losses():
    z = torch.tensor([[4.0, 1.0, 2.0, 0.0], [1.0, 3.0, 2.0, -1.0]])
    y = torch.tensor([0, 0])
    # example 0: -(4 - 2) / (4 - 1); example 1 (misclassified): -(1 - 3) / (3 - 1)
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-2 / 3, 1.0]))
    t = torch.tensor([2, 1])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    assert torch.allclose(dlr_loss_targeted(z, y, t), torch.tensor([-2 / 3.5, 2 / 3]))
    # invariant to a shift and a positive scaling of the logits
    assert torch.allclose(dlr_loss(3 * z + 7, y), dlr_loss(z, y))
    assert torch.allclose(dlr_loss_targeted(3 * z - 2, y, t), dlr_loss_targeted(z, y, t))
    with pytest.raises(ValueError, match="3 classes"):
        dlr_loss(z[:, :2], y)


@pytest.mark.parametrize("attack", [
    APGD(0.1, steps=10), APGD(1.5, norm="l2", steps=10), APGD(0.1, steps=10, loss="dlr", restarts=2),
    APGDTargeted(0.1, steps=10, n_targets=2), APGDTargeted(1.5, norm="l2", steps=10, n_targets=2),
    Square(0.1, n_queries=30), Square(1.5, norm="l2", n_queries=30),
], ids=repr)
def test_outputs_stay_in_ball_and_box(natural_model, batch, attack):
    x, y = batch
    x, y = x[:32], y[:32]
    x_adv = attack(natural_model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    if attack.norm == "linf":
        assert d.abs().max() <= attack.eps + 1e-6
    else:
        assert d.norm(dim=1).max() <= attack.eps + 1e-5
    assert d.abs().max() > 0


@pytest.mark.parametrize("make", [lambda s: APGD(0.1, steps=10, seed=s),
                                  lambda s: APGDTargeted(0.1, steps=5, n_targets=2, seed=s),
                                  lambda s: Square(0.1, n_queries=30, seed=s),
                                  lambda s: Square(1.5, norm="l2", n_queries=30, seed=s)])
def test_deterministic_for_a_seed_and_global_rng_untouched(natural_model, batch, make):
    x, y = batch
    x, y = x[:32], y[:32]
    state = torch.get_rng_state()
    a, b, c = make(3)(natural_model, x, y), make(3)(natural_model, x, y), make(4)(natural_model, x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


class CountingModel(nn.Module):
    """Counts the examples (rows) the model is run on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


def test_broken_examples_are_not_attacked_again(natural_model, batch):
    x, y = batch
    counting = CountingModel(natural_model).eval()
    x_adv = APGD(0.3, steps=20, restarts=3)(counting, x, y)
    assert robust_acc(natural_model, x_adv, y) == 0
    assert counting.rows < 20 * len(x)  # each example stops at its first success; no second restart
    counting.rows = 0
    one = APGD(0.05, steps=10, restarts=1, seed=5)(natural_model, x, y)
    many = APGD(0.05, steps=10, restarts=3, seed=5)(natural_model, x, y)
    with torch.no_grad():
        fooled_one = natural_model(one).argmax(1) != y
        fooled_many = natural_model(many).argmax(1) != y
    assert (fooled_many | ~fooled_one).all() and fooled_many.sum() >= fooled_one.sum()


def test_apgd_ce_at_least_as_strong_as_pgd(pgd_model, batch):
    x, y = batch
    res = evaluate(pgd_model, (x, y), {"pgd": PGD(0.3, steps=40), "apgd": APGD(0.3, steps=40)}, progress=False)
    assert res["clean"] > 0.95
    assert res["apgd"] <= res["pgd"]


def test_apgd_targeted(natural_model, batch):
    x, y = batch
    x_adv = APGDTargeted(0.1, steps=30, n_targets=3)(natural_model, x, y)
    assert robust_acc(natural_model, x_adv, y) <= 0.2  # the natural model at eps 0.1: ~15 % robust
    # with an explicit target, success means hitting it
    target = (y + 1) % 10
    x_t = APGDTargeted(0.3, steps=30)(natural_model, x[:32], y[:32], target=target[:32])
    with torch.no_grad():
        assert (natural_model(x_t).argmax(1) == target[:32]).float().mean() > 0.9


def test_square_breaks_natural_model_without_gradients(natural_model, batch):
    x, y = batch
    model = NoGradModel(natural_model).eval()
    with pytest.raises(RuntimeError, match="forbids gradients"):
        APGD(0.3, steps=2)(model, x[:4], y[:4])  # the wrapper does stop gradients
    attack = Square(0.3, n_queries=100)
    x_adv = attack(model, x, y)
    assert robust_acc(natural_model, x_adv, y) <= 0.1
    q = attack.last_queries
    assert q.shape == (64,) and q.max() <= 100 and q.min() >= 1
    # an example misclassified already costs no query and comes back unchanged
    wrong = (y + 1) % 10
    x_same = attack(model, x[:4], wrong[:4], target=None)
    with torch.no_grad():
        misclassified = natural_model(x[:4]).argmax(1) != wrong[:4]
    assert misclassified.all() and (attack.last_queries == 0).all() and torch.equal(x_same, x[:4])


def test_gradient_masking_fools_pgd_and_apgd_not_square(natural_model, batch):
    x, y = batch
    x, y = x[:32], y[:32]
    masked = nn.Sequential(Quantise(4), natural_model).eval()
    assert robust_acc(masked, x, y) > 0.95
    assert robust_acc(masked, PGD(0.3, steps=10)(masked, x, y), y) > 0.9
    assert robust_acc(masked, APGD(0.3, steps=10)(masked, x, y), y) > 0.9
    assert robust_acc(masked, Square(0.3, n_queries=100)(masked, x, y), y) < 0.1


def test_ensemble_is_the_worst_case(natural_model, batch):
    x, y = batch
    attacks = {"APGD-CE": APGD(0.08, steps=10), "APGD-T": APGDTargeted(0.08, steps=10, n_targets=2),
               "Square": Square(0.08, n_queries=100)}
    res = evaluate_ensemble(natural_model, x, y, attacks, batch_size=40, progress=False)
    single = evaluate(natural_model, (x, y), attacks, progress=False)
    assert res.clean_accuracy == pytest.approx(single["clean"])
    for name in attacks:
        assert res.robust_accuracy <= single[name] + 1e-9, name
    after = list(res.accuracy_after.values())
    assert after == sorted(after, reverse=True) and after[-1] == res.robust_accuracy
    assert res.attacked["APGD-CE"] == int(res.clean_correct.sum())
    assert res.attacked["Square"] == res.attacked["APGD-T"] - res.breaks["APGD-T"]
    assert int(res.robust.sum()) == int(res.clean_correct.sum()) - sum(res.breaks.values())
    # x_adv: adversarial where broken by an attack, x where robust, always in the ball and box
    by_attack = torch.tensor([b not in (None, "clean") for b in res.broken_by])
    assert torch.equal(by_attack, res.clean_correct & ~res.robust)
    with torch.no_grad():
        assert (natural_model(res.x_adv[by_attack]).argmax(1) != y[by_attack]).all()
    assert torch.equal(res.x_adv[~by_attack], x[~by_attack])
    assert (res.x_adv - x).abs().max() <= 0.08 + 1e-6 and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert [b == "clean" for b in res.broken_by] == (~res.clean_correct).tolist()
    assert "APGD-T" in res.table()


def test_default_ensemble_and_bad_inputs(natural_model, batch):
    x, y = batch
    ens = default_ensemble(0.3)
    assert list(ens) == ["APGD-CE", "APGD-T", "Square"]
    assert ens["APGD-CE"].steps == 100 and ens["APGD-T"].n_targets == 9 and ens["Square"].n_queries == 5000
    with pytest.raises(ValueError, match="eps"):
        evaluate_ensemble(natural_model, x, y, None, progress=False)
    with pytest.raises(ValueError, match="clean"):
        evaluate_ensemble(natural_model, x, y, {"clean": APGD(0.1)}, progress=False)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        evaluate_ensemble(natural_model, x * 2, y, {"a": APGD(0.1)}, progress=False)
    with pytest.raises(ValueError, match="loss"):
        APGD(0.1, loss="hinge")
    with pytest.raises(ValueError, match="steps"):
        APGD(0.1, steps=0)
    with pytest.raises(ValueError, match="n_targets"):
        APGDTargeted(0.1, n_targets=0)
    with pytest.raises(ValueError, match="n_queries"):
        Square(0.1, n_queries=0)
    with pytest.raises(ValueError, match="p_init"):
        Square(0.1, p_init=1.5)
    with pytest.raises(ValueError, match="norm"):
        Square(0.1, norm="l1")
    natural_model.train()
    try:
        with pytest.raises(RuntimeError, match="training mode"):
            Square(0.1)(natural_model, x, y)
    finally:
        natural_model.eval()
    two_class = nn.Sequential(nn.Flatten(), nn.Linear(784, 2)).eval()
    with pytest.raises(ValueError, match="classes"):
        APGDTargeted(0.1)(two_class, x[:4], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Square(0.1)(nn.Sequential(nn.Linear(784, 10)).eval(), x[:4].flatten(1), y[:4])
