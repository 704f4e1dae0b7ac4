"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami, IEEE S&P 2016) and its analysis.

The method, in the paper's terms:

1. train a *teacher* network F with its softmax at temperature T,
   ``F_i(x) = exp(z_i(x) / T) / sum_j exp(z_j(x) / T)`` (``LOSSES["temperature"]``);
2. label the training set with the teacher's *soft labels* F(x) at temperature T
   (:func:`soft_labels`);
3. train a *student* of the same architecture on those soft labels, again at temperature T
   (``LOSSES["distill"]``: the cross-entropy between the teacher's and the student's softmax at T);
4. deploy the student at T = 1: the network outputs its plain logits z(x), and the softmax that
   JSMA differentiates is ``softmax(z(x))``.

Both trainings run in the one loop (:func:`tutorial_lib.training.fit`) through the loss registry,
so recipes in ``data/recipes/papernot_*.json`` train them with ``python -m tutorial_lib.train``.

Why it looks robust: training at T makes the logits about T times larger; at T = 1 the softmax
then saturates (its top probability rounds to exactly 1 in float32 once the top-two logit gap
exceeds about 17) and its Jacobian with respect to the input collapses: to the size of the other
classes' probabilities, about exp(-gap), and to exactly 0 once those underflow float32 (a gap of
about 100 and more) (:func:`input_gradient_norm`, :func:`saturation`). An attack that follows the
softmax's gradient (JSMA, untargeted PGD on the cross-entropy) has nothing to follow. The logits
themselves are not flat, so an attack on the logits succeeds
(:class:`tutorial_lib.attacks.CarliniWagnerL2`, :class:`tutorial_lib.attacks.MarginPGD`).

Papernot et al.'s robustness measure, the number of input features JSMA must change, is
:func:`feature_robustness` (from :func:`attack_summary`'s ``pixels``).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..defenses.distillation import (
    TEMPERATURES,
    check_temperature,
    softmax_at,
    student_name,
    teacher_name,
    temperature_tag,
)
from ..runtime import eval_mode

__all__ = [
    "softmax_jacobian", "input_gradient_norm", "saturation", "load_study", "deployed_models",
    "common_correct", "random_targets", "attack_summary", "feature_robustness", "gradient_summary",
    "temperature_study",
]


# ----------------------------------------------------------------------------------------------
# The paper's analysis: the deployed model's softmax and its input gradient
# ----------------------------------------------------------------------------------------------

def softmax_jacobian(model: nn.Module, x: torch.Tensor, temperature: float = 1.0,
                     output: str = "softmax") -> torch.Tensor:
    """Jacobian of the model's output with respect to its input, (N, classes, *x.shape[1:]).

    ``output="softmax"``: of ``softmax(z(x) / T)`` (the paper's F; T = 1 for a deployed model);
    ``output="logits"``: of z(x) itself. Computed in the model's dtype (float32), like an attack.
    """
    if output not in ("softmax", "logits"):
        raise ValueError(f"output must be 'softmax' or 'logits', got {output!r}")
    temperature = check_temperature(temperature)
    device = next(model.parameters()).device
    x = x.to(device).detach().requires_grad_(True)
    with eval_mode(model):
        logits = model(x)
        out = softmax_at(logits, temperature) if output == "softmax" else logits
        rows = []
        for k in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, k].sum(), x, retain_graph=k < out.shape[1] - 1)
            rows.append(g)
    return torch.stack(rows, dim=1).detach()


