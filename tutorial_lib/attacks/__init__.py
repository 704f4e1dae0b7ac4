"""Attacks with one call shape: ``attack(model, x, y, target=None) -> x_adv``.

An attack is an object holding its parameters (eps, steps, ...); calling it on a model, inputs
x (N, C, H, W) with values in the input box (``clip``, default the pixel box [0, 1]) and labels
y (N,) returns adversarial inputs of the same shape, inside the box. With ``target`` (N,) the
attack is targeted: it pushes each input toward its target class.

The model must be in eval mode: an attack on a model in training mode would see dropout
noise and update batch statistics, so the attacks refuse it (use ``model.eval()``, or
``training.eval_mode(model)`` inside a training step).

Files:

* ``base.py`` -- :func:`check_inputs`, :func:`margin`, :func:`random_targets`, and the base
  classes :class:`Attack` (no budget: validation, device, ``clip``) and :class:`NormBallAttack`
  (adds ``eps``, in input units, and ``norm``, "linf" or "l2", and the projection onto the ball);
* ``fgsm.py`` -- :class:`FGSM` (a NormBallAttack);
* ``pgd.py`` -- :class:`PGD` and :class:`MarginPGD` (NormBallAttacks);
* ``transfer.py`` -- :class:`TransferAttack` (wraps an attack run on another model);
* ``jsma.py`` -- :class:`JSMA` (an l0 attack: a pixel budget, no eps);
* ``l1.py`` -- :class:`SparseL1Descent` (an l1 attack: sparse l1 descent, Tramer & Boneh 2019) and
  :func:`project_l1_ball` (exact projection onto the l1 ball, Duchi et al. 2008);
* ``cw.py`` -- :class:`CarliniWagnerL2` (minimum l2 distortion, no eps);
* ``apgd.py`` -- :class:`APGD` (APGD-CE, or DLR) and :class:`APGDTargeted` (APGD-T), Auto-PGD of
  Croce & Hein 2020 (NormBallAttacks without a step size to tune), and the DLR losses;
* ``square.py`` -- :class:`Square`, the score-based Square Attack (Andriushchenko et al. 2020; a
  NormBallAttack that never computes a gradient);
* ``ensemble.py`` -- :func:`evaluate_ensemble` (AutoAttack's protocol: per example, the worst case
  over attacks run in order) and :func:`default_ensemble` (APGD-CE, APGD-T, Square; no FAB-T);
* ``cascade.py`` -- :class:`CascadeAttack` and :func:`attack_cascade` (after CasA, Mangal et al. 2022:
  points of the ball where a :class:`tutorial_lib.defenses.Cascade` answers wrongly, also where
  Wong et al.'s certifier claims none exist);
* ``evaluation.py`` -- :func:`evaluate`, :func:`robust_masks` (per example) and :func:`accuracy_vs_eps`
  (clean and robust accuracy).
"""
from .apgd import APGD, APGDTargeted, dlr_loss, dlr_loss_targeted
from .base import NORMS, Attack, Box, NormBallAttack, check_inputs, margin, random_targets
from .cascade import CascadeAttack, CascadeAttackReport, attack_cascade
from .cw import CarliniWagnerL2
from .ensemble import EnsembleResult, default_ensemble, evaluate_ensemble
from .evaluation import accuracy_vs_eps, evaluate, robust_masks
from .fgsm import FGSM
from .jsma import JSMA
from .l1 import SparseL1Descent, project_l1_ball
from .pgd import PGD, MarginPGD
from .square import Square
from .transfer import TransferAttack

__all__ = [
    "Attack", "NormBallAttack", "NORMS", "Box", "check_inputs", "margin", "random_targets",
    "FGSM", "PGD", "MarginPGD", "TransferAttack", "JSMA", "SparseL1Descent", "project_l1_ball", "CarliniWagnerL2",
    "APGD", "APGDTargeted", "Square", "dlr_loss", "dlr_loss_targeted",
    "evaluate", "robust_masks", "accuracy_vs_eps", "evaluate_ensemble", "default_ensemble", "EnsembleResult",
    "CascadeAttack", "CascadeAttackReport", "attack_cascade",
]
