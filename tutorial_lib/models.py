"""The papers' architectures as plain ``nn.Sequential`` networks.

Every model takes raw pixels in [0, 1] with shape (N, C, H, W) (or (N, 2) for the
2-D toys) and returns logits of shape (N, classes). Normalisation, where a paper
uses it, is the first layer (:class:`Normalize`) so attacks and bounds see raw pixels.
The models use only Linear, Conv2d, ReLU, Flatten, MaxPool2d, Dropout and Normalize, except
:func:`mnist_small_quantized`, a deliberately broken defence (:class:`InputQuantization` first),
and the residual networks :func:`mnist_residual` and :func:`cifar_resnet` (:class:`Residual`
blocks; :class:`DenseSkip` is the concatenating skip). Every bound method accepts both blocks.

Which models the bounds accept: :mod:`tutorial_lib.bounds` handles the layer types in its table
``bounds.LAYER_TYPES`` (at present Linear, Conv2d, ReLU, Sigmoid, Tanh, Flatten and Normalize), nested
in nn.Sequential, :class:`Residual` and :class:`DenseSkip`, and raises ``UnsupportedLayerError`` on
any other layer, MaxPool2d and Dropout included. So :func:`mnist_small`, :func:`mnist_large`,
:func:`cifar_small`, :func:`cifar_large`, :func:`toy_mlp`, :func:`mnist_residual` and
:func:`cifar_resnet` can be certified; :func:`madry_mnist`, :func:`trades_smallcnn` and
:func:`papernot_mnist` (max pooling, dropout) can be attacked and trained but not certified.

Width multipliers (:func:`mnist_small`, :func:`madry_mnist`): a float ``width > 0`` scales every
hidden layer's channels or units; each size is ``round(base * width)`` (Python's ``round``, so
an exact half goes to the even integer), and a width that rounds a layer to 0 is a ValueError.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "Normalize", "mnist_small", "mnist_large", "cifar_small", "cifar_large",
    "madry_mnist", "trades_smallcnn", "papernot_mnist", "toy_mlp",
    "InputQuantization", "mnist_small_quantized", "Residual", "DenseSkip", "mnist_residual", "cifar_resnet",
    "build_model", "MODELS", "count_parameters",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x - mean) / std per channel; an affine map, so bounds pass through it exactly."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class InputQuantization(nn.Module):
    """Round each pixel to one of ``levels`` evenly spaced values in [0, 1]: x -> round(x (k-1)) / (k-1).

    Rounding has zero derivative almost everywhere, so every gradient-based attack on a model that
    starts with this layer sees a zero gradient: it *masks* gradients without making the model
    robust (Athalye, Carlini & Wagner 2018). Shipped as the broken defence of notebook 09.
    """

    def __init__(self, levels: int = 16) -> None:
        super().__init__()
        if isinstance(levels, bool) or int(levels) != levels or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        self.levels = int(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def _scaled(model: str, width: float, base: Sequence[int]) -> Tuple[int, ...]:
    """Layer sizes ``round(b * width)`` for each base size, with one validation for every model."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise ValueError(f"{model}: width must be a number > 0, got {width!r}")
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"{model}: width must be a finite number > 0, got {width!r}")
    sizes = tuple(int(round(b * width)) for b in base)
    if min(sizes) < 1:
        named = ", ".join(f"{b}w = {n}" for b, n in zip(base, sizes))
        raise ValueError(f"{model}: width {width!r} leaves a layer with no units ({named})")
    return sizes


