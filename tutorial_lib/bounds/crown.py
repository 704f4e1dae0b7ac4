"""CROWN (Zhang et al. 2018, "Efficient neural network robustness certification with general
activation functions") written as what it is: the dual network of :mod:`tutorial_lib.bounds.dual`
with a different lower line for the unstable ReLUs.

The dual network pulls a coefficient nu back through each ReLU with the lower line where
nu >= 0 and the upper line where nu < 0. Wong & Kolter take the lower line a >= d z with the
upper line's slope d = u / (u - l) (parallel lines); CROWN keeps the upper line
a <= d (z - l) and takes the adaptive lower line

    a >= alpha z,   alpha = 1 if u >= -l (the neuron is more on than off), else 0,

the one of the two extreme lower lines (a >= z, a >= 0) that leaves the smaller area between
it and the ReLU on [l, u] (l^2 / 2 against u^2 / 2). Any alpha in [0, 1] is valid, so the
bound is sound: CROWN's alpha is a corner of the set :func:`optimized_dual_bounds` searches
(which starts from d). The lines are no longer parallel, so the pull-back is not linear in nu: an upper bound
is minus the lower bound of -nu (two backward passes per intermediate layer). The neurons of a conv
layer below which the network is a conv/ReLU chain are bounded on their receptive fields
(:mod:`~tutorial_lib.bounds.patches`, both passes there: the dense pass's numbers for a fraction
of the work); the others (after a Linear, in a residual block) by the dense identity pass.

Intermediate (pre-activation) bounds: ``pre="crown"`` computes them layer by layer the same way
(full CROWN; the first activation's input, an affine image of the box, gets exact interval
bounds as in :func:`dual_bounds`); ``pre="interval"`` takes interval bounds (IBP) for every
hidden layer and one CROWN backward pass for the final spec, the bound CROWN-IBP (Zhang et al.
2020) trains with.

Sigmoid and tanh keep their own relaxation (:class:`~tutorial_lib.bounds.activations.DualSCurve`,
chord and tangent lines), which is CROWN's construction for general activations: only the ReLU's
lower line changes. Everything else (parsing and refusals, norms, graphs, TF32 off) is
:func:`dual_bounds`'s.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .activations import DualReLU, Relaxation
from .dual import _final_lower, _pre_bounds
from .interval import _interval_boxes
from .precision import no_tf32
from .spec import BoundResult, Eps, Problem, prepare

__all__ = ["crown_bounds", "CrownReLU", "CROWN_PRE"]

#: the ways to get the intermediate bounds: CROWN layer by layer, or interval bounds (CROWN-IBP)
CROWN_PRE = ("crown", "interval")


class CrownReLU(DualReLU):
    """The ReLU with CROWN's lines on unstable neurons (l < 0 < u): upper a <= d (z - l),
    d = u / (u - l), and lower a >= alpha z with alpha = 1 where u >= -l, else 0. Stable neurons
    are exact as in :class:`DualReLU`. The lines differ (``parallel = False``)."""

    parallel = False

    def _relax(self, l: Tensor, u: Tensor, active: Tensor, unstable: Tensor) -> Relaxation:
        d, zero, _, w = super()._relax(l, u, active, unstable)
        alpha = torch.where(unstable, (u >= -l).to(u.dtype), d)
        return alpha, zero, d, w

    @classmethod
    def from_relu(cls, layer: DualReLU) -> "CrownReLU":
        """The same node (module, shapes, inputs) with CROWN's lines; bounds not set yet."""
        new = cls.__new__(cls)
        new.__dict__.update(layer.__dict__)
        return new


def _use_crown_lines(P: Problem) -> None:
    """Replace every plain :class:`DualReLU` node of P by a :class:`CrownReLU` (in place)."""
    for i, layer in enumerate(P.layers):
        if type(layer) is DualReLU:
            P.layers[i] = CrownReLU.from_relu(layer)


def crown_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                 spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                 pre: str = "crown", max_rows: Optional[int] = None,
                 norm: str = "linf") -> BoundResult:
    """CROWN's lower bound on spec @ logits over the ball of radius eps in ``norm``.

    x: (N, *input_shape) in the box clip; y: (N,) labels for the default margin spec (or None
    with spec (N, m, K) / (m, K)); eps: the radius (scalar or (N,); l_inf also x's shape), in
    the input's units. norm: 'linf' (default: the ball intersected with the box clip), 'l2' or
    'l1' (as :func:`~tutorial_lib.bounds.dual_bounds`: the input term nu . x - eps ||nu||_*, the
    box clip DROPPED: sound, looser). pre: 'crown' (intermediate bounds by CROWN, layer by
    layer) or 'interval' (by interval bound propagation; CROWN-IBP's bound). max_rows: neurons
    per backward pass for the intermediate bounds, as in dual_bounds (a memory cap, same result).
    Supported layers and refusals are dual_bounds's (the same parsing); sigmoid/tanh keep their
    chord/tangent lines (see the module doc).
    Returns BoundResult(lower (N, m), pre_bounds one (l, u) per activation, each
    (N, *its input shape)), method 'crown' (pre='crown') or 'crown-ibp' (pre='interval'),
    info['pre'] = pre. Differentiable w.r.t. the model (and x). Runs with TF32 off in the
    model's dtype: for a certificate of a float32 model, call it on
    :func:`~tutorial_lib.bounds.float64_copy` (model) with float64 inputs.
    """
    if pre not in CROWN_PRE:
        raise ValueError(f"pre must be one of {CROWN_PRE}, got {pre!r}")
    with no_tf32():
        P = prepare(model, x, y, eps, spec, clip, norm)
        _use_crown_lines(P)
        if pre == "crown":
            bounds = _pre_bounds(P, None, False, max_rows)
        else:
            bounds, _ = _interval_boxes(P)
            for layer, (l, u) in zip(P.activations, bounds):
                layer.set_bounds(l, u)
        return BoundResult(lower=_final_lower(P), pre_bounds=bounds,
                           method="crown" if pre == "crown" else "crown-ibp", norm=P.norm,
                           info={"pre": pre})
