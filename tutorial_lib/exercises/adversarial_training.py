"""Checkers for notebook 02 (adversarial training): the Carlini-Wagner margin loss of the CW and
CW+ attacks.

``check_cw_loss(cw_loss)`` -- ``cw_loss(logits, y, kappa=inf) -> (N,)``, the loss that
:class:`~tutorial_lib.attacks.MarginPGD` maximises: ``min(max_{j != y} z_j - z_y, kappa)``. A function
that calls the library's ``attacks.margin`` (or MarginPGD's loss), under any name, fails.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..attacks import PGD, MarginPGD, margin
from ..attacks.base import _margin_to
from ..checkpoints import load_checkpoint
from ..data import test_subset
from .checking import Checker, CheckResult

__all__ = ["check_cw_loss"]

INF = float("inf")


def _expected_cw(logits: torch.Tensor, y: torch.Tensor, kappa: float = INF) -> torch.Tensor:
    """The library's answer: minus the margin (:func:`~tutorial_lib.attacks.margin`), capped at kappa."""
    m = -margin(logits, y)
    return m if kappa == INF else m.clamp(max=kappa)


class _PGDOnYourLoss(PGD):
    """PGD whose objective is the student's loss (everything else as in the library's PGD)."""

    def __init__(self, loss_fn: Callable, kappa: float, **kwargs):
        super().__init__(**kwargs)
        self.loss_fn, self.kappa = loss_fn, kappa

    def _loss(self, logits, y, target):
        return self.loss_fn(logits, y, self.kappa)


def _diagnose(checker: Checker, what: str, got, logits: torch.Tensor, y: torch.Tensor, kappa: float) -> bool:
    """Compare with the expected values; when they differ, name the likely mistake."""
    expected = _expected_cw(logits, y, kappa)
    if isinstance(got, torch.Tensor) and got.dim() == 0:
        checker.require(False, f"{what}: you returned a single number; return one loss per example, "
                               f"shape ({len(y)},) (no .mean() or .sum(): PGD sums it itself)")
        return False
    if checker.tensor_close(what, got, expected, atol=1e-5):
        return True
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(expected.shape):
        return False
    got = got.detach().to(expected.dtype)
    uncapped = -margin(logits, y)
    best_other = logits.scatter(1, y[:, None], -INF).max(1).values
    with_true = logits.max(1).values - logits.gather(1, y[:, None]).squeeze(1)
    hints = [
        (torch.allclose(got, -uncapped, atol=1e-5) or torch.allclose(got, (-uncapped).clamp(max=kappa), atol=1e-5),
         "the sign is flipped: the attacker's loss is max_{j != y} z_j - z_y (positive once the "
         "example is misclassified), not z_y - max_{j != y} z_j"),
        (torch.allclose(got, with_true, atol=1e-5) or torch.allclose(got, with_true.clamp(max=kappa), atol=1e-5),
         "your loss is never negative: the max must run over the classes j != y only (exclude the "
         "true class, e.g. set its logit to -inf before taking the max)"),
        (kappa != INF and torch.allclose(got, uncapped, atol=1e-5),
         f"the loss is not capped at kappa = {kappa:g}: CW+ stops pushing an example once its margin "
         f"exceeds kappa (use .clamp(max=kappa))"),
        (kappa != INF and torch.allclose(got, uncapped.clamp(min=kappa), atol=1e-5),
         "you capped from below: the loss is min(margin, kappa), i.e. .clamp(max=kappa), not clamp(min=...)"),
        (torch.allclose(got, best_other, atol=1e-5),
         "you return max_{j != y} z_j only: subtract the true class's logit z_y"),
    ]
    for found, hint in hints:
        if found:
            checker.problems.append(f"{what}: {hint}")
            break
    else:
        if torch.allclose(got, _expected_cw(logits.softmax(1), y, kappa), atol=1e-5):
            checker.problems.append(f"{what}: you worked on softmax probabilities; the CW loss uses the "
                                    f"logits themselves (that is why its gradient does not vanish)")
    return False


