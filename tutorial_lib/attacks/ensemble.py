"""The AutoAttack protocol (Croce & Hein 2020): run several diverse attacks, keep the worst case.

:func:`evaluate_ensemble` classifies the clean inputs first, then runs the attacks in order, each
only on the examples still robust: an example is robust iff the model classifies it correctly
clean and no attack found an adversarial input for it. Every attack therefore sees fewer
examples than the one before, and the robust accuracy after the last one is an upper bound on
the true robust accuracy that is at most that of each attack alone (up to the randomness of the
attacks, which draw their random numbers per batch).

The default ensemble, :func:`default_ensemble`, is AutoAttack's "standard" version without
FAB-T: APGD-CE, APGD-T (9 target classes) and Square (5000 queries), all parameter-free. FAB-T,
a minimum-norm attack in AutoAttack's list, is not included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional

import torch
from torch import nn

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

from .apgd import APGD, APGDTargeted
from .base import Box, check_inputs
from .square import Square

__all__ = ["EnsembleResult", "default_ensemble", "evaluate_ensemble"]

#: Anything called as ``attack(model, x, y) -> x_adv`` (every :class:`Attack` is).
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EnsembleResult:
    """What :func:`evaluate_ensemble` found, for N examples and the attacks in the order run.

    * ``clean_accuracy``, ``robust_accuracy``: fractions in [0, 1] of the N examples;
    * ``accuracy_after``: {attack name: robust accuracy after that attack and all before it}
      (cumulative, non-increasing);
    * ``attacked``: {name: how many examples the attack was run on (the ones still robust)};
    * ``breaks``: {name: how many of those it broke} (its standalone count on what it saw);
    * ``clean_correct``, ``robust``: (N,) bool tensors;
    * ``x_adv``: (N, ...) the adversarial input where an attack broke the example, else x;
    * ``broken_by``: (N,) list: the name of the attack that broke the example, ``"clean"`` if the
      model misclassifies it clean, None if it is robust.
    """

    clean_accuracy: float
    robust_accuracy: float
    accuracy_after: Dict[str, float]
    attacked: Dict[str, int]
    breaks: Dict[str, int]
    clean_correct: torch.Tensor
    robust: torch.Tensor
    x_adv: torch.Tensor
    broken_by: List[Optional[str]] = field(repr=False)

    def table(self) -> str:
        """A Markdown table: one row per attack (examples attacked, broken, cumulative accuracy)."""
        lines = ["| attack | attacked | broken | robust accuracy after |", "|---|---|---|---|",
                 f"| clean | {len(self.robust)} | {len(self.robust) - int(self.clean_correct.sum())} | "
                 f"{100 * self.clean_accuracy:.1f}% |"]
        for name, acc in self.accuracy_after.items():
            lines.append(f"| {name} | {self.attacked[name]} | {self.breaks[name]} | {100 * acc:.1f}% |")
        return "\n".join(lines)


def default_ensemble(eps: float, norm: str = "linf", seed: Optional[int] = 0, steps: int = 100,
                     n_targets: int = 9, n_queries: int = 5000, p_init: float = 0.8,
                     clip: Box = (0.0, 1.0)) -> Dict[str, AttackFn]:
    """AutoAttack's standard ensemble without FAB-T, for radius ``eps`` (input units) in ``norm``:
    ``{"APGD-CE": APGD(eps, steps=100), "APGD-T": APGDTargeted(eps, steps=100, n_targets=9),
    "Square": Square(eps, n_queries=5000, p_init=0.8)}``, all seeded with ``seed``."""
    return {
        "APGD-CE": APGD(eps, norm=norm, steps=steps, loss="ce", seed=seed, clip=clip),
        "APGD-T": APGDTargeted(eps, norm=norm, steps=steps, n_targets=n_targets, seed=seed, clip=clip),
        "Square": Square(eps, norm=norm, n_queries=n_queries, p_init=p_init, seed=seed, clip=clip),
    }


def evaluate_ensemble(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      attacks: Optional[Mapping[str, AttackFn]] = None, batch_size: int = 500,
                      seed: Optional[int] = 0, progress: bool = True, eps: Optional[float] = None,
                      norm: str = "linf", clip: Box = (0.0, 1.0)) -> EnsembleResult:
    """Worst-case robust accuracy of ``model`` on x (N, C, H, W) in the box ``clip``, labels y (N,),
    under the ensemble ``attacks`` ({name: attack}, run in order), AutoAttack's protocol.

    The clean predictions come first; then each attack is called as ``attack(model, xb, yb)`` on
    batches of at most ``batch_size`` of the examples still robust (clean-correct and not broken
    by an earlier attack), and an example counts as broken when the model misclassifies the
    attack's output (checked here with a fresh forward pass). ``attacks`` None: the default
    ensemble for ``eps`` (required then) and ``norm``, seeded with ``seed``
    (:func:`default_ensemble`: APGD-CE, APGD-T, Square; FAB-T is not included); given attacks keep
    their own seeds. The model must be in eval mode and the inputs valid (:func:`check_inputs`).
    Returns an :class:`EnsembleResult`; ``x_adv`` and the masks are on x's device.
    """
    if attacks is None:
        if eps is None:
            raise ValueError("give either attacks or eps (the radius of the default ensemble)")
        attacks = default_ensemble(eps, norm=norm, seed=seed, clip=clip)
    attacks = dict(attacks)
    if "clean" in attacks:
        raise ValueError("'clean' is reserved for the clean predictions; rename that attack")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    check_inputs(model, x, y, None, clip)
    n = len(x)
    if n == 0:
        raise ValueError("no examples to evaluate")
    device = next(model.parameters()).device
    y = y.long()

    clean_correct = torch.zeros(n, dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            clean_correct[i:i + batch_size] = (model(xb).argmax(1) == yb).to(x.device)
    robust = clean_correct.clone()
    x_adv = x.clone()
    broken_by: List[Optional[str]] = [None if ok else "clean" for ok in clean_correct.tolist()]
    accuracy_after: Dict[str, float] = {}
    attacked: Dict[str, int] = {}
    breaks: Dict[str, int] = {}
    bar = None
    if progress and tqdm is not None:
        bar = tqdm(total=len(attacks), desc="ensemble", leave=False)
    for name, attack in attacks.items():
        todo = robust.nonzero().flatten()
        attacked[name], breaks[name] = len(todo), 0
        for i in range(0, len(todo), batch_size):
            part = todo[i:i + batch_size]
            xb, yb = x[part].to(device), y[part].to(device)
            adv = attack(model, xb, yb).detach()
            with torch.no_grad():
                fooled = (model(adv.to(device)).argmax(1) != yb).to(x.device)
            hit = part[fooled]
            x_adv[hit] = adv[fooled.to(adv.device)].to(x.device, x.dtype)
            robust[hit] = False
            for j in hit.tolist():
                broken_by[j] = name
            breaks[name] += int(fooled.sum())
        accuracy_after[name] = robust.float().mean().item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(robust=f"{100 * accuracy_after[name]:.1f}%")
    if bar is not None:
        bar.close()
    return EnsembleResult(clean_accuracy=clean_correct.float().mean().item(),
                          robust_accuracy=robust.float().mean().item(), accuracy_after=accuracy_after,
                          attacked=attacked, breaks=breaks, clean_correct=clean_correct, robust=robust,
                          x_adv=x_adv, broken_by=broken_by)
