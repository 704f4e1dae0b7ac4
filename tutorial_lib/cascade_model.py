"""A cascade of certified models as a classifier (Wong et al. 2018, Section 3.3).

A cascade is an ordered list of models ("stages"). At an input x it answers with the first stage
whose exact dual bound certifies that stage's *own prediction* on the ball around x (the stage
"accepts" x); when no stage accepts, the fallback stage (the last one in the paper) answers.

* :func:`stage_accepts`   the one rule the routing is built on: (pred, accepted) per example
* :class:`Cascade`        the cascade as a model: :meth:`Cascade.route` (which stage answers and
  what, :class:`CascadeDecision`), ``forward`` (the answering stage's logits, so that ordinary
  attacks run on it), :meth:`Cascade.predict`, :meth:`Cascade.stage_predictions`

The model lives here, below both :mod:`tutorial_lib.attacks` (:class:`~tutorial_lib.attacks.CascadeAttack`
attacks it) and :mod:`tutorial_lib.defenses` (whose :mod:`~tutorial_lib.defenses.cascade` holds
what its certificates promise: the paper's unsound one, a sound one, :func:`certify_cascade`, and
re-exports everything here): it needs only :mod:`tutorial_lib.bounds`.

Shapes: x (N, *input_shape) with values in the box ``clip`` (default the pixel box [0, 1]);
labels y (N,) integers in [0, K); eps in input units, the radius of the ``norm`` ball ('linf',
'l2' or 'l1'). Everything runs on x's device (the stages must be there too).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .bounds import dual_bounds, is_certified
from .bounds.spec import check_norm

__all__ = ["stage_accepts", "Cascade", "CascadeDecision"]


def stage_accepts(model: nn.Module, x: Tensor, eps: float, norm: str = "linf",
                  clip: Optional[Tuple[float, float]] = (0.0, 1.0),
                  batch_size: int = 256) -> Tuple[Tensor, Tensor]:
    """Does ``model`` certify its own prediction on the ball around each x? (the cascade's rule)

    x: (N, *input_shape) in ``clip``; eps: the radius in ``norm`` ('linf', 'l2', 'l1').
    Returns ``(pred, accepted)``, both (N,) on x's device: pred (long) = argmax of the logits at
    x; accepted (bool) = every margin z_pred - z_j has an exact dual lower bound > 0 on the ball
    (:func:`tutorial_lib.bounds.is_certified`; never random projections). No gradients.
    """
    check_norm(norm)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    preds, oks = [], []
    with torch.no_grad():
        for a in range(0, x.shape[0], batch_size):
            xb = x[a:a + batch_size]
            pred = model(xb).argmax(1)
            low = dual_bounds(model, xb, pred, eps, clip=clip, norm=norm).lower
            preds.append(pred)
            oks.append(is_certified(low))
    if not preds:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return empty, empty.bool()
    return torch.cat(preds), torch.cat(oks)


def _check_clip(clip: Optional[Tuple[float, float]]) -> Optional[Tuple[float, float]]:
    if clip is None:
        return None
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"clip must be None or a pair (low, high); got {clip!r}") from exc
    if not lo < hi:
        raise ValueError(f"clip must be (low, high) with low < high; got {clip!r}")
    return lo, hi


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


@dataclass
class CascadeDecision:
    """What a cascade does at each input, from :meth:`Cascade.route`; each field (N,).

    pred:     long, the cascade's answer (the answering stage's argmax).
    stage:    long, the index of the stage that answered (in 0..len(stages) - 1).
    accepted: bool, True where the answering stage accepted x (it certified its own prediction
              on the ball; no earlier stage did); False where no stage accepted and the fallback
              answered.
    """

    pred: Tensor
    stage: Tensor
    accepted: Tensor


class Cascade(nn.Module):
    """A cascade of certified models (Wong et al. 2018, Section 3.3), usable as a model.

    ``Cascade(stages, eps, norm="linf", clip=(0., 1.), fallback=-1, batch_size=256)``: ``stages``
    a non-empty sequence of certifiable models (nn.Sequential of Linear/Conv2d/ReLU/Flatten/
    Normalize ending in Linear, all with the same number of classes K), held in an
    ``nn.ModuleList``; ``eps`` (> 0, input units) and ``norm`` ('linf', 'l2', 'l1') the ball on
    which a stage must certify its prediction to accept an input; ``clip`` the input box (None:
    none); ``fallback`` the index of the stage that answers where no stage accepts (negative
    indices count from the end; stored as the index in 0..len(stages) - 1; the paper's choice is
    -1, the last stage); ``batch_size`` examples per bound computation (memory only).

    * :meth:`route` -- which stage answers, and what (:class:`CascadeDecision`); stage k is
      bounded only on the inputs no earlier stage accepted, which is what makes a cascade cheap;
    * ``forward(x)`` (N, K) -- the answering stage's logits, per example; the routing is
      piecewise constant, gradients flow through the chosen stage's logits, so an ordinary
      attack runs on a cascade (it sees a gradient of zero for the routing itself);
    * :meth:`predict` (N,) -- the answer, ``route(x).pred`` (= ``forward(x).argmax(1)``);
    * :meth:`stage_predictions` (len(stages), N) -- every stage's own argmax at x.

    Modes: a cascade starts in eval mode if every stage is in eval mode (as loaded checkpoints
    are), else in training mode; ``.eval()`` / ``.train()`` set every stage, as for any module, and
    the attacks refuse a cascade in training mode. The number of classes is checked on the first
    call (one forward pass of one example through each stage).
    """

    def __init__(self, stages: Sequence[nn.Module], eps: float, norm: str = "linf",
                 clip: Optional[Tuple[float, float]] = (0.0, 1.0), fallback: int = -1,
                 batch_size: int = 256):
        super().__init__()
        if isinstance(stages, nn.Module) and not isinstance(stages, nn.ModuleList):
            raise TypeError(f"stages must be a sequence of models, got one {type(stages).__name__}; "
                            "a cascade of one model is Cascade([model], eps)")
        try:
            stages = list(stages)
        except TypeError as exc:
            raise TypeError(f"stages must be a sequence of models, got {type(stages).__name__}") from exc
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        for k, stage in enumerate(stages):
            if not isinstance(stage, nn.Module):
                raise TypeError(f"stage {k} is a {type(stage).__name__}, not an nn.Module")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
            raise TypeError(f"eps must be a number, got {type(eps).__name__} {eps!r}")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a positive finite number (the radius on which a stage must "
                             f"certify its prediction), got {eps}")
        n = len(stages)
        if isinstance(fallback, bool) or not isinstance(fallback, numbers.Integral):
            raise TypeError(f"fallback must be a stage index (an int), got {type(fallback).__name__} {fallback!r}")
        if not -n <= fallback < n:
            raise ValueError(f"fallback must be a stage index in [{-n}, {n - 1}] for {n} stage"
                             f"{'s' if n > 1 else ''}, got {fallback}")
        self.stages = nn.ModuleList(stages)
        self.eps = float(eps)
        self.norm = check_norm(norm)
        self.clip = _check_clip(clip)
        self.fallback = int(fallback) % n
        self.batch_size = _check_batch_size(batch_size)
        self.training = any(stage.training for stage in self.stages)
        self._num_classes: Optional[int] = None

    @property
    def num_classes(self) -> Optional[int]:
        """K, the stages' number of classes; None until the first call has checked it."""
        return self._num_classes

    def _check_input(self, x: Tensor) -> Tensor:
        """x must be a floating tensor (N, *input_shape); on the first call also check that every
        stage gives logits (1, K) with the same K."""
        if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError("x must be a floating tensor of shape (N, *input_shape)")
        if self._num_classes is None and x.shape[0] > 0:
            sizes = []
            with torch.no_grad():
                for stage in self.stages:
                    out = stage(x[:1])
                    if not torch.is_tensor(out) or out.dim() != 2:
                        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
                        raise ValueError(f"stage {len(sizes)} must output logits (N, K); got {shape}")
                    sizes.append(int(out.shape[1]))
            if len(set(sizes)) > 1:
                raise ValueError("the stages disagree on the number of classes: "
                                 + ", ".join(f"stage {k} has {s}" for k, s in enumerate(sizes)))
            self._num_classes = sizes[0]
        return x

    def _check_labels(self, x: Tensor, y: Tensor) -> Tensor:
        """x checked as in :meth:`_check_input`; y (N,) integer labels in [0, K), on x's device."""
        x = self._check_input(x)
        if not torch.is_tensor(y) or y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError("y must be an integer tensor of labels, shape (N,)")
        if tuple(y.shape) != (x.shape[0],):
            raise ValueError(f"y must have shape (N,)=({x.shape[0]},) to match x; got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self._num_classes):
            raise ValueError(f"labels must be in [0, {self._num_classes}); got min {int(y.min())}, "
                             f"max {int(y.max())}")
        return y.to(x.device, torch.long)

    def route(self, x: Tensor, batch_size: Optional[int] = None) -> CascadeDecision:
        """Which stage answers each x (N, *input_shape), and what (:class:`CascadeDecision`).

        Stage k runs :func:`stage_accepts` only on the inputs no stage before it accepted; the
        inputs no stage accepts go to the fallback stage. ``batch_size``: None uses the
        cascade's. No gradients.
        """
        x = self._check_input(x)
        batch_size = self.batch_size if batch_size is None else _check_batch_size(batch_size)
        N = x.shape[0]
        pred = torch.full((N,), -1, dtype=torch.long, device=x.device)
        stage = torch.full((N,), -1, dtype=torch.long, device=x.device)
        accepted = torch.zeros(N, dtype=torch.bool, device=x.device)
        remaining = torch.arange(N, device=x.device)
        with torch.no_grad():
            for k, model in enumerate(self.stages):
                if remaining.numel() == 0:
                    break
                p, ok = stage_accepts(model, x[remaining], self.eps, self.norm, self.clip, batch_size)
                idx = remaining[ok]
                pred[idx], stage[idx], accepted[idx] = p[ok], k, True
                remaining = remaining[~ok]
            if remaining.numel():
                pred[remaining] = self.stages[self.fallback](x[remaining]).argmax(1)
                stage[remaining] = self.fallback
        return CascadeDecision(pred=pred, stage=stage, accepted=accepted)

    def forward(self, x: Tensor) -> Tensor:
        """(N, K) logits of the stage that answers each x (N, *input_shape), per example.

        The routing (:meth:`route`) is computed without gradients; gradients flow through the
        answering stage's logits only.
        """
        decision = self.route(x)
        if x.shape[0] == 0:
            return self.stages[self.fallback](x)
        out = None
        for k in decision.stage.unique().tolist():
            idx = (decision.stage == k).nonzero().flatten()
            logits = self.stages[k](x[idx])
            if out is None:
                out = logits.new_zeros(x.shape[0], logits.shape[1])
            out = out.index_put((idx,), logits)
        return out

    def predict(self, x: Tensor) -> Tensor:
        """(N,) long: the cascade's answer at each x, ``route(x).pred``."""
        return self.route(x).pred

    def stage_predictions(self, x: Tensor) -> Tensor:
        """(len(stages), N) long: row k is stage k's own argmax at x (whether it accepts or not).
        No gradients."""
        x = self._check_input(x)
        rows = []
        with torch.no_grad():
            for model in self.stages:
                preds = [model(x[a:a + self.batch_size]).argmax(1) for a in range(0, x.shape[0], self.batch_size)]
                rows.append(torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=x.device))
        return torch.stack(rows)

    def extra_repr(self) -> str:
        clip = "None" if self.clip is None else f"({self.clip[0]:g}, {self.clip[1]:g})"
        return f"eps={self.eps:g}, norm={self.norm!r}, clip={clip}, fallback={self.fallback}"
