"""Join nodes: the operations of a network graph that read more than one value (Wong et al. 2018).

"Scaling provable adversarial defenses" writes a network as z_i = sum_{j<i} f_ij(z_j) and builds
its dual from one dual operator per f_ij. Here a network is a list of nodes in topological order
(:func:`tutorial_lib.bounds.layers.build_layers`); every node reads the values named by its
``inputs`` (value 0 is the network input, value i + 1 the output of node i). Layers and
activations read one value; the joins below read several:

* :class:`DualAdd`     h = h_1 + ... + h_k (a residual block's body plus its shortcut);
  dual: every input gets the coefficient nu itself.
* :class:`DualConcat`  h = cat([h_1, ..., h_k], dim=1) (a dense skip); dual: input j gets its
  slice of nu along the concatenated dim.

Both are linear without a constant, so their pull-back has no constant term and their interval
image is exact given boxes on the inputs (the inputs' correlation is lost, as for any interval).
Shapes per example; coefficient tensors are (B, m, *shape) with B = N or 1, as in ``layers``.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import DualLayer, UnsupportedLayerError

__all__ = ["DualJoin", "DualAdd", "DualConcat"]


class DualJoin(DualLayer):
    """A linear node with several inputs (no constant term). ``in_shapes`` holds one shape per
    input (``in_shape`` is the first). Its methods take one tensor (or box) per input, in the
    order of ``inputs``."""

    def __init__(self, module: nn.Module, in_shapes: Sequence[Tuple[int, ...]], out_shape: Tuple[int, ...]):
        if len(in_shapes) < 2:
            raise ValueError(f"a join needs at least two inputs, got {len(in_shapes)}")
        super().__init__(module, in_shapes[0], out_shape)
        self.in_shapes = tuple(tuple(s) for s in in_shapes)

    @abstractmethod
    def forward(self, *hs: Tensor) -> Tensor:
        """Concrete evaluation: one (N, *in_j) tensor per input -> (N, *out)."""

    @abstractmethod
    def interval(self, ls: Sequence[Tensor], us: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """Interval image of one box [ls[j], us[j]] (each (N, *in_j)) per input."""

    @abstractmethod
    def linear(self, vs: Sequence[Optional[Tensor]]) -> Optional[Tensor]:
        """The map applied to one coefficient tensor (B, k, *in_j) per input, None meaning zero;
        None when every input is None."""

    @abstractmethod
    def transpose(self, nu: Tensor) -> List[Tensor]:
        """The adjoint: nu (B, m, *out) -> one (B, m, *in_j) per input."""

    def backward(self, nu: Tensor, alpha: Optional[Tensor] = None,
                 upper: bool = True) -> Tuple[List[Tensor], None, None]:
        """Pull nu . h_out back to sum_j nu_j . h_j exactly: (one nu_j per input, no constants)."""
        return self.transpose(nu), None, None


def _present(vs: Sequence[Optional[Tensor]]) -> List[Tensor]:
    return [v for v in vs if v is not None]


class DualAdd(DualJoin):
    """The sum of its inputs (all of one shape): a residual block y = body(x) + shortcut(x)."""

    def __init__(self, module: nn.Module, in_shapes: Sequence[Tuple[int, ...]], out_shape: Tuple[int, ...]):
        super().__init__(module, in_shapes, out_shape)
        if any(s != tuple(out_shape) for s in self.in_shapes):
            raise UnsupportedLayerError(f"{type(module).__name__}: a sum needs inputs of one shape; "
                                        f"got {self.in_shapes}")

    def forward(self, *hs: Tensor) -> Tensor:
        out = hs[0]
        for h in hs[1:]:
            out = out + h
        return out

    def interval(self, ls: Sequence[Tensor], us: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        return self.forward(*ls), self.forward(*us)

    def linear(self, vs: Sequence[Optional[Tensor]]) -> Optional[Tensor]:
        present = _present(vs)
        return self.forward(*present) if present else None

    def transpose(self, nu: Tensor) -> List[Tensor]:
        return [nu] * len(self.in_shapes)


class DualConcat(DualJoin):
    """Concatenation along the first dim per example (channels or features): a dense skip
    y = cat([x, body(x)], dim=1). The other dims of the inputs must agree."""

    def __init__(self, module: nn.Module, in_shapes: Sequence[Tuple[int, ...]], out_shape: Tuple[int, ...]):
        super().__init__(module, in_shapes, out_shape)
        rest = {s[1:] for s in self.in_shapes}
        if len(rest) != 1 or any(len(s) == 0 for s in self.in_shapes):
            raise UnsupportedLayerError(f"{type(module).__name__}: concatenation along dim 1 needs inputs "
                                        f"that agree on every other dim; got {self.in_shapes}")
        self.sizes = [s[0] for s in self.in_shapes]

    def forward(self, *hs: Tensor) -> Tensor:
        return torch.cat(hs, dim=1)

    def interval(self, ls: Sequence[Tensor], us: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        return torch.cat(list(ls), dim=1), torch.cat(list(us), dim=1)

    def linear(self, vs: Sequence[Optional[Tensor]]) -> Optional[Tensor]:
        present = _present(vs)
        if not present:
            return None
        B = max(v.shape[0] for v in present)
        k, like = present[0].shape[1], present[0]
        parts = [like.new_zeros(B, k, *s) if v is None else v.expand(B, *v.shape[1:])
                 for v, s in zip(vs, self.in_shapes)]
        return torch.cat(parts, dim=2)

    def transpose(self, nu: Tensor) -> List[Tensor]:
        return list(torch.split(nu, self.sizes, dim=2))
