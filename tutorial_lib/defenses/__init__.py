"""Defences as losses for the one training loop (:func:`tutorial_lib.training.fit`).

* :mod:`.adversarial`  PGD adversarial training (Madry et al. 2018): :class:`PGDTrainingLoss`
* :mod:`.trades`       TRADES (Zhang et al. 2019): :class:`TradesLoss`, :func:`trades_attack`
* :mod:`.certified`    Wong & Kolter's robust loss: :class:`RobustTrainingLoss`
* :mod:`.ibp`          interval bound propagation training (Gowal et al. 2018): :class:`IBPTrainingLoss`;
  CROWN-IBP (Zhang et al. 2020): :class:`CROWNIBPTrainingLoss`
* :mod:`.distillation` defensive distillation (Papernot et al. 2016): temperature and
  distillation losses, soft labels
* :mod:`.schedule`     the eps ramp every scheduled loss shares
* :mod:`.cascade`      cascades of certified models (Wong et al. 2018): :class:`Cascade`, the
  paper's (unsound) and a sound certificate, :func:`certify_cascade`

Every loss is ``loss(model, x, y) -> (loss, logits)``; the recipes name them through
:data:`tutorial_lib.training.LOSSES`.
"""
from .adversarial import PGDTrainingLoss
from .cascade import (
    FALLBACK_METHODS,
    Cascade,
    CascadeCertificate,
    CascadeDecision,
    certify_cascade,
    paper_certified,
    sound_certified,
    stage_accepts,
)
from .certified import RobustTrainingLoss
from .distillation import distillation_loss, soft_labels, softmax_at, temperature_loss
from .ibp import CROWNIBPTrainingLoss, IBPTrainingLoss, verified_cross_entropy
from .schedule import ScheduledEps, linear_ramp
from .trades import TradesLoss, trades_attack

__all__ = ["PGDTrainingLoss", "TradesLoss", "trades_attack", "RobustTrainingLoss", "temperature_loss",
           "distillation_loss", "soft_labels", "softmax_at", "ScheduledEps", "linear_ramp",
           "Cascade", "CascadeDecision", "CascadeCertificate", "stage_accepts", "paper_certified", "sound_certified",
           "certify_cascade", "FALLBACK_METHODS", "IBPTrainingLoss", "CROWNIBPTrainingLoss",
           "verified_cross_entropy"]