def _case(checker: Checker, case: str, logits: torch.Tensor, y: torch.Tensor, kappa: float) -> None:
    """One call on copies of the inputs, then: inputs untouched, values right (or the likely mistake)."""
    given_logits, given_y = logits.clone(), y.clone()
    got = checker.call(case, given_logits, given_y, kappa)
    if got is None:
        return
    if not checker.require(torch.equal(given_logits, logits) and torch.equal(given_y, y),
                           f"on {case}: your function changed its inputs in place (inside PGD that corrupts "
                           f"the logits autograd needs); work on a copy: .clone(), or scatter instead of scatter_"):
        return
    _diagnose(checker, f"on {case}", got, logits, y, kappa)


def check_cw_loss(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``cw_loss(logits, y, kappa=inf)``: logits (N, K), labels y (N,), kappa in logit units;
    returns (N,) ``min(max_{j != y} z_j - z_y, kappa)``, differentiable in the logits.

    Cases: hand-made logits (kappa inf and 1), seeded random logits (kappa inf and 2), the gradient
    PGD needs, and PGD-10 on the shipped PGD-trained model driven by your loss, against the
    library's :class:`~tutorial_lib.attacks.MarginPGD` (CW and CW+).
    """
    # the library's margin (and MarginPGD's objective built on it) would answer the exercise in one call
    checker = Checker("cw_loss", student_fn, verbose, forbid=[margin, _margin_to, MarginPGD._loss])
    # 1. three hand-made examples, 4 classes: correct with margin 2, wrong by 1.5, a tie
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.5, 1.0, 1.0], [1.0, 1.0, 0.0, -2.0]])
    y = torch.tensor([0, 2, 1])
    for kappa in (INF, 1.0):
        case = f"the hand-made logits {logits.tolist()} with labels {y.tolist()}, kappa = {kappa:g}"
        _case(checker, case, logits, y, kappa)
    # 2. a seeded batch of 16 examples, 10 classes, margins spread over several logit units
    gen = torch.Generator().manual_seed(2018)
    logits = 4 * torch.randn(16, 10, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    for kappa in (INF, 2.0):
        _case(checker, f"16 random logit vectors (10 classes), kappa = {kappa:g}", logits, y, kappa)
    # 3. the gradient: PGD differentiates the loss with respect to the logits
    leaf = logits.clone().requires_grad_(True)
    got = checker.call("16 random logit vectors that require a gradient", leaf, y.clone())
    if got is not None and checker.require(isinstance(got, torch.Tensor) and got.requires_grad,
                                           "your loss carries no gradient (PGD differentiates it): "
                                           "avoid .item(), .detach(), numpy or building a new tensor"):
        (grad,) = torch.autograd.grad(got.sum(), leaf, allow_unused=True)
        ref = logits.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(_expected_cw(ref, y).sum(), ref)
        if grad is None:
            checker.require(False, "the gradient of your loss with respect to the logits is missing")
        else:
            checker.tensor_close("the gradient of your loss with respect to the logits", grad, expected)
    if not checker.started or checker.problems:
        return checker.finish()
    # 4. the attack itself: PGD-10 on your loss reaches the library's CW / CW+ points
    model, _ = load_checkpoint("mnist_small_pgd", device="cpu")
    x, y = test_subset("mnist", 8)
    for kappa, name in ((INF, "CW"), (50.0, "CW+")):
        settings = dict(eps=0.3, alpha=0.03, steps=10, seed=0)
        case = f"PGD-10 at eps 0.3 on the first 8 test images, driven by your loss ({name}, kappa = {kappa:g})"
        try:
            x_adv = _PGDOnYourLoss(student_fn, kappa, **settings)(model, x, y)
        except Exception as err:  # noqa: BLE001 - reported in words
            checker.require(False, f"{case}: your loss raised {type(err).__name__}: {err}")
            continue
        expected = MarginPGD(kappa=kappa, **settings)(model, x, y)
        checker.tensor_close(f"{case}: the adversarial images", x_adv, expected, atol=1e-6)
    return checker.finish()
