import matplotlib

matplotlib.use("Agg")
import pytest
import torch

from tutorial_lib.viz.plots import loss_surface, show_images
from tutorial_lib.viz.widgets import ATTACKS, attack_example, draw_attack_example


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_example_is_consistent(natural_model, mnist_test, name):
    x, y = mnist_test
    r = attack_example(natural_model, x[:1], y[:1], 0.2, name)
    assert r["label"] == int(y[0]) and r["clean_pred"] == int(y[0])
    assert torch.allclose(r["x_adv"] - r["x"], r["delta"])
    if "l2" in name:
        assert r["l2"] <= 2.0 + 1e-5
    else:
        assert r["linf"] <= 0.2 + 1e-6
    with torch.no_grad():
        assert int(natural_model(r["x_adv"]).argmax()) == r["adv_pred"]
    assert r["fooled"] == (r["adv_pred"] != r["label"])
    if "targeted" in name:
        assert r["target"] == (int(y[0]) + 1) % 10
    fig = draw_attack_example(r)
    assert len(fig.axes) == 3


def test_pgd_fools_at_large_eps_not_at_zero(natural_model, mnist_test):
    x, y = mnist_test
    assert not attack_example(natural_model, x[:1], y[:1], 0.0)["fooled"]
    assert attack_example(natural_model, x[:1], y[:1], 0.3)["fooled"]


def test_loss_surface_center_is_clean_loss(natural_model, mnist_test):
    x, y = mnist_test
    a, b, L = loss_surface(natural_model, x[:1], y[:1], eps=0.2, n=11)
    clean = torch.nn.functional.cross_entropy(natural_model(x[:1]), y[:1]).item()
    assert L.shape == (11, 11) and abs(L[5, 5].item() - clean) < 1e-4
    assert L[-1, 5] > L[5, 5]  # the gradient-sign direction increases the loss
    with pytest.raises(ValueError):
        loss_surface(natural_model, x[:2], y[:2], 0.1)


def test_show_images_grid(mnist_test):
    x, y = mnist_test
    fig = show_images(x[:12], y[:12], pred=y[:12], ncols=6)
    assert len(fig.axes) == 12
