"""Checkers for notebook 08 (cascades of certified models and sound certificates).

* :func:`check_sound_cascade_certificate` -- a sound certificate for the paper's cascade (answer
  with the first stage that certifies its own prediction on the l_inf ball around the input, else
  the last stage): every stage predicts y at x itself, and the last stage is certified for y on
  the ball around x (exact dual bound, pixel box [0, 1]). The library's own sound certificate
  (``defenses.sound_certified``, ``certify_cascade`` and their helper) is forbidden in the student's
  function: calling it fails the case in words.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from .. import bounds
from ..defenses import cascade as _library
from .checking import Checker, CheckResult

__all__ = ["check_sound_cascade_certificate"]

#: what answers the exercise in one call: the library's sound certificate (any name it is imported under)
FORBIDDEN = (_library.sound_certified, _library.certify_cascade, _library._sound_parts)


def _certified(model: nn.Module, x: torch.Tensor, label: torch.Tensor, eps: float) -> torch.Tensor:
    with torch.no_grad():
        return bounds.is_certified(bounds.dual_bounds(model, x, label, eps).lower)


def _rules(stages: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float) -> Dict[str, torch.Tensor]:
    """The reference ("sound") and the typical wrong answers, each (N,) bool."""
    with torch.no_grad():
        preds = [s(x).argmax(1) for s in stages]
    accepts = [_certified(s, x, p, eps) for s, p in zip(stages, preds)]
    agree = torch.stack([p == y for p in preds]).all(0)
    last = _certified(stages[-1], x, y, eps)
    first_accepting_right = torch.zeros_like(y, dtype=torch.bool)
    decided = torch.zeros_like(first_accepting_right)
    for p, a in zip(preds, accepts):
        first_accepting_right |= ~decided & a & (p == y)
        decided |= a
    return {
        "sound": agree & last,
        "paper": first_accepting_right,
        "agree only": agree,
        "last only": last,
        "first only": _certified(stages[0], x, y, eps),
        "some stage": torch.stack([_certified(s, x, y, eps) for s in stages]).any(0),
        "agree and first": agree & _certified(stages[0], x, y, eps),
    }


_MESSAGES = {
    "paper": "this is the paper's certifier (the first stage that accepts x predicts y): it is what the cascade "
             "answers at x, not a guarantee for the ball; a point x' near x can be routed to another stage",
    "agree only": "every stage predicting y at x covers the x' that some stage accepts, but not the x' that no "
                  "stage accepts: there the last stage answers, so it must be certified for y on the ball",
    "last only": "the last stage being certified covers the x' that no stage accepts, but an earlier stage that "
                 "accepts some x' answers its own prediction at x: require every stage to predict y at x",
    "first only": "the first stage's certificate says nothing about the x' it does not accept, which go on to "
                  "the later stages",
    "some stage": "a stage certified for y on the ball is not enough: the cascade may route x' to another stage",
    "agree and first": "the x' that no stage accepts go to the LAST stage (the fallback), so the last stage's "
                       "certificate is needed, not the first one's",
}


def _tiny_stage(seed: int, width: int = 6) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2.0)
    return net.eval()


def _toy_case(seed: int, n: int = 300) -> Tuple[List[nn.Module], torch.Tensor, torch.Tensor]:
    stages = [_tiny_stage(seed * 10 + k) for k in range(3)]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g)
    with torch.no_grad():
        y = stages[0](x).argmax(1)
    flip = torch.rand(n, generator=g) < 0.15
    return stages, x, torch.where(flip, 1 - y, y)


def _mnist_case() -> Tuple[List[nn.Module], torch.Tensor, torch.Tensor]:
    from ..checkpoints import load_checkpoint
    from ..data import test_subset
    names = ("mnist_small_robust_full", "mnist_small_robust")
    stages = [load_checkpoint(name, device="cpu")[0].eval() for name in names]
    x, y = test_subset("mnist", 12)
    return stages, x, y


def _compare(checker: Checker, case: str, got, stages, x, y, eps: float) -> None:
    rules = _rules(stages, x, y, eps)
    expected = rules["sound"]
    if not checker.require(isinstance(got, torch.Tensor),
                           f"on {case}: return a torch.Tensor of booleans, got {type(got).__name__}"):
        return
    got = got.detach().cpu()
    if tuple(got.shape) != tuple(expected.shape):
        checker.require(False, f"on {case}: shape {tuple(got.shape)}, expected ({len(y)},): one answer per example")
        return
    if got.dtype != torch.bool:
        if not ((got == 0) | (got == 1)).all():
            checker.require(False, f"on {case}: return booleans (True = certified), got values other than 0 and 1")
            return
        got = got.bool()
    if torch.equal(got, expected):
        checker.require(True, "")
        return
    for name, message in _MESSAGES.items():
        if not torch.equal(rules[name], expected) and torch.equal(got, rules[name]):
            checker.require(False, f"on {case}: {message}")
            return
    wrong = (got != expected).nonzero().flatten()
    i = int(wrong[0])
    more = (" and claims a certificate the sound rule refuses" if bool(got[i]) else
            " and misses a certificate the sound rule gives")
    checker.require(False, f"on {case}: {len(wrong)} of {len(y)} answers differ; example {i} gets {bool(got[i])}{more}")


def check_sound_cascade_certificate(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``sound_cascade_certificate(stages, x, y, eps) -> (N,) bool`` on three-stage cascades
    of tiny random 2-D networks (seeds 4 and 7, 300 points each, eps 0.05 and 0.15, some labels wrong on purpose)
    and on a two-stage cascade of shipped MNIST models (12 test images, eps 0.1). A function that calls
    the library's own sound certificate (:data:`FORBIDDEN`) fails: the exercise is to write it."""
    checker = Checker("sound_cascade_certificate", student_fn, verbose, forbid=FORBIDDEN)
    for seed, eps in ((4, 0.05), (7, 0.15)):
        stages, x, y = _toy_case(seed)
        case = f"three tiny 2-D stages (seed {seed}), eps = {eps}"
        got = checker.call(case, stages, x.clone(), y.clone(), eps, _no_grad=True)
        if not checker.started:
            return checker.finish()
        if got is not None:
            _compare(checker, case, got, stages, x, y, eps)
    stages, x, y = _mnist_case()
    case = "12 MNIST test images, stages mnist_small_robust_full then mnist_small_robust, eps = 0.1"
    got = checker.call(case, stages, x.clone(), y.clone(), 0.1, _no_grad=True)
    if got is not None:
        _compare(checker, case, got, stages, x, y, 0.1)
    return checker.finish()
