import pytest
import torch

from tutorial_lib.data import make_toy
from tutorial_lib.studies.tradeoff import draw_toy, plot_tradeoff, toy_errors, train_toy


@pytest.fixture(scope="module")
def toy_test():
    return make_toy("moons", n=200, noise=0.2, seed=1)


def test_robust_error_is_natural_plus_boundary(toy_test):
    x, y = toy_test
    model = train_toy(beta=1.0, eps=0.2)
    e = toy_errors(model, x, y, 0.2)
    assert abs(e["robust"] - e["natural"] - e["boundary"]) < 1e-6
    assert not (e["wrong"] & e["boundary_mask"]).any()
    e0 = toy_errors(model, x, y, 0.0)
    assert e0["boundary"] == 0 and e0["natural"] == e["natural"]
    # boundary error grows with the radius
    assert toy_errors(model, x, y, 0.4)["boundary"] >= e["boundary"]


def test_larger_beta_trades_natural_for_boundary_error(toy_test):
    x, y = toy_test
    small = toy_errors(train_toy(beta=0.0, eps=0.2), x, y, 0.2)
    large = toy_errors(train_toy(beta=10.0, eps=0.2), x, y, 0.2)
    assert large["boundary"] < small["boundary"] - 0.05, (small, large)
    assert large["robust"] < small["robust"]


def test_drawing_and_bad_arguments(toy_test):
    import matplotlib
    matplotlib.use("Agg")
    x, y = toy_test
    model = train_toy(beta=1.0, eps=0.1, steps=5)
    ax = draw_toy(model, x, y, 0.1)
    assert "boundary" in ax.get_title()
    ax = plot_tradeoff({"a": (0.99, 0.9)}, paper={"paper": (0.995, 0.96)})
    assert len(ax.collections) == 2
    with pytest.raises(ValueError):
        train_toy(method="fgsm")
    with pytest.raises(ValueError):
        train_toy(eps=-1)


def test_toy_view_is_what_the_explorer_shows_and_is_cached(toy_test):
    """The function each slider move calls: the model and errors of train_toy + toy_errors on the
    fresh test points, computed once per setting, then answered from the cache."""
    from tutorial_lib.studies.tradeoff import toy_view

    x, y = toy_test
    first = toy_view(1, 0.15)
    assert not first["cached"] and first["seconds"] > 0
    assert torch.equal(first["x_test"], x) and torch.equal(first["y_test"], y)
    again = toy_view(1.0, 0.15 + 1e-9)  # the same setting, as a float slider may give it
    assert again["cached"] and again["model"] is first["model"]
    fresh = toy_errors(train_toy(beta=1, eps=0.15), x, y, 0.15)
    assert all(fresh[k] == first["errors"][k] for k in ("natural", "boundary", "robust"))


def test_training_runs_on_one_thread_and_restores_the_setting():
    threads = torch.get_num_threads()
    train_toy(beta=1.0, eps=0.1, steps=2)
    assert torch.get_num_threads() == threads
