import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from tutorial_lib.studies.polytope import (
    EXAMPLE_KEYS,
    draw_polytope_example,
    interval_box,
    outer_polytope,
    polytope_example,
    tiny_mnist_mlp,
    train_toy_net,
    true_image,
)

X0 = [0.5, 0.25]
TOL = 1e-4


@pytest.fixture(scope="module")
def toy_net():
    return train_toy_net(hidden=(16, 16), epochs=10, seed=0)


def _box_support(C, box):
    """min over the box of c^T z for each row c of C."""
    return (np.minimum(C[:, 0] * box[0, 0], C[:, 0] * box[0, 1])
            + np.minimum(C[:, 1] * box[1, 0], C[:, 1] * box[1, 1]))


@pytest.mark.parametrize("method", ["lp", "dual-opt"])
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_samples_inside_polytope_and_box_and_polytope_inside_box(toy_net, method, eps):
    s = true_image(toy_net, X0, eps, n=60).double().numpy()
    poly = outer_polytope(toy_net, X0, eps, n_dirs=32, method=method)
    C, h = poly["directions"], poly["support"]
    scale = 1 + np.abs(s).max()
    # every support inequality c^T z >= h holds for every sampled true output
    assert (s @ C.T - h >= -TOL * scale).all()
    box = interval_box(toy_net, X0, eps)
    assert (box[:, 0] <= box[:, 1]).all()
    assert (s >= box[:, 0] - TOL * scale).all() and (s <= box[:, 1] + TOL * scale).all()
    # the polytope is inside the box: its lower support values dominate the box's
    assert (h >= _box_support(C, box) - TOL * scale).all()
    # the vertices satisfy all the half-planes
    v = poly["vertices"]
    assert len(v) >= 3 and (v @ C.T - h >= -TOL * scale).all()


def test_lp_polytope_inside_dual_polytope(toy_net):
    lp = outer_polytope(toy_net, X0, 0.2, n_dirs=16, method="lp")
    du = outer_polytope(toy_net, X0, 0.2, n_dirs=16, method="dual")
    assert (lp["support"] >= du["support"] - 1e-4).all()


def test_polytope_example_keys_and_drawing(toy_net):
    r = polytope_example(toy_net, X0, 0.1, n_dirs=16, n_grid=20)
    assert set(EXAMPLE_KEYS) <= set(r)
    assert r["samples"].shape == (400, 2) and r["box"].shape == (2, 2)
    assert r["directions"].shape == (16, 2) and r["support"].shape == (16,)
    assert r["vertices"].shape[1] == 2 and r["eps"] == 0.1 and r["method"] == "lp"
    assert set(r["seconds"]) == {"sampling", "polytope", "box"}
    fig = draw_polytope_example(r)
    assert len(fig.axes) == 1


def test_polytope_rejects_bad_input(toy_net):
    with pytest.raises(ValueError):
        outer_polytope(toy_net, [0.0, 0.0, 0.0], 0.1)
    with pytest.raises(ValueError):
        outer_polytope(toy_net, X0, 0.1, method="nope")


