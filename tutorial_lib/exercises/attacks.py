"""Checkers of notebook 01 (attacks): ``fgsm`` and ``project_l2``.

Both run on small synthetic cases (seeded images, the shipped natural model; no data set
needed) and compare with the library: :class:`tutorial_lib.attacks.FGSM` and the l2 projection
of :class:`tutorial_lib.attacks.PGD` (``PGD(eps, norm="l2").project``). A student's function that
calls those (under any name) fails: the exercise is to write them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..attacks import FGSM, PGD
from ..attacks.base import NormBallAttack
from ..checkpoints import load_checkpoint
from .checking import Checker, CheckResult

__all__ = ["check_fgsm", "check_project_l2"]


def _images(n: int, seed: int) -> torch.Tensor:
    """n synthetic 1x28x28 "images" in [0, 1], many pixels exactly 0 or 1 (as in MNIST)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 1.6 - 0.3).clamp(0, 1)


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


# --------------------------------------------------------------------------------------------
# fgsm
# --------------------------------------------------------------------------------------------

def check_fgsm(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``fgsm(model, x, y, eps) -> x_adv``: one step of size eps along the sign of the input
    gradient of the cross-entropy, clamped to [0, 1]; compared with ``FGSM(eps)(model, x, y)`` on
    the shipped natural model."""
    # a one-call answer (the library's FGSM, or a one-step PGD) would not be the student's own FGSM
    checker = Checker("fgsm", student_fn, verbose, forbid=[FGSM, PGD])
    model, _ = load_checkpoint("mnist_small_natural", device="cpu")
    x = _images(8, seed=200)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own predictions: every example starts "right"
    for eps in (0.1, 0.25):
        x_before = x.clone()
        out = checker.call(f"8 images with eps={eps}", model, x, y, eps)
        if out is None:  # it raised: already reported
            break
        checker.require(torch.equal(x, x_before),
                        "your function changed x in place: compute x_adv as a new tensor")
        x = x_before
        expected = FGSM(eps)(model, x, y)
        if not checker.tensor_close(f"the adversarial images (eps={eps})", out, expected, atol=1e-6):
            if isinstance(out, torch.Tensor) and out.shape == x.shape:
                _fgsm_hints(checker, model, out.detach().float(), x, y, eps, expected)
            break  # one wrong case says enough
    return checker.finish()


def _fgsm_hints(checker: Checker, model, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float,
                expected: torch.Tensor) -> None:
    """Say what is wrong with adversarial images that differ from FGSM's."""
    before = len(checker.problems)
    if not torch.isfinite(out).all():
        return  # tensor_close said so
    delta = out - x
    checker.require(out.min() >= -1e-6 and out.max() <= 1 + 1e-6,
                    "some pixels are outside [0, 1]: clamp x + eps * sign(gradient) to the pixel box")
    checker.require(delta.abs().max() <= eps + 1e-6,
                    f"some pixels moved by more than eps={eps}: FGSM moves each pixel by eps times the "
                    f"sign of its gradient, never more")
    with torch.no_grad():
        loss_x = F.cross_entropy(model(x), y).item()
        loss_out = F.cross_entropy(model(out), y).item()
    checker.require(loss_out > loss_x,
                    f"the loss went down (from {loss_x:.3g} to {loss_out:.3g}): FGSM climbs the loss, "
                    f"x + eps * sign(gradient), it does not descend it")
    # pixels FGSM moves by the full eps (gradient != 0) and that no step of size eps can push out of the box
    moved = ((expected - x).abs() > 0.99 * eps) & (x > eps) & (x < 1 - eps)
    checker.require(not moved.any() or (delta.abs()[moved] > 0.99 * eps).float().mean() > 0.99,
                    "many pixels moved by less than eps: step along the sign of the gradient "
                    "(grad.sign()), not the gradient itself")
    if len(checker.problems) == before:
        checker.require(False, "the images stay in the ball and the box but are not FGSM's: take the gradient "
                               "of the cross-entropy of model(x) with respect to x, at x itself, and step "
                               "x + eps * grad.sign()")


# --------------------------------------------------------------------------------------------
# project_l2
# --------------------------------------------------------------------------------------------

#: per-example length of the perturbation in the test batch, in units of eps: zero, inside the
#: ball, on its edge (almost), outside it
_LENGTHS = (0.0, 0.5, 0.99, 1.5, 3.0, 10.0)


def _l2_case(eps: float, seed: int):
    """x (6, 1, 28, 28) in [0, 1] and x_adv = x + delta with ||delta_i||_2 = _LENGTHS[i] * eps."""
    x = _images(len(_LENGTHS), seed)
    g = torch.Generator().manual_seed(seed + 1)
    direction = torch.randn(x.shape, generator=g)
    direction = direction / _per_example_norm(direction).view(-1, 1, 1, 1)
    lengths = torch.tensor(_LENGTHS).view(-1, 1, 1, 1) * eps
    return x + direction * lengths, x


def _batch_norm_variant(x_adv, x, eps):
    """A typical mistake: one norm for the whole batch."""
    delta = x_adv - x
    return (x + delta * min(1.0, eps / max(delta.norm().item(), 1e-12))).clamp(0, 1)


def _box_first_variant(x_adv, x, eps):
    """A typical mistake: clamp to the box, then project onto the ball."""
    delta = x_adv.clamp(0, 1) - x
    scale = torch.clamp(eps / _per_example_norm(delta).clamp_min(1e-12), max=1.0)
    return x + delta * scale.view(-1, 1, 1, 1)


def check_project_l2(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``project_l2(x_adv, x, eps) -> x_proj``: per example, shrink delta = x_adv - x to l2 norm
    eps if it is longer (leave it if not), then clamp to [0, 1]; compared with
    ``PGD(eps, norm="l2").project(x_adv, x)``."""
    # the library's projection (NormBallAttack.project, which every PGD calls) would answer it in one call
    checker = Checker("project_l2", student_fn, verbose, forbid=[NormBallAttack.project])
    for eps, seed in ((1.0, 300), (2.5, 310)):
        x_adv, x = _l2_case(eps, seed)
        saved = (x_adv.clone(), x.clone())
        out = checker.call(f"6 perturbed images with eps={eps}", x_adv, x, eps)
        if out is None:  # it raised: already reported
            break
        checker.require(torch.equal(x_adv, saved[0]) and torch.equal(x, saved[1]),
                        "your function changed its inputs in place: return a new tensor")
        x_adv, x = saved
        expected = PGD(eps, norm="l2").project(x_adv, x)
        if not checker.tensor_close(f"the projected images (eps={eps})", out, expected, atol=1e-5):
            if isinstance(out, torch.Tensor) and out.shape == x.shape:
                _l2_hints(checker, out.detach().float(), x_adv, x, eps, expected)
            break  # one wrong case says enough
    return checker.finish()


def _l2_hints(checker: Checker, out: torch.Tensor, x_adv: torch.Tensor, x: torch.Tensor, eps: float,
              expected: torch.Tensor) -> None:
    """Say what is wrong with a projection that differs from the library's."""
    before = len(checker.problems)
    finite = torch.isfinite(out.flatten(1)).all(1)
    if not finite[0] or not finite.all():
        checker.require(finite[1:].all(),
                        "some outputs are NaN or inf even where x_adv != x: check the division by the norm")
        checker.require(finite[0], "the example with x_adv == x (a perturbation of norm 0) came out NaN: guard "
                                   "the division by its norm (e.g. norm.clamp_min(1e-12))")
        return
    checker.require(out.min() >= -1e-6 and out.max() <= 1 + 1e-6,
                    "some pixels are outside [0, 1]: clamp to the pixel box after projecting onto the ball")
    norms = _per_example_norm(out - x)
    checker.require((norms <= eps * (1 + 1e-4)).all(),
                    f"some perturbations are longer than eps={eps} after your projection (up to "
                    f"{norms.max():.3g}): scale delta = x_adv - x by eps / ||delta||_2 when ||delta||_2 > eps")
    inside = torch.tensor([0.0 < r < 1.0 for r in _LENGTHS])  # inside the ball: only the box clamp applies
    checker.require(torch.allclose(out[inside], expected[inside], atol=1e-5),
                    "a perturbation already inside the ball was changed: only shrink those longer than eps "
                    "(the factor is min(1, eps / ||delta||_2), per example)")
    variants = {
        "you used one norm for the whole batch: each example has its own ball, so compute one norm per "
        "example (delta.flatten(1).norm(dim=1))": _batch_norm_variant(x_adv, x, eps),
        "you clamped to the box before projecting onto the ball: project onto the ball first, then clamp "
        "to [0, 1] (the order PGD uses)": _box_first_variant(x_adv, x, eps),
    }
    for problem, variant in variants.items():
        checker.require(not torch.allclose(out, variant, atol=1e-5), problem)
    if len(checker.problems) == before:
        checker.require(False, "the result is not the projection: per example, delta = x_adv - x, "
                               "delta * min(1, eps / ||delta||_2), then x + delta clamped to [0, 1]")
