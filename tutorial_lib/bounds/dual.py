"""The dual network of Wong & Kolter 2017 ("Provable defenses via the convex outer adversarial
polytope"), computed backward through the transposed layers, batched over examples.

Derivation used here (a lower bound of nu_T . h_T, h_T the network output):
  * affine layer h' = A h + b:   nu . h' = (A^T nu) . h + nu . b
  * activation a = act(z) with bounds l <= z <= u and the relaxation lines
    lo_j(z) <= a_j <= up_j(z) (:class:`~tutorial_lib.bounds.activations.DualActivation`):
      nu_j >= 0:  nu_j a_j >= nu_j lo_j(z_j),   nu_j < 0:  nu_j a_j >= nu_j up_j(z_j).
    For the ReLU (triangle relaxation, d = u / (u - l)) on unstable neurons lo(z) = alpha z
    (alpha in [0, 1]) and up(z) = d (z - l); stable neurons pass nu (l >= 0) or zero it
    (u <= 0). With equal slopes (the paper's alpha = d) the pull-back nu -> d * nu is linear,
    so one pass gives lower and upper bounds of every neuron at once; otherwise the upper
    bound is minus the lower bound of -nu (a second pass).
  * input box lo <= x <= hi (the l_inf ball intersected with the pixel box):
      min nu . x = nu . (lo + hi) / 2 - |nu| . (hi - lo) / 2.
  * l2 / l1 ball ||x - x0|| <= eps (``norm="l2"`` / ``"l1"``; Wong et al. 2018):
      min nu . x = nu . x0 - eps ||nu||_*, the dual norm (l2 for l2, l_inf for l1).
    The pixel box is DROPPED there: the minimum over the ball intersected with the box has no
    closed form, so the bound holds on the whole ball (sound for the intersection, looser than
    the LP/MILP, which keep the box).
This equals the paper's J(nu) (Theorem 1) with nu_hat the coefficient pulled back to a ReLU
output. Intermediate bounds of the input of activation k use nu = identity pulled back from there.

Graphs (residual and dense-skip blocks; Wong et al. 2018, z_i = sum_j f_ij(z_j)): the nodes are
pulled back in reverse topological order, each through its own dual operator; a sum node gives
every input the coefficient nu, a concatenation each input its slice of nu, and a value read by
several nodes (a block's input) gets the sum of their pulled-back coefficients before it is
pulled back itself. A plain Sequential is the chain, where this is the pass above.

Fast paths (the same numbers as the plain pass, up to rounding; tests/test_bounds_fast_path.py):
conv neurons are bounded on their receptive fields (``patches``), and a ReLU's constant terms
are summed over its unstable neurons only (``DualReLU.unstable_idx``): trained networks have few
(convex_adversarial exploits the same by pushing only those neurons forward).

Random projections (Wong et al. 2018) need the forward direction (the l1 terms are estimated
by pushing k Cauchy vectors from each source forward; for the l2 ball the input term's l2 norm
by k Gaussian vectors); :func:`estimated_dual_bounds` does that and is for training only: its
bounds are not certificates.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import patches
from .activations import DualActivation
from .base import DualLayer
from .joins import DualJoin
from .layers import _numel, last_uses
from .precision import no_tf32, without_tf32
from .spec import Ball, BoundResult, Eps, PreBounds, Problem, check_norm, check_pre_bounds, prepare

__all__ = ["dual_bounds", "optimized_dual_bounds", "estimated_dual_bounds", "median_abs"]

#: entries of one (N, rows, *layer) tensor when max_rows is None: a memory cap on accelerators;
#: on CPU chunks of a few MB are also faster (measured: 1.3-1.7x on the MNIST CNN, batch 32-128)
_ELEMENT_BUDGET = 2 ** 27
_CPU_ELEMENT_BUDGET = 2 ** 21


def _input_term(nu0: Tensor, lo: Tensor, hi: Tensor) -> Tuple[Tensor, Tensor]:
    """nu0 (B, m, *in) -> (nu0 . mid, |nu0| . rad), each (N, m)."""
    mid, rad = ((lo + hi) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
    n0 = nu0.flatten(2)
    if n0.shape[0] == 1:
        return mid.matmul(n0[0].t()), rad.matmul(n0[0].abs().t())
    return n0.matmul(mid.unsqueeze(-1)).squeeze(-1), n0.abs().matmul(rad.unsqueeze(-1)).squeeze(-1)


def _backward(layers: Sequence[DualLayer], start: int, nu: Tensor, lo: Tensor, hi: Tensor,
              alphas: Optional[Dict[int, Tensor]] = None,
              upper: bool = True, ball: Optional[Ball] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Bound nu . h_start (h_start: value ``start``, the output of layers[start-1]) over the input
    box [lo, hi], or over ``ball`` (an l2/l1 ball; then lo, hi are not used).

    The coefficients are pulled back node by node in reverse topological order; a value read by
    several nodes (a block's input) collects the sum of what each pulls back to it (the dual of
    a graph is the sum of its edges' duals, Wong et al. 2018). Nodes whose output does not reach
    h_start are skipped. On a chain this is the plain backward pass.
    nu: (B, m, *shape); alphas: {layer index: lower-line parameters (N, m, *shape)}.
    Returns (lower (N, m), upper (N, m) or None).
    """
    if upper and not all(l.parallel for l in layers[:start] if isinstance(l, DualActivation)):
        # the pull-back is not linear in nu: the upper bound is -(lower bound of -nu)
        low, _ = _backward(layers, start, nu, lo, hi, alphas, upper=False, ball=ball)
        neg, _ = _backward(layers, start, -nu, lo, hi, alphas, upper=False, ball=ball)
        return low, -neg
    c_lo = c_up = 0
    coeff: Dict[int, Tensor] = {start: nu}  # value index -> its coefficient so far
    for i in range(start - 1, -1, -1):
        nu = coeff.pop(i + 1, None)
        if nu is None:
            continue
        a = alphas.get(i) if alphas else None
        layer = layers[i]
        nu, cl, cu = layer.backward(nu, a, upper)
        if cl is not None:
            c_lo = c_lo + cl
        if upper and cu is not None:
            c_up = c_up + cu
        for j, n in zip(layer.inputs, nu if isinstance(layer, DualJoin) else (nu,)):
            coeff[j] = n if j not in coeff else coeff[j] + n
    nu = coeff[0]
    lin, l1 = _input_term(nu, lo, hi) if ball is None else ball.term(nu)
    return c_lo + lin - l1, (c_up + lin + l1) if upper else None


