"""IBP training (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020) as losses of the one training
loop: the verified term by hand, its soundness (an upper bound of the loss anywhere in the ball),
the kappa/eps/beta schedules (resumable), a short fit, the recipes."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tutorial_lib import data as D
from tutorial_lib.bounds import crown_bounds, interval_bounds, milp_bounds
from tutorial_lib.defenses import CROWNIBPTrainingLoss, IBPTrainingLoss, verified_cross_entropy
from tutorial_lib.models import build_model
from tutorial_lib.training import LOSSES, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_net() -> nn.Sequential:
    """2 -> 3 -> 3, weights small integers and halves (exact in float64)."""
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0], [-1.0, -1.0]]))
        net[0].bias.copy_(torch.tensor([0.5, -0.25, 1.0]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0, 0.5], [-1.0, 1.5, 1.0], [0.5, 0.5, -2.0]]))
        net[2].bias.copy_(torch.tensor([0.0, 0.25, -0.5]))
    return net


def _hand_verified_ce(net, x, y, eps, clip=(0.0, 1.0)):
    """Interval arithmetic written out with Python floats: the box clipped to ``clip``, the first
    layer by signs of the weights, ReLU, then the margin rows c = W2[y] - W2[j] on the hidden box
    (the spec folded into the last layer). CE of the worst-case logits (-m_j, 0 at y) is
    log(1 + sum_j exp(-m_j))."""
    W1, b1 = net[0].weight.tolist(), net[0].bias.tolist()
    W2, b2 = net[2].weight.tolist(), net[2].bias.tolist()
    lo = [max(clip[0], v - eps) for v in x]
    hi = [min(clip[1], v + eps) for v in x]
    hl, hu = [], []
    for row, b in zip(W1, b1):
        lower = b + sum(w * (lo[i] if w > 0 else hi[i]) for i, w in enumerate(row))
        upper = b + sum(w * (hi[i] if w > 0 else lo[i]) for i, w in enumerate(row))
        hl.append(max(lower, 0.0))
        hu.append(max(upper, 0.0))
    margins = []
    for j in range(len(W2)):
        if j == y:
            continue
        c = [W2[y][k] - W2[j][k] for k in range(len(hl))]
        margins.append(b2[y] - b2[j] + sum(ck * (hl[k] if ck > 0 else hu[k]) for k, ck in enumerate(c)))
    return margins, math.log(1.0 + sum(math.exp(-m) for m in margins))


def test_verified_term_equals_the_hand_computation():
    net = _tiny_net()
    x = torch.tensor([[0.3, 0.95], [0.6, 0.05], [0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    loss = IBPTrainingLoss(eps=0.1, kappa_start=0.0, kappa_end=0.0)
    margins = loss.verified_margins(net, x, y)
    hand = [_hand_verified_ce(net, x[i].tolist(), int(y[i]), 0.1) for i in range(3)]
    assert torch.allclose(margins, torch.tensor([h[0] for h in hand], dtype=torch.float64), atol=1e-12)
    per_example = verified_cross_entropy(margins, y, reduction="none")
    assert torch.allclose(per_example, torch.tensor([h[1] for h in hand], dtype=torch.float64), atol=1e-12)
    # kappa = 0: the loss is the verified term alone; kappa = 0.25: the mix with the natural CE
    value, logits = loss(net, x, y)
    assert abs(float(value.detach()) - sum(h[1] for h in hand) / 3) < 1e-12
    assert not logits.requires_grad and torch.equal(logits, net(x).detach())
    mixed = IBPTrainingLoss(eps=0.1, kappa_start=0.25, kappa_end=0.25)
    expected = 0.25 * float(F.cross_entropy(net(x), y).detach()) + 0.75 * sum(h[1] for h in hand) / 3
    assert abs(float(mixed(net, x, y)[0].detach()) - expected) < 1e-12
    assert mixed.last["kappa"] == 0.25 and mixed.last["eps"] == 0.1


def test_verified_ce_bounds_the_loss_everywhere_in_the_ball():
    """CE on the worst-case logits >= CE at the clean point, at sampled points of the ball (corners
    included) and at the exact worst case of every margin (MILP); at eps = 0 it is the natural CE."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.rand(6, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    eps = 0.15
    loss = IBPTrainingLoss(eps=eps, kappa_start=0.0, kappa_end=0.0)
    margins = loss.verified_margins(net, x, y)
    bound = verified_cross_entropy(margins, y, reduction="none")
    clean = F.cross_entropy(net(x), y, reduction="none")
    assert (bound >= clean - 1e-12).all() and (bound > clean + 1e-3).any()
    signs = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    deltas = torch.cat([eps * signs, eps * (2 * torch.rand(400, 2, dtype=torch.float64) - 1)])
    with torch.no_grad():
        for i in range(len(x)):
            xs = (x[i] + deltas).clamp(0.0, 1.0)
            sampled = F.cross_entropy(net(xs), y[i].expand(len(xs)), reduction="none")
            assert float(sampled.max()) <= float(bound[i]) + 1e-12
    exact = milp_bounds(net, x, y, eps).lower  # each margin's exact minimum over the ball in the box
    assert (margins <= exact + 1e-9).all()
    assert (verified_cross_entropy(exact, y, reduction="none") <= bound + 1e-12).all()
    at_zero = IBPTrainingLoss(eps=0.0, kappa_start=0.0, kappa_end=0.0)
    assert torch.allclose(verified_cross_entropy(at_zero.verified_margins(net, x, y), y), F.cross_entropy(net(x), y),
                          atol=1e-12)


