"""The one registry of training losses: a recipe's ``"loss"`` names an entry, its
``"loss_kwargs"`` are passed to the entry, which returns ``loss_fn(model, x, y)``.

Every loss of the collection is named here, explicitly (no registration by import side effect).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.adversarial import PGDTrainingLoss
from ..defenses.certified import RobustTrainingLoss
from ..defenses.distillation import distillation_loss, temperature_loss
from ..defenses.ibp import CROWNIBPTrainingLoss, IBPTrainingLoss
from ..defenses.trades import TradesLoss

__all__ = ["LOSSES", "cross_entropy_loss", "natural_loss"]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Natural training: mean cross-entropy of the logits. Returns (loss, logits)."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits




def natural_loss():
    """Loss factory of natural training: :func:`cross_entropy_loss`."""
    return cross_entropy_loss


#: name in a recipe -> loss factory(**loss_kwargs) -> loss_fn(model, x, y)
LOSSES: Dict[str, Callable[..., Callable]] = {
    "natural": natural_loss,                # natural training
    "pgd": PGDTrainingLoss,                 # Madry et al. 2018
    "trades": TradesLoss,                   # Zhang et al. 2019
    "robust": RobustTrainingLoss,           # Wong & Kolter 2017, Wong et al. 2018
    "temperature": temperature_loss,        # Papernot et al. 2016: the teacher
    "distill": distillation_loss,           # Papernot et al. 2016: the student
    "ibp": IBPTrainingLoss,                 # Gowal et al. 2018
    "crown_ibp": CROWNIBPTrainingLoss,      # Zhang et al. 2020
}
