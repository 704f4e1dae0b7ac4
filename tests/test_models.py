import pytest
import torch
from torch import nn

from tutorial_lib.models import MODELS, Normalize, build_model, count_parameters

INPUTS = {"mnist_small": (1, 28, 28), "mnist_large": (1, 28, 28), "cifar_small": (3, 32, 32),
          "cifar_large": (3, 32, 32), "madry_mnist": (1, 28, 28), "trades_smallcnn": (1, 28, 28),
          "papernot_mnist": (1, 28, 28), "toy_mlp": (2,)}


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
        build_model("madry_mnist", width=0)
    with pytest.raises(ValueError):
        build_model("mnist_small", width=0)
    with pytest.raises(ValueError, match="no units"):
        build_model("mnist_small", width=0.01)
    with pytest.raises(ValueError):
        build_model("toy_mlp", classes=1)
