"""FGSM: the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .base import Box, NormBallAttack, _per_example_loss

__all__ = ["FGSM"]


class FGSM(NormBallAttack):
    """One l-inf step of size ``eps`` (input units) along the sign of the input gradient of the
    cross-entropy (targeted: down the cross-entropy to the target), clamped to the box ``clip``.

    ``FGSM(eps)(model, x, y, target=None) -> x_adv``, x (N, C, H, W) in [0, 1].
    """

    def __init__(self, eps: float, clip: Box = (0.0, 1.0)):
        super().__init__(eps, norm="linf", clip=clip)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        x_req = x.clone().requires_grad_(True)
        loss = _per_example_loss(model(x_req), y, target).sum()
        (grad,) = torch.autograd.grad(loss, x_req)
        return self.project(x + self.eps * grad.sign(), x)
