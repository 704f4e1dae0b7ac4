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


class FiveClasses(torch.nn.Module):
    """A fixed linear model on MNIST-sized inputs with 5 logits (not 10)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_example_takes_the_class_count_from_the_model(mnist_test, name):
    x, _ = mnist_test
    model = FiveClasses().eval()
    y = torch.tensor([4])  # the last of 5 classes: "next class" must wrap to 0, not 5
    r = attack_example(model, x[:1], y, 0.1, name)
    assert 0 <= r["clean_pred"] < 5 and 0 <= r["adv_pred"] < 5
    assert r["target"] == (0 if "targeted" in name else None)
    fig = draw_attack_example(r, class_names=["a", "b", "c", "d", "e"])
    assert len(fig.axes) == 3


@pytest.mark.parametrize("module", ["plots", "widgets"])
def test_every_public_function_is_exported(module):
    import importlib
    import inspect

    mod = importlib.import_module(f"tutorial_lib.viz.{module}")
    public = {n for n, obj in vars(mod).items()
              if not n.startswith("_") and inspect.isfunction(obj) and obj.__module__ == mod.__name__}
    assert public <= set(mod.__all__), sorted(public - set(mod.__all__))
    assert all(hasattr(mod, n) for n in mod.__all__)