def _widest(layers: Sequence[DualLayer]) -> int:
    """The largest number of entries per coefficient row among the inputs of ``layers``."""
    return max((_numel(s) for l in layers for s in (l.in_shapes if isinstance(l, DualJoin) else (l.in_shape,))),
               default=1)


def _identity_bounds(P: Problem, i: int, max_rows: Optional[int]) -> Tuple[Tensor, Tensor]:
    """Lower/upper bounds of every entry of the input of layers[i], each (N, *shape)."""
    return _value_bounds(P, P.layers[i].inputs[0], max_rows)


def _value_bounds(P: Problem, v: int, max_rows: Optional[int]) -> Tuple[Tensor, Tensor]:
    """Lower/upper bounds of every entry of value v (v >= 1: the output of layers[v-1]), each
    (N, *shape), by pulling the identity back from there (the activations before it need their
    bounds set)."""
    shape = P.layers[v - 1].out_shape
    n, N = _numel(shape), P.x.shape[0]
    eye = torch.eye(n, dtype=P.x.dtype, device=P.x.device)
    if max_rows is None:  # cap the largest coefficient tensor at about the budget's entries
        budget = _CPU_ELEMENT_BUDGET if P.x.device.type == "cpu" else _ELEMENT_BUDGET
        max_rows = max(1, budget // (N * _widest(P.layers[:v])))
    step = min(n, max_rows)
    lows, ups = [], []
    for a in range(0, n, step):
        nu = eye[a:a + step].view(1, -1, *shape)
        lo, up = _backward(P.layers, v, nu, P.lo, P.hi, ball=P.ball)
        lows.append(lo)
        ups.append(up)
    return torch.cat(lows, 1).view(N, *shape), torch.cat(ups, 1).view(N, *shape)


def _interval_is_exact(layers: Sequence[DualLayer]) -> List[bool]:
    """exact[v] for every value v (0 = the input, v = the output of layers[v-1]): True when
    interval arithmetic on it is exact: no activation and no join (sum, concatenation) on its
    way from the input and at most one layer that mixes units (Linear, Conv2d; Normalize and
    Flatten do not), so that it is the image of the input box under one affine map with a
    single mixing step."""
    exact, mixing = [True], [0]
    for layer in layers:
        v = layer.inputs[0]
        if isinstance(layer, (DualActivation, DualJoin)):
            exact.append(False)
            mixing.append(mixing[v])
        else:
            mix = mixing[v] + (layer.affine and not layer.elementwise)
            exact.append(exact[v] and mix <= 1)
            mixing.append(mix)
    return exact


def _interval_node(layer: DualLayer, boxes: Dict[int, Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
    """Interval image of the boxes of the values ``layer`` reads."""
    if isinstance(layer, DualJoin):
        ins = [boxes[j] for j in layer.inputs]
        return layer.interval([b[0] for b in ins], [b[1] for b in ins])
    return layer.interval(*boxes[layer.inputs[0]])


def _pre_bounds(P: Problem, pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None,
                intersect_ibp: bool = False, max_rows: Optional[int] = None) -> PreBounds:
    """Set the bounds of every activation layer by layer (the dual network) and return them,
    one (l, u) per activation, each (N, *its input shape).

    While the input of an activation is the image of the box under one mixing affine layer
    (plus Normalize/Flatten), interval arithmetic is exact and is used instead (same value,
    cheaper; l_inf only: the image of an l2/l1 ball is not a box, its bounds x0 . a +- eps
    ||a||_* come from the backward pass). intersect_ibp: also intersect with interval bounds
    propagated alongside (sound; for l2/l1 they start from the box x +- eps clipped to the
    pixel box, which contains the input set).
    """
    given = check_pre_bounds(P, pre_bounds) if pre_bounds is not None else None
    pre = []
    exact = _interval_is_exact(P.layers)
    # interval boxes of the values: the exact ones (used as bounds) and, with intersect_ibp, all
    boxes: Dict[int, Tuple[Tensor, Tensor]] = {0: (P.lo, P.hi)}
    every = intersect_ibp and given is None
    last = max(P.act_idx, default=-1)
    for i, layer in enumerate(P.layers[:last + 1]):
        if isinstance(layer, DualActivation):
            v = layer.inputs[0]
            if given is not None:
                l, u = given[len(pre)]
            elif exact[v] and P.ball is None:
                l, u = boxes[v]
            else:
                if patches.applies(P.layers, i):  # same values, on receptive fields only
                    l, u = patches.conv_neuron_bounds(P.layers, i, P.lo, P.hi, ball=P.ball)
                else:
                    l, u = _identity_bounds(P, i, max_rows)
                if intersect_ibp:
                    il, iu = boxes[v]
                    l, u = torch.maximum(l, il), torch.minimum(u, iu)
            layer.set_bounds(l, u)
            pre.append((l, u))
            boxes[v] = (l, u)
        if exact[i + 1] or (every and all(j in boxes for j in layer.inputs)):
            boxes[i + 1] = _interval_node(layer, boxes)
    return pre


def _final_lower(P: Problem, alphas: Optional[Dict[int, Tensor]] = None) -> Tensor:
    lower, _ = _backward(P.layers, len(P.layers), P.C, P.lo, P.hi, alphas, upper=False, ball=P.ball)
    return lower


def _prefix_bounds(P: Problem, i: int, max_rows: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Exact bounds of the input of activation layers[i] when no activation precedes it (the
    image of the input set under the affine layers before it): for an l2/l1 ball
    a . x0 + b +- eps ||a||_* per neuron (a its row of the composed affine map), each (N, *shape);
    for l_inf the same over the box [lo, hi]."""
    if patches.applies(P.layers, i):
        return patches.conv_neuron_bounds(P.layers, i, P.lo, P.hi, ball=P.ball)
    return _identity_bounds(P, i, max_rows)


def dual_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                spec: Optional[Tensor] = None, clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None,
                intersect_ibp: bool = False, max_rows: Optional[int] = None,
                norm: str = "linf") -> BoundResult:
    """Wong & Kolter's dual-network lower bound on spec @ logits (exact, no projections).

    x: (N, *input_shape) in the box clip; y: (N,) labels for the default margin spec (or None
    with spec (N, m, K) / (m, K)); eps: the radius (scalar or (N,); l_inf also x's shape).
    norm: the ball, 'linf' (default: the ball intersected with the box clip), 'l2' or 'l1'
    (Wong et al. 2018: the input term is nu_1 . x - eps ||nu_1||_* with the dual norm, l2 or
    l_inf; the box clip is DROPPED, the bound holds on the whole ball: sound, looser than the
    LP/MILP, which keep the box; clip still checks that x lies in it).
    pre_bounds: optional list of (l, u) per activation layer, each (N, *its input shape), to
    use instead of computing them.
    intersect_ibp: intersect each layer's bounds with interval bounds (tighter, not the paper).
    max_rows: neurons per backward pass for intermediate bounds; None picks it so that one
    (N, rows, *layer) tensor has at most 2**27 entries (2**21 on CPU, where it is also faster;
    a memory cap, same result).
    Residual and dense-skip blocks (tutorial_lib.models.Residual, DenseSkip) are walked as
    graphs (see the module doc); pre_bounds are then in the order of the activations' nodes
    (a block's body, then its shortcut), as in the returned ``pre_bounds``.
    Returns BoundResult(lower (N, m), pre_bounds (l, u) per activation, each (N, *shape)).
    Differentiable w.r.t. the model. Runs with TF32 off (:func:`~tutorial_lib.bounds.precision.no_tf32`)
    in the model's dtype: to certify a float32 model, use :func:`~tutorial_lib.bounds.certified_bounds`
    (the same bound in float64).
    """
    with no_tf32():
        P = prepare(model, x, y, eps, spec, clip, norm)
        pre = _pre_bounds(P, pre_bounds, intersect_ibp, max_rows)
        return BoundResult(lower=_final_lower(P), pre_bounds=pre, method="dual", norm=P.norm,
                           conditional_on_user_bounds=pre_bounds is not None)


def optimized_dual_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                          spec: Optional[Tensor] = None,
                          clip: Optional[Tuple[float, float]] = (0.0, 1.0), steps: int = 100,
                          lr: float = 0.1,
                          pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]] = None,
                          intersect_ibp: bool = False,
                          max_rows: Optional[int] = None, norm: str = "linf") -> BoundResult:
    """The dual bound with the final layer's free lower slopes alpha tuned by projected Adam.

    The pre-activation bounds stay those of :func:`dual_bounds` (or ``pre_bounds``); only the
    parameters of the lower lines of optimisable activations (ReLU: the lower slopes of
    unstable neurons) in the final bound, one per example, spec row and neuron, start at the
    relaxation's own (paper's alpha = u / (u - l)) and take ``steps`` gradient steps, each
    projected back to the valid set (ReLU: [0, 1]). Every valid alpha gives a valid bound, so
    the elementwise best over all iterates is returned; it is >= the paper's bound and <= the
    LP at the same pre-bounds. Shapes and ``norm`` as in :func:`dual_bounds` (l2/l1: the box
    dropped in the input term).
    Returns BoundResult(lower (N, m), alpha = per optimisable activation (N, m, *shape)),
    detached; info['paper'] is the bound at the starting slopes, info['history'] the mean
    bound per step. Runs with TF32 off, in the model's dtype (see :func:`dual_bounds`).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    with no_tf32():
        return _optimized(model, x, y, eps, spec, clip, steps, lr, pre_bounds, intersect_ibp, max_rows, norm)


def _optimized(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps, spec: Optional[Tensor],
               clip: Optional[Tuple[float, float]], steps: int, lr: float,
               pre_bounds: Optional[Sequence[Tuple[Tensor, Tensor]]], intersect_ibp: bool,
               max_rows: Optional[int], norm: str) -> BoundResult:
    """The body of :func:`optimized_dual_bounds` (same arguments)."""
    P = prepare(model, x, y, eps, spec, clip, norm)
    with torch.no_grad():
        pre = _pre_bounds(P, pre_bounds, intersect_ibp, max_rows)
        pre = [(l.detach(), u.detach()) for l, u in pre]
        for layer, (l, u) in zip(P.activations, pre):
            layer.set_bounds(l, u)
    m = P.C.shape[1]
    alphas = {i: P.layers[i].alpha_init().unsqueeze(1).expand(-1, m, *P.layers[i].in_shape)
              .clone().requires_grad_(True)
              for i in P.act_idx if P.layers[i].optimisable}
    params = list(alphas.values())
    opt = torch.optim.Adam(params, lr=lr) if params else None
    best, best_alpha, history = None, None, []
    with torch.enable_grad():
        for t in range(steps + 1):
            lower = _final_lower(P, alphas)
            low_d = lower.detach()
            history.append(float(low_d.mean()))
            if best is None:
                paper, best = low_d.clone(), low_d.clone()
                best_alpha = [a.detach().clone() for a in params]
            else:
                better = low_d > best
                best = torch.where(better, low_d, best)
                for b, a in zip(best_alpha, params):
                    mask = better.view(*better.shape, *([1] * (a.dim() - 2)))
                    b.copy_(torch.where(mask, a.detach(), b))
            if t == steps or opt is None:
                break
            grads = torch.autograd.grad(-lower.sum(), params)
            for a, g in zip(params, grads):
                a.grad = g
            opt.step()
            with torch.no_grad():
                for i, a in alphas.items():
                    P.layers[i].project_alpha_(a)
    return BoundResult(lower=best, pre_bounds=pre, method="dual-opt", alpha=best_alpha,
                       info={"paper": paper, "history": history}, norm=P.norm,
                       conditional_on_user_bounds=pre_bounds is not None)


MEDIAN_RULES = ("mid", "lower")


def median_abs(V: Tensor, dim: int = 1, rule: str = "mid") -> Tensor:
    """The sample median of |V| along ``dim`` (the k projections), the l1 estimator of Wong et al.

    V: (..., k, ...) with k = V.shape[dim] i.i.d. Cauchy images nu . r_p, each of scale ||nu||_1,
    so |V| has median ||nu||_1 and its sample median estimates it. Returns V's shape without ``dim``.
    rule='mid' (default): for even k the mean of the two middle values (for odd k the middle one),
    above ||nu||_1 half the time for odd k and a little more often for even k (|Cauchy| is skewed
    to the right: about 52 % at k = 10), so its errors lean to the loose, safe side. rule='lower': the lower of the
    two middle values (what ``torch.median`` returns, and what convex_adversarial's projections use);
    for even k it lies below the true median with probability 1/2 + C(k, k/2) / 2^(k+1) (62 % at
    k = 10, 56 % at k = 50), so a bound built from it errs towards the optimistic side more often.
    Differentiable (the gradient flows to the middle value(s)).
    """
    if rule not in MEDIAN_RULES:
        raise ValueError(f"rule must be one of {MEDIAN_RULES}, got {rule!r}")
    a = V.abs()
    k = a.shape[dim]
    if rule == "lower" or k % 2:
        return a.median(dim=dim).values
    # the k/2 + 1 smallest, in ascending order: the last two are the middle values (one pass,
    # measured 1.3x torch.median's time on a (32, 50, 32, 14, 14) tensor, one thread; two kthvalue calls: 2.3x)
    low = a.topk(k // 2 + 1, dim=dim, largest=False, sorted=True).values
    return low.narrow(dim, k // 2 - 1, 2).mean(dim)


def _forward_pre_bounds(P: Problem, proj: Optional[int],
                        generator: Optional[torch.Generator] = None, median: str = "mid") -> PreBounds:
    """Layer-by-layer bounds by pushing sources forward (convex_adversarial's direction).

    proj=None: exact (identity sources; for checking only, memory ~ sum of layer sizes^2).
    proj=k: the l1 terms are estimated with k Cauchy projections and the median estimator
    (Wong et al. 2018; :func:`median_abs` with ``rule=median``), so the bounds are NOT
    sound. Sets each activation's bounds; returns
    them. Needs parallel relaxations: a = slope z + lower_intercept + t (intercept_diff) with
    t in [0, 1] per neuron, the last term a new source.

    l2 ball: the input term eps ||a||_2 is estimated with k standard normal projections g_p
    (a . g_p ~ N(0, ||a||_2^2)) by the root mean square sqrt(sum_p (a . g_p)^2 / k), the
    estimator of convex_adversarial's L2BallProj (Wong et al. 2018); its relative standard
    deviation is about 1 / sqrt(2k). The activation terms stay Cauchy/median. l1 ball: exact
    only (proj=None; the l_inf norm of the input term has no such projection). For l2/l1 the
    first activation's bounds (no activation before it) are computed exactly, as the
    l_inf ones are (by intervals).

    Graphs: every value carries its own state (centre, input sources, one source per
    activation before it); a join applies its linear map to each (a source missing on one
    input is zero there), so the same random vectors reach a sum through both branches.
    """
    for layer in P.activations:
        layer.require_parallel("estimated_dual_bounds")
    N, dt, dev = P.x.shape[0], P.x.dtype, P.x.device
    ball = P.ball
    if ball is not None and ball.norm == "l1" and proj:
        raise ValueError(_L1_PROJ_MSG)

    def cauchy(shape):  # tan(pi (u - 1/2)) is standard Cauchy; ~4x faster than cauchy_ on CPU
        u = torch.rand(N, proj, *shape, dtype=dt, device=dev, generator=generator)
        return u.sub_(0.5).mul_(math.pi).tan_()

    def l1(V):
        return median_abs(V, dim=1, rule=median) if proj else V.abs().sum(1)

    in_shape = P.layers[0].in_shape
    if ball is None:
        h = (P.lo + P.hi) / 2   # the relaxation's affine part applied to the box centre
        rad = (P.hi - P.lo) / 2
        if proj:
            src_in = rad.unsqueeze(1) * cauchy(in_shape)
        else:
            n0 = _numel(in_shape)
            src_in = torch.eye(n0, dtype=dt, device=dev).view(1, n0, *in_shape) * rad.unsqueeze(1)
        in_norm = l1
    else:  # sources eps * (Gaussian or identity); the input term is eps ||a||_* of their images
        h = ball.center
        rad = ball.radius.view(N, 1, *([1] * len(in_shape)))
        if proj:
            src_in = rad * torch.randn(N, proj, *in_shape, dtype=dt, device=dev, generator=generator)
        else:
            n0 = _numel(in_shape)
            src_in = torch.eye(n0, dtype=dt, device=dev).view(1, n0, *in_shape) * rad

        def in_norm(V):
            if ball.norm == "l2":
                return V.norm(2, dim=1) / math.sqrt(proj) if proj else V.norm(2, dim=1)
            return V.abs().amax(1)
    # per value: (the relaxation's affine part at the centre, the input's sources, the sources
    # {activation ordinal: (V, the image of its weights w or None)}), dropped after its last use
    states: Dict[int, Tuple[Tensor, Tensor, Dict[int, Tuple[Tensor, Optional[Tensor]]]]] = {0: (h, src_in, {})}
    boxes: Dict[int, Tuple[Tensor, Tensor]] = {0: (P.lo, P.hi)}  # exact interval boxes (l_inf)
    uses = last_uses(P.layers)
    pre = []
    exact = _interval_is_exact(P.layers)
    last = max(P.act_idx, default=-1)
    for i, layer in enumerate(P.layers[:last + 1]):
        if isinstance(layer, DualJoin):
            ins = [states[j] for j in layer.inputs]
            h, src_in = layer.forward(*[s[0] for s in ins]), layer.linear([s[1] for s in ins])
            act_srcs = {}
            for k in sorted(set().union(*[s[2] for s in ins])):
                parts = [s[2].get(k) for s in ins]
                act_srcs[k] = (layer.linear([None if p is None else p[0] for p in parts]),
                               layer.linear([None if p is None else p[1] for p in parts]))
        elif isinstance(layer, DualActivation):
            v = layer.inputs[0]
            h, src_in, act_srcs = states[v]
            if exact[v] and ball is None:
                l, u = boxes[v]
            elif ball is not None and not act_srcs:  # exact bounds of the affine prefix
                l, u = _prefix_bounds(P, i)
            else:
                r = in_norm(src_in)
                l, u = h - r, h + r
                for V, v_lin in act_srcs.values():
                    if proj:  # sum_p w_p min(v_p, 0) = (sum w v - sum |w v|) / 2
                        e, s = l1(V), v_lin[:, 0]
                        l, u = l + (s - e) / 2, u + (s + e) / 2
                    else:
                        l, u = l + V.clamp(max=0).sum(1), u + V.clamp(min=0).sum(1)
            layer.set_bounds(l, u)
            pre.append((l, u))
            h = layer.lower_slope * h
            if not layer.zero_lower_intercept:
                h = h + layer.lower_intercept
            src_in = layer.linear(src_in)
            act_srcs = {k: (layer.linear(V), None if v is None else layer.linear(v))
                        for k, (V, v) in act_srcs.items()}
            w = layer.intercept_diff.unsqueeze(1)
            if proj:
                act_srcs[len(pre) - 1] = (w * cauchy(layer.in_shape), w)
            else:
                n = _numel(layer.in_shape)
                act_srcs[len(pre) - 1] = (torch.eye(n, dtype=dt, device=dev).view(1, n, *layer.in_shape) * w, None)
        else:
            h, src_in, act_srcs = states[layer.inputs[0]]
            h, src_in = layer.forward(h), layer.linear(src_in)
            act_srcs = {k: (layer.linear(V), None if v is None else layer.linear(v))
                        for k, (V, v) in act_srcs.items()}
            if exact[i + 1]:
                boxes[i + 1] = layer.interval(*boxes[layer.inputs[0]])
        states[i + 1] = (h, src_in, act_srcs)
        for j in set(layer.inputs):
            if uses[j] == i:
                del states[j]
    return pre


_L1_PROJ_MSG = ("random projections are not available for norm='l1': the input term needs the l_inf "
                "norm (the dual of l1) of the input coefficients, and Wong et al. 2018 give projections "
                "for the l1 norm (Cauchy, l_inf balls) and the l2 norm (Gaussian, l2 balls) only; use "
                "proj=None (exact bounds)")


@without_tf32
def estimated_dual_bounds(model: nn.Module, x: Tensor, y: Optional[Tensor], eps: Eps,
                          spec: Optional[Tensor] = None,
                          clip: Optional[Tuple[float, float]] = (0.0, 1.0), proj: int = 50,
                          generator: Optional[torch.Generator] = None,
                          norm: str = "linf", median: str = "mid") -> BoundResult:
    """Dual bound with intermediate l1 terms ESTIMATED by ``proj`` Cauchy random projections.

    For training only (Wong et al. 2018): the result is an estimate, not a lower bound, and
    ``.certified`` refuses to answer. The final layer's bound is exact given the estimated
    pre-activation bounds. proj=None computes the same forward pass exactly (a check of
    :func:`dual_bounds`; far more memory). Shapes as in :func:`dual_bounds`. Differentiable.

    norm: 'linf' (default), 'l2' (the input term's l2 norm estimated with ``proj`` Gaussian
    projections, root-mean-square estimator, as convex_adversarial's L2BallProj; the box clip
    dropped as in :func:`dual_bounds`) or 'l1' (proj=None only: ValueError otherwise).
    Residual and dense-skip blocks are supported for every norm; activations without parallel
    relaxation lines (sigmoid, tanh) are refused (UnsupportedLayerError), as without blocks.

    median: how the median of the k Cauchy images is taken (:func:`median_abs`): 'mid' (default,
    the mean of the two middle values for even k) or 'lower' (``torch.median``'s lower middle
    value, convex_adversarial's choice, biased to the optimistic side for even k).
    """
    if median not in MEDIAN_RULES:
        raise ValueError(f"median must be one of {MEDIAN_RULES}, got {median!r}")
    if proj is not None and (int(proj) != proj or proj < 1):
        raise ValueError(f"proj must be a positive integer (number of projections), got {proj!r}")
    if check_norm(norm) == "l1" and proj:
        raise ValueError(_L1_PROJ_MSG)
    P = prepare(model, x, y, eps, spec, clip, norm)
    pre = _forward_pre_bounds(P, int(proj) if proj else None, generator, median)
    return BoundResult(lower=_final_lower(P), pre_bounds=pre,
                       method="dual-proj" if proj else "dual-forward", info={"proj": proj}, norm=P.norm)
