"""Attacks with one call shape: ``attack(model, x, y, target=None) -> x_adv``.

An attack is an object holding its parameters (eps, steps, ...); calling it on a model, inputs
x (N, ...) and labels y (N,) returns adversarial inputs of the same shape, inside the eps-ball
around x and inside the input box (``clip``, default the pixel box [0, 1]). With ``target``
(N,) the attack is targeted: it pushes each input toward its target class.

The model must be in eval mode: an attack on a model in training mode would see dropout
noise and update batch statistics, so the attacks refuse it (use ``model.eval()``, or
``training.eval_mode(model)`` inside a training step).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["Attack", "FGSM", "PGD", "evaluate", "margin", "check_inputs"]

Box = Optional[Tuple[float, float]]


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, clip: Box,
                 target: Optional[torch.Tensor] = None) -> None:
    """Raise a clear error for inputs no attack should silently accept."""
    if model.training:
        raise RuntimeError("the model is in training mode; call model.eval() before attacking it "
                           "(dropout/batch-norm would make the attack see a different function)")
    if not torch.is_tensor(x) or not torch.is_tensor(y):
        raise TypeError("x and y must be tensors")
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension, shape (N, ...); got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x {tuple(x.shape)}; got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if target is not None and (target.dim() != 1 or target.shape[0] != x.shape[0]):
        raise ValueError(f"target must have shape ({x.shape[0]},); got {tuple(target.shape)}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if clip is not None:
        lo, hi = clip
        if x.numel() and (x.min().item() < lo - 1e-6 or x.max().item() > hi + 1e-6):
            raise ValueError(f"inputs must lie in [{lo}, {hi}] (got min {x.min().item():.4g}, "
                             f"max {x.max().item():.4g}); normalisation belongs inside the model")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per example (N,): negative means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -float("inf"))
    return true - other.max(1).values


def _per_example_loss(logits, y, target):
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


class Attack:
    """Base class: subclasses implement ``_perturb(model, x, y, target) -> x_adv``."""

    norm = "linf"

    def __init__(self, eps: float, clip: Box = (0.0, 1.0)):
        if not math.isfinite(float(eps)) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        if clip is not None and not clip[0] < clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {clip}")
        self.eps, self.clip = float(eps), clip

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_inputs(model, x, y, self.eps, self.clip, target)
        device = next(model.parameters()).device
        x, y = x.to(device), y.to(device)
        target = target.to(device) if target is not None else None
        if self.eps == 0:
            return x.clone()
        return self._perturb(model, x.detach(), y, target).detach()

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            x_adv = torch.max(torch.min(x_adv, x + self.eps), x - self.eps)
        else:
            delta = x_adv - x
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * _broadcast(torch.clamp(self.eps / norms, max=1.0), delta)
            x_adv = x + delta
        if self.clip is not None:
            x_adv = x_adv.clamp(*self.clip)
        return x_adv

    def _perturb(self, model, x, y, target):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps along sign(grad)."""

    def _perturb(self, model, x, y, target):
        x_req = x.clone().requires_grad_(True)
        loss = _per_example_loss(model(x_req), y, target).sum()
        (grad,) = torch.autograd.grad(loss, x_req)
        return self._project(x + self.eps * grad.sign(), x)


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) in l-inf or l2.

    ``steps`` steps of size ``alpha`` (default 2.5 * eps / steps) on the cross-entropy, each
    followed by projection onto the eps-ball and the box. ``random_start`` starts from a uniform
    point of the ball. With ``restarts`` > 1 the attack is repeated from fresh random starts and,
    per example, the worst result is kept: a misclassified (or, targeted, on-target) point first,
    then the highest loss. ``seed`` fixes the random starts (restart 0 of a run with ``restarts=k``
    equals a run with ``restarts=1`` and the same seed).
    """

    def __init__(self, eps: float, alpha: Optional[float] = None, steps: int = 40,
                 restarts: int = 1, norm: str = "linf", random_start: bool = True,
                 clip: Box = (0.0, 1.0), seed: Optional[int] = 0):
        super().__init__(eps, clip)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {restarts}")
        alpha = 2.5 * eps / steps if alpha is None else alpha
        if not (alpha > 0 or (alpha == 0 and eps == 0)):
            raise ValueError(f"step size alpha must be > 0, got {alpha}")
        self.alpha, self.steps, self.restarts = float(alpha), int(steps), int(restarts)
        self.norm, self.random_start, self.seed = norm, bool(random_start), seed

    def _random_start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1
            return self._project(x + self.eps * noise, x)
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=gen, device=x.device)
        direction = direction / _broadcast(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        radius = torch.rand(x.shape[0], generator=gen, device=x.device) ** (1.0 / d) * self.eps
        return self._project(x + direction * _broadcast(radius, x), x)

    def _run(self, model, x, y, target, gen):
        x_adv = self._random_start(x, gen) if self.random_start else x.clone()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = _per_example_loss(model(x_adv), y, target).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / _broadcast(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
                x_adv = self._project(x_adv + self.alpha * step, x)
        with torch.no_grad():
            logits = model(x_adv)
            loss = _per_example_loss(logits, y, target)
            success = logits.argmax(1) != y if target is None else logits.argmax(1) == target
        return x_adv.detach(), success, loss

    def _perturb(self, model, x, y, target):
        gen = torch.Generator(device=x.device)
        if self.seed is not None:
            gen.manual_seed(self.seed)
        else:
            gen.seed()
        best, best_success, best_loss = self._run(model, x, y, target, gen)
        for _ in range(self.restarts - 1):
            x_adv, success, loss = self._run(model, x, y, target, gen)
            better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
            best = torch.where(_broadcast(better, x), x_adv, best)
            best_success, best_loss = best_success | success, torch.where(better, loss, best_loss)
        return best


def evaluate(model: nn.Module, data: Union[DataLoader, Tuple[torch.Tensor, torch.Tensor]],
             attacks: Optional[Mapping[str, Callable]] = None, batch_size: int = 500,
             progress: bool = True, device=None) -> Dict[str, float]:
    """Accuracy (in [0, 1]) clean and under each attack: ``{"clean": a0, name: a, ...}``.

    ``data`` is a DataLoader or an (x, y) pair (split into batches of ``batch_size``).
    An example counts as robust under an attack if the model classifies the attack's output
    correctly. The model is put in eval mode for the evaluation and restored afterwards.
    """
    attacks = dict(attacks or {})
    if "clean" in attacks:
        raise ValueError("'clean' is reserved for clean accuracy; rename that attack")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if isinstance(data, (tuple, list)):
        x_all, y_all = data
        if len(x_all) != len(y_all):
            raise ValueError(f"x and y differ in length: {len(x_all)} vs {len(y_all)}")
        batches = [(x_all[i:i + batch_size], y_all[i:i + batch_size]) for i in range(0, len(x_all), batch_size)]
    else:
        batches = data
    correct = {name: 0 for name in ["clean", *attacks]}
    total = 0
    was_training = model.training
    model.eval()
    try:
        it = batches
        if progress and tqdm is not None:
            it = tqdm(batches, desc="evaluate", leave=False)
        for xb, yb in it:
            xb, yb = xb.to(device), yb.to(device)
            with torch.no_grad():
                correct["clean"] += (model(xb).argmax(1) == yb).sum().item()
            for name, attack in attacks.items():
                x_adv = attack(model, xb, yb)
                with torch.no_grad():
                    correct[name] += (model(x_adv).argmax(1) == yb).sum().item()
            total += len(yb)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("no examples to evaluate")
    return {name: c / total for name, c in correct.items()}


def accuracy_vs_eps(model: nn.Module, data: Tuple[torch.Tensor, torch.Tensor], eps_values,
                    make_attack: Callable[[float], Callable], progress: bool = False) -> list:
    """Robust accuracy (in [0, 1]) for each eps: ``[evaluate(model, data, {a: make_attack(eps)})[a]]``.
    ``make_attack(eps)`` builds the attack for one radius, e.g. ``lambda e: PGD(e, steps=20)``."""
    out = []
    for eps in eps_values:
        out.append(evaluate(model, data, {"attack": make_attack(float(eps))}, progress=progress)["attack"])
    return out


__all__ += ["accuracy_vs_eps"]
