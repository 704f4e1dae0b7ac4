"""Certified bounds for ReLU, sigmoid and tanh networks (Wong & Kolter 2017; Wong et al. 2018).

Every method has the call shape ``method(model, x, y, eps, spec=None, clip=(0., 1.), ...,
norm="linf")`` and returns a :class:`BoundResult` whose ``lower`` (N, m) lower-bounds
``spec @ logits`` over the l_inf ball of radius eps around x intersected with the box ``clip``
(None: no box). The default spec is the margins z_y - z_j for every j != y (m = K - 1,
increasing j).

Other threat models (``norm="l2"`` or ``"l1"``, :data:`NORMS`): the dual input term becomes
nu_1 . x - eps ||nu_1||_* with the dual norm (l2, l_inf), the interval bounds start from the
exact image of the ball under the first affine layers; both DROP the box ``clip`` (no closed
form for the ball intersected with the box: sound, looser). The LP/MILP keep the box: l1 is
linear (HiGHS), l2 a second-order cone (the LP by Clarabel; the MILP refused). Random
projections: Gaussian for l2, none for l1.

* :func:`interval_bounds`        interval bound propagation
* :func:`dual_bounds`            the dual network (paper's slopes), batched, differentiable
* :func:`optimized_dual_bounds`  the same with the final lower slopes tuned by gradient steps
* :func:`crown_bounds`           CROWN: the dual with the adaptive lower slope (0/1); pre="interval": CROWN-IBP
* :func:`lp_bounds`              the triangle-relaxation LP solved exactly (cvxpy + HiGHS)
* :func:`milp_bounds`            exact verification (MILP) with the worst-case inputs
* :func:`certified_bounds`       a bound for a certificate: float64 (a copy of a float32 model), TF32 off
* :func:`robust_loss`, :func:`certified_error`   robust loss and certified error
  (the training loss built on it is :class:`tutorial_lib.defenses.RobustTrainingLoss`)
* :func:`certified_accuracy_vs_eps`  certified accuracy over a range of radii
* :func:`estimated_dual_bounds`  random-projection estimate (training only, not sound)
* :func:`is_certified`           the one certification rule: every row's lower bound > 0
  (a result computed from user ``pre_bounds`` is conditional and refused: ConditionalBoundsError)
* :func:`node_bounds`            bounds of every node's output (dual or interval), blocks included

Supported layers: nn.Linear, nn.Conv2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Flatten and
tutorial_lib.models.Normalize inside an nn.Sequential whose last layer is nn.Linear, with
residual blocks :class:`tutorial_lib.models.Residual` (body(x) + shortcut(x)) and dense skips
:class:`tutorial_lib.models.DenseSkip` (cat([x, body(x)], dim=1)) nested anywhere in it. Every
method accepts them: the network is a list of nodes in topological order, each reading the
values its ``inputs`` name (Wong et al. 2018's z_i = sum_j f_ij(z_j); a plain Sequential is
the chain, computed exactly as before), and the joins have one dual class per operation,
:class:`DualAdd` and :class:`DualConcat` (``bounds/joins.py``). The receptive-field fast path
(``patches``) is for chains only: a block makes the bounds after it use the dense pass. Activations
share one interface, :class:`DualActivation` (``bounds/activations.py``): a per-neuron linear
relaxation on the pre-activation bounds, from which the dual, LP and MILP code is written;
:class:`DualReLU`, :class:`DualSigmoid` and :class:`DualTanh` (chord and tangent lines) are its
subclasses. Sigmoid and tanh have no exact MILP (``milp_bounds`` refuses them), and the random
projections handle ReLU only. The LP/MILP use scipy.sparse and cvxpy (HiGHS).
"""
from .activations import DualActivation, DualReLU, DualSigmoid, DualTanh
from .crown import crown_bounds
from .dual import dual_bounds, estimated_dual_bounds, optimized_dual_bounds
from .interval import interval_bounds
from .joins import DualAdd, DualConcat, DualJoin
from .layers import LAYER_TYPES, DualConv2d, DualFlatten, DualLayer, DualLinear, DualNormalize, UnsupportedLayerError
from .lp import SolverError, lp_bounds, milp_bounds
from .nodes import node_bounds
from .precision import float64_copy, no_tf32
from .robust import (
    CERTIFY_METHODS,
    certified_accuracy_vs_eps,
    certified_bounds,
    certified_error,
    certified_mask,
    margins_to_logits,
    robust_loss,
)
from .spec import DUAL_NORMS, NORMS, BoundResult, ConditionalBoundsError, is_certified, margin_spec

__all__ = [
    "BoundResult", "NORMS", "DUAL_NORMS", "is_certified", "margin_spec", "interval_bounds", "dual_bounds",
    "optimized_dual_bounds", "crown_bounds",
    "estimated_dual_bounds", "lp_bounds", "milp_bounds", "robust_loss", "certified_error", "certified_mask",
    "CERTIFY_METHODS",
    "margins_to_logits", "certified_accuracy_vs_eps", "SolverError",
    "UnsupportedLayerError", "LAYER_TYPES", "DualLayer",
    "DualLinear", "DualConv2d", "DualNormalize", "DualFlatten", "DualActivation", "DualReLU",
    "DualSigmoid", "DualTanh", "DualJoin", "DualAdd", "DualConcat", "node_bounds",
    "certified_bounds", "no_tf32", "float64_copy", "ConditionalBoundsError",
]
