"""Black-box transfer attack: adversarial inputs crafted on another model."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .base import Attack

__all__ = ["TransferAttack"]


class TransferAttack(Attack):
    """Black-box transfer attack: run ``attack`` on a ``source`` model and hand its adversarial
    inputs to the attacked model, whose gradients are never used (Madry et al.'s "A'" when
    ``source`` is an independently trained copy). The source must be in eval mode.

    A wrapper without a budget of its own: the inner attack's parameters (eps, norm, ...) decide
    the perturbation, and its box ``clip`` is used to validate the inputs.
    ``TransferAttack(source, PGD(0.3))(model, x, y, target=None) -> x_adv``, x (N, C, H, W) in
    [0, 1], returned on the attacked model's device.
    """

    def __init__(self, source: nn.Module, attack: Attack):
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack (e.g. PGD(0.3)), got {type(attack).__name__}")
        super().__init__(attack.clip)
        self.source, self.attack = source, attack

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        device = next(self.source.parameters()).device
        x_adv = self.attack(self.source, x.to(device), y.to(device),
                            None if target is None else target.to(device))
        return x_adv.to(x.device)

    def __repr__(self) -> str:
        return f"TransferAttack(source={type(self.source).__name__}, attack={self.attack!r})"
