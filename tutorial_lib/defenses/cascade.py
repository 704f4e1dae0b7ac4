"""Cascades of certified models (Wong et al. 2018, Section 3.3) and what their certificate promises
(Mangal et al. 2022, "On the Perils of Cascading Robust Classifiers", arXiv 2206.00278).

A cascade is an ordered list of models ("stages"). At an input x it answers with the first stage
whose exact dual bound certifies that stage's *own prediction* on the ball around x (the stage
"accepts" x); when no stage accepts, the fallback stage (the last one in the paper) answers.

* :func:`stage_accepts`   the one rule every other piece is built on: (pred, accepted) per example
* :class:`Cascade`        the cascade as a model: :meth:`Cascade.route` (which stage answers and
  what), ``forward`` (the answering stage's logits, so that ordinary attacks run on it),
  :meth:`Cascade.predict`, :meth:`Cascade.stage_predictions`. These two (and
  :class:`CascadeDecision`) live in :mod:`tutorial_lib.cascade_model`, below both ``attacks``
  and ``defenses`` (a cascade is a classifier; the attacks need it without importing the
  defences); they are re-exported here
* :func:`paper_certified` Wong et al.'s certifier: some stage accepts x and the first one predicts
  y. UNSOUND (Mangal et al. 2022): a point of the ball can be routed to a stage that answers
  differently (:class:`tutorial_lib.attacks.CascadeAttack` finds such points)
* :func:`sound_certified` a sound certificate (proof in its docstring): every stage predicts y at
  x, and the fallback stage is certified for y on the ball around x
* :func:`certify_cascade` all of the above per example, each computed once
  (:class:`CascadeCertificate`, with :meth:`CascadeCertificate.summary` of the rates)

Shapes: x (N, *input_shape) with values in the box ``clip`` (default the pixel box [0, 1]);
labels y (N,) integers in [0, K); eps in input units, the radius of the ``norm`` ball ('linf',
'l2' or 'l1'). Everything runs on x's device (the stages must be there too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..bounds import certified_bounds, float64_copy, is_certified
from ..cascade_model import Cascade, CascadeDecision, _check_batch_size, stage_accepts

__all__ = ["stage_accepts", "Cascade", "CascadeDecision", "CascadeCertificate", "paper_certified",
           "sound_certified", "certify_cascade", "FALLBACK_METHODS"]

#: the sound verifiers condition (b) of :func:`sound_certified` may use for the fallback stage:
#: 'dual' (the paper's dual bound, the cascade's own rule) or 'dual-opt' (the same with the final
#: slopes optimised: never looser, so it certifies at least as many examples)
FALLBACK_METHODS: Tuple[str, ...] = ("dual", "dual-opt")


def _check_cascade(cascade: Cascade) -> None:
    if not isinstance(cascade, Cascade):
        raise TypeError(f"expected a Cascade, got {type(cascade).__name__}")


def _certify_label(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str,
                   clip: Optional[Tuple[float, float]], batch_size: int, method: str) -> Tensor:
    """(N,) bool: ``model`` is certified for label y (every margin z_y - z_j, j != y, has a lower
    bound > 0) on the ``norm`` ball of radius eps around each x, intersected with the box. The
    bound is the certification pass (:func:`~tutorial_lib.bounds.certified_bounds`: float64, TF32
    off), so a float32 rounding error cannot make a certificate."""
    oks = []
    twin = float64_copy(model)  # once, not per batch
    with torch.no_grad():
        for a in range(0, x.shape[0], batch_size):
            xb, yb = x[a:a + batch_size], y[a:a + batch_size]
            low = certified_bounds(twin, xb, yb, eps, method=method, clip=clip, norm=norm).lower
            oks.append(is_certified(low))
    return torch.cat(oks) if oks else torch.zeros(0, dtype=torch.bool, device=x.device)


def _check_method(method: str) -> str:
    if method not in FALLBACK_METHODS:
        raise ValueError(f"unknown method {method!r} for the fallback certificate: the sound verifiers "
                         "are " + ", ".join(repr(m) for m in FALLBACK_METHODS))
    return method


def _sound_parts(cascade: Cascade, x: Tensor, y: Tensor, method: str,
                 batch_size: int) -> Tuple[Tensor, Tensor]:
    """(all_agree, fallback_certified), each (N,) bool: condition (a) and (b) of
    :func:`sound_certified`. The fallback's certificate is computed only where the fallback
    predicts y at x (elsewhere it is False without a bound: x itself lies in the ball)."""
    preds = cascade.stage_predictions(x)
    all_agree = (preds == y).all(0)
    fallback_certified = torch.zeros_like(all_agree)
    idx = (preds[cascade.fallback] == y).nonzero().flatten()
    if idx.numel():
        fallback_certified[idx] = _certify_label(cascade.stages[cascade.fallback], x[idx], y[idx], cascade.eps,
                                                 cascade.norm, cascade.clip, batch_size, method)
    return all_agree, fallback_certified


def paper_certified(cascade: Cascade, x: Tensor, y: Tensor) -> Tensor:
    """Wong et al. 2018's certificate for a cascade, (N,) bool. **UNSOUND**: see below.

    x (N, *input_shape) in the cascade's box, y (N,) labels. True where some stage accepts x (its
    dual bound certifies its own prediction on the ball around x) and the first accepting stage
    predicts y: the cascade answers y at x *by acceptance*.

    WHY IT IS UNSOUND (Mangal, Wang, Zhang, Leino, Pasareanu & Fredrikson 2022, "On the Perils of
    Cascading Robust Classifiers", arXiv 2206.00278): the accepting stage's certificate says that
    *this stage* predicts y on the whole ball, not that *the cascade* does. At a point x' of the
    ball the routing is decided afresh: an earlier stage may accept x' with a different label
    (its certificate is on the ball around x', which is not the ball around x), or the accepting
    stage may stop accepting x' and a later stage or the fallback answers differently. So a
    "certified" x can have x' within eps where the cascade's answer is not y;
    :class:`tutorial_lib.attacks.CascadeAttack` finds such points. Use :func:`sound_certified`
    for a guarantee.
    """
    _check_cascade(cascade)
    y = cascade._check_labels(x, y)
    decision = cascade.route(x)
    return decision.accepted & (decision.pred == y)


def sound_certified(cascade: Cascade, x: Tensor, y: Tensor, method: str = "dual",
                    batch_size: Optional[int] = None) -> Tensor:
    """A sound certificate for a cascade, (N,) bool: where True, the cascade answers y at every
    point of the ball B(x, eps) intersected with the box (eps, norm, box: the cascade's).

    x (N, *input_shape) in the box, y (N,) labels. True where

    (a) every stage predicts y at x itself, and
    (b) the fallback stage is certified for label y on B(x, eps) ∩ box (every margin
        z_y - z_j has a lower bound > 0 there; ``method`` 'dual', the cascade's own bound, or
        'dual-opt', the optimised dual, never looser: see :data:`FALLBACK_METHODS`).

    Proof. Take x' in B(x, eps) ∩ box. Either some stage accepts x', or none does.
    * Some stage accepts x'; let j be the first, which answers. Accepting means stage j's
      dual bound certifies its prediction p = argmax f_j(x') on B(x', eps) ∩ box, so f_j predicts
      p at every point of that set (the bound is sound and its margins are strictly positive).
      Balls are symmetric: ||x - x'|| <= eps, so x is in B(x', eps), and x is in the box. Hence
      p = argmax f_j(x) = y by (a): the cascade answers y.
    * No stage accepts x': the fallback answers f_fb's prediction at x', which is y by (b),
      because x' lies in B(x, eps) ∩ box, where the fallback is certified for y.
    In both cases the cascade answers y at x'. ∎ (As every certificate here, up to the floating
    point rounding of the bound computation.)

    Note what is NOT used: "stage k is certified on B(x, 2 eps), so it accepts every x' in B(x,
    eps)" is false for the dual bound: with the paper's slopes the bound is not monotone in the
    input set, so a certificate on a larger set does not imply one on a subset.

    Sound implies paper (:func:`paper_certified`) when ``method='dual'``, for any fallback
    index: (a) says the fallback predicts y at x, so (b) is exactly the fallback's acceptance
    test at x (the same bound, label and set); some stage accepts x, and the first one that does
    predicts y at x by (a). With 'dual-opt' (b) can hold where the fallback does not accept x
    (the paper's rule uses the plain dual bound), so sound may certify x where paper does not.

    ``batch_size``: examples per bound computation (None: the cascade's).
    """
    _check_cascade(cascade)
    method = _check_method(method)
    y = cascade._check_labels(x, y)
    batch_size = cascade.batch_size if batch_size is None else _check_batch_size(batch_size)
    all_agree, fallback_certified = _sound_parts(cascade, x, y, method, batch_size)
    return all_agree & fallback_certified


@dataclass
class CascadeCertificate:
    """Per-example results of :func:`certify_cascade`; every tensor field is (N,).

    pred, stage, accepted: the cascade's decision at x (:class:`CascadeDecision`).
    paper:              bool, :func:`paper_certified` (Wong et al.; UNSOUND).
    sound:              bool, :func:`sound_certified` (= all_agree & fallback_certified).
    all_agree:          bool, condition (a): every stage predicts y at x.
    fallback_certified: bool, condition (b): the fallback stage is certified for y on the ball
                        around x (computed where the fallback predicts y at x; False elsewhere,
                        where it cannot hold since x is in the ball).
    y:                  long, the labels.
    num_stages:         the number of stages (for the per-stage counts).
    method:             the verifier used for (b), see :data:`FALLBACK_METHODS`.
    """

    pred: Tensor
    stage: Tensor
    accepted: Tensor
    paper: Tensor
    sound: Tensor
    all_agree: Tensor
    fallback_certified: Tensor
    y: Tensor
    num_stages: int
    method: str = "dual"

    def summary(self) -> Dict[str, Union[int, float, List[int]]]:
        """Rates over the N examples (NaN for N = 0), as plain numbers.

        n; clean_accuracy (the cascade's answer at x is y); paper_certified_accuracy and
        paper_certified_error (= 1 - the accuracy, Wong et al.'s "robust error bound");
        sound_certified_accuracy and sound_certified_error; paper_not_sound (the fraction the
        paper certifies and the sound certificate does not: the claims without a proof);
        answered_by_stage (list: per stage, the number of examples it answered by accepting);
        answered_by_fallback (the number no stage accepted).
        """
        n = int(self.y.shape[0])

        def rate(mask: Tensor) -> float:
            return float(mask.float().mean()) if n else float("nan")

        paper, sound = rate(self.paper), rate(self.sound)
        answered = torch.bincount(self.stage[self.accepted].cpu(), minlength=self.num_stages)
        return {"n": n, "clean_accuracy": rate(self.pred == self.y),
                "paper_certified_accuracy": paper, "paper_certified_error": 1.0 - paper,
                "sound_certified_accuracy": sound, "sound_certified_error": 1.0 - sound,
                "paper_not_sound": rate(self.paper & ~self.sound),
                "answered_by_stage": [int(c) for c in answered.tolist()],
                "answered_by_fallback": int((~self.accepted).sum())}


def certify_cascade(cascade: Cascade, x: Tensor, y: Tensor, batch_size: Optional[int] = None,
                    method: str = "dual") -> CascadeCertificate:
    """The cascade's decision, Wong et al.'s (unsound) and the sound certificate at each x.

    x (N, *input_shape) in the cascade's box, y (N,) labels. Each thing is computed once: one
    :meth:`Cascade.route` (its decision gives the paper's certificate), one forward pass per stage
    (condition (a)) and one bound of the fallback stage where it predicts y (condition (b), with
    ``method``). ``batch_size``: examples per bound computation (None: the cascade's).
    Returns a :class:`CascadeCertificate`; ``.summary()`` gives the rates.
    """
    _check_cascade(cascade)
    method = _check_method(method)
    y = cascade._check_labels(x, y)
    batch_size = cascade.batch_size if batch_size is None else _check_batch_size(batch_size)
    decision = cascade.route(x, batch_size=batch_size)
    all_agree, fallback_certified = _sound_parts(cascade, x, y, method, batch_size)
    return CascadeCertificate(pred=decision.pred, stage=decision.stage, accepted=decision.accepted,
                              paper=decision.accepted & (decision.pred == y), sound=all_agree & fallback_certified,
                              all_agree=all_agree, fallback_certified=fallback_certified, y=y,
                              num_stages=len(cascade.stages), method=method)
