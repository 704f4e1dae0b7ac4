"""Intermediate bounds of a conv layer's neurons computed on their receptive fields.

The dual network bounds neuron k of a conv layer by pulling the one-hot vector e_k back to
the input (``dual._identity_bounds``). Pulled back through a chain of convolutions and
activations, e_k stays zero outside neuron k's receptive field: for the second conv of the MNIST
small CNN,
a 16 x 4 x 4 patch of the first ReLU and a 10 x 10 patch of the image, out of 3136 and 784
entries. This module carries only those windows: the same numbers as the dense pass (same
operations on the non-zero entries, up to rounding) for roughly a tenth of the work. Pulling a
window back through a conv is one matrix product with the conv's transpose restricted to the
window (a dense (C*h*w, C'*h'*w') matrix built once per call): on CPU, conv_transpose2d over
thousands of tiny windows runs at a small fraction of the machine's speed. It applies while the layers
below the conv strictly alternate Conv2d (groups 1, no dilation) and an activation from the input
on, each activation with parallel lines (``DualActivation.parallel``, e.g. the dual's ReLU) or a
:class:`~tutorial_lib.bounds.activations.DualReLU` whose lines differ (CROWN's ReLU,
``bounds.crown``); otherwise :func:`applies` is False and the dense pass is used. The activations
enter only through their relaxation (slopes and intercepts), as in ``DualActivation.backward``
with alpha None:

* all lines parallel: the pull-back nu -> slope * nu is linear, and one pass gives both bounds
  (constant terms (nu . (b_lo + b_up) -+ |nu| . (b_up - b_lo)) / 2);
* some lines differ (CROWN): the lower bound pulls nu back with the lower line where nu >= 0 and
  the upper line where nu < 0 (constant pos . b_lo + neg . b_up; ``tight`` neurons, where the
  lines coincide, take the one line, also in the gradient), and the upper bound is minus the
  lower bound of -nu (the pass started from -W and -b): two passes per conv layer, the dense
  pass's numbers on the windows. The window code follows any relaxation; the gate admits lines
  that differ for the ReLU family only (sigmoid and tanh keep the dense pass, which the tests of
  those activations assert).

Window bookkeeping: the windows of all output positions (oy, ox) of the starting conv have the
same size (h, w) in the coordinates of the current layer and start at (oy * Sy + Oy, ox * Sx + Ox).
A coefficient tensor has shape (B, Ho * Wo, Co, C * h * w), B = 1 or N: one flattened window per
output position and channel.

For an l2/l1 ball (``ball``) the input term is nu . x0 - eps ||nu||_* over the window: nu is
zero outside it, and its entries in the padding (outside the image) are masked out, so the
dual norm is that of the dense pass.

"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .activations import DualActivation, DualReLU
from .base import DualLayer
from .layers import DualConv2d, is_chain
from .spec import Ball, dual_norm

__all__ = ["applies", "conv_neuron_bounds"]


def _plain_conv(layer: DualLayer) -> bool:
    return (isinstance(layer, DualConv2d) and layer.groups == 1 and tuple(layer.dilation) == (1, 1))


def _windowed_activation(layer: DualLayer) -> bool:
    """An activation the windows take: parallel lines, or the ReLU family's (CROWN's ReLU)."""
    return isinstance(layer, DualActivation) and (layer.parallel or isinstance(layer, DualReLU))


def _parallel_below(layers: Sequence[DualLayer], i: int) -> bool:
    """Every activation in layers[:i] has parallel lines (one pass bounds both sides)."""
    return all(layer.parallel for layer in layers[:i] if isinstance(layer, DualActivation))


def applies(layers: Sequence[DualLayer], i: int) -> bool:
    """True when layers[:i] is the chain conv, act, conv, ..., conv (so activation i's input is a
    conv's output), every conv plain (groups 1, no dilation) and every activation parallel or a
    :class:`~tutorial_lib.bounds.activations.DualReLU` (CROWN's ReLU: lines that differ)."""
    if i < 1 or i % 2 == 0:
        return False
    if not is_chain(layers[:i + 1]):
        return False  # a graph (residual or dense-skip blocks) below activation i
    for j, layer in enumerate(layers[:i]):
        if (j % 2 == 0 and not _plain_conv(layer)) or (j % 2 == 1 and not _windowed_activation(layer)):
            return False
    return True


def _windows(t: Tensor, geom, Ho: int, Wo: int) -> Tensor:
    """t (N, C, H, W) -> (N, Ho*Wo, C*h*w), contiguous: the window of every output position,
    flattened in (C, h, w) order, zero outside the map (padding)."""
    (h, Sy, Oy), (w, Sx, Ox) = geom
    N, C, H, W = t.shape
    pt, pb = max(0, -Oy), max(0, Oy + (Ho - 1) * Sy + h - H)
    pl, pr = max(0, -Ox), max(0, Ox + (Wo - 1) * Sx + w - W)
    tp = F.pad(t, (pl, pr, pt, pb))
    y0, x0 = Oy + pt, Ox + pl
    tp = tp[:, :, y0:y0 + (Ho - 1) * Sy + h, x0:x0 + (Wo - 1) * Sx + w]
    # strided views (N, C, Ho, Wo, h, w) and one copy: F.unfold (im2col) was 2-5x slower with one
    # thread and ~100x with two on a busy 2-core CPU (0.8 s for a (100, 16, 16, 16) map)
    V = tp.unfold(2, h, Sy).unfold(3, w, Sx).permute(0, 2, 3, 1, 4, 5)
    return V.reshape(N, Ho * Wo, C * h * w).contiguous()


#: the dense window matrix is used while the output window has at most this many times the
#: kernel's entries (its share of non-zeros is about 1 / this ratio): a matrix product runs
#: many times faster than conv_transpose2d over tiny windows on CPU, but not without bound
_DENSE_WINDOW_RATIO = 8


def _window_transpose(layer: DualConv2d, C: int, h: int, w: int) -> Tensor:
    """The conv's transpose restricted to a (C, h, w) window of its output, as a dense matrix
    (C*h*w, C'*h'*w'), h' = (h - 1) * stride + kh: row k is the image of the k-th unit window.

    One matrix product with it replaces a conv_transpose2d over thousands of tiny windows (on CPU
    that call runs at a small fraction of the machine's speed); it depends only on the weights
    and the window size, so it is built once per layer and chunk (C*h*w unit windows)."""
    eye = torch.eye(C * h * w, dtype=layer.W.dtype, device=layer.W.device).view(-1, C, h, w)
    return F.conv_transpose2d(eye, layer.W, stride=layer.stride).flatten(1)


def _matvec(nu: Tensor, M: Tensor) -> Tensor:
    """nu (..., K) @ M (K, K') or (K,) as one matrix product (torch.matmul would expand M over
    the leading dims and copy nu)."""
    out = nu.reshape(-1, nu.shape[-1]).matmul(M)
    return out.view(*nu.shape[:-1], *M.shape[1:])


def _rowdot(nu: Tensor, win: Tensor) -> Tensor:
    """nu (N, P, co, K) . win (N, P, K) over K -> (N, P, co), without forming nu * win."""
    return nu.matmul(win.unsqueeze(-1)).squeeze(-1)


def _lines_pullback(layer: DualActivation, nu: Tensor, geom, Ho: int, Wo: int) -> Tuple[Tensor, Tensor]:
    """Pull nu (B, Ho*Wo, co, K) back through an activation whose lines differ, lower bound only,
    as :meth:`DualActivation.backward` with alpha None: the lower line where nu >= 0, the upper
    line where nu < 0, one line (the upper) on ``tight`` neurons. Returns (nu' (N, Ho*Wo, co, K),
    the constant pos . lower_intercept + neg . upper_intercept (N, Ho*Wo, co))."""
    pos, neg = nu.clamp(min=0), nu.clamp(max=0)
    terms = [(neg, layer.upper_intercept)]
    if not layer.zero_lower_intercept:
        terms.append((pos, layer.lower_intercept))
    const = 0
    for v, b in terms:
        wb = _windows(b, geom, Ho, Wo)
        # the conv's weights (shared by all positions): one product per term
        const = const + (wb.matmul(v[0, 0].t()) if v.shape[:2] == (1, 1) else _rowdot(v, wb))
    low = _windows(layer.lower_slope, geom, Ho, Wo).unsqueeze(2)
    up = _windows(layer.upper_slope, geom, Ho, Wo).unsqueeze(2)
    # zero outside the map (padding): not tight there, and both slopes vanish
    tight = _windows(layer.tight.to(nu.dtype), geom, Ho, Wo).unsqueeze(2) > 0
    return torch.where(tight, up * nu, low * pos + up * neg), const


def _chunk_bounds(layers: Sequence[DualLayer], i: int, co: slice, lo: Tensor, hi: Tensor,
                  ball: Optional[Ball] = None, negate: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of the output channels ``co`` of conv layers[i-1], each (N, co, Ho*Wo).

    With an activation whose lines differ below (not :func:`_parallel_below`) the pull-back is
    not linear in nu: only the lower bound is returned (upper None), of minus the neurons when
    ``negate`` (the conv's weights and bias start negated), and the caller gets the upper bound as
    minus that.

    The coefficients are held as (B, Ho*Wo, co, C*h*w): one flattened window per output position
    and channel (B = 1 while they are the conv's weights, shared by all positions and examples);
    every sum over a window is a batched matrix product with the windows of the other factor.
    Only (1, 1, co, K) is shared by all positions: once an activation's slopes have multiplied it
    in, nu differs per position, also when B = 1 (a batch of one example)."""
    conv = layers[i - 1]
    Co_all, Ho, Wo = conv.out_shape
    W = conv.W[co]
    n_co = W.shape[0]
    C, h, w = W.shape[1:]
    pl, _, pt, _ = conv.pads
    # window of each output position in the conv's input: size k, start o * s - pad
    geom = [(h, conv.stride[0], -pt), (w, conv.stride[1], -pl)]
    both = _parallel_below(layers, i - 1)  # one pass bounds both sides
    nu = W.reshape(1, 1, n_co, -1)  # the same patch at every position
    c_lo = c_up = (conv.b[co].view(1, 1, -1) if conv.b is not None else 0)
    if negate:
        nu, c_lo = -nu, -c_lo
    for j in range(i - 2, -1, -1):
        layer = layers[j]
        if isinstance(layer, DualActivation) and not layer.parallel:  # lines that differ
            nu, const = _lines_pullback(layer, nu, geom, Ho, Wo)
            c_lo = c_lo + const
        elif isinstance(layer, DualActivation):  # parallel lines: as DualActivation.backward
            ws = _windows(layer.intercept_sum, geom, Ho, Wo)
            wd = ws if layer.intercept_diff is layer.intercept_sum else \
                _windows(layer.intercept_diff, geom, Ho, Wo)
            if nu.shape[:2] == (1, 1):  # the conv's weights (all positions): one product per term
                nu2 = nu[0, 0]
                s, a = ws.matmul(nu2.t()), wd.matmul(nu2.abs().t())
            else:
                s, a = _rowdot(nu, ws), _rowdot(nu.abs(), wd)
            c_lo, c_up = c_lo + (s - a) / 2, c_up + (s + a) / 2
            # zero outside the map: padding entries vanish here
            nu = nu * _windows(layer.lower_slope, geom, Ho, Wo).unsqueeze(2)
        else:  # a plain conv, after an activation: entries in its padding are already zero
            if layer.b is not None:
                bias = _matvec(nu, layer.b.repeat_interleave(h * w))
                c_lo, c_up = c_lo + bias, c_up + bias
            lp, _, tp, _ = layer.pads
            (h0, Sy, Oy), (w0, Sx, Ox) = geom
            h, w = (h0 - 1) * layer.stride[0] + layer.W.shape[2], (w0 - 1) * layer.stride[1] + layer.W.shape[3]
            if h * w <= _DENSE_WINDOW_RATIO * layer.W.shape[2] * layer.W.shape[3]:
                nu = _matvec(nu, _window_transpose(layer, C, h0, w0))
            else:  # a large window: the dense matrix would do too many products with zeros
                lead = nu.shape[:3]
                nu = F.conv_transpose2d(nu.reshape(-1, C, h0, w0), layer.W, stride=layer.stride).view(*lead, -1)
            C = layer.W.shape[1]
            geom = [(h, Sy * layer.stride[0], Oy * layer.stride[0] - tp),
                    (w, Sx * layer.stride[1], Ox * layer.stride[1] - lp)]
    if ball is None:
        lin = _rowdot(nu, _windows((lo + hi) / 2, geom, Ho, Wo))
        l1 = _rowdot(nu.abs(), _windows((hi - lo) / 2, geom, Ho, Wo))
    else:  # nu . x0 - eps ||nu||_*, the entries of nu in the padding masked out
        inside = _windows(torch.ones_like(ball.center[:1]), geom, Ho, Wo).unsqueeze(2)
        lin = _rowdot(nu, _windows(ball.center, geom, Ho, Wo))
        l1 = ball.radius.view(-1, 1, 1) * dual_norm(nu * inside, ball.norm)
    N = lo.shape[0]
    lower = (c_lo + lin - l1).expand(N, -1, -1).transpose(1, 2)
    if not both:
        return lower, None
    upper = (c_up + lin + l1).expand(N, -1, -1).transpose(1, 2)
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
    both = _parallel_below(layers, i - 1)
    lows, ups = [], []
    for a in range(0, Co, step):
        co = slice(a, min(a + step, Co))
        l, u = _chunk_bounds(layers, i, co, lo, hi, ball)
        if not both:  # lines that differ: the upper bound is minus the lower bound of -nu
            u = -_chunk_bounds(layers, i, co, lo, hi, ball, negate=True)[0]
        lows.append(l)
        ups.append(u)
    N = lo.shape[0]
    return torch.cat(lows, 1).view(N, Co, Ho, Wo), torch.cat(ups, 1).view(N, Co, Ho, Wo)
