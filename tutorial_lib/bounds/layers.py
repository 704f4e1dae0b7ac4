"""One small class per supported layer type, all behind the :class:`DualLayer` interface.

Every bound method (interval, dual network, LP/MILP) walks a list of these objects, in
topological order, each reading the values named by its ``inputs`` (:func:`build_layers`;
residual and dense-skip blocks add the join nodes of ``joins``). Shapes
are per example: a layer maps ``(N, *in_shape)`` to ``(N, *out_shape)``. Coefficient
tensors ("nu", one row per bounded quantity) have shape ``(B, m, *shape)`` where ``B`` is
the batch size or 1 (shared by all examples, broadcast later).

Adding an affine layer type: subclass :class:`DualAffine` (implement ``forward``, ``linear``,
``linear_abs``, ``transpose``) and register it in :data:`LAYER_TYPES`. Adding an activation:
subclass :class:`tutorial_lib.bounds.activations.DualActivation` (``forward`` and its linear
relaxation ``relax``) and register it the same way.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tutorial_lib.models import DenseSkip, Normalize, Residual

from .activations import DualActivation, DualReLU, DualSigmoid, DualTanh
from .base import DualLayer, UnsupportedLayerError
from .joins import DualAdd, DualConcat, DualJoin

__all__ = [
    "UnsupportedLayerError", "DualLayer", "DualAffine", "DualLinear", "DualConv2d",
    "DualNormalize", "DualFlatten", "DualActivation", "DualReLU", "DualSigmoid", "DualTanh",
    "DualJoin", "DualAdd", "DualConcat", "LAYER_TYPES", "build_layers", "supported_layer_names",
    "is_chain", "last_uses", "run_layers",
]


def _rows(t: Tensor, lead: int = 2) -> Tensor:
    """Merge the ``lead`` leading dims: (B, m, *s) -> (B*m, *s)."""
    return t.reshape(-1, *t.shape[lead:])


class DualAffine(DualLayer):
    """h -> A h + b. Subclasses give the linear part, its absolute value and its adjoint."""

    @abstractmethod
    def linear(self, v: Tensor) -> Tensor:
        """A v for v of shape (B, k, *in) -> (B, k, *out) (no bias)."""

    @abstractmethod
    def linear_abs(self, r: Tensor) -> Tensor:
        """|A| r for r of shape (N, *in) -> (N, *out)."""

    @abstractmethod
    def transpose(self, nu: Tensor) -> Tensor:
        """A^T nu for nu of shape (B, m, *out) -> (B, m, *in)."""

    def bias_dot(self, nu: Tensor) -> Optional[Tensor]:
        """nu . b, (B, m, *out) -> (B, m); None when there is no bias."""
        return None

    def interval(self, l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
        c, r = (u + l) / 2, (u - l) / 2
        c, r = self.forward(c), self.linear_abs(r)
        return c - r, c + r

    def backward(self, nu: Tensor, alpha: Optional[Tensor] = None,
                 upper: bool = True) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """Pull a bound on nu . h_out back to nu' . h_in + const: returns (nu', c_lo, c_up)."""
        c = self.bias_dot(nu)
        return self.transpose(nu), c, c


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class DualLinear(DualAffine):
    """nn.Linear on (N, features) inputs."""

    def __init__(self, module: nn.Module, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]):
        if len(in_shape) != 1:
            raise UnsupportedLayerError(
                f"{module!r} sees inputs of shape {tuple(in_shape)} per example; bounds support "
                "Linear only on flat (N, features) inputs (put an nn.Flatten before it)")
        super().__init__(module, in_shape, out_shape)
        self.W, self.b = module.weight, module.bias

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self.W, self.b)

    def linear(self, v: Tensor) -> Tensor:
        return F.linear(v, self.W)

    def linear_abs(self, r: Tensor) -> Tensor:
        return F.linear(r, self.W.abs())

    def transpose(self, nu: Tensor) -> Tensor:
        return nu.matmul(self.W)

    def bias_dot(self, nu: Tensor) -> Optional[Tensor]:
        return None if self.b is None else nu.matmul(self.b)


class _FoldTranspose(torch.autograd.Function):
    """conv_transpose2d (groups=1) as a matmul to per-patch columns plus col2im (fold).

    On CPU this is several times faster than conv_transpose2d when the conv has few input
    channels (the first layer); the backward uses conv2d, not the slow im2col.
    """

    @staticmethod
    def forward(ctx, nu, W, size, stride, padding, dilation):
        R, C, H, Wd = nu.shape
        # a batched product with the expanded weights: torch.matmul would fold it into one mm
        # and copy nu (and the result) to transpose them
        cols = torch.bmm(W.reshape(C, -1).t().expand(R, -1, -1), nu.reshape(R, C, H * Wd))
        ctx.save_for_backward(nu, W)
        ctx.conf = (stride, padding, dilation)
        return F.fold(cols, size, W.shape[2:], dilation, padding, stride)

    @staticmethod
    def backward(ctx, g):
        nu, W = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        g_nu = g_W = None
        if ctx.needs_input_grad[0]:
            g_nu = F.conv2d(g, W, None, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            g_W = torch.nn.grad.conv2d_weight(g, W.shape, nu, stride, padding, dilation)
        return g_nu, g_W, None, None, None, None


class DualConv2d(DualAffine):
    """nn.Conv2d (any stride, dilation, groups, integer or 'same'/'valid' zero padding)."""

    def __init__(self, module: nn.Module, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]):
        super().__init__(module, in_shape, out_shape)
        if module.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"{module!r}: only padding_mode='zeros' is supported, got {module.padding_mode!r}")
        if len(in_shape) != 3:
            raise UnsupportedLayerError(f"{module!r} needs (N, C, H, W) inputs, got {in_shape}")
        self.W, self.b = module.weight, module.bias
        self.stride, self.dilation, self.groups = module.stride, module.dilation, module.groups
        kh, kw = module.kernel_size
        if isinstance(module.padding, str):
            if module.padding == "valid":
                pads = (0, 0, 0, 0)
            else:  # 'same': total d*(k-1), left gets the floor (PyTorch's convention)
                th, tw = self.dilation[0] * (kh - 1), self.dilation[1] * (kw - 1)
                pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        else:
            ph, pw = module.padding
            pads = (pw, pw, ph, ph)
        self.symmetric = pads[0] == pads[1] and pads[2] == pads[3]
        self.pads = pads  # (left, right, top, bottom) as F.pad wants
        H, Wd = in_shape[1] + pads[2] + pads[3], in_shape[2] + pads[0] + pads[1]
        # conv_transpose2d maps an (Ho, Wo) map back to size (Ho-1)*s + d*(k-1) + 1 (+ output
        # padding, padding excluded): output_padding restores the rows/cols the stride dropped.
        Ho, Wo = out_shape[1], out_shape[2]
        self.out_pad = (H - ((Ho - 1) * self.stride[0] + self.dilation[0] * (kh - 1) + 1),
                        Wd - ((Wo - 1) * self.stride[1] + self.dilation[1] * (kw - 1) + 1))

    @property
    def use_fold(self) -> bool:
        return (self.groups == 1 and self.symmetric and self.W.shape[1] <= 3
                and self.W.device.type == "cpu")

    def _conv(self, v: Tensor, W: Tensor, b: Optional[Tensor]) -> Tensor:
        if self.symmetric:
            return F.conv2d(v, W, b, self.stride, (self.pads[2], self.pads[0]),
                            self.dilation, self.groups)
        return F.conv2d(F.pad(v, self.pads), W, b, self.stride, 0, self.dilation, self.groups)

    def forward(self, h: Tensor) -> Tensor:
        return self._conv(h, self.W, self.b)

    def linear(self, v: Tensor) -> Tensor:
        return self._conv(_rows(v), self.W, None).view(*v.shape[:2], *self.out_shape)

    def linear_abs(self, r: Tensor) -> Tensor:
        return self._conv(r, self.W.abs(), None)

    def transpose(self, nu: Tensor) -> Tensor:
        lead = nu.shape[:2]
        if self.use_fold:
            out = _FoldTranspose.apply(_rows(nu), self.W, self.in_shape[1:], self.stride,
                                       (self.pads[2], self.pads[0]), self.dilation)
            return out.reshape(*lead, *self.in_shape)
        if self.symmetric:  # conv_transpose2d drops the padding itself (no sliced copy)
            t = F.conv_transpose2d(_rows(nu), self.W, None, self.stride, (self.pads[2], self.pads[0]),
                                   self.out_pad, self.groups, self.dilation)
            return t.view(*lead, *self.in_shape)
        t = F.conv_transpose2d(_rows(nu), self.W, None, self.stride, 0, self.out_pad,
                               self.groups, self.dilation)
        _, _, H, W = t.shape
        l, r, top, bot = self.pads
        t = t[:, :, top:H - bot, l:W - r]
        return t.reshape(*lead, *self.in_shape)

    def bias_dot(self, nu: Tensor) -> Optional[Tensor]:
        if self.b is None:
            return None
        return nu.sum(dim=(-1, -2)).matmul(self.b)


class DualNormalize(DualAffine):
    """tutorial_lib.models.Normalize: (x - mean) / std per channel (a positive diagonal map)."""

    elementwise = True

    def __init__(self, module: nn.Module, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]):
        if len(in_shape) != 3 or tuple(out_shape) != tuple(in_shape):
            raise UnsupportedLayerError(
                f"{module!r} needs (N, C, H, W) inputs with C matching its mean/std; got {in_shape}")
        super().__init__(module, in_shape, out_shape)
        mean, std = module.mean.detach(), module.std.detach()
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError(f"{module!r} has a non-finite mean or std; no bound through it is valid")
        if not (std > 0).all():
            raise ValueError(f"{module!r} has std <= 0 (e.g. after load_state_dict): the bounds "
                             "need a positive per-channel scale (std > 0)")
        self.mean = module.mean.reshape(-1, 1, 1)
        self.inv_std = 1.0 / module.std.reshape(-1, 1, 1)

    def forward(self, h: Tensor) -> Tensor:
        return (h - self.mean) * self.inv_std

    def linear(self, v: Tensor) -> Tensor:
        return v * self.inv_std

    def linear_abs(self, r: Tensor) -> Tensor:
        return r * self.inv_std

    def transpose(self, nu: Tensor) -> Tensor:
        return nu * self.inv_std

    def bias_dot(self, nu: Tensor) -> Optional[Tensor]:
        return -(nu * (self.mean * self.inv_std)).flatten(2).sum(-1)


class DualFlatten(DualAffine):
    """nn.Flatten with the default start_dim=1, end_dim=-1."""

    elementwise = True

    def __init__(self, module: nn.Module, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]):
        if module.start_dim != 1 or module.end_dim != -1:
            raise UnsupportedLayerError(
                f"{module!r}: only nn.Flatten(start_dim=1, end_dim=-1) is supported")
        super().__init__(module, in_shape, out_shape)

    def forward(self, h: Tensor) -> Tensor:
        return h.reshape(h.shape[0], *self.out_shape)

    def linear(self, v: Tensor) -> Tensor:
        return v.reshape(*v.shape[:2], *self.out_shape)

    def linear_abs(self, r: Tensor) -> Tensor:
        return self.forward(r)

    def transpose(self, nu: Tensor) -> Tensor:
        return nu.reshape(*nu.shape[:2], *self.in_shape)

    def interval(self, l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
        return self.forward(l), self.forward(u)


LAYER_TYPES: Dict[type, type] = {
    nn.Linear: DualLinear,
    nn.Conv2d: DualConv2d,
    Normalize: DualNormalize,
    nn.Flatten: DualFlatten,
    nn.ReLU: DualReLU,
    nn.Sigmoid: DualSigmoid,
    nn.Tanh: DualTanh,
}


def supported_layer_names() -> str:
    return ", ".join(t.__name__ for t in LAYER_TYPES)


def _add_node(layers: List[DualLayer], values: List[Tensor], node: DualLayer, inputs: Sequence[int],
              out: Tensor) -> int:
    """Append ``node`` reading the values ``inputs``; its sample output is ``out``. Returns its value index."""
    node.inputs = tuple(inputs)
    layers.append(node)
    values.append(out)
    return len(values) - 1


def _shape(values: List[Tensor], v: int) -> Tuple[int, ...]:
    return tuple(values[v].shape[1:])


def _in_place(m: nn.Module) -> Optional[Tuple[str, nn.Module]]:
    """The first submodule of m (m itself included) that computes in place (``inplace=True``,
    as nn.ReLU(inplace=True)): (its name relative to m, the module), or None."""
    for name, sub in m.named_modules():
        if getattr(sub, "inplace", False) is True:
            return name, sub
    return None


def _refuse_in_place(m: nn.Module, path: str, kind: str) -> None:
    """UnsupportedLayerError if a Residual / DenseSkip block ``m`` holds an in-place module.

    The block reads its input twice: its body, then (Residual) the shortcut or the sum with the
    input, or (DenseSkip) the concatenation with the input. An in-place module that the input
    reaches before any copy (nn.ReLU(inplace=True) first in the body, or after layers that return
    a view) overwrites it, so the model that runs adds or concatenates the modified input while
    the bounds describe the block as written: they would certify a different network (a margin
    +0.01 was certified where the model reaches -0.09). Which positions are harmless depends on
    what every layer returns; the bounds refuse an in-place module anywhere inside a block."""
    found = _in_place(m)
    if found is not None:
        name, sub = found
        where = path + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in name.split(".") if p)
        raise UnsupportedLayerError(
            f"{sub!r} at {where} computes in place (inplace=True) inside a {kind} block, whose input is "
            f"read again after the body runs: it can overwrite that input, so the model that runs is not "
            f"the one the bounds describe; use inplace=False (e.g. nn.ReLU()) inside {kind} blocks")


def _append(m: nn.Module, v: int, layers: List[DualLayer], values: List[Tensor], path: str) -> int:
    """Wrap module m reading value v (its sample in ``values``) as nodes; returns the value of its output."""
    if isinstance(m, (Residual, DenseSkip)):
        _refuse_in_place(m, path, "Residual" if isinstance(m, Residual) else "DenseSkip")
    elif v == 0 and not isinstance(m, nn.Sequential) and getattr(m, "inplace", False) is True:
        raise UnsupportedLayerError(
            f"{m!r} at {path} computes in place (inplace=True) on the network's input: running the model "
            "inside the bounds would overwrite the caller's x; use inplace=False for the first layer")
    if isinstance(m, nn.Sequential):
        for k, item in enumerate(m):
            v = _append(item, v, layers, values, f"{path}[{k}]")
        return v
    if isinstance(m, Residual):
        vb = _append(m.body, v, layers, values, path + ".body")
        vs = v if m.shortcut is None else _append(m.shortcut, v, layers, values, path + ".shortcut")
        if _shape(values, vb) != _shape(values, vs):
            raise ValueError(f"{path} (Residual): the body gives shape {_shape(values, vb)} but the shortcut "
                             f"{_shape(values, vs)}; they must match to be added")
        node = DualAdd(m, [_shape(values, vb), _shape(values, vs)], _shape(values, vb))
        return _add_node(layers, values, node, (vb, vs), values[vb] + values[vs])
    if isinstance(m, DenseSkip):
        vb = _append(m.body, v, layers, values, path + ".body")
        a, b = _shape(values, v), _shape(values, vb)
        if len(a) != len(b) or a[1:] != b[1:]:
            raise ValueError(f"{path} (DenseSkip): the input has shape {a} and the body gives {b}; "
                             "they must agree on every dim but the first to be concatenated")
        out = torch.cat([values[v], values[vb]], dim=1)
        return _add_node(layers, values, DualConcat(m, [a, b], tuple(out.shape[1:])), (v, vb), out)
    i = len(layers)
    cls = LAYER_TYPES.get(type(m))
    if cls is None:
        raise UnsupportedLayerError(
            f"layer {i} ({m!r}, at {path}) is not supported by the bounds; supported layers: "
            f"{supported_layer_names()} (in nn.Sequential, Residual and DenseSkip containers)")
    h = values[v]
    try:
        with torch.no_grad():
            out = m(h)
    except Exception as e:  # shape errors from torch: say which layer
        raise ValueError(f"input of shape {tuple(values[0].shape[1:])} does not fit the model: "
                         f"layer {i} ({m!r}, at {path}) failed on shape {tuple(h.shape[1:])}: {e}") from e
    return _add_node(layers, values, cls(m, tuple(h.shape[1:]), tuple(out.shape[1:])), (v,), out)


def build_layers(model: nn.Module, sample: Tensor) -> Tuple[List[DualLayer], Tuple[int, ...]]:
    """Wrap a (possibly nested) nn.Sequential as a list of nodes; ``sample`` (1, *in_shape) fixes shapes.

    Items may be the layers of :data:`LAYER_TYPES`, nested nn.Sequentials, and the blocks
    :class:`tutorial_lib.models.Residual` (its body's nodes, its shortcut's, then a
    :class:`DualAdd`) and :class:`tutorial_lib.models.DenseSkip` (its body's nodes, then a
    :class:`DualConcat` of the block's input and the body's output). The nodes are in
    topological order; node i reads the values ``layers[i].inputs`` (value 0 the input, value
    i + 1 the output of node i), so a model without blocks gives the chain ``inputs == (i,)``.
    Returns (layers, output shape per example). Raises UnsupportedLayerError for layer types
    outside :data:`LAYER_TYPES`, for in-place modules (``inplace=True``) inside a Residual or
    DenseSkip block (they can overwrite the block's input, which the block reads again) or as
    the first layer (it would overwrite the caller's input), and ValueError when the last layer
    is not nn.Linear. In-place activations elsewhere in a chain are fine (nothing reads their
    input again).
    """
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(
            f"bounds need an nn.Sequential of {supported_layer_names()} (and Residual / DenseSkip "
            f"blocks); got {type(model).__name__}")
    layers: List[DualLayer] = []
    values = [sample]
    out = _append(model, 0, layers, values, "model")
    if not layers:
        raise ValueError("the model has no layers")
    if not isinstance(layers[-1], DualLinear):  # (the model's output is always the last node's)
        raise ValueError(f"the last layer must be nn.Linear (the logits); got {layers[-1].module!r}")
    return layers, tuple(values[out].shape[1:])


def is_chain(layers: Sequence[DualLayer]) -> bool:
    """True when every node reads the previous node's output (a model without blocks)."""
    return all(layer.inputs == (i,) for i, layer in enumerate(layers))


def last_uses(layers: Sequence[DualLayer]) -> List[int]:
    """For each value (0 .. len(layers)): the index of the last node that reads it (-1: none),
    so that a forward walk can drop a value once it is read for the last time."""
    last = [-1] * (len(layers) + 1)
    for i, layer in enumerate(layers):
        for j in layer.inputs:
            last[j] = i
    return last


def run_layers(layers: Sequence[DualLayer], x: Tensor) -> Tensor:
    """The network the nodes describe, evaluated at x (N, *in_shape): the output (N, *out)."""
    values: Dict[int, Tensor] = {0: x}
    last = last_uses(layers)
    for i, layer in enumerate(layers):
        values[i + 1] = layer.forward(*[values[j] for j in layer.inputs])
        for j in set(layer.inputs):
            if last[j] == i:
                del values[j]
    return values[len(layers)]
