"""Activation layers behind one interface: a per-neuron linear relaxation of the activation.

Given bounds ``l <= z <= u`` on its input (:meth:`DualActivation.set_bounds`), an activation
gives two lines per neuron (:meth:`DualActivation.relax`)::

    lower_slope * z + lower_intercept  <=  act(z)  <=  upper_slope * z + upper_intercept

for every z in [l, u]. Everything else is written once, from those lines, in this base class:

* the dual network's pull-back :meth:`DualActivation.backward` (a lower bound on nu . act(z)
  uses the lower line where nu >= 0 and the upper line where nu < 0; its constant terms come
  from :meth:`DualActivation._intercept_dots`, which the ReLU sums over its unstable neurons
  only when they are few);
* the forward pass of the random-projection estimate (:meth:`DualActivation.linear` and the
  intercepts), the receptive-field fast path (``patches``);
* interval bounds (:meth:`DualActivation.interval`, monotone activations by default);
* the LP (:meth:`DualActivation.lp_constraints`, the two lines by default) and the MILP
  (:meth:`DualActivation.milp_constraints`: an exact encoding, or a clear error).

Optionally the lower line has a free parameter ``alpha`` (one per example, spec row and
neuron) that :func:`tutorial_lib.bounds.optimized_dual_bounds` tunes: :meth:`alpha_init`,
:meth:`project_alpha_`, :meth:`lower_line`. For the ReLU alpha is the lower slope.

Implemented: :class:`DualReLU` (the triangle relaxation; exact MILP encoding) and
:class:`DualSigmoid`, :class:`DualTanh` (chord and tangent lines, :class:`DualSCurve`; the LP
uses the two lines, the MILP refuses them).

Adding an activation: subclass :class:`DualActivation`, implement ``forward`` and ``relax``
(and the optional hooks), and register it for its module type in
:data:`tutorial_lib.bounds.layers.LAYER_TYPES`. Shapes: l, u and every relaxation tensor are
(N, *in_shape); coefficient tensors nu are (B, m, *in_shape) with B = N or 1.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .base import DualLayer, UnsupportedLayerError

__all__ = ["DualActivation", "DualReLU", "DualSCurve", "DualSigmoid", "DualTanh", "Relaxation"]

#: (lower_slope, lower_intercept, upper_slope, upper_intercept), each (N, *shape)
Relaxation = Tuple[Tensor, Tensor, Tensor, Tensor]

#: z_of(idx) -> the cvxpy expression of the pre-activations z[idx] (idx: int array of neurons)
ZOf = Callable[[np.ndarray], object]


def _wdot(nu: Tensor, w: Tensor) -> Tensor:
    """Sum over neurons of nu * w: nu (B, m, *s), w (N, *s) or (N, m, *s) -> (N, m)."""
    if w.dim() == nu.dim():  # per spec row, e.g. an intercept that depends on alpha
        return (nu * w).flatten(2).sum(-1)
    v, w = nu.flatten(2), w.flatten(1)
    if v.shape[0] == 1:
        return w.matmul(v[0].t())
    return v.matmul(w.unsqueeze(-1)).squeeze(-1)


class DualActivation(DualLayer):
    """An elementwise activation with a linear relaxation on [l, u] (see the module doc).

    Class attributes a subclass sets:

    * ``parallel``: the lower and upper slopes are always equal (ReLU with the paper's slopes).
      Then the pull-back is linear in nu and one backward pass bounds both sides; the
      random-projection estimate and the receptive-field fast path need it.
    * ``zero_lower_intercept``: lower_intercept is identically 0 (saves work, same values).
    * ``optimisable``: the lower line has a free parameter alpha (see :meth:`lower_line`).
    * ``exact_encoding``: :meth:`milp_constraints` is implemented (exact MILP verification).
    """

    affine = False
    parallel = False
    zero_lower_intercept = False
    optimisable = False
    exact_encoding = False

    def __init__(self, module: nn.Module, in_shape: Tuple[int, ...], out_shape: Tuple[int, ...]):
        super().__init__(module, in_shape, out_shape)
        self.l: Optional[Tensor] = None
        self.u: Optional[Tensor] = None
        self.lower_slope = self.lower_intercept = None
        self.upper_slope = self.upper_intercept = None
        self.intercept_sum = self.intercept_diff = None
        self.tight: Optional[Tensor] = None

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def forward(self, h: Tensor) -> Tensor:
        """The activation itself, (N, *shape) -> (N, *shape)."""

    @abstractmethod
    def relax(self, l: Tensor, u: Tensor) -> Relaxation:
        """Lines with lower(z) <= act(z) <= upper(z) for all z in [l, u] (l <= u elementwise).

        l, u: (N, *shape). Returns (lower_slope, lower_intercept, upper_slope, upper_intercept),
        each (N, *shape). A pure function of (l, u); it must also handle l == u.
        """

    # ------------------------------------------------------------------ shared machinery
    def interval(self, l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
        """Interval image of [l, u], each (N, *shape). Default: a non-decreasing activation."""
        return self.forward(l), self.forward(u)

    def set_bounds(self, l: Tensor, u: Tensor) -> None:
        """Fix the pre-activation bounds l, u (N, *shape) and cache the relaxation.

        Also caches ``intercept_sum = lower_intercept + upper_intercept`` and
        ``intercept_diff = upper_intercept - lower_intercept`` (>= 0): the constant of a lower
        bound is (nu . sum - |nu| . diff) / 2 for parallel lines; and ``tight`` (N, *shape)
        bool, the neurons where both lines coincide (the relaxation is exact there, and the
        lower line's parameter alpha is not used).
        """
        self.l, self.u = l, u
        ls, li, us, ui = self._relaxation_for_bounds(l, u)
        self.lower_slope, self.lower_intercept = ls, li
        self.upper_slope, self.upper_intercept = us, ui
        if self.zero_lower_intercept:
            self.intercept_sum = self.intercept_diff = ui
        else:
            self.intercept_sum, self.intercept_diff = li + ui, ui - li
        self.tight = self._tight(l, u)

    def _relaxation_for_bounds(self, l: Tensor, u: Tensor) -> Relaxation:
        """relax(l, u) inside set_bounds (a subclass may reuse what it cached there)."""
        return self.relax(l, u)

    def _tight(self, l: Tensor, u: Tensor) -> Tensor:
        """Where the lower and upper lines are the same line, (N, *shape) bool."""
        return (self.lower_slope == self.upper_slope) & (self.lower_intercept == self.upper_intercept)

    def _need_bounds(self) -> None:
        if self.lower_slope is None:
            raise RuntimeError(f"{self!r}: call set_bounds(l, u) before using the relaxation")

    def require_parallel(self, what: str) -> None:
        if not self.parallel:
            raise UnsupportedLayerError(
                f"{what} needs an activation whose lower and upper relaxation slopes are equal "
                f"(like the ReLU's); {type(self).__name__} has different slopes")

    def linear(self, v: Tensor) -> Tensor:
        """The relaxation's linear part (parallel lines only): v (N, k, *s) -> slope * v."""
        self.require_parallel("the forward (projection) pass")
        return self.lower_slope.unsqueeze(1) * v

    # optimisable lower line ---------------------------------------------------------
    def alpha_init(self) -> Optional[Tensor]:
        """The starting alpha, (N, *shape), or None when the lower line has no parameter."""
        return None

    def project_alpha_(self, alpha: Tensor) -> None:
        """Move alpha (N, m, *shape) in place back into the set where the lower line is valid."""

    def lower_line(self, alpha: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Lower line for the parameter alpha (N, m, *shape): (slope, intercept), each
        broadcastable to (N, m, *shape); intercept None means 0. Used only on neurons that are
        not ``tight`` (there the relaxation's one line is used). Default: alpha is ignored."""
        return self.lower_slope.unsqueeze(1), self.lower_intercept.unsqueeze(1)

    # dual network ---------------------------------------------------------------------
    def backward(self, nu: Tensor, alpha: Optional[Tensor] = None,
                 upper: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Pull nu . act(z) back to nu' . z + const over the relaxation.

        nu: (B, m, *s). alpha: None (the relaxation's own lines) or the lower line's parameter
        (N, m, *s) (lower bound only). Returns (nu' (B or N, m, *s), c_lo (N, m), c_up (N, m)
        or None): nu' . z + c_lo <= nu . act(z) (<= nu' . z + c_up). c_up is given only for
        parallel lines without alpha; otherwise bound -nu for the upper side.
        """
        self._need_bounds()
        if alpha is None and self.parallel:
            # nu+ . b_lo + nu- . b_up = (nu . (b_lo + b_up) - |nu| . (b_up - b_lo)) / 2 and the
            # mirror image for the upper bound: two batched dot products
            s, a = self._intercept_dots(nu)
            return self.lower_slope.unsqueeze(1) * nu, (s - a) / 2, ((s + a) / 2 if upper else None)
        if alpha is None:
            slope = self.lower_slope.unsqueeze(1)
            b_lo = None if self.zero_lower_intercept else self.lower_intercept
        else:
            slope, b_lo = self.lower_line(alpha)
            if not (b_lo is None and self.zero_lower_intercept):
                # tight neurons keep the relaxation's one line, whatever alpha says
                b_lo = torch.where(self.tight.unsqueeze(1), self.lower_intercept.unsqueeze(1),
                                   0.0 if b_lo is None else b_lo)
        pos, neg = nu.clamp(min=0), nu.clamp(max=0)
        c_lo = _wdot(neg, self.upper_intercept)
        if b_lo is not None:
            c_lo = c_lo + _wdot(pos, b_lo)
        up = self.upper_slope.unsqueeze(1)
        # tight neurons: one line, nu' = slope nu (also its derivative in nu at nu = 0)
        return torch.where(self.tight.unsqueeze(1), up * nu, slope * pos + up * neg), c_lo, None

    def _intercept_dots(self, nu: Tensor) -> Tuple[Tensor, Tensor]:
        """(nu . intercept_sum, |nu| . intercept_diff), each (N, m), for nu (B, m, *s)."""
        return _wdot(nu, self.intercept_sum), _wdot(nu.abs(), self.intercept_diff)

    # LP / MILP --------------------------------------------------------------------------
    def lp_constraints(self, a, z_of: ZOf, l: np.ndarray, u: np.ndarray) -> List:
        """cvxpy constraints tying a (the outputs, a cvxpy Variable (n,)) to z in the LP.

        l, u: float64 (n,) bounds of one example. Default: the relaxation's two lines.
        """
        t = lambda v: torch.from_numpy(np.asarray(v, dtype=np.float64)).unsqueeze(0)
        ls, li, us, ui = (r[0].numpy() for r in self.relax(t(l), t(u)))
        import cvxpy as cp
        z = z_of(np.arange(l.size))
        return [a >= cp.multiply(ls, z) + li, a <= cp.multiply(us, z) + ui]

    def milp_constraints(self, a, z_of: ZOf, l: np.ndarray, u: np.ndarray) -> List:
        """Exact (mixed-integer) encoding of a = act(z) for z in [l, u]; see lp_constraints."""
        raise UnsupportedLayerError(
            f"{type(self).__name__} has no exact MILP encoding (exact_encoding = False), "
            "which milp_bounds needs for every activation; use lp_bounds or the dual bounds "
            "instead")


class DualReLU(DualActivation):
    """ReLU with the triangle relaxation given bounds l <= z <= u on its input.

    Unstable neurons (l < 0 < u) use the upper line a <= d (z - l), d = u / (u - l), and the
    lower line a >= alpha z with alpha in [0, 1]; the paper's choice is alpha = d. Stable
    neurons are exact: a = z (l >= 0) or a = 0 (u <= 0).
    """

    parallel = True
    zero_lower_intercept = True
    optimisable = True
    exact_encoding = True

    def forward(self, h: Tensor) -> Tensor:
        return torch.relu(h)

    def interval(self, l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
        return torch.relu(l), torch.relu(u)

    def relax(self, l: Tensor, u: Tensor) -> Relaxation:
        """Paper slopes: d = u / (u - l) on both lines of unstable neurons, offset w = -d l."""
        return self._relax(l, u, l >= 0, (l < 0) & (u > 0))

    def _relax(self, l: Tensor, u: Tensor, active: Tensor, unstable: Tensor) -> Relaxation:
        safe = torch.where(unstable, u - l, torch.ones_like(u))
        d = torch.where(unstable, u / safe, active.to(u.dtype))
        w = torch.where(unstable, -d * l, torch.zeros_like(l))  # >= 0
        return d, torch.zeros_like(l), d, w

    def set_bounds(self, l: Tensor, u: Tensor) -> None:
        """As :meth:`DualActivation.set_bounds`; also ``active``/``unstable`` masks (N, *s).

        When at most half of each example's neurons are unstable, also ``unstable_idx``
        (N, U): the flat indices of each example's unstable neurons, padded with stable ones to
        the largest count U, and ``unstable_w`` (N, U) the upper-line offsets w there (0 on the
        padding); otherwise both are None. The intercepts vanish on stable neurons, so the
        constant terms of the pull-back need only these entries (trained networks have few
        unstable neurons)."""
        self.active = l >= 0
        self.unstable = (l < 0) & (u > 0)
        self.tight = ~self.unstable  # stable neurons: a = z or a = 0
        super().set_bounds(l, u)
        flat = self.unstable.flatten(1)
        count = int(flat.sum(1).max()) if flat.numel() else 0
        self.unstable_idx = self.unstable_w = None
        if 2 * count <= flat.shape[1]:
            # a stable sort puts each example's unstable neurons first, in index order
            order = torch.sort(flat.to(torch.uint8), dim=1, descending=True, stable=True).indices
            self.unstable_idx = order[:, :count]
            self.unstable_w = self.w.flatten(1).gather(1, self.unstable_idx)

    def _intercept_dots(self, nu: Tensor) -> Tuple[Tensor, Tensor]:
        """As :meth:`DualActivation._intercept_dots` (intercept_sum = intercept_diff = w, zero on
        stable neurons), on the unstable entries only when ``unstable_idx`` is set."""
        if self.unstable_idx is None:
            return super()._intercept_dots(nu)
        idx, w = self.unstable_idx, self.unstable_w.unsqueeze(-1)  # (N, U), (N, U, 1)
        flat = nu.flatten(2)
        if flat.shape[0] == 1:  # shared rows: (m, N, U) -> (N, m, U)
            picked = flat[0][:, idx].transpose(0, 1)
        else:
            picked = flat.gather(2, idx.unsqueeze(1).expand(-1, flat.shape[1], -1))
        return picked.matmul(w).squeeze(-1), picked.abs().matmul(w).squeeze(-1)

    def _tight(self, l: Tensor, u: Tensor) -> Tensor:
        return self.tight

    def _relaxation_for_bounds(self, l: Tensor, u: Tensor) -> Relaxation:
        return self._relax(l, u, self.active, self.unstable)

    @property
    def d(self) -> Tensor:
        """The paper's slopes (1 active, 0 inactive, u / (u - l) unstable), (N, *s)."""
        return self.upper_slope

    @property
    def w(self) -> Tensor:
        """The upper line's offsets -d l (unstable) or 0, (N, *s)."""
        return self.upper_intercept

    def alpha_init(self) -> Tensor:
        return self.lower_slope

    def project_alpha_(self, alpha: Tensor) -> None:
        alpha.clamp_(0.0, 1.0)

    def lower_line(self, alpha: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """a >= alpha z on unstable neurons, valid for alpha in [0, 1]."""
        return alpha, None

    def _constraints(self, a, z_of: ZOf, l: np.ndarray, u: np.ndarray, integer: bool) -> List:
        import cvxpy as cp
        cons = []
        off = (u <= 0)
        on = (l >= 0) & ~off
        unst = ~off & ~on
        if off.any():
            cons.append(a[np.flatnonzero(off)] == 0)
        if on.any():
            i = np.flatnonzero(on)
            cons.append(a[i] == z_of(i))
        if unst.any():
            i = np.flatnonzero(unst)
            z, au, li, ui = z_of(i), a[i], l[i], u[i]
            cons += [au >= 0, au >= z]
            if integer:  # big-M with the pre-activation bounds: delta = 1 <=> active
                delta = cp.Variable(i.size, boolean=True)
                cons += [au <= z - cp.multiply(li, 1 - delta), au <= cp.multiply(ui, delta)]
            else:
                s = ui / (ui - li)
                cons.append(au <= cp.multiply(s, z) - s * li)
        return cons

    def lp_constraints(self, a, z_of: ZOf, l: np.ndarray, u: np.ndarray) -> List:
        """The triangle (the convex hull of the ReLU on [l, u]); stable neurons exact."""
        return self._constraints(a, z_of, l, u, integer=False)

    def milp_constraints(self, a, z_of: ZOf, l: np.ndarray, u: np.ndarray) -> List:
        """Big-M encoding with one binary per unstable neuron (exact on [l, u])."""
        return self._constraints(a, z_of, l, u, integer=True)


class DualSCurve(DualActivation):
    """An increasing S-shaped activation f, convex for z <= 0 and concave for z >= 0
    (inflection point 0), relaxed by chord and tangent lines (CROWN, Zhang et al. 2018).

    Per neuron, with bounds l <= z <= u (all tensors (N, *shape)), the upper line is

    * u <= 0 (convex part): the chord through (l, f(l)) and (u, f(u));
    * l >= 0 (concave part): the tangent at the midpoint (l + u) / 2;
    * l < 0 < u: the chord if it lies above f (exactly when f'(u) >= chord slope; then it is
      the best line: every valid line is >= it on [l, u]), else a tangent at a point t >= d,
      d in (0, u) the point whose tangent passes through (l, f(l)) (CROWN's construction; d is
      found by ``bisect_steps`` bisection steps on [0, u], keeping the end of the bracket whose
      tangent is at or above (l, f(l)), so the line is valid however few steps are taken).
      Every tangent at t in [d, u] lies above f on [l, u]; t = max(d, (l + u) / 2) is the one
      with the least area under it on [l, u] (CROWN's t = d is much looser when u >> -l);
    * l == u: the tangent at l.

    The lower line is the mirror image: the upper line of g(z) = -f(-z) (also convex, then
    concave) on [-u, -l], negated (concave part: chord; convex part: tangent at the midpoint;
    straddling: chord or the tangent through (u, f(u))). Soundness first: each line is moved
    outward by ``pad_ulps`` machine epsilons of its own scale (1 + |intercept| + |slope| *
    max(|l|, |u|)), so that rounding in f, in the line and in its evaluation cannot put it on
    the wrong side of f (float64: about 2e-15 for lines of size 1). Non-finite bounds get the
    constant lines f(l) <= f(z) <= f(u) (f is increasing). No NaN for finite l <= u, however
    wide (saturation: f' underflows to 0, the lines become flat).

    The lines differ (``parallel = False``: two backward passes in the dual network, no random
    projections, no receptive-field fast path), have no free parameter (``optimisable = False``:
    :func:`~tutorial_lib.bounds.optimized_dual_bounds` keeps them fixed) and there is no exact
    MILP encoding (``exact_encoding = False``: :func:`~tutorial_lib.bounds.milp_bounds` refuses).
    Subclasses give ``f`` and its derivative ``df``.
    """

    bisect_steps = 40
    pad_ulps = 8

    @staticmethod
    @abstractmethod
    def f(z: Tensor) -> Tensor:
        """The activation, elementwise."""

    @staticmethod
    @abstractmethod
    def df(z: Tensor) -> Tensor:
        """Its derivative, elementwise (>= 0, accurate in the tails)."""

    def forward(self, h: Tensor) -> Tensor:
        return self.f(h)

    def relax(self, l: Tensor, u: Tensor) -> Relaxation:
        """Chord/tangent lines (see the class doc); l, u (N, *shape), l <= u. Returns
        (lower_slope, lower_intercept, upper_slope, upper_intercept), each (N, *shape)."""
        f, df = self.f, self.df
        us, ui = self._upper_line(f, df, l, u)
        ls, li = self._upper_line(lambda z: -f(-z), lambda z: df(-z), -u, -l)
        return ls, -li, us, ui

    def _upper_line(self, f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor],
                    l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
        """(slope, intercept), each (N, *shape), of a line >= f on [l, u] for an increasing f,
        convex on z <= 0 and concave on z >= 0."""
        finite = torch.isfinite(l) & torch.isfinite(u)
        zero = torch.zeros_like(l)
        l0, u0 = torch.where(finite, l, zero), torch.where(finite, u, zero)  # no inf arithmetic
        fl, fu = f(l0), f(u0)
        w = u0 - l0
        wide = w > 0
        k = (fu - fl) / torch.where(wide, w, torch.ones_like(w))     # chord slope
        straddle = (l0 < 0) & (u0 > 0)
        chord = wide & ((u0 <= 0) | (straddle & (df(u0) >= k)))
        # straddling without the chord: bisection for the tangent through (l, f(l)) on [0, u];
        # G(t) = f(t) + f'(t) (l - t) - f(l) is increasing on t > 0, G(0) <= 0 < G(u), and
        # hi keeps G(hi) >= 0 (a valid tangent point)
        need = straddle & ~chord
        lo, hi = zero, torch.where(need, u0, zero)
        if bool(need.any()):
            for _ in range(self.bisect_steps):
                m = lo + (hi - lo) / 2
                ok = f(m) + df(m) * (l0 - m) - fl >= 0
                hi, lo = torch.where(ok, m, hi), torch.where(ok, lo, m)
        # the midpoint minimises the area under a tangent at t > 0; any t in [hi, u] is valid
        mid = l0 / 2 + u0 / 2
        t = torch.where(need, torch.maximum(hi, mid), mid)
        ft, dft = f(t), df(t)
        slope = torch.where(chord, k, dft)
        icpt = torch.where(chord, fl - k * l0, ft - dft * t)
        # non-finite bounds: the constant line f(u) (f is increasing)
        slope = torch.where(finite, slope, zero)
        icpt = torch.where(finite, icpt, f(u))
        scale = 1 + icpt.abs() + slope * torch.maximum(l0.abs(), u0.abs())
        return slope, icpt + self.pad_ulps * torch.finfo(l.dtype).eps * scale

    def milp_constraints(self, a, z_of: ZOf, l: np.ndarray, u: np.ndarray) -> List:
        raise UnsupportedLayerError(
            f"{type(self).__name__} ({type(self.module).__name__}) has no exact MILP encoding: "
            "the activation is not piecewise linear; use lp_bounds or the dual bounds instead")


class DualSigmoid(DualSCurve):
    """nn.Sigmoid, s(z) = 1 / (1 + exp(-z)), with the chord/tangent relaxation of
    :class:`DualSCurve` (inflection at 0). s'(z) = s(z) s(-z) (accurate in both tails)."""

    @staticmethod
    def f(z: Tensor) -> Tensor:
        return torch.sigmoid(z)

    @staticmethod
    def df(z: Tensor) -> Tensor:
        return torch.sigmoid(z) * torch.sigmoid(-z)


class DualTanh(DualSCurve):
    """nn.Tanh with the chord/tangent relaxation of :class:`DualSCurve` (inflection at 0).
    tanh'(z) = 1 - tanh(z)^2 = 4 s(2z) s(-2z) (s the sigmoid; accurate in the tails)."""

    @staticmethod
    def f(z: Tensor) -> Tensor:
        return torch.tanh(z)

    @staticmethod
    def df(z: Tensor) -> Tensor:
        return 4 * torch.sigmoid(2 * z) * torch.sigmoid(-2 * z)
