"""The papers' architectures as plain ``nn.Sequential`` networks.

Every model takes raw pixels in [0, 1] with shape (N, C, H, W) (or (N, 2) for the
2-D toys) and returns logits of shape (N, classes). Normalisation, where a paper
uses it, is the first layer (:class:`Normalize`) so attacks and bounds see raw pixels.
Only Linear, Conv2d, ReLU, Flatten, MaxPool2d, Dropout and Normalize appear, so
bound code can walk the layers in order.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
from torch import nn

__all__ = [
    "Normalize", "mnist_small", "mnist_large", "cifar_small", "cifar_large",
    "madry_mnist", "trades_smallcnn", "papernot_mnist", "toy_mlp",
    "build_model", "MODELS", "count_parameters",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x - mean) / std per channel; an affine map, so bounds pass through it exactly."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def mnist_small(width: float = 1) -> nn.Sequential:
    """Wong & Kolter 2017, MNIST "small": conv16-4x4/2, conv32-4x4/2, fc100. Input (N, 1, 28, 28).

    ``width`` scales the channels and hidden units (16w, 32w, 100w, rounded; the capacity study
    of notebook 02); ``width=1`` is the paper's network.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    c1, c2, h = (int(round(c * width)) for c in (16, 32, 100))
    if min(c1, c2, h) < 1:
        raise ValueError(f"width {width} leaves a layer with no units (16w, 32w, 100w = {c1}, {c2}, {h})")
    return nn.Sequential(
        nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, h), nn.ReLU(),
        nn.Linear(h, 10),
    )


def mnist_large() -> nn.Sequential:
    """Wong et al. 2018, MNIST "large": conv32-3, conv32-4/2, conv64-3, conv64-4/2, fc512, fc512."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def cifar_small() -> nn.Sequential:
    """Wong et al. 2018, CIFAR-10 "small" (the MNIST small net on 3x32x32, normalised inside)."""
    return nn.Sequential(
        Normalize(CIFAR_MEAN, CIFAR_STD),
        nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )


def cifar_large() -> nn.Sequential:
    """Wong et al. 2018, CIFAR-10 "large" (the MNIST large net on 3x32x32, normalised inside)."""
    return nn.Sequential(
        Normalize(CIFAR_MEAN, CIFAR_STD),
        nn.Conv2d(3, 32, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def madry_mnist(width: int = 1) -> nn.Sequential:
    """Madry et al. 2018 (mnist_challenge): conv32-5x5, maxpool, conv64-5x5, maxpool, fc1024.

    ``width`` multiplies the channels and hidden units (the paper's capacity study
    scales the same network); ``width=1`` is the published model.
    """
    if int(width) != width or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    c1, c2, h = 32 * width, 64 * width, 1024 * width
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, h), nn.ReLU(),
        nn.Linear(h, 10),
    )


def trades_smallcnn(dropout: float = 0.5) -> nn.Sequential:
    """Zhang et al. 2019 (TRADES) SmallCNN for MNIST: 4 conv3x3 (32,32,64,64), 2 maxpools, fc200, fc200."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 200), nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(200, 200), nn.ReLU(),
        nn.Linear(200, 10),
    )


def papernot_mnist(dropout: float = 0.5) -> nn.Sequential:
    """Papernot et al. 2016 distillation MNIST net: conv32x2, pool, conv64x2, pool, fc200, fc200."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 200), nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(200, 200), nn.ReLU(),
        nn.Linear(200, 10),
    )


def toy_mlp(in_dim: int = 2, hidden: Sequence[int] = (32, 32), classes: int = 2) -> nn.Sequential:
    """A small ReLU MLP for the 2-D toy problems: (N, in_dim) -> (N, classes)."""
    if in_dim < 1 or classes < 2 or any(h < 1 for h in hidden):
        raise ValueError(f"invalid toy_mlp sizes: in_dim={in_dim}, hidden={hidden}, classes={classes}")
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, classes))
    return nn.Sequential(*layers)


MODELS: Dict[str, Callable[..., nn.Sequential]] = {
    "mnist_small": mnist_small,
    "mnist_large": mnist_large,
    "cifar_small": cifar_small,
    "cifar_large": cifar_large,
    "madry_mnist": madry_mnist,
    "trades_smallcnn": trades_smallcnn,
    "papernot_mnist": papernot_mnist,
    "toy_mlp": toy_mlp,
}


def build_model(name: str, **kwargs) -> nn.Sequential:
    """Build a model by name (a key of :data:`MODELS`) with optional keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
