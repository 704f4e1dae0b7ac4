"""Clean and robust accuracy of a model under a set of attacks."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

from .. import validation as V

__all__ = ["evaluate", "robust_masks", "accuracy_vs_eps"]

#: Anything called as ``attack(model, x, y) -> x_adv`` (every :class:`Attack` is).
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def robust_masks(model: nn.Module, data: Union[DataLoader, Tuple[torch.Tensor, torch.Tensor]],
                 attacks: Optional[Mapping[str, AttackFn]] = None, batch_size: int = 500,
                 progress: bool = True, device: Union[str, torch.device, None] = None,
                 desc: str = "evaluate") -> Dict[str, torch.Tensor]:
    """Per example, who survives: ``{"clean": ok0, name: ok, ...}``, each a bool tensor (N,) on the CPU.

    ``ok0[i]``: the model classifies example i correctly; ``ok[i]`` (one per attack): correctly
    both clean *and* on the attack's output (the robust-accuracy rule of :func:`evaluate`). The
    per-example worst case over several attacks is the logical AND of their masks. Same
    arguments, checks and eval-mode handling as :func:`evaluate`.
    """
    attacks = dict(attacks or {})
    if "clean" in attacks:
        raise ValueError("'clean' is reserved for clean accuracy; rename that attack")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if isinstance(data, (tuple, list)):
        x_all, y_all = data
        if len(x_all) != len(y_all):
            raise ValueError(f"x and y differ in length: {len(x_all)} vs {len(y_all)}")
        batches: Iterable = [(x_all[i:i + batch_size], y_all[i:i + batch_size])
                             for i in range(0, len(x_all), batch_size)]
    else:
        batches = data
    masks: Dict[str, List[torch.Tensor]] = {name: [] for name in ["clean", *attacks]}
    total = 0
    was_training = model.training
    model.eval()
    try:
        it = batches
        if progress and tqdm is not None:
            it = tqdm(batches, desc=desc, leave=False)
        for xb, yb in it:
            V.check_batch(model, xb, yb, offset=total)
            xb, yb = xb.to(device), yb.to(device)
            with torch.no_grad():
                clean_ok = model(xb).argmax(1) == yb
            masks["clean"].append(clean_ok.cpu())
            for name, attack in attacks.items():
                x_adv = attack(model, xb, yb)
                with torch.no_grad():
                    adv_ok = model(x_adv.to(device)).argmax(1) == yb
                masks[name].append((clean_ok & adv_ok).cpu())
            total += len(yb)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("no examples to evaluate")
    return {name: torch.cat(m) for name, m in masks.items()}


def evaluate(model: nn.Module, data: Union[DataLoader, Tuple[torch.Tensor, torch.Tensor]],
             attacks: Optional[Mapping[str, AttackFn]] = None, batch_size: int = 500,
             progress: bool = True, device: Union[str, torch.device, None] = None) -> Dict[str, float]:
    """Accuracy (in [0, 1]) clean and under each attack: ``{"clean": a0, name: a, ...}``.

    ``data`` is a DataLoader of (x, y) batches or an (x, y) pair, x (N, C, H, W) in [0, 1] and
    y (N,) labels (split into batches of ``batch_size``). Each attack is called as
    ``attack(model, x, y) -> x_adv`` on every batch and reported separately
    (:func:`robust_masks` gives the same per example).

    Robust accuracy follows AutoAttack / RobustBench: an example counts as robust under an attack
    only if the model classifies it correctly both clean *and* on the attack's output. A clean
    error is never robust, even when the attack's output happens to land on the true class, so
    each robust accuracy is at most the clean accuracy. (An attack that keeps the worst case per
    example, as PGD does over its ``restarts``, is reported as one attack.) The model is put in
    eval mode for the evaluation and restored afterwards.

    Every batch is checked before the model sees it (:func:`tutorial_lib.validation.check_batch`):
    a NaN or inf in x, a dtype other than the model's, an input shape the model does not accept,
    or a label outside [0, K) raises an error naming the offending examples by their index in
    ``data``, instead of being counted as a misclassification.
    """
    masks = robust_masks(model, data, attacks, batch_size=batch_size, progress=progress, device=device)
    return {name: m.sum().item() / len(m) for name, m in masks.items()}


def accuracy_vs_eps(model: nn.Module, data: Tuple[torch.Tensor, torch.Tensor], eps_values: Iterable[float],
                    make_attack: Callable[[float], AttackFn], progress: bool = False) -> List[float]:
    """Robust accuracy (in [0, 1], as in :func:`evaluate`) for each eps (input units):
    ``[evaluate(model, data, {a: make_attack(eps)})[a] for eps in eps_values]``.
    ``make_attack(eps)`` builds the attack for one radius, e.g. ``lambda e: PGD(e, steps=20)``.
    Every eps is checked first (:func:`tutorial_lib.validation.check_eps`: a number, finite, >= 0);
    the attack warns about an eps as wide as its box."""
    eps_values = [float(V.check_eps(eps, None, name=f"eps_values[{i}]")) for i, eps in enumerate(eps_values)]
    out = []
    for eps in eps_values:
        out.append(evaluate(model, data, {"attack": make_attack(eps)}, progress=progress)["attack"])
    return out
