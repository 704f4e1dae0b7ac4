import math

import pytest
import torch
from torch import nn

from tutorial_lib import models as M
from tutorial_lib.models import MODELS, Normalize, build_model, count_parameters

INPUTS = {"mnist_small": (1, 28, 28), "mnist_large": (1, 28, 28), "cifar_small": (3, 32, 32),
          "cifar_large": (3, 32, 32), "madry_mnist": (1, 28, 28), "trades_smallcnn": (1, 28, 28),
          "papernot_mnist": (1, 28, 28), "toy_mlp": (2,), "mnist_small_quantized": (1, 28, 28),
          "mnist_residual": (1, 28, 28), "cifar_resnet": (3, 32, 32)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shapes(name):
    model = build_model(name).eval()
    assert isinstance(model, nn.Sequential)
    out = model(torch.rand(3, *INPUTS[name]))
    assert out.shape == (3, 2 if name == "toy_mlp" else 10)


def test_published_sizes():
    # Madry's MNIST CNN has 3,274,634 parameters (conv32-5x5, conv64-5x5, fc1024)
    assert count_parameters(build_model("madry_mnist")) == 3274634
    assert count_parameters(build_model("madry_mnist", width=2)) > 3 * 3274634
    assert count_parameters(build_model("mnist_small")) == 166406
    assert count_parameters(build_model("mnist_small", width=1)) == 166406


def test_mnist_small_width_scales_every_layer():
    half, double = build_model("mnist_small", width=0.5), build_model("mnist_small", width=2)
    assert [m.out_channels for m in half if isinstance(m, nn.Conv2d)] == [8, 16]
    assert [m.out_channels for m in double if isinstance(m, nn.Conv2d)] == [32, 64]
    assert double[-1].in_features == 200 and double(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert count_parameters(half) < 166406 < count_parameters(double)


def test_normalize_inside_model():
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(norm(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))
    assert isinstance(build_model("cifar_small")[0], Normalize)
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet50")
    with pytest.raises(ValueError):
        build_model("toy_mlp", classes=1)


def _conv_and_hidden(model):
    return ([m.out_channels for m in model if isinstance(m, nn.Conv2d)],
            [m.out_features for m in model if isinstance(m, nn.Linear)][:-1])


@pytest.mark.parametrize("name,width,convs,hidden", [
    ("mnist_small", 0.25, [4, 8], [25]), ("mnist_small", 0.5, [8, 16], [50]),
    ("mnist_small", 1, [16, 32], [100]), ("mnist_small", 2, [32, 64], [200]),
    ("madry_mnist", 1, [32, 64], [1024]), ("madry_mnist", 2, [64, 128], [2048]),
    ("madry_mnist", 0.5, [16, 32], [512]), ("madry_mnist", 0.3, [10, 19], [307]),
])
def test_width_multiplier_is_one_rule(name, width, convs, hidden):
    """Both width multipliers take a float and round each layer; the widths in use keep their sizes."""
    model = build_model(name, width=width)
    assert _conv_and_hidden(model) == (convs, hidden)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["mnist_small", "madry_mnist"])
@pytest.mark.parametrize("width", [0, -1, -0.5, math.nan, math.inf, True, "1", None])
def test_bad_widths_are_a_clear_error(name, width):
    with pytest.raises(ValueError, match=f"{name}: width"):
        build_model(name, width=width)


@pytest.mark.parametrize("name,width", [("mnist_small", 0.01), ("madry_mnist", 0.01), ("mnist_small", 0.03)])
def test_width_that_rounds_a_layer_to_zero(name, width):
    with pytest.raises(ValueError, match="no units"):
        build_model(name, width=width)


def test_trades_and_papernot_share_one_builder():
    torch.manual_seed(0)
    a = M.trades_smallcnn()
    torch.manual_seed(0)
    b = M.papernot_mnist()
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [type(m) for m in a] == [type(m) for m in b]
    assert a[-4].p == b[-4].p == 0.5 and M.trades_smallcnn(dropout=0.2)[-4].p == 0.2
    assert "Zhang et al. 2019" in M.trades_smallcnn.__doc__
    assert "Papernot et al. 2016" in M.papernot_mnist.__doc__


def _keys_and_shapes(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", ["papernot_student_t100", "mnist_small_trades_b1"])
def test_shipped_checkpoints_still_match_their_builders(name):
    from tutorial_lib.checkpoints import CHECKPOINT_DIR, load_checkpoint, read_registry

    payload = torch.load(CHECKPOINT_DIR / read_registry()[name]["file"], map_location="cpu", weights_only=True)
    shipped = [(k, tuple(v.shape)) for k, v in payload["state_dict"].items()]
    assert shipped == _keys_and_shapes(build_model(payload["model"], **payload["model_kwargs"]))
    if payload["model"] == "papernot_mnist":  # the TRADES SmallCNN is the same network
        assert shipped == _keys_and_shapes(M.trades_smallcnn())
    model, _ = load_checkpoint(name, device="cpu")
    assert all(torch.equal(v, payload["state_dict"][k]) for k, v in model.state_dict().items())
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


CERTIFIABLE = {"mnist_small", "mnist_large", "cifar_small", "cifar_large", "toy_mlp", "mnist_residual", "cifar_resnet"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bounds_accept_exactly_the_models_the_docstring_says(name):
    """models.py's docstring names the models the bounds accept; hold it to that."""
    from tutorial_lib.bounds import UnsupportedLayerError, interval_bounds

    model = build_model(name).eval()
    x = torch.rand(1, *INPUTS[name])
    y = torch.zeros(1, dtype=torch.long)
    if name in CERTIFIABLE:
        assert interval_bounds(model, x, y, 0.01).lower.shape == (1, 1 if name == "toy_mlp" else 9)
    else:
        with pytest.raises(UnsupportedLayerError):
            interval_bounds(model, x, y, 0.01)
    for other in CERTIFIABLE:
        assert f":func:`{other}`" in M.__doc__


def test_input_quantization_masks_gradients_and_rounds():
    from tutorial_lib.models import InputQuantization, build_model

    q = InputQuantization(levels=3)
    x = torch.tensor([0.0, 0.2, 0.26, 0.74, 0.76, 1.0], requires_grad=True)
    assert q(x).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    (g,) = torch.autograd.grad(q(x).sum(), x)
    assert torch.all(g == 0)  # the broken defence's whole trick
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="levels"):
            InputQuantization(bad)
    net = build_model("mnist_small_quantized", levels=16)
    assert isinstance(net[0], InputQuantization) and net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