def test_tiny_mnist_mlp_shape():
    torch.manual_seed(0)
    model = tiny_mnist_mlp()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def _interval_wins_net():
    """One hidden ReLU, z = x - 1/2: on the pixel box [0, 1] interval arithmetic bounds relu(z)
    below by relu(-1/2) = 0, the paper's dual line a >= z / 2 by -1/4; margin z_0 - z_1 = relu(z) + 1/4."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.ReLU(), torch.nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-0.5)
        net[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
        net[2].bias.copy_(torch.tensor([0.25, 0.0]))
    return net.eval()


def test_certify_table_best_of_interval_and_dual():
    """BEST_OF is the row-wise max of interval and dual (sound: <= the PGD margin), placed after
    "dual"; here interval beats the dual, so it is not simply the dual column."""
    from tutorial_lib.studies.polytope import BEST_OF, certify_table

    net = _interval_wins_net()
    x, y = torch.full((2, 1), 0.5), torch.tensor([0, 0])
    t = certify_table(net, x, y, 0.5, methods=("interval", "dual", "lp"), pgd_steps=10, pgd_restarts=1)
    assert list(t) == ["interval", "dual", BEST_OF, "lp", "pgd"]
    # the true minimum 0.25 (x' <= 1/2), attained by interval bounds and the LP; the dual gives 0
    assert np.allclose(t["interval"]["lower"], 0.25) and (t["dual"]["lower"] < 0.25 - 1e-3).all()
    assert np.allclose(t[BEST_OF]["lower"], np.maximum(t["interval"]["lower"], t["dual"]["lower"]))
    assert (t[BEST_OF]["lower"] <= t["pgd"]["lower"] + 1e-6).all()
    assert np.allclose(t["dual"]["lower"], 0.0, atol=1e-6) and np.allclose(t["lp"]["lower"], 0.25)
    assert np.allclose(t[BEST_OF]["seconds"], t["interval"]["seconds"] + t["dual"]["seconds"])
    # without both methods there is no BEST_OF column
    assert BEST_OF not in certify_table(net, x, y, 0.5, methods=("dual",), pgd_steps=2, pgd_restarts=1)


def test_certify_table_milp_skips_rows_but_keeps_the_exact_minimum():
    """With "lp" before "milp", rows whose LP bound is above the MILP minimum found so far are not
    solved; the column still equals the minimum over every row of the full MILP."""
    from tutorial_lib import bounds
    from tutorial_lib.studies.polytope import certify_table

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12),
                              torch.nn.ReLU(), torch.nn.Linear(12, 5)).eval()
    x = torch.rand(4, 4)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = 0.15
    t = certify_table(net, x, y, eps, methods=("lp", "milp"), pgd_steps=5, pgd_restarts=1)
    full = bounds.milp_bounds(net, x, y, eps).lower.detach().double().numpy().min(1)
    assert np.allclose(t["milp"]["lower"], full, rtol=0, atol=1e-6)
    assert ((t["milp"]["rows_solved"] >= 1) & (t["milp"]["rows_solved"] <= 4)).all()
    assert t["milp"]["rows_solved"].sum() < 4 * 4  # some rows were skipped on this net
    # without the LP every row is solved
    t2 = certify_table(net, x, y, eps, methods=("milp",), pgd_steps=5, pgd_restarts=1)
    assert np.allclose(t2["milp"]["lower"], full, rtol=0, atol=1e-6) and (t2["milp"]["rows_solved"] == 4).all()


def test_lp_never_below_interval_with_one_hidden_layer():
    """Notebook 04, Exercise 4 (a): with one hidden layer the LP (triangle relaxation on the exact
    first-layer bounds) is at least the interval bound, while the paper's dual may fall below it."""
    from tutorial_lib import bounds

    gen = torch.Generator().manual_seed(7)
    dual_lost = 0
    for trial in range(6):
        net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4)).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        x = torch.rand(2, 3, generator=gen)
        spec = torch.randn(5, 4, generator=gen)
        with torch.no_grad():
            ib = bounds.interval_bounds(net, x, None, 0.4, spec=spec, clip=None).lower
            db = bounds.dual_bounds(net, x, None, 0.4, spec=spec, clip=None).lower
        lp = bounds.lp_bounds(net, x, None, 0.4, spec=spec, clip=None).lower
        assert (lp >= ib - 1e-5).all(), (trial, (ib - lp).max())
        dual_lost += int((db < ib - 1e-5).sum())
    assert dual_lost > 0  # the theorem is about the LP: the paper's fixed slopes do lose on some rows


def test_lp_below_interval_with_two_hidden_layers_on_dual_pre_bounds():
    """Exercise 4 (b), (c): x in [-1, 1], z2 = -relu(x), f = -relu(z2) = 0. The dual network bounds z2
    by [-1, 1/2] (interval: [-1, 0]), so the LP on its pre-activation bounds gives -1/3 < 0 = interval
    bound; on interval pre-activation bounds the LP gives 0."""
    from tutorial_lib import bounds

    def unit(w):
        layer = torch.nn.Linear(1, 1)
        with torch.no_grad():
            layer.weight.fill_(w)
            layer.bias.zero_()
        return layer

    net = torch.nn.Sequential(unit(1.0), torch.nn.ReLU(), unit(-1.0), torch.nn.ReLU(), unit(-1.0)).eval()
    x, c = torch.zeros(1, 1), torch.ones(1, 1)
    with torch.no_grad():
        ib = bounds.interval_bounds(net, x, None, 1.0, spec=c, clip=None)
        db = bounds.dual_bounds(net, x, None, 1.0, spec=c, clip=None)
    assert float(ib.lower) == pytest.approx(0.0, abs=1e-6) and float(db.lower) == pytest.approx(-0.5, abs=1e-6)
    assert [float(t) for t in db.pre_bounds[1]] == pytest.approx([-1.0, 0.5], abs=1e-6)
    lp = float(bounds.lp_bounds(net, x, None, 1.0, spec=c, clip=None).lower)
    lp_int = float(bounds.lp_bounds(net, x, None, 1.0, spec=c, clip=None, pre_bounds=ib.pre_bounds).lower)
    assert lp == pytest.approx(-1 / 3, abs=1e-6) and lp_int == pytest.approx(0.0, abs=1e-6)
    assert float(bounds.milp_bounds(net, x, None, 1.0, spec=c, clip=None).lower) == pytest.approx(0.0, abs=1e-6)
