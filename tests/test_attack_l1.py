"""The l1 threat model: the exact l1-ball projection and the sparse l1 descent attack (SLIDE)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tutorial_lib.attacks.base import margin
from tutorial_lib.attacks.l1 import SparseL1Descent, project_l1_ball

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_projection(v, eps, iters=200):
    """Projection of one vector v (n,) onto the l1 ball by bisection on the threshold theta:
    sign(v) max(|v| - theta, 0) with sum max(|v| - theta, 0) = eps (float64, to ~1e-15)."""
    a = v.abs()
    if a.sum() <= eps:
        return v.clone()
    lo, hi = 0.0, float(a.max())
    for _ in range(iters):
        mid = (lo + hi) / 2
        if float((a - mid).clamp(min=0).sum()) > eps:
            lo = mid
        else:
            hi = mid
    return torch.sign(v) * (a - hi).clamp(min=0)


def test_projection_is_exact():
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(40, 1, 1, 1, generator=g, dtype=torch.float64) * 0.4
    v = torch.randn(40, 3, 5, 5, generator=g, dtype=torch.float64) * scale  # l1 norms ~ 0 to 25
    eps = torch.rand(40, generator=g, dtype=torch.float64) * 20
    p = project_l1_ball(v, eps)
    for i in range(40):
        assert torch.allclose(p[i].flatten(), reference_projection(v[i].flatten(), float(eps[i])), atol=1e-12)
    size = p.flatten(1).abs().sum(1)
    outside = v.flatten(1).abs().sum(1) > eps
    assert outside.any() and (~outside).any()
    assert torch.allclose(size[outside], eps[outside], rtol=1e-12)  # onto the sphere
    assert (size <= eps * (1 + 1e-12)).all()
    assert torch.equal(p[~outside], v[~outside])  # points inside stay put
    # idempotent, and no point of the ball is closer to v
    assert torch.allclose(project_l1_ball(p, eps), p, atol=1e-14)
    z = project_l1_ball(torch.randn(40, 3, 5, 5, generator=g, dtype=torch.float64) * 5, eps)
    assert ((p - v).flatten(1).norm(dim=1) <= (z - v).flatten(1).norm(dim=1) + 1e-12).all()


def test_projection_edge_cases():
    v = torch.tensor([[3.0, -1.0, 0.5], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.equal(project_l1_ball(v, 0.0), torch.zeros_like(v))
    p = project_l1_ball(v, 2.0)
    assert torch.allclose(p[0], torch.tensor([2.0, 0.0, 0.0]))
    assert torch.equal(p[1], v[1])
    assert torch.allclose(p[2], torch.full((3,), 2 / 3))  # ties split evenly
    with pytest.raises(ValueError):
        project_l1_ball(v, -1.0)
    with pytest.raises(ValueError):
        project_l1_ball(v, torch.ones(2))


@pytest.fixture(scope="module")
def mnist_batch(mnist_test):
    return mnist_test[0][:32], mnist_test[1][:32]


def test_slide_breaks_the_natural_model_inside_the_ball_and_box(natural_model, mnist_batch):
    x, y = mnist_batch
    model = natural_model.eval()
    attack = SparseL1Descent(10.0)
    x_adv = attack(model, x, y)
    d = (x_adv - x).flatten(1)
    assert (d.abs().sum(1) <= 10.0 * (1 + 1e-5)).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean()
        adv = (model(x_adv).argmax(1) == y).float().mean()
    assert clean > 0.9 and adv < 0.5, (clean, adv)
    # sparse: most of the l1 budget sits on a few pixels
    assert (d != 0).sum(1).float().median() < 0.5 * d.shape[1]
    # reproducible with a seed; eps = 0 returns x
    assert torch.equal(SparseL1Descent(10.0, steps=3)(model, x[:4], y[:4]),
                       SparseL1Descent(10.0, steps=3)(model, x[:4], y[:4]))
    assert torch.equal(SparseL1Descent(0.0)(model, x[:4], y[:4]), x[:4])
    # a small radius does less
    x_small = SparseL1Descent(1.0, steps=10)(model, x, y)
    with torch.no_grad():
        assert (margin(model(x_small), y) >= margin(model(x_adv), y) - 1e-4).float().mean() > 0.8


def test_slide_options_targeted_and_random_start():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 4, 4, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    target = (y + 1) % 4
    for kw in ({"q": (80.0, 99.0)}, {"random_start": True, "seed": 3}, {"q": 0.0}, {"clip": None}):
        atk = SparseL1Descent(2.0, steps=15, **kw)
        x_adv = atk(net, x, y, target=target)
        assert ((x_adv - x).flatten(1).abs().sum(1) <= 2.0 * (1 + 1e-5)).all()
        if atk.clip is not None:
            assert x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():  # the best iterate is kept: the loss to the target is never above x's
            ce_adv, ce_x = (F.cross_entropy(net(v), target, reduction="none") for v in (x_adv, x))
        assert (ce_adv <= ce_x + 1e-6).all()
        assert (ce_adv < ce_x - 1e-3).float().mean() > 0.8
    assert "SparseL1Descent" in repr(SparseL1Descent(1.0))


@pytest.mark.parametrize("kw", [{"eps": -1.0}, {"eps": float("nan")}, {"eps": 1.0, "steps": 0},
                                {"eps": 1.0, "q": 100.0}, {"eps": 1.0, "q": -1.0}, {"eps": 1.0, "q": (99.0, 80.0)},
                                {"eps": 1.0, "alpha": -0.5}, {"eps": 1.0, "clip": (1.0, 0.0)}])
def test_slide_bad_parameters(kw):
    with pytest.raises(ValueError):
        SparseL1Descent(**kw)


def test_slide_refuses_training_mode_and_inputs_outside_the_box():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    with pytest.raises(RuntimeError, match="training mode"):
        SparseL1Descent(1.0)(net.train(), x, y)
    with pytest.raises(ValueError, match="inputs must lie"):
        SparseL1Descent(1.0)(net.eval(), x + 2, y)
