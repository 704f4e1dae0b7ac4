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
* :func:`lp_bounds`              the triangle-relaxation LP solved exactly (cvxpy + HiGHS)
* :func:`milp_bounds`            exact verification (MILP) with the worst-case inputs
* :func:`robust_loss`, :func:`certified_error`   robust loss and certified error
  (the training loss built on it is :class:`tutorial_lib.defenses.RobustTrainingLoss`)
* :func:`certified_accuracy_vs_eps`  certified accuracy over a range of radii
* :func:`estimated_dual_bounds`  random-projection estimate (training only, not sound)
* :func:`is_certified`           the one certification rule: every row's lower bound > 0

Supported layers: nn.Linear, nn.Conv2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Flatten and
tutorial_lib.models.Normalize inside an nn.Sequential whose last layer is nn.Linear. Activations
share one interface, :class:`DualActivation` (``bounds/activations.py``): a per-neuron linear
relaxation on the pre-activation bounds, from which the dual, LP and MILP code is written;
:class:`DualReLU`, :class:`DualSigmoid` and :class:`DualTanh` (chord and tangent lines) are its
subclasses. Sigmoid and tanh have no exact MILP (``milp_bounds`` refuses them), and the random
projections handle ReLU only. The LP/MILP use scipy.sparse and cvxpy (HiGHS).
"""
from .activations import DualActivation, DualReLU, DualSigmoid, DualTanh
from .dual import dual_bounds, estimated_dual_bounds, optimized_dual_bounds
from .interval import interval_bounds
from .layers import LAYER_TYPES, DualConv2d, DualFlatten, DualLayer, DualLinear, DualNormalize, UnsupportedLayerError
from .lp import SolverError, lp_bounds, milp_bounds
from .robust import certified_accuracy_vs_eps, certified_error, margins_to_logits, robust_loss
from .spec import DUAL_NORMS, NORMS, BoundResult, is_certified, margin_spec

__all__ = [
    "BoundResult", "NORMS", "DUAL_NORMS", "is_certified", "margin_spec", "interval_bounds", "dual_bounds",
    "optimized_dual_bounds",
    "estimated_dual_bounds", "lp_bounds", "milp_bounds", "robust_loss", "certified_error",
    "margins_to_logits", "certified_accuracy_vs_eps", "SolverError",
    "UnsupportedLayerError", "LAYER_TYPES", "DualLayer",
    "DualLinear", "DualConv2d", "DualNormalize", "DualFlatten", "DualActivation", "DualReLU",
    "DualSigmoid", "DualTanh",
]
