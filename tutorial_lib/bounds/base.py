"""The interface every layer wrapper implements, and the error for unsupported layers."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Tuple

from torch import Tensor, nn

__all__ = ["UnsupportedLayerError", "DualLayer"]


class UnsupportedLayerError(TypeError):
    """A layer (or a configuration of a layer) that the bound code cannot handle."""


class DualLayer(ABC):
    """Interface of every wrapped layer. ``in_shape``/``out_shape`` exclude the batch dim.

    Three families: affine layers (:class:`tutorial_lib.bounds.layers.DualAffine`),
    activations (:class:`tutorial_lib.bounds.activations.DualActivation`, ``affine = False``) and
    joins of several values (:class:`tutorial_lib.bounds.joins.DualJoin`: a sum, a concatenation).

    ``inputs``: the values the node reads, set by :func:`tutorial_lib.bounds.layers.build_layers`
    (value 0 is the network input, value i + 1 the output of node i of the node list; a plain
    nn.Sequential is the chain ``inputs == (i,)``).
    """

    affine = True        # False for activations
    elementwise = False  # True if the linear part is a positive diagonal map or a reshape
    inputs: Tuple[int, ...] = ()

    def __init__(self, module: nn.Module, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]):
        self.module = module
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)

    @abstractmethod
    def forward(self, h: Tensor) -> Tensor:
        """Concrete evaluation, (N, *in) -> (N, *out)."""

    @abstractmethod
    def interval(self, l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
        """Interval image of the box [l, u] (each (N, *in)), exact for one affine layer."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_shape} -> {self.out_shape})"
