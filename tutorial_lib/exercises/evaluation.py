"""Checker of notebook 09 (evaluating defences): ``break_quantized``, the attack that breaks the
deliberately broken defence ``mnist_small_quantized`` (inputs rounded to 16 grey levels before
the small CNN, so every input gradient is zero).

The checker runs the student's attack on the first 100 MNIST test images at eps = 0.3 and asks
for what an evaluation must show: the outputs stay in the eps-ball and the pixel box, and the
model's robust accuracy (clean-correct and not broken) falls to at most 20 %. The exercise is to
write BPDA (a straight-through gradient for the rounding, then a gradient attack by hand): a call
to any of the library's attacks (:data:`FORBIDDEN`: Square, PGD or APGD on a stand-in model through
TransferAttack, ...) fails the case in words.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..attacks import APGD, FGSM, PGD, APGDTargeted, Square, TransferAttack
from ..attacks.base import Attack, NormBallAttack
from ..checkpoints import load_checkpoint
from ..data import test_subset
from .checking import Checker, CheckResult

__all__ = ["check_break_quantized", "FORBIDDEN"]

#: One call to any of these would answer the exercise (Square needs no gradient; PGD or APGD on
#: model[1:], alone or through TransferAttack, is a transfer attack); the base classes catch every
#: other library attack (they all run Attack.__call__).
FORBIDDEN = (Square, APGD, APGDTargeted, PGD, FGSM, TransferAttack, NormBallAttack, Attack)

EPS = 0.3
TARGET = 0.20  # robust accuracy the attack must reach or beat


def check_break_quantized(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``break_quantized(model, x, y, eps) -> x_adv`` on the shipped ``mnist_small_quantized``:
    x_adv (100, 1, 28, 28) within eps (l-inf) of x and in [0, 1], and robust accuracy <= 20 %,
    without calling a library attack (:data:`FORBIDDEN`)."""
    checker = Checker("break_quantized", student_fn, verbose, forbid=FORBIDDEN)
    model, _ = load_checkpoint("mnist_small_quantized", device="cpu")
    x, y = test_subset("mnist", 100)
    x_before = x.clone()
    out = checker.call(f"the first 100 MNIST test images at eps={EPS}", model, x, y, EPS)
    if out is None:
        return checker.finish()
    if not checker.require(isinstance(out, torch.Tensor) and tuple(out.shape) == tuple(x.shape),
                           f"return the adversarial images as a tensor of shape {tuple(x.shape)}, got "
                           f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"):
        return checker.finish()
    out = out.detach().float().cpu()
    checker.require(torch.equal(x, x_before), "your attack changed x in place: build x_adv as a new tensor")
    x = x_before
    if not checker.require(torch.isfinite(out).all(), "x_adv contains NaN or inf"):
        return checker.finish()
    moved = (out - x).abs().max().item()
    checker.require(moved <= EPS + 1e-5, f"some pixels moved by {moved:.3f} > eps = {EPS}: an attack must stay in "
                                         f"the threat model (project onto the ball)")
    checker.require(out.min() >= -1e-6 and out.max() <= 1 + 1e-6,
                    "some pixels are outside [0, 1]: clamp to the pixel box")
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        robust = (clean_ok & (model(out).argmax(1) == y)).float().mean().item()
    checker.require(robust <= TARGET,
                    f"the model is still {100 * robust:.0f} % robust under your attack (the goal: <= "
                    f"{100 * TARGET:.0f} %). Its input gradient is zero almost everywhere (rounding), so "
                    f"gradient steps on the model itself go nowhere. BPDA: keep the rounding in the forward "
                    f"pass but let the backward pass treat it as the identity (x + (model[0](x) - x).detach()), "
                    f"then take your PGD steps on that")
    result = checker.finish()
    if result.passed and verbose:
        print(f"  robust accuracy under your attack: {100 * robust:.0f} % (clean: "
              f"{100 * clean_ok.float().mean().item():.0f} %)")
    return result