def input_gradient_norm(model: nn.Module, x: torch.Tensor, temperature: float = 1.0,
                        output: str = "softmax", batch_size: int = 250) -> torch.Tensor:
    """Per-example Frobenius norm of :func:`softmax_jacobian` (N,), float64, on CPU.

    For a distilled student at T = 1 the softmax's norm collapses by tens of orders of magnitude
    (to exactly 0 once the Jacobian underflows float32); the logits' norm does not. The norm is
    taken in float64: entries of a collapsed float32 Jacobian (down to 1e-45) would square to 0 in
    float32, so a float32 norm of 0 would not mean a zero Jacobian. Here 0 means every entry is 0.
    """
    norms = [softmax_jacobian(model, x[i:i + batch_size], temperature, output).flatten(1).double()
             .norm(dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(norms)


@torch.no_grad()
def saturation(model: nn.Module, x: torch.Tensor, batch_size: int = 1000,
               grad_norm: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """How saturated the deployed (T = 1) softmax is on inputs ``x``.

    Returns ``top_prob_is_one`` (fraction whose top probability is exactly 1.0 in float32),
    ``zero_gradient`` (fraction whose softmax Jacobian is exactly zero, every entry), ``mean_top_prob``,
    ``median_logit_gap`` (median of top-1 minus top-2 logit) and ``median_logit_scale``
    (median of the largest absolute logit). ``grad_norm``: the softmax's
    :func:`input_gradient_norm` on x, if already computed.
    """
    device = next(model.parameters()).device
    with eval_mode(model):
        logits = torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                            for i in range(0, len(x), batch_size)])
    probs = F.softmax(logits, dim=1)
    top2 = logits.topk(2, dim=1).values
    if grad_norm is None:
        with torch.enable_grad():
            grad_norm = input_gradient_norm(model, x)
    return {
        "top_prob_is_one": (probs.max(1).values == 1.0).float().mean().item(),
        "zero_gradient": (grad_norm == 0).float().mean().item(),
        "mean_top_prob": probs.max(1).values.mean().item(),
        "median_logit_gap": (top2[:, 0] - top2[:, 1]).median().item(),
        "median_logit_scale": logits.abs().max(1).values.median().item(),
    }


# ----------------------------------------------------------------------------------------------
# The temperature study of notebook 06: shipped models, attacks and gradients per temperature
# ----------------------------------------------------------------------------------------------

def load_study(temperatures: Sequence[float] = TEMPERATURES, device=None,
               students_only: bool = False) -> Dict[str, Dict[float, nn.Module]]:
    """The shipped models of the study, verified by the registry:
    ``{"teachers": {T: model}, "students": {T: model}, "info": {name: checkpoint info}}``.
    The undefended baseline is ``teachers[1]`` (natural training)."""
    from ..checkpoints import load_checkpoint

    out: Dict[str, Dict] = {"teachers": {}, "students": {}, "info": {}}
    for t in temperatures:
        names = [("students", student_name(t))]
        if not students_only or t == 1:
            names.append(("teachers", teacher_name(t)))
        for role, name in names:
            model, info = load_checkpoint(name, device=device)
            out[role][t] = model
            out["info"][name] = info
    return out


def deployed_models(study: Dict[str, Dict[float, nn.Module]]) -> Dict[str, nn.Module]:
    """The models an attacker faces, all at T = 1: ``{"undefended": teacher_T1, "T=1": student, ...}``."""
    models = {"undefended": study["teachers"][1]} if 1 in study["teachers"] else {}
    models.update({f"T={temperature_tag(t)}": m for t, m in sorted(study["students"].items())})
    return models


@torch.no_grad()
def common_correct(models: Dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                   n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of (x, y) that every model classifies correctly (so a success
    rate measures the attack, not the model's clean errors)."""
    ok = torch.ones(len(y), dtype=torch.bool)
    for m in models.values():
        device = next(m.parameters()).device
        with eval_mode(m):
            ok &= torch.cat([m(x[i:i + 1000].to(device)).argmax(1).cpu() == y[i:i + 1000]
                             for i in range(0, len(x), 1000)])
    idx = ok.nonzero().squeeze(1)[:n]
    if len(idx) < n:
        raise ValueError(f"only {len(idx)} of {len(y)} examples are classified correctly by every model; pass more")
    return x[idx], y[idx]


def random_targets(y: torch.Tensor, classes: int = 10, seed: int = 0) -> torch.Tensor:
    """One target class != y per example, uniform over the other classes, reproducible."""
    from ..attacks import random_targets as draw_targets

    return draw_targets(y, classes, seed)


def attack_summary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
                   attack) -> Dict[str, float]:
    """Run one attack and summarise it: ``success`` (rate in [0, 1]: the target is predicted, or
    untargeted, the label is not), and over successful examples the mean ``l0`` (fraction of
    pixels changed), ``pixels`` (number of input features changed), ``l2`` and ``linf`` distortion
    (nan if nothing succeeded); ``unchanged``: the fraction of all examples returned unchanged (for
    JSMA: stopped before its first step, no admissible pair); ``n``: the number of examples;
    ``features``: input features per example."""
    device = next(model.parameters()).device
    with eval_mode(model):
        if hasattr(attack, "run"):
            x_adv, success = attack.run(model, x, y, target)[:2]
        else:
            x_adv = attack(model, x, y, target)
        with torch.no_grad():
            pred = model(x_adv.to(device)).argmax(1).cpu()
    target_cpu = target.cpu() if target is not None else None
    success = (pred == target_cpu) if target is not None else (pred != y.cpu())
    delta = (x_adv.cpu() - x.cpu()).flatten(1)
    s = success
    mean = (lambda v: v[s].float().mean().item() if s.any() else float("nan"))
    changed = (delta != 0).sum(1)
    return {"success": s.float().mean().item(), "l0": mean((delta != 0).float().mean(1)),
            "pixels": mean(changed), "l2": mean(delta.norm(dim=1)), "linf": mean(delta.abs().max(1).values),
            "unchanged": (changed == 0).float().mean().item(), "n": len(y), "features": delta.shape[1]}


def feature_robustness(summary: Dict[str, float], budget: int) -> Dict[str, float]:
    """Papernot et al.'s robustness measure from a JSMA :func:`attack_summary`: how many input
    features (pixels) JSMA must change to reach its target.

    The paper defines the robustness of a network as the minimum perturbation that changes its
    decision, averaged over inputs, and measures it with JSMA as a number of features. A failed
    attack found no perturbation within ``budget`` (JSMA's ``max_pixels``, 112 of 784 pixels at
    gamma = 14.5 %), so its minimum is unknown: more than the budget, or none at all when JSMA
    stopped for want of an admissible pair. Two averages, both in pixels and as a fraction of the
    input's ``features``:

    * ``pixels``, ``fraction``: over the successful attacks only (nan if none succeeded);
    * ``at_least``, ``at_least_fraction``: over all examples, each failure counted at ``budget``;
      a lower bound on the mean JSMA would need, since a failure would need more.

    Also returns ``success`` (the rate) and ``unchanged`` (fraction where JSMA changed nothing).
    """
    if budget < 0:
        raise ValueError(f"budget (pixels) must be >= 0, got {budget}")
    s, d = summary["success"], summary["features"]
    pixels = summary["pixels"] if s > 0 else float("nan")
    at_least = (s * pixels if s > 0 else 0.0) + (1 - s) * budget
    return {"success": s, "pixels": pixels, "fraction": pixels / d, "at_least": at_least,
            "at_least_fraction": at_least / d, "unchanged": summary["unchanged"]}


def gradient_summary(model: nn.Module, x: torch.Tensor,
                     softmax_norm: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """The paper's analysis on inputs x, for the deployed model (T = 1): median Frobenius norm of
    the Jacobian of the softmax and of the logits w.r.t. the input, and the saturation figures of
    :func:`saturation`. ``softmax_norm``: :func:`input_gradient_norm` of the softmax on x, if
    already computed (it is the expensive part)."""
    soft = input_gradient_norm(model, x, output="softmax") if softmax_norm is None else softmax_norm
    out = {"softmax_grad_median": soft.median().item(),
           "logit_grad_median": input_gradient_norm(model, x, output="logits").median().item()}
    out.update(saturation(model, x, grad_norm=soft))
    return out


def temperature_study(models: Dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                      target: torch.Tensor, attacks: Dict[str, object],
                      progress: bool = False) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{model label: {attack name: attack_summary}}`` for every model and attack, all on the
    same examples and targets."""
    import time

    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for label, model in models.items():
        results[label] = {}
        for name, attack in attacks.items():
            t0 = time.perf_counter()
            results[label][name] = attack_summary(model, x, y, target, attack)
            if progress:
                print(f"{label:>10s} {name:>8s}: success {results[label][name]['success']:.1%} "
                      f"({time.perf_counter() - t0:.1f} s)")
    return results