def _wong_small(in_ch: int, side: int, widths: Sequence[int], normalize: bool) -> nn.Sequential:
    """conv(w0)-4x4/2, conv(w1)-4x4/2, fc(w2), fc10 on (N, in_ch, side, side) inputs."""
    c1, c2, h = widths
    head = [Normalize(CIFAR_MEAN, CIFAR_STD)] if normalize else []
    return nn.Sequential(
        *head,
        nn.Conv2d(in_ch, c1, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * (side // 4) ** 2, h), nn.ReLU(),
        nn.Linear(h, 10),
    )


def _wong_large(in_ch: int, side: int, normalize: bool) -> nn.Sequential:
    """conv32-3, conv32-4/2, conv64-3, conv64-4/2, fc512, fc512, fc10 on (N, in_ch, side, side)."""
    head = [Normalize(CIFAR_MEAN, CIFAR_STD)] if normalize else []
    return nn.Sequential(
        *head,
        nn.Conv2d(in_ch, 32, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * (side // 4) ** 2, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def mnist_small(width: float = 1) -> nn.Sequential:
    """Wong & Kolter 2017, MNIST "small": conv16-4x4/2, conv32-4x4/2, fc100. Input (N, 1, 28, 28).

    ``width`` (a float > 0) scales the channels and hidden units (16w, 32w, 100w, rounded; the
    capacity study of notebook 02 uses 0.25, 0.5, 1 and 2); ``width=1`` is the paper's network.
    """
    return _wong_small(1, 28, _scaled("mnist_small", width, (16, 32, 100)), normalize=False)


def mnist_small_quantized(levels: int = 16) -> nn.Sequential:
    """A broken defence: :class:`InputQuantization` (``levels`` grey levels) in front of
    :func:`mnist_small`. PGD from the model itself sees only zero gradients and fails; attacks
    that do not need the model's gradient (Square, transfer from the same network without the
    rounding, i.e. BPDA with the identity) break it. Used by notebook 09's last exercise; the
    bounds refuse it (the rounding is not a layer they support).
    """
    return nn.Sequential(InputQuantization(levels), *mnist_small())


def mnist_large() -> nn.Sequential:
    """Wong et al. 2018, MNIST "large": conv32-3, conv32-4/2, conv64-3, conv64-4/2, fc512, fc512."""
    return _wong_large(1, 28, normalize=False)


def cifar_small() -> nn.Sequential:
    """Wong et al. 2018, CIFAR-10 "small" (the MNIST small net on 3x32x32, normalised inside)."""
    return _wong_small(3, 32, (16, 32, 100), normalize=True)


def cifar_large() -> nn.Sequential:
    """Wong et al. 2018, CIFAR-10 "large" (the MNIST large net on 3x32x32, normalised inside)."""
    return _wong_large(3, 32, normalize=True)


def madry_mnist(width: float = 1) -> nn.Sequential:
    """Madry et al. 2018 (mnist_challenge): conv32-5x5, maxpool, conv64-5x5, maxpool, fc1024.

    ``width`` (a float > 0, the same rule as :func:`mnist_small`) scales the channels and hidden
    units (32w, 64w, 1024w, rounded; the paper's capacity study scales the same network);
    ``width=1`` is the published model.
    """
    c1, c2, h = _scaled("madry_mnist", width, (32, 64, 1024))
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, h), nn.ReLU(),
        nn.Linear(h, 10),
    )


def _conv4_pool2_fc200(dropout: float) -> nn.Sequential:
    """Papernot et al. 2016's MNIST network, reused by Carlini & Wagner 2017 and as TRADES's SmallCNN
    (Zhang et al. 2019): conv32-3x3, conv32-3x3, maxpool, conv64-3x3, conv64-3x3, maxpool, fc200,
    dropout, fc200, fc10. Input (N, 1, 28, 28). Layer order fixes the weights drawn for a seed."""
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


def trades_smallcnn(dropout: float = 0.5) -> nn.Sequential:
    """Zhang et al. 2019 (TRADES) SmallCNN for MNIST: 4 conv3x3 (32,32,64,64), 2 maxpools, fc200, fc200.

    The same network as :func:`papernot_mnist` (one builder, so the same seed gives the same weights).
    """
    return _conv4_pool2_fc200(dropout)


def papernot_mnist(dropout: float = 0.5) -> nn.Sequential:
    """Papernot et al. 2016 distillation MNIST net: conv32x2, pool, conv64x2, pool, fc200, fc200.

    The same network as :func:`trades_smallcnn` (one builder, so the same seed gives the same weights).
    """
    return _conv4_pool2_fc200(dropout)


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


# --------------------------------------------------------------------------------------------
# residual networks (Wong, Schmidt, Metzen & Kolter 2018): a residual block y = body(x) + shortcut(x)
# is the simplest graph z_i = sum_j f_ij(z_j) of the paper; its dual is the sum of the branches'
# duals. Every tutorial_lib.bounds method walks Residual and DenseSkip blocks inside an nn.Sequential.
# --------------------------------------------------------------------------------------------
class Residual(nn.Module):
    """y = body(x) + shortcut(x); shortcut None is the identity (y = body(x) + x).

    body, shortcut: modules with matching output shapes (for the bounds: an nn.Sequential of the
    layers in ``bounds.LAYER_TYPES``, possibly holding further Residual / :class:`DenseSkip`
    blocks, or one such layer; the shortcut usually the identity or a 1x1 / strided Conv2d). A
    plain module with a normal forward: every bound method walks it as body, shortcut and a sum
    node (``bounds.DualAdd``). A subclass that overrides forward is refused by the bounds.
    """

    def __init__(self, body: nn.Module, shortcut: Optional[nn.Module] = None) -> None:
        super().__init__()
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be an nn.Module, got {type(body).__name__}")
        if shortcut is not None and not isinstance(shortcut, nn.Module):
            raise TypeError(f"shortcut must be None (identity) or an nn.Module, got {type(shortcut).__name__}")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class DenseSkip(nn.Module):
    """y = cat([x, body(x)], dim=1): a dense skip connection (DenseNet style) that passes the
    block's input on beside the body's output, along channels (N, C, H, W) or features (N, F).

    body: a module whose output agrees with x on every dim but dim 1 (for the bounds: as a
    :class:`Residual` body). The bounds walk it as body and a concatenation node
    (``bounds.DualConcat``); a subclass that overrides forward is refused by the bounds.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be an nn.Module, got {type(body).__name__}")
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def mnist_residual() -> nn.Sequential:
    """A small MNIST residual network (ours, in the spirit of the paper's residual nets; not a
    network from the paper): conv 1->16 4x4/2 pad 1, ReLU, one identity-shortcut residual block
    (conv 16->16 3x3 pad 1, ReLU, conv 16->16 3x3 pad 1), ReLU, conv 16->32 4x4/2 pad 1, ReLU,
    Flatten, Linear(32*7*7, 100), ReLU, Linear(100, 10). Input (N, 1, 28, 28)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
    )


def _block(c_in: int, c_out: int, downsample: bool) -> List[nn.Module]:
    """One block of the paper's ResNet (convex_adversarial's examples/problems.py): body conv
    (3x3/1 pad 1, or 4x4/2 pad 1 when downsampling), ReLU, conv 3x3/1 pad 1; shortcut a conv
    (1x1/1, or 2x2/2 when downsampling); the sum followed by a ReLU."""
    k, s, k_skip = (4, 2, 2) if downsample else (3, 1, 1)
    body = nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=s, padding=1), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, stride=1, padding=1))
    return [Residual(body, nn.Conv2d(c_in, c_out, k_skip, stride=s, padding=0)), nn.ReLU()]


