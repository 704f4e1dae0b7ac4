"""What every attack shares: input validation, the margin, helpers and the two base classes.

* :class:`Attack` -- the eps-free base. ``attack(model, x, y, target=None) -> x_adv`` validates
  the inputs (:func:`check_inputs`: model in eval mode, finite inputs inside the box ``clip``, of
  the model's dtype and input shape, labels in range), moves them to the model's device and
  calls the subclass's ``_perturb``.
* :class:`NormBallAttack` -- an attack with a budget: ``eps`` (in input units) in the ``norm``
  ("linf" or "l2"), and :meth:`NormBallAttack.project` onto the eps-ball and the box.

Shapes: x (N, C, H, W) (any (N, ...) works) with values in the box, by default the pixel box
[0, 1]; y (N,) integer labels; target (N,) integer target classes or None.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import validation as V

__all__ = ["Box", "NORMS", "check_inputs", "margin", "random_targets", "Attack", "NormBallAttack"]

#: The input box (low, high) an attack keeps its outputs in; None: no box.
Box = Optional[Tuple[float, float]]

#: The norms a :class:`NormBallAttack` supports.
NORMS: Tuple[str, ...] = ("linf", "l2")


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Optional[float] = None,
                 clip: Box = (0.0, 1.0), target: Optional[torch.Tensor] = None) -> None:
    """Raise a clear error for inputs no attack should silently accept.

    ``model`` must be in eval mode (``RuntimeError``). Then the checks of
    :func:`tutorial_lib.validation.check_batch`: x (N, ...) a finite floating tensor of the
    model's weights' dtype and of an input shape the model accepts (one forward pass of x[:1]
    finds the number of classes K); y (N,) integer labels in [0, K); target None or (N,) integer
    classes in [0, K). Last, ``eps`` (None for an attack without a budget) a finite number >= 0
    (:func:`tutorial_lib.validation.check_eps`; the warning about an eps as wide as the box is
    given once, when the attack is built) and x inside the box ``clip`` (if not None).
    """
    if model.training:
        raise RuntimeError("the model is in training mode; call model.eval() before attacking it "
                           "(dropout/batch-norm would make the attack see a different function)")
    if not torch.is_tensor(x) or not torch.is_tensor(y):
        raise TypeError("x and y must be tensors")
    V.check_batch(model, x, y, target)
    if eps is not None:
        V.check_eps(eps, clip, warn=False)
    if clip is not None:
        lo, hi = clip
        if x.numel() and (x.min().item() < lo - 1e-6 or x.max().item() > hi + 1e-6):
            raise ValueError(f"inputs must lie in [{lo}, {hi}] (got min {x.min().item():.4g}, "
                             f"max {x.max().item():.4g}); normalisation belongs inside the model")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per example (N,) for logits (N, K), y (N,): negative means
    misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -float("inf"))
    return true - other.max(1).values


def random_targets(y: torch.Tensor, classes: int, seed: Optional[int]) -> torch.Tensor:
    """A target class != y per example (N,), uniform over the other ``classes - 1`` classes.

    Reproducible: drawn on the CPU from a generator seeded with ``seed`` (None counts as 0); the
    result is a CPU long tensor.
    """
    gen = torch.Generator()
    gen.manual_seed(0 if seed is None else int(seed))
    shift = torch.randint(1, classes, (len(y),), generator=gen)
    return (y.cpu() + shift) % classes


def _per_example_loss(logits: torch.Tensor, y: torch.Tensor,
                      target: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-example (N,) loss an attack maximises: cross-entropy to y, or minus that to target."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _margin_to(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    """The attacker's margin objective (N,), to be maximised; success iff it is > 0 (ties aside).

    Untargeted: ``max_{j != y} z_j - z_y``; targeted: ``z_t - max_{j != t} z_j``. On logits, not
    on the softmax, so it does not vanish when the softmax saturates (Carlini & Wagner 2017).
    """
    return -margin(logits, y) if target is None else margin(logits, target)


def _broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example vector (N,) viewed as (N, 1, ..., 1) to broadcast against x (N, ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


class Attack(ABC):
    """Base class of every attack, without a perturbation budget.

    ``attack(model, x, y, target=None) -> x_adv``: subclasses implement
    ``_perturb(model, x, y, target) -> x_adv``, which receives validated, detached inputs on the
    model's device. ``clip`` is the input box (low, high) the outputs stay in (None: no box).
    """

    def __init__(self, clip: Box = (0.0, 1.0)):
        if clip is not None and not clip[0] < clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {clip}")
        self.clip = clip

    def _budget(self) -> Optional[float]:
        """The attack's eps, checked with the inputs; None for an attack without one."""
        return None

    def _prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Validate (:func:`check_inputs`) and move x, y, target to the model's device."""
        check_inputs(model, x, y, self._budget(), self.clip, target)
        device = next(model.parameters()).device
        target = target.to(device, torch.long) if target is not None else None
        return x.to(device), y.to(device, torch.long), target

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Adversarial inputs (N, ...) for x (N, C, H, W) in the box, labels y (N,) and, if
        targeted, target classes (N,); on the model's device, detached. The model must be in
        eval mode."""
        x, y, target = self._prepare(model, x, y, target)
        if self._budget() == 0:
            return x.clone()
        return self._perturb(model, x.detach(), y, target).detach()

    @abstractmethod
    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        """Adversarial inputs for validated x (N, ...) on the model's device."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class NormBallAttack(Attack):
    """An attack whose outputs stay in the ``norm``-ball of radius ``eps`` around x, and in the box.

    ``eps`` is in input units (pixel values in [0, 1] for images): a per-pixel bound for
    ``norm="linf"``, a bound on the Euclidean norm of the whole perturbation for ``norm="l2"``.
    ``eps = 0`` returns x unchanged. Any norm outside :data:`NORMS` is refused; so is an eps that is
    not a number (``TypeError``), or NaN, infinite or negative (``ValueError``). An l-inf eps at
    least as wide as the box (8 for 8/255) is accepted with a ``UserWarning``: every point of the
    box is then reachable.
    """

    def __init__(self, eps: float, *, norm: str = "linf", clip: Box = (0.0, 1.0)):
        if torch.is_tensor(eps) and eps.dim() != 0:
            raise TypeError(f"eps must be a single number, got a tensor of shape {tuple(eps.shape)}")
        self.eps = float(V.check_eps(eps, None))
        super().__init__(clip)
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}: the known norms are "
                             + ", ".join(repr(n) for n in NORMS))
        V.check_eps(self.eps, clip, norm)  # only warns: an l-inf eps as wide as the box
        self.norm = norm

    def _budget(self) -> Optional[float]:
        return self.eps

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_adv (N, ...) projected onto the eps-ball around x (N, ...), then clamped to the box."""
        if self.norm == "linf":
            x_adv = torch.max(torch.min(x_adv, x + self.eps), x - self.eps)
        elif self.norm == "l2":
            delta = x_adv - x
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * _broadcast(torch.clamp(self.eps / norms, max=1.0), delta)
            x_adv = x + delta
        else:  # only reachable if norm was changed after construction
            raise ValueError(f"unknown norm {self.norm!r}: the known norms are "
                             + ", ".join(repr(n) for n in NORMS))
        if self.clip is not None:
            x_adv = x_adv.clamp(*self.clip)
        return x_adv
