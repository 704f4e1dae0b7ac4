import pytest
import torch
import torch.nn.functional as F

from tutorial_lib.defenses import PGDTrainingLoss, TradesLoss, trades_attack
from tutorial_lib.models import build_model
from tutorial_lib.training import LOSSES, fit


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:64], y[:64]


def test_trades_beta_zero_is_cross_entropy(natural_model, batch):
    x, y = batch
    loss, logits = TradesLoss(beta=0.0, eps=0.3)(natural_model, x, y)
    assert torch.allclose(loss, F.cross_entropy(natural_model(x), y))


def test_trades_adds_a_nonnegative_kl(natural_model, batch):
    x, y = batch
    ce = F.cross_entropy(natural_model(x), y)
    loss, _ = TradesLoss(beta=6.0, eps=0.3, steps=5, alpha=0.06)(natural_model, x, y)
    assert loss > ce + 1e-3  # the natural model is not robust: the KL term is large


def test_trades_attack_stays_in_ball_and_increases_kl(natural_model, batch):
    x, _ = batch
    x_adv = trades_attack(natural_model, x, eps=0.1, alpha=0.02, steps=10)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    p = F.softmax(natural_model(x), 1)
    kl = lambda z: F.kl_div(F.log_softmax(natural_model(z), 1), p, reduction="batchmean")
    assert kl(x_adv) > 10 * kl((x + 0.001 * torch.randn_like(x)).clamp(0, 1))


def test_pgd_training_loss_is_at_least_clean_loss(natural_model, batch):
    x, y = batch
    loss, logits = PGDTrainingLoss(eps=0.1, alpha=0.01, steps=10)(natural_model, x, y)
    assert loss >= F.cross_entropy(natural_model(x), y)
    assert logits.shape == (64, 10)


def test_eps_schedule_follows_the_step():
    loss = PGDTrainingLoss(eps=0.3, ramp_steps=100)
    loss.on_step(0)
    assert loss.eps == 0.0
    loss.on_step(50)
    assert abs(loss.eps - 0.15) < 1e-12
    loss.on_step(1000)
    assert loss.eps == 0.3
    assert LOSSES["pgd"] is PGDTrainingLoss and LOSSES["trades"] is TradesLoss


def test_model_returns_to_training_mode(batch):
    model = build_model("trades_smallcnn").train()
    x, y = batch
    TradesLoss(beta=1.0, eps=0.1, steps=2)(model, x, y)
    PGDTrainingLoss(eps=0.1, steps=2)(model, x, y)
    assert model.training


def test_bad_arguments():
    with pytest.raises(ValueError):
        TradesLoss(beta=-1)
    with pytest.raises(ValueError):
        PGDTrainingLoss(eps=-0.1)


@pytest.mark.parametrize("name,loss", [("mnist_small_pgd", "pgd"), ("mnist_small_trades_b1", "trades"),
                                       ("mnist_small_trades_b6", "trades")])
def test_shipped_robust_models_beat_natural_under_pgd(natural_model, mnist_test, name, loss):
    from tutorial_lib.attacks import PGD, evaluate
    from tutorial_lib.checkpoints import load_checkpoint

    robust, info = load_checkpoint(name, device="cpu")
    assert info["recipe"]["loss"] == loss and info["recipe"]["loss_kwargs"]["eps"] == 0.3
    x, y = mnist_test[0][:200], mnist_test[1][:200]
    attack = {"pgd": PGD(0.3, alpha=0.01, steps=40)}
    rob = evaluate(robust, (x, y), attack, progress=False)
    nat = evaluate(natural_model, (x, y), attack, progress=False)
    assert rob["clean"] > 0.97
    assert rob["pgd"] > 0.85 and nat["pgd"] < 0.05


def test_short_pgd_training_beats_natural_training_under_pgd(shared_dir):
    """A real (short) PGD-training run on an MNIST subset is far more robust than the same
    natural run: the defence works, not just the loss."""
    from tutorial_lib.attacks import PGD, evaluate
    from tutorial_lib.data import get_loaders, test_subset
    from tutorial_lib.training import fit

    train, _ = get_loaders("mnist", 64, train_subset=6400, data_dir=shared_dir, seed=0)
    x, y = test_subset("mnist", 300, data_dir=shared_dir)
    accs = {}
    for name, loss in [("natural", LOSSES["natural"]()),
                       ("pgd", PGDTrainingLoss(eps=0.1, alpha=0.03, steps=5, ramp_steps=50))]:
        model = build_model("mnist_small")
        fit(model, train, epochs=2, loss_fn=loss, device="cpu", seed=0, progress=False,
            on_step=getattr(loss, "on_step", None))
        accs[name] = evaluate(model.eval(), (x, y), {"pgd": PGD(0.1, alpha=0.01, steps=20)}, progress=False)
    assert accs["pgd"]["clean"] > 0.85
    assert accs["pgd"]["pgd"] > accs["natural"]["pgd"] + 0.3, accs


def test_losses_accept_unbounded_inputs():
    """clip=None: inputs outside [0, 1] (2-D toy data) are attacked without a pixel box."""
    torch.manual_seed(0)
    model = build_model("toy_mlp").eval()
    x, y = 3 * torch.randn(16, 2), torch.randint(0, 2, (16,))
    with pytest.raises(ValueError):
        PGDTrainingLoss(eps=0.1, steps=2)(model, x, y)
    for loss in (PGDTrainingLoss(eps=0.1, steps=2, clip=None), TradesLoss(eps=0.1, steps=2, clip=None)):
        value, logits = loss(model, x, y)
        assert torch.isfinite(value) and logits.shape == (16, 2)


def test_pgd_training_is_reproducible_from_the_loop_seed():
    """fit(seed=0) twice gives the same weights: the attack's random starts come from the seeded
    global generator (they were drawn from a fresh OS seed, so PGD training never repeated)."""
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=False)
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        model = build_model("mnist_small")
        fit(model, loader, epochs=1, loss_fn=PGDTrainingLoss(eps=0.1, alpha=0.05, steps=2), device="cpu", seed=0,
            progress=False)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_projection_recipes_of_shipped_checkpoints_keep_their_median_rule(monkeypatch):
    # checkpoints trained with projections before the median rule became 'mid' record 'lower', so a rerun of the
    # recipe reproduces them; the training loss passes the rule on to the estimate
    from tutorial_lib.bounds import dual as dual_mod
    from tutorial_lib.defenses.certified import RobustTrainingLoss
    from tutorial_lib.train import load_recipe

    for name in ("mnist_small_robust", "mnist_small_robust_l2", "mnist_residual_robust",
                 "mnist_cascade_stage2", "mnist_cascade_stage3"):
        assert load_recipe(name)["loss_kwargs"]["median"] == "lower", name
    seen = []
    real = dual_mod.median_abs

    def spy(V, dim=1, rule="mid"):
        seen.append(rule)
        return real(V, dim=dim, rule=rule)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
    monkeypatch.setattr(dual_mod, "median_abs", spy)
    RobustTrainingLoss(eps=0.1, proj=4, median="lower")(net, x, y)
    assert seen and set(seen) == {"lower"}
    seen.clear()
    RobustTrainingLoss(eps=0.1, proj=4)(net, x, y)
    assert seen and set(seen) == {"mid"}
    with pytest.raises(ValueError, match="median"):
        RobustTrainingLoss(eps=0.1, proj=4, median="upper")
