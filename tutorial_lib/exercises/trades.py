"""Checkers for notebook 03 (TRADES).

* :func:`check_trades_kl` -- the boundary term of the TRADES loss, KL(f(x) || f(x')) averaged
  over the batch, from the clean and the adversarial logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checking import Checker, CheckResult

__all__ = ["check_trades_kl"]

_BATCH, _CLASSES = 8, 10


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) summed over the classes, per example (N,)."""
    return (F.softmax(p_logits, 1) * (F.log_softmax(p_logits, 1) - F.log_softmax(q_logits, 1))).sum(1)


def _diagnose(got: torch.Tensor, clean: torch.Tensor, adv: torch.Tensor) -> str:
    """A sentence naming the usual mistake that ``got`` matches, or '' if none does."""
    n, k = clean.shape
    right = _kl(clean, adv)
    known = [
        (_kl(adv, clean).mean(), "you computed KL(f(x') || f(x)), the divergence the other way round: TRADES "
                                 "weighs by the clean prediction, sum_k p_k(x) * (log p_k(x) - log p_k(x')); with "
                                 "F.kl_div the first argument is the log-probabilities of x', the second the "
                                 "probabilities of x"),
        (right.mean() / k, "your value is the right one divided by the number of classes: F.kl_div's "
                           "reduction='mean' averages over every entry; sum over the classes, then average over "
                           "the batch (reduction='batchmean')"),
        (right.sum(), "your value is the sum over the batch: average over the examples (divide by the batch "
                      "size, or reduction='batchmean')"),
        (F.kl_div(F.softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean"),
         "F.kl_div expects log-probabilities as its first argument (F.log_softmax of the adversarial "
         "logits), not probabilities"),
        (F.kl_div(F.log_softmax(adv, 1), F.log_softmax(clean, 1), reduction="batchmean"),
         "the second argument of F.kl_div must be probabilities (F.softmax of the clean logits), not "
         "log-probabilities (or pass log_target=True)"),
    ]
    for value, sentence in known:
        if torch.allclose(got, value, atol=1e-5, rtol=1e-4):
            return sentence
    return ""


def _close(checker: Checker, what: str, got, expected: torch.Tensor, clean, adv) -> bool:
    """Scalar comparison, naming the mistake when it is a known one."""
    if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dim() > 0:
        checker.cases += 1
        checker.problems.append(f"{what}: return one number (a 0-dim tensor, e.g. .sum() / n), not a tensor "
                                f"of shape {tuple(got.shape)}")
        return False
    if isinstance(got, torch.Tensor) and got.dim() == 0 and torch.isfinite(got) and \
            not torch.allclose(got.detach().float(), expected, atol=1e-5, rtol=1e-4):
        why = _diagnose(got.detach().float(), clean, adv)
        if why:
            checker.cases += 1
            checker.problems.append(f"{what}: {why}")
            return False
    return checker.tensor_close(what, got, expected, atol=1e-5, rtol=1e-4)


def check_trades_kl(student_fn, verbose: bool = True) -> CheckResult:
    """Check ``trades_kl(logits_clean, logits_adv) -> 0-dim tensor``: the batch mean of
    KL(softmax(logits_clean) || softmax(logits_adv)), as TRADES' loss computes it."""
    from ..checkpoints import load_checkpoint
    from ..data import test_subset
    from ..defenses.trades import TradesLoss, trades_attack

    # the term is inline in TradesLoss (no function of its own); a call to the loss (or its inner
    # attack) could still be bent to hand it back: refused, the exercise is to write the KL
    checker = Checker("trades_kl", student_fn, verbose, forbid=[TradesLoss, trades_attack])
    gen = torch.Generator().manual_seed(3)
    clean = 3 * torch.randn(_BATCH, _CLASSES, generator=gen)
    adv = clean + 2 * torch.randn(_BATCH, _CLASSES, generator=gen)
    expected = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")

    # 1. random logits: the value, and the usual mistakes named
    out = checker.call("random logits (8 examples, 10 classes)", clean.clone(), adv.clone())
    if out is not None:
        _close(checker, "KL on random logits", out, expected, clean, adv)

    # 2. the same prediction on both sides: no divergence
    out = checker.call("equal clean and adversarial logits", clean.clone(), clean.clone())
    if out is not None:
        checker.tensor_close("KL(f(x) || f(x)) (must be 0)", out, torch.tensor(0.0), atol=1e-6)

    # 3. the gradient must reach the adversarial logits (it trains the network)
    adv_req = adv.clone().requires_grad_(True)
    out = checker.call("logits that require a gradient", clean.clone(), adv_req)
    if out is not None:
        has_grad = isinstance(out, torch.Tensor) and out.requires_grad
        ok = checker.require(has_grad, "your KL carries no gradient back to the logits: no .item(), .detach(), "
                                       "numpy or torch.no_grad() inside the function (the loss trains the "
                                       "network through it)")
        right = ok and out.dim() == 0 and torch.allclose(out.detach().float(), expected, atol=1e-5, rtol=1e-4)
        if right:  # a wrong value is reported by case 1 already
            (g,) = torch.autograd.grad(out, adv_req)
            adv_ref = adv.clone().requires_grad_(True)
            (g_ref,) = torch.autograd.grad(F.kl_div(F.log_softmax(adv_ref, 1), F.softmax(clean, 1),
                                                    reduction="batchmean"), adv_ref)
            checker.tensor_close("the gradient of your KL with respect to the adversarial logits", g, g_ref,
                                 atol=1e-6)

    # 4. a real network: the boundary term of the library's TradesLoss (same RNG, same attack)
    if checker.started:
        model = load_checkpoint("mnist_small_trades_b1", device="cpu")[0].eval()
        x, y = test_subset("mnist", 16)
        eps, alpha, steps = 0.3, 0.04, 5
        with torch.random.fork_rng():
            torch.manual_seed(0)
            x_adv = trades_attack(model, x, eps, alpha, steps)
            torch.manual_seed(0)
            total, logits = TradesLoss(beta=1.0, eps=eps, alpha=alpha, steps=steps)(model, x, y)
        with torch.no_grad():
            logits = logits.detach()
            boundary = total.detach() - F.cross_entropy(logits, y)  # TradesLoss = CE + beta * KL, beta = 1
            logits_adv = model(x_adv)
        out = checker.call("the TRADES model (beta = 1) on 16 test images", logits.clone(), logits_adv.clone())
        if out is not None:
            _close(checker, "KL term of tutorial_lib.defenses.TradesLoss", out, boundary, logits, logits_adv)
    return checker.finish()