def test_kappa_and_eps_follow_the_step_and_survive_a_resume():
    loss = IBPTrainingLoss(eps=0.4, warmup_steps=10, ramp_steps=20, kappa_start=1.0, kappa_end=0.5)
    assert (loss.eps, loss.kappa) == (0.0, 1.0)
    expected = {0: (0.0, 1.0), 9: (0.0, 1.0), 10: (0.0, 1.0), 15: (0.1, 0.875), 20: (0.2, 0.75),
                30: (0.4, 0.5), 1000: (0.4, 0.5)}
    for step, (eps, kappa) in expected.items():
        loss.on_step(step)
        assert abs(loss.eps - eps) < 1e-12 and abs(loss.kappa - kappa) < 1e-12, step
    # a fresh object told the global step (what the loop does after a resume) is where the first was
    fresh = IBPTrainingLoss(eps=0.4, warmup_steps=10, ramp_steps=20, kappa_start=1.0, kappa_end=0.5)
    fresh.on_step(20)
    assert (fresh.eps, fresh.kappa) == (0.2, 0.75)
    # kappa = 1 (the warm-up): no bounds computed, the loss is the natural CE
    net, x, y = _tiny_net(), torch.rand(4, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    loss.on_step(0)
    value, _ = loss(net, x, y)
    assert loss.last["verified"] is None and float(value.detach()) == float(F.cross_entropy(net(x), y).detach())
    for bad in (dict(kappa_start=1.5), dict(kappa_end=-0.1), dict(eps=-0.1), dict(norm="l3")):
        with pytest.raises(ValueError):
            IBPTrainingLoss(**bad)


def _toy_run(epochs, state_path=None, kappa_end=0.5):
    """toy_mlp on 96 points of the unit square (6 steps an epoch), IBP with eps and kappa ramped
    over steps 4..14, which spans the end of epoch 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(96, 2, generator=g)
    ds = TensorDataset(x, (x[:, 0] + 0.3 * x[:, 1] > 0.65).long())
    loader = DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(123)
    model = build_model("toy_mlp")
    loss = IBPTrainingLoss(eps=0.1, warmup_steps=4, ramp_steps=10, kappa_start=1.0, kappa_end=kappa_end)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    fit(model, loader, epochs=epochs, loss_fn=loss, optimizer=optimizer, device="cpu", seed=0,
        state_path=state_path, progress=False, on_step=loss.on_step)
    return model, loss


def test_resumed_ibp_run_keeps_the_schedule_and_the_weights(tmp_path):
    """Interrupted after epoch 1 (step 6, inside the ramp) and resumed with a fresh loss object:
    the same eps and kappa at every step, so the same weights bit for bit as the uninterrupted run."""
    straight, loss_a = _toy_run(epochs=3)
    state = tmp_path / "state.pt"
    _, loss_first = _toy_run(epochs=1, state_path=state)
    assert 0.0 < loss_first.eps < 0.1 and 0.5 < loss_first.kappa < 1.0  # stopped inside the ramp
    resumed, loss_b = _toy_run(epochs=3, state_path=state)
    assert (loss_b.eps, loss_b.kappa) == (loss_a.eps, loss_a.kappa) == (0.1, 0.5)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the verified term matters: with kappa kept at 1 (natural training) the weights differ
    natural, _ = _toy_run(epochs=3, kappa_end=1.0)
    assert not all(torch.equal(a[k], v) for k, v in natural.state_dict().items())


def _mnist_fit(shared_dir, seed):
    """A 784-32-10 MLP on 256 MNIST images, 48 steps: 16 natural (kappa 1), a 16-step ramp to
    eps 0.05 and kappa 0, 16 steps there. Returns (model, verified CE at 0.05 before, after)."""
    ds = D.load_dataset("mnist", "train", data_dir=shared_dir)
    x, y = ds.tensors[0][:256], ds.tensors[1][:256]
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    loss = IBPTrainingLoss(eps=0.05, warmup_steps=16, ramp_steps=16, kappa_start=1.0, kappa_end=0.0)
    final = IBPTrainingLoss(eps=0.05, kappa_start=0.0, kappa_end=0.0)
    with torch.no_grad():
        before = float(verified_cross_entropy(final.verified_margins(model, x, y), y))
    fit(model, loader, epochs=6, loss_fn=loss, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        device="cpu", seed=seed, progress=False, on_step=loss.on_step)
    assert (loss.eps, loss.kappa) == (0.05, 0.0)
    with torch.no_grad():
        after = float(verified_cross_entropy(final.verified_margins(model, x, y), y))
    return model, before, after


def test_short_fit_decreases_the_verified_loss_and_is_reproducible(shared_dir):
    """48 steps of IBP training on 256 MNIST images: the verified CE on them at eps 0.05 falls, and
    well below log 10 (a network that collapsed to a constant output would sit at log 10); the
    same seed gives the same weights, another seed other weights."""
    model, before, after = _mnist_fit(shared_dir, seed=0)
    assert after < 0.6 * before and after < 0.8 * math.log(10), (before, after)
    again, _, after_again = _mnist_fit(shared_dir, seed=0)
    assert after_again == after
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))
    other, _, _ = _mnist_fit(shared_dir, seed=1)
    assert not torch.equal(model.state_dict()["1.weight"], other.state_dict()["1.weight"])


@pytest.mark.parametrize("name, eps_train", [("mnist_small_ibp", 0.4), ("mnist_small_crown_ibp", 0.4),
                                             ("mnist_small_ibp_eps01", 0.2)])
def test_recipes_are_valid_and_build_the_loss(name, eps_train):
    from tutorial_lib.training.recipes import _make_loss, load_recipe

    assert LOSSES["ibp"] is IBPTrainingLoss and LOSSES["crown_ibp"] is CROWNIBPTrainingLoss
    shipped, full = load_recipe(name), load_recipe(name, full=True)
    for recipe in (shipped, full):
        loss = _make_loss(recipe)
        assert isinstance(loss, LOSSES[recipe["loss"]])
        loss.on_step(10 ** 9)
        assert loss.eps == recipe["loss_kwargs"]["eps"] and loss.kappa == recipe["loss_kwargs"]["kappa_end"]
        assert getattr(loss, "beta", None) == recipe["loss_kwargs"].get("beta_end")
    # trained at a larger eps than the test eps (0.4 for 0.3, 0.2 for 0.1; see the descriptions)
    assert shipped["loss_kwargs"]["eps"] == full["loss_kwargs"]["eps"] == eps_train
    assert str(eps_train) in shipped["description"]
    assert full["epochs"] >= shipped["epochs"]


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def test_crown_ibp_margins_mix_the_two_bounds_and_stay_sound():
    """beta 1: crown_bounds(pre='interval'); beta 0: interval_bounds; between: the convex mix.
    Every mix is below the exact minimum of each margin (MILP), so the verified CE bounds the CE
    of the worst case; at beta 1 the bound is not the IBP one (the mix is not a no-op)."""
    net = _small_net()
    x = torch.rand(6, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    eps = 0.15
    crown = crown_bounds(net, x, y, eps, pre="interval").lower
    ibp = interval_bounds(net, x, y, eps).lower
    assert (crown - ibp).abs().max() > 1e-3
    exact = milp_bounds(net, x, y, eps).lower
    worst = verified_cross_entropy(exact, y, reduction="none")
    for beta in (0.0, 0.3, 1.0):
        loss = CROWNIBPTrainingLoss(eps=eps, kappa_start=0.0, kappa_end=0.0, beta_start=beta, beta_end=beta)
        margins = loss.verified_margins(net, x, y)
        assert torch.allclose(margins, beta * crown + (1 - beta) * ibp, atol=1e-12), beta
        assert (margins <= exact + 1e-9).all(), beta
        assert (verified_cross_entropy(margins, y, reduction="none") >= worst - 1e-12).all(), beta
        value, _ = loss(net, x, y)
        assert abs(float(value.detach()) - float(verified_cross_entropy(margins, y))) < 1e-12
        assert loss.last["beta"] == beta


def test_crown_ibp_schedules_follow_the_step():
    loss = CROWNIBPTrainingLoss(eps=0.4, warmup_steps=10, ramp_steps=20, kappa_start=1.0, kappa_end=0.0)
    assert (loss.eps, loss.kappa, loss.beta) == (0.0, 1.0, 1.0)
    for step, (eps, kappa, beta) in {5: (0.0, 1.0, 1.0), 15: (0.1, 0.75, 0.75), 25: (0.3, 0.25, 0.25),
                                     30: (0.4, 0.0, 0.0), 500: (0.4, 0.0, 0.0)}.items():
        fresh = CROWNIBPTrainingLoss(eps=0.4, warmup_steps=10, ramp_steps=20, kappa_start=1.0, kappa_end=0.0)
        for s_ in (loss, fresh):  # stepped in order, and told the step once (a resumed run)
            s_.on_step(step)
            assert abs(s_.eps - eps) < 1e-12 and abs(s_.kappa - kappa) < 1e-12 and abs(s_.beta - beta) < 1e-12
    for bad in (dict(beta_start=1.5), dict(beta_end=-0.5)):
        with pytest.raises(ValueError):
            CROWNIBPTrainingLoss(**bad)


def test_short_crown_ibp_fit_decreases_its_verified_loss(shared_dir):
    """48 steps of CROWN-IBP (eps and kappa/beta ramped as in _mnist_fit, beta 1 -> 0.5) on 256
    MNIST images: the verified CE of the final mix at eps 0.05 falls well below log 10."""
    ds = D.load_dataset("mnist", "train", data_dir=shared_dir)
    x, y = ds.tensors[0][:256], ds.tensors[1][:256]
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    loss = CROWNIBPTrainingLoss(eps=0.05, warmup_steps=16, ramp_steps=16, kappa_start=1.0, kappa_end=0.0,
                                beta_start=1.0, beta_end=0.5)
    final = CROWNIBPTrainingLoss(eps=0.05, kappa_start=0.0, kappa_end=0.0, beta_start=0.5, beta_end=0.5)
    with torch.no_grad():
        before = float(verified_cross_entropy(final.verified_margins(model, x, y), y))
    fit(model, loader, epochs=6, loss_fn=loss, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        device="cpu", seed=0, progress=False, on_step=loss.on_step)
    assert (loss.eps, loss.kappa, loss.beta) == (0.05, 0.0, 0.5)
    with torch.no_grad():
        after = float(verified_cross_entropy(final.verified_margins(model, x, y), y))
    assert after < 0.6 * before and after < 0.8 * math.log(10), (before, after)


def test_ibp_and_crown_ibp_recipes_differ_only_in_the_bound():
    """The CPU budgets share every setting but the loss and beta (the descriptions say so)."""
    from tutorial_lib.training.recipes import load_recipe

    ibp, crown = load_recipe("mnist_small_ibp"), load_recipe("mnist_small_crown_ibp")
    assert (ibp["loss"], crown["loss"]) == ("ibp", "crown_ibp")
    beta = {k: crown["loss_kwargs"].pop(k) for k in ("beta_start", "beta_end")}
    assert beta == {"beta_start": 1.0, "beta_end": 0.0} and crown["loss_kwargs"] == ibp["loss_kwargs"]
    skip = ("name", "description", "loss", "loss_kwargs")
    assert {k: v for k, v in ibp.items() if k not in skip} == {k: v for k, v in crown.items() if k not in skip}
