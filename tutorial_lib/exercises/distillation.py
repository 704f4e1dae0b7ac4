"""Checkers for notebook 06 (defensive distillation).

* :func:`check_logits_over_T_attack` -- untargeted PGD on the cross-entropy of the logits divided
  by T: the attack that sees through a distilled student's saturated softmax.
"""
from __future__ import annotations

import torch
from torch import nn

from .checking import Checker, CheckResult

__all__ = ["check_logits_over_T_attack"]

_N = 8
_EPS, _ALPHA, _STEPS = 0.2, 0.04, 10
_SLACK = 1  # image(s): the student's attack may leave this many more correct than the library's


class _LogitsOverT(nn.Module):
    """model(x) / T: the network read at temperature T (the same decisions, a softer softmax)."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum())


def _case(checker: Checker, label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
          temperature: float) -> None:
    from ..attacks import PGD

    x_keep = x.clone()
    out = checker.call(label, model, x, y.clone(), T=temperature, eps=_EPS, alpha=_ALPHA, steps=_STEPS)
    if out is None:
        return
    checker.require(torch.equal(x, x_keep), f"on {label}: your function changed x in place: work on a copy "
                                            "(x_adv = x.clone())")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        checker.require(False, f"on {label}: return the adversarial images, a tensor shaped like x "
                               f"{tuple(x.shape)}, not {shape}")
        return
    out = out.detach().float()
    if not checker.require(torch.isfinite(out).all(), f"on {label}: your images contain NaN or inf"):
        return
    moved = (out - x_keep).abs().max().item()
    checker.require(moved <= _EPS + 1e-5, f"on {label}: some pixels moved by {moved:.3f}, more than eps = {_EPS}: "
                                          "project onto the eps-ball after every step "
                                          "(x_adv = torch.min(torch.max(x_adv, x - eps), x + eps))")
    checker.require(out.min().item() >= -1e-6 and out.max().item() <= 1 + 1e-6,
                    f"on {label}: some pixels leave [0, 1] (from {out.min().item():.3f} to {out.max().item():.3f}): "
                    "clamp to the image box after every step")
    wrapped = _LogitsOverT(model, temperature).eval()
    reference = PGD(_EPS, alpha=_ALPHA, steps=_STEPS, random_start=False)(wrapped, x_keep, y)
    got, ref = _correct(model, out.clamp(0, 1), y), _correct(model, reference, y)
    clean = _correct(model, x_keep, y)
    checker.require(got <= ref + _SLACK,
                    f"on {label}: after your attack the model still classifies {got} of {len(y)} images correctly "
                    f"({clean} before; PGD on the logits / T from the library leaves {ref}): divide the logits by "
                    "T before the cross-entropy (F.cross_entropy(model(x_adv) / T, y)) and step up the loss, "
                    "x_adv + alpha * gradient.sign()")


def check_logits_over_T_attack(student_fn, verbose: bool = True) -> CheckResult:
    """Check ``logits_over_T_attack(model, x, y, T, eps, alpha, steps) -> x_adv``: untargeted l-inf
    PGD from x on ``cross_entropy(model(x_adv) / T, y)``, projected onto the eps-ball and [0, 1]
    after every step. Cases: the student distilled at T = 100 (the attack must break it as the
    library's PGD on a logits / T model does) and the undefended network at T = 1."""
    from ..attacks import PGD, MarginPGD
    from ..checkpoints import load_checkpoint
    from ..data import test_subset

    # the library's attacks (PGD on a logits / T wrapper would answer in one call): refused, as is any
    # other library attack (the forbidden PGD brings the base classes every attack shares)
    checker = Checker("logits_over_T_attack", student_fn, verbose, forbid=[PGD, MarginPGD])
    x, y = test_subset("mnist", 64)
    hot = load_checkpoint("papernot_student_t100", device="cpu")[0].eval()
    cold = load_checkpoint("papernot_teacher_t1", device="cpu")[0].eval()
    with torch.no_grad():
        ok = (hot(x).argmax(1) == y) & (cold(x).argmax(1) == y)
    x, y = x[ok][:_N], y[ok][:_N]
    _case(checker, "the student distilled at T = 100 (T = 100, eps = 0.2, 8 images)", hot, x.clone(), y, 100.0)
    if checker.started:
        _case(checker, "the undefended network (T = 1, eps = 0.2, 8 images)", cold, x.clone(), y, 1.0)
    return checker.finish()