def cifar_resnet() -> nn.Sequential:
    """The CIFAR-10 ResNet of Wong et al. 2018: four residual blocks with 16, 16, 32 and 64
    filters (the last two downsample by 2), as in convex_adversarial's ``cifar_model_resnet(N=1,
    factor=1)``: conv 3->16 3x3 pad 1, ReLU, the blocks (:func:`_block`; the shortcuts are
    convolutions, 1x1 or 2x2 stride 2, not identities), Flatten, Linear(64*8*8, 1000), ReLU,
    Linear(1000, 10). Input (N, 3, 32, 32), raw pixels (no normalisation layer). Initialised as
    there: conv weights N(0, 2 / (k*k*out_channels)), conv biases 0 (Linear: PyTorch's default)."""
    layers: List[nn.Module] = [nn.Conv2d(3, 16, 3, stride=1, padding=1), nn.ReLU()]
    layers += _block(16, 16, False) + _block(16, 16, False) + _block(16, 32, True) + _block(32, 64, True)
    layers += [nn.Flatten(), nn.Linear(64 * 8 * 8, 1000), nn.ReLU(), nn.Linear(1000, 10)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0, math.sqrt(2.0 / n))
                m.bias.zero_()
    return model


MODELS: Dict[str, Callable[..., nn.Sequential]] = {
    "mnist_small": mnist_small,
    "mnist_small_quantized": mnist_small_quantized,
    "mnist_residual": mnist_residual,
    "cifar_resnet": cifar_resnet,
    "mnist_large": mnist_large,
    "cifar_small": cifar_small,
    "cifar_large": cifar_large,
    "madry_mnist": madry_mnist,
    "trades_smallcnn": trades_smallcnn,
    "papernot_mnist": papernot_mnist,
    "toy_mlp": toy_mlp,
}


def build_model(name: str, **kwargs: Any) -> nn.Sequential:
    """Build a model by name (a key of :data:`MODELS`) with optional keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
