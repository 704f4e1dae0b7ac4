"""Checkers of notebook 00 (set-up and baseline): ``uniform_noise_in_ball`` and ``accuracy``.

Both run on small synthetic cases (seeded, no data set needed) and compare with the library:
the random start of :class:`tutorial_lib.attacks.PGD` and :func:`tutorial_lib.training.accuracy`. A
student's function that calls those (or ``training.predict``), under any name, fails.
"""
from __future__ import annotations

from typing import Callable, List

import torch
from torch import nn

from ..attacks import PGD
from ..runtime import accuracy as library_accuracy, predict as library_predict
from .checking import Checker, CheckResult

__all__ = ["check_uniform_noise_in_ball", "check_accuracy"]


def _images(n: int, seed: int) -> torch.Tensor:
    """n synthetic 1x28x28 "images" in [0, 1], many pixels exactly 0 or 1 (as in MNIST)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 1.6 - 0.3).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# uniform_noise_in_ball
# --------------------------------------------------------------------------------------------

def check_uniform_noise_in_ball(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``uniform_noise_in_ball(x, eps, generator) -> x_noisy``.

    Expected: ``x + eps * (2u - 1)`` with ``u = torch.rand(x.shape, generator=generator)``, clamped
    to [0, 1]: exactly the random start of ``PGD(eps)`` (l-inf) from the same seed.
    """
    # PGD draws this very noise as its random start: calling it would answer the exercise in one call
    checker = Checker("uniform_noise_in_ball", student_fn, verbose, forbid=[PGD])
    x = _images(6, seed=100)  # a seed the noise generators below do not use
    for eps, seed in ((0.3, 0), (0.1, 1)):
        x_before = x.clone()
        out = checker.call(f"6 images with eps={eps}", x, eps, torch.Generator().manual_seed(seed))
        if out is None:  # it raised: already reported
            break
        checker.require(torch.equal(x, x_before),
                        "your function changed x in place: build a new tensor (x + noise), do not add to x")
        x = x_before
        expected = PGD(eps)._random_start(x, torch.Generator().manual_seed(seed))
        if not checker.tensor_close(f"the noisy images (eps={eps})", out, expected, atol=1e-6):
            if isinstance(out, torch.Tensor) and out.shape == x.shape:
                _noise_hints(checker, out.detach().float(), x, eps)
            break  # one wrong case says enough
    # the same seed must give the same noise: the randomness comes from the generator
    if checker.started and not checker.problems:
        a = checker.call("a second call with the same seed", x, 0.2, torch.Generator().manual_seed(5))
        b = checker.call("a third call with the same seed", x, 0.2, torch.Generator().manual_seed(5))
        if a is not None and b is not None:
            checker.require(torch.equal(a, b), "two calls with identically seeded generators gave different "
                                               "noise: draw the noise from `generator`, not the global RNG")
    return checker.finish()


def _noise_hints(checker: Checker, out: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    """Say what is wrong with noise that is not the expected one."""
    delta = out - x
    before = len(checker.problems)
    checker.require(out.min() >= -1e-6 and out.max() <= 1 + 1e-6,
                    "some pixels are outside [0, 1]: clamp the noisy image to the pixel box")
    checker.require(delta.abs().max() <= eps + 1e-6,
                    f"some pixels moved by more than eps={eps}: the noise must lie in [-eps, eps] "
                    f"(Gaussian noise, or a range wider than 2 * eps, leaves the ball)")
    inside = (x > eps) & (x < 1 - eps)  # pixels the box does not clip
    d = delta[inside]
    checker.require((d < 0).any() and (d > 0).any(),
                    "your noise has only one sign: draw it from [-eps, eps] (2u - 1 with u in [0, 1)), "
                    "not from [0, eps]")
    checker.require(d.abs().max() > 0.9 * eps,
                    f"your noise never comes near eps={eps} (largest change {d.abs().max():.3g}): "
                    f"scale a uniform draw in [-1, 1] by eps")
    if len(checker.problems) == before:  # a valid point of the ball, but not the draw asked for
        checker.require(False, "your noise lies in the ball but is not the expected draw: use "
                               "u = torch.rand(x.shape, generator=generator) once, then x + eps * (2 * u - 1), "
                               "then clamp to [0, 1]")


# --------------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------------

class _Recorder(nn.Module):
    """Wraps a model and records, per forward pass: batch size, training mode, grad mode."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.calls: List[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((len(x), self.training, torch.is_grad_enabled()))
        return self.net(x)


def _dropout_model() -> _Recorder:
    """A small seeded classifier of 1x28x28 inputs into 4 classes, with dropout (so that the
    training mode changes its predictions)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 4))
    return _Recorder(net)


def check_accuracy(student_fn: Callable, verbose: bool = True) -> CheckResult:
    """Check ``accuracy(model, x, y, batch_size=100) -> float``: the fraction in [0, 1] of examples
    whose predicted class (argmax of the logits) equals the label, computed in eval mode, without
    gradients, in batches of at most ``batch_size``; compared with
    :func:`tutorial_lib.training.accuracy`."""
    checker = Checker("accuracy", student_fn, verbose, forbid=[library_accuracy, library_predict])
    model = _dropout_model()
    x = _images(250, seed=101)
    g = torch.Generator().manual_seed(2)
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    # about 60 % right: the true prediction for some examples, a random label for the others
    y = torch.where(torch.rand(250, generator=g) < 0.6, pred, torch.randint(0, 4, (250,), generator=g))
    expected = library_accuracy(model, (x, y))
    for batch_size in (100, 64):
        model.calls.clear()
        model.train()  # as a model is right after training: the function must switch to eval mode
        out = checker.call(f"250 examples in batches of {batch_size}", model, x, y, batch_size)
        if out is None:  # it raised: already reported
            break
        if torch.is_tensor(out) and out.numel() == 1:
            checker.require(False, "you returned a tensor: return a Python float (use .item())")
            out = out.item()
        if not checker.require(isinstance(out, (float, int)),
                               f"expected a float, got {type(out).__name__}"):
            continue
        sizes = [c[0] for c in model.calls]
        checker.require(not any(c[1] for c in model.calls),
                        "the model ran in training mode: call model.eval() first (dropout and batch "
                        "norm behave differently during training)")
        checker.require(not any(c[2] for c in model.calls),
                        "gradients were being tracked: evaluate inside `with torch.no_grad():` "
                        "(evaluation needs no gradients, and they cost memory)")
        checker.require(max(sizes, default=0) <= batch_size,
                        f"the model received {max(sizes, default=0)} examples at once: evaluate in "
                        f"batches of at most batch_size={batch_size}")
        checker.require(sum(sizes) == len(x),
                        f"the model saw {sum(sizes)} examples in all, not {len(x)}: every example once "
                        f"(is the last, smaller batch missing?)")
        if out > 1:
            checker.require(False, f"you returned {out:g}: that looks like a percentage; return a "
                                   f"fraction in [0, 1]")
        else:
            checker.require(abs(out - expected) < 1e-6,
                            f"accuracy {out:.4f}, expected {expected:.4f} (the fraction of examples "
                            f"whose argmax logit is the label)")
        if checker.problems:
            break  # one wrong case says enough
    return checker.finish()
