"""Intermediate bounds of a conv layer's neurons computed on their receptive fields.

The dual network bounds neuron k of a conv layer by pulling the one-hot vector e_k back to
the input (``dual._identity_bounds``). Pulled back through a chain of convolutions and
activations, e_k stays zero outside neuron k's receptive field: for the second conv of the MNIST
small CNN,
a 16 x 4 x 4 patch of the first ReLU and a 10 x 10 patch of the image, out of 3136 and 784
entries. This module carries only those windows: the same numbers as the dense pass (same
operations on the non-zero entries) for roughly a tenth of the work. It applies while the layers
below the conv strictly alternate Conv2d (groups 1, no dilation) and an activation whose
relaxation has parallel lines (``DualActivation.parallel``, e.g. ReLU) from the input on;
otherwise :func:`applies` is False and the dense pass is used. The activations enter only
through their relaxation (slopes and intercepts), as in ``DualActivation.backward``.

Window bookkeeping: the windows of all output positions (oy, ox) of the starting conv have the
same size (h, w) in the coordinates of the current layer and start at (oy * Sy + Oy, ox * Sx + Ox).
A coefficient tensor has shape (B, Co, Ho * Wo, C, h, w), B = 1 or N.

For an l2/l1 ball (``ball``) the input term is nu . x0 - eps ||nu||_* over the window: nu is
zero outside it, and its entries in the padding (outside the image) are masked out, so the
dual norm is that of the dense pass.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .activations import DualActivation
from .base import DualLayer
from .layers import DualConv2d, is_chain
from .spec import Ball, dual_norm

__all__ = ["applies", "conv_neuron_bounds"]


def _plain_conv(layer: DualLayer) -> bool:
    return (isinstance(layer, DualConv2d) and layer.groups == 1 and tuple(layer.dilation) == (1, 1))


def _parallel_activation(layer: DualLayer) -> bool:
    return isinstance(layer, DualActivation) and layer.parallel


def applies(layers: Sequence[DualLayer], i: int) -> bool:
    """True when layers[:i] is the chain conv, act, conv, ..., conv (so activation i's input is a
    conv's output), every conv plain (groups 1, no dilation) and every activation parallel."""
    if i < 1 or i % 2 == 0:
        return False
    if not is_chain(layers[:i + 1]):
        return False  # a graph (residual or dense-skip blocks) below activation i
    for j, layer in enumerate(layers[:i]):
        if (j % 2 == 0 and not _plain_conv(layer)) or (j % 2 == 1 and not _parallel_activation(layer)):
            return False
    return True


def _windows(t: Tensor, geom, Ho: int, Wo: int) -> Tensor:
    """t (N, C, H, W) -> (N, 1, Ho*Wo, C, h, w): the window of every output position, zero
    outside the map (padding)."""
    (h, Sy, Oy), (w, Sx, Ox) = geom
    N, C, H, W = t.shape
    pt, pb = max(0, -Oy), max(0, Oy + (Ho - 1) * Sy + h - H)
    pl, pr = max(0, -Ox), max(0, Ox + (Wo - 1) * Sx + w - W)
    tp = F.pad(t, (pl, pr, pt, pb))
    y0, x0 = Oy + pt, Ox + pl
    tp = tp[:, :, y0:y0 + (Ho - 1) * Sy + h, x0:x0 + (Wo - 1) * Sx + w]
    U = F.unfold(tp, (h, w), stride=(Sy, Sx))  # (N, C*h*w, Ho*Wo)
    return U.view(N, C, h, w, Ho * Wo).permute(0, 4, 1, 2, 3).unsqueeze(1)


def _sum3(a: Tensor) -> Tensor:
    return a.sum(dim=(-3, -2, -1))


def _chunk_bounds(layers: Sequence[DualLayer], i: int, co: slice, lo: Tensor, hi: Tensor,
                  ball: Optional[Ball] = None) -> Tuple[Tensor, Tensor]:
    """Bounds of the output channels ``co`` of conv layers[i-1], each (N, co, Ho*Wo)."""
    conv = layers[i - 1]
    Co_all, Ho, Wo = conv.out_shape
    W = conv.W[co]
    kh, kw = W.shape[-2:]
    pl, _, pt, _ = conv.pads
    # window of each output position in the conv's input: size k, start o * s - pad
    geom = [(kh, conv.stride[0], -pt), (kw, conv.stride[1], -pl)]
    nu = W.unsqueeze(0).unsqueeze(2)  # (1, co, 1, Ci, kh, kw): the same patch at every position
    c_lo = c_up = (conv.b[co].view(1, -1, 1) if conv.b is not None else 0)
    for j in range(i - 2, -1, -1):
        layer = layers[j]
        if isinstance(layer, DualActivation):  # parallel lines: as DualActivation.backward
            d = _windows(layer.lower_slope, geom, Ho, Wo)
            ws = _windows(layer.intercept_sum, geom, Ho, Wo)
            wd = ws if layer.intercept_diff is layer.intercept_sum else \
                _windows(layer.intercept_diff, geom, Ho, Wo)
            s, a = _sum3(nu * ws), _sum3(nu.abs() * wd)
            c_lo, c_up = c_lo + (s - a) / 2, c_up + (s + a) / 2
            nu = nu * d  # zero outside the map: padding entries vanish here
        else:  # a plain conv, after an activation: entries in its padding are already zero
            if layer.b is not None:
                bias = _sum3(nu * layer.b.view(-1, 1, 1))
                c_lo, c_up = c_lo + bias, c_up + bias
            B, co_n, P, C, h, w = nu.shape
            nu = F.conv_transpose2d(nu.reshape(-1, C, h, w), layer.W, stride=layer.stride)
            nu = nu.view(B, co_n, P, *nu.shape[1:])
            lp, _, tp, _ = layer.pads
            (h, Sy, Oy), (w, Sx, Ox) = geom
            geom = [((h - 1) * layer.stride[0] + layer.W.shape[2], Sy * layer.stride[0], Oy * layer.stride[0] - tp),
                    ((w - 1) * layer.stride[1] + layer.W.shape[3], Sx * layer.stride[1], Ox * layer.stride[1] - lp)]
    if ball is None:
        mid = _windows((lo + hi) / 2, geom, Ho, Wo)
        rad = _windows((hi - lo) / 2, geom, Ho, Wo)
        lin, l1 = _sum3(nu * mid), _sum3(nu.abs() * rad)
    else:  # nu . x0 - eps ||nu||_*, the entries of nu in the padding masked out
        inside = _windows(torch.ones_like(ball.center[:1]), geom, Ho, Wo)
        lin = _sum3(nu * _windows(ball.center, geom, Ho, Wo))
        l1 = ball.radius.view(-1, 1, 1) * dual_norm((nu * inside).flatten(-3), ball.norm)
    N = lo.shape[0]
    lower = (c_lo + lin - l1).expand(N, -1, -1)
    upper = (c_up + lin + l1).expand(N, -1, -1)
    return lower, upper


def conv_neuron_bounds(layers: Sequence[DualLayer], i: int, lo: Tensor, hi: Tensor,
                       budget: int = 2 ** 25, ball: Optional[Ball] = None) -> Tuple[Tensor, Tensor]:
    """Lower and upper dual bounds of the input of activation ``layers[i]`` (a conv output), each
    (N, Co, Ho, Wo), for the input box [lo, hi] (N, C, H, W), or for ``ball`` (an l2/l1 ball;
    then lo, hi give only the batch size). Requires :func:`applies`.
    ``budget`` caps the entries of the largest coefficient tensor (output channels are chunked)."""
    if not applies(layers, i):
        raise ValueError("receptive-field bounds need a conv/activation chain below layer i")
    Co, Ho, Wo = layers[i - 1].out_shape
    # size of the widest window tensor per output channel, to pick a chunk of channels
    widest, (h, w) = 0, layers[i - 1].W.shape[-2:]
    C = layers[i - 1].W.shape[1]
    for j in range(i - 2, -1, -1):
        widest = max(widest, C * h * w)
        if not isinstance(layers[j], DualActivation):
            s = layers[j].stride
            h, w = (h - 1) * s[0] + layers[j].W.shape[2], (w - 1) * s[1] + layers[j].W.shape[3]
            C = layers[j].W.shape[1]
    widest = max(widest, C * h * w)
    step = max(1, budget // (lo.shape[0] * Ho * Wo * widest))
    lows, ups = [], []
    for a in range(0, Co, step):
        l, u = _chunk_bounds(layers, i, slice(a, min(a + step, Co)), lo, hi, ball)
        lows.append(l)
        ups.append(u)
    N = lo.shape[0]
    return torch.cat(lows, 1).view(N, Co, Ho, Wo), torch.cat(ups, 1).view(N, Co, Ho, Wo)
