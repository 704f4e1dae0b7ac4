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
