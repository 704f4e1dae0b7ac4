"""Auto-PGD (Croce & Hein, ICML 2020): PGD without a step size to tune.

"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" replaces PGD's fixed step size by a schedule that adapts per example: start with a
large step (2 * eps), and at checkpoints halve it where the loss stopped rising, restarting from
the best point found. With a momentum term and the DLR loss (invariant to a shift and a rescaling
of the logits, so a saturated softmax does not hide the gradient) it is the gradient part of
AutoAttack. Written from the paper:

* checkpoints ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (:func:`apgd_checkpoints`);
* at checkpoint ``w_j`` the step size of an example is halved, and the example restarts from its
  best point, if (1) the loss rose in fewer than ``rho * (w_j - w_{j-1})`` of the steps since
  ``w_{j-1}`` (rho = 0.75), or (2) neither its step size nor its best loss changed since ``w_{j-1}``;
* each step ``z = P(x_k + eta * s(grad))`` (s: the sign in l-inf, the unit vector in l2), then
  ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``, momentum alpha = 0.75 (1 on
  the first step); P projects onto the eps-ball and the box (:meth:`NormBallAttack.project`).

Losses (:func:`dlr_loss`, :func:`dlr_loss_targeted`): the cross-entropy (APGD-CE), the
untargeted DLR ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` and the targeted DLR
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` (APGD-T), with pi the logits sorted in
decreasing order. Logits are in logit units, eps in input units.

Per example, an attack stops as soon as an iterate succeeds (that iterate is returned; the other
examples' trajectories do not depend on it), and later restarts and targets run only on the
examples not broken yet. An example never broken gets the point of highest loss.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import Box, NormBallAttack, _broadcast, _margin_to

__all__ = ["APGD", "APGDTargeted", "apgd_checkpoints", "dlr_loss", "dlr_loss_targeted"]

#: Losses :class:`APGD` knows: the cross-entropy and the (untargeted or targeted) DLR loss.
APGD_LOSSES = ("ce", "dlr")

#: The paper's momentum alpha (the first step takes none).
MOMENTUM = 0.75


def apgd_checkpoints(steps: int) -> List[int]:
    """The iterations 0 < w_1 < w_2 < ... < steps at which APGD may halve its step size.

    ``w_j = ceil(p_j * steps)`` with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06); for steps = 100: [22, 41, 57, 70, 80, 87, 93, 99].
    """
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # round first: 0.22 * 100 is 22.000000000000004 in floating point, whose ceil would be 23
    ws = sorted({math.ceil(round(pj * steps, 9)) for pj in p[1:]})
    return [w for w in ws if 0 < w < steps]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR loss (N,) of logits (N, K), K >= 3, labels y (N,):
    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``, pi the classes sorted by decreasing
    logit. Positive iff misclassified; unchanged when the logits are shifted or scaled by a > 0.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}")
    top = logits.topk(3, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -float("inf")).max(1).values
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_loss_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss (N,) of logits (N, K), K >= 4, labels y (N,) and targets t (N,):
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, pi sorted by decreasing logit."""
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}")
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]:
    """The per-example loss (N,) to maximise for ``name`` in :data:`APGD_LOSSES`, as
    ``f(logits, y, t)``: untargeted with t None, targeted toward t otherwise."""
    if name == "ce":
        return lambda z, y, t: (F.cross_entropy(z, y, reduction="none") if t is None
                                else -F.cross_entropy(z, t, reduction="none"))
    return lambda z, y, t: dlr_loss(z, y) if t is None else dlr_loss_targeted(z, y, t)


class _APGDBase(NormBallAttack):
    """What :class:`APGD` and :class:`APGDTargeted` share: parameters and one run of APGD."""

    def __init__(self, eps: float, norm: str, steps: int, restarts: int, loss: str, rho: float,
                 seed: Optional[int], clip: Box):
        super().__init__(eps, norm=norm, clip=clip)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {restarts}")
        if loss not in APGD_LOSSES:
            raise ValueError(f"unknown loss {loss!r}: the known losses are "
                             + ", ".join(repr(n) for n in APGD_LOSSES))
        if not 0 < rho <= 1:
            raise ValueError(f"rho must lie in (0, 1], got {rho}")
        self.steps, self.restarts, self.loss, self.rho = int(steps), int(restarts), loss, float(rho)
        self.seed = seed

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        if self.seed is not None:
            gen.manual_seed(int(self.seed))
        else:
            gen.seed()
        return gen

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random starting points (N, ...): uniform in the l-inf ball, or on the l2 sphere of
        radius eps; projected into the box."""
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
            return self.project(x + self.eps * noise, x)
        direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        direction = direction / _broadcast(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        return self.project(x + self.eps * direction, x)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of unit norm: sign(grad) in l-inf, grad / ||grad|| in l2."""
        if self.norm == "linf":
            return grad.sign()
        return grad / _broadcast(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: Optional[torch.Tensor],
             hit_target: bool, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run from a random start on x (N, ...), labels y (N,), loss target t (N,) or None.

        Success is ``argmax == t`` if ``hit_target``, else ``argmax != y``. Returns (x_out (N, ...),
        success (N,) bool, best loss (N,)): x_out is the first successful iterate where there is
        one, else the iterate of highest loss.
        """
        loss_fn = _loss_fn(self.loss)
        n = x.shape[0]
        out = x.clone()
        out_success = torch.zeros(n, dtype=torch.bool, device=x.device)
        out_loss = torch.full((n,), -float("inf"), dtype=x.dtype, device=x.device)
        checkpoints = set(apgd_checkpoints(self.steps))

        def evaluate(z: torch.Tensor, idx: torch.Tensor, with_grad: bool):
            """Loss (M,), success (M,) and gradient (M, ...) (None without) at points z."""
            yy, tt = y[idx], None if t is None else t[idx]
            if with_grad:
                z = z.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = model(z)
                    loss = loss_fn(logits, yy, tt)
                    (grad,) = torch.autograd.grad(loss.sum(), z)
            else:
                with torch.no_grad():
                    logits = model(z)
                    loss = loss_fn(logits, yy, tt)
                grad = None
            pred = logits.detach().argmax(1)
            success = pred == tt if hit_target else pred != yy
            return loss.detach(), success, grad

        # per-example state of the examples still running, indexed by idx into x
        idx = torch.arange(n, device=x.device)
        cur = self._start(x, gen)
        loss, success, grad = evaluate(cur, idx, True)
        state = {
            "x0": x, "cur": cur, "prev": cur.clone(), "grad": grad,
            "eta": torch.full((n,), 2.0 * self.eps, dtype=x.dtype, device=x.device),
            "loss": loss,                                   # loss at cur (the point we step from)
            "best": cur.clone(), "best_loss": loss.clone(), "best_grad": grad,
            "increases": torch.zeros(n, dtype=torch.long, device=x.device),
            "best_loss_at_check": loss.clone(),             # best loss at the last checkpoint
            "halved_at_check": torch.ones(n, dtype=torch.bool, device=x.device),
        }

        def retire(done: torch.Tensor, points: torch.Tensor) -> None:
            """Record the successful examples (mask over the running ones) and drop them."""
            nonlocal idx
            if done.any():
                out[idx[done]] = points[done]
                out_success[idx[done]] = True
                keep = ~done
                idx = idx[keep]
                for k, v in state.items():
                    state[k] = None if v is None else v[keep]

        retire(success, cur)
        last_check = 0
        for k in range(self.steps):
            if len(idx) == 0:
                break
            s = state
            with torch.no_grad():
                eta = _broadcast(s["eta"], s["cur"])
                z = self.project(s["cur"] + eta * self._direction(s["grad"]), s["x0"])
                if k > 0:
                    a = MOMENTUM
                    z = self.project(s["cur"] + a * (z - s["cur"]) + (1 - a) * (s["cur"] - s["prev"]), s["x0"])
                s["prev"], s["cur"] = s["cur"], z
            last = k == self.steps - 1
            loss, success, grad = evaluate(s["cur"], idx, not last)
            s["increases"] += (loss > s["loss"]).long()
            s["loss"], s["grad"] = loss, grad
            better = loss > s["best_loss"]
            s["best"] = torch.where(_broadcast(better, s["cur"]), s["cur"], s["best"])
            s["best_loss"] = torch.where(better, loss, s["best_loss"])
            if grad is not None:
                s["best_grad"] = torch.where(_broadcast(better, grad), grad, s["best_grad"])
            retire(success, s["cur"])  # updates state (and so s) in place
            if k + 1 in checkpoints and len(idx):
                # condition 1: the loss rose in fewer than rho * (steps since the last checkpoint)
                few = s["increases"].to(x.dtype) < self.rho * (k + 1 - last_check)
                # condition 2: neither the step size nor the best loss changed since then
                stuck = ~s["halved_at_check"] & (s["best_loss"] <= s["best_loss_at_check"])
                halve = few | stuck
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                b = _broadcast(halve, s["cur"])
                s["cur"] = torch.where(b, s["best"], s["cur"])
                s["grad"] = torch.where(b, s["best_grad"], s["grad"])
                s["loss"] = torch.where(halve, s["best_loss"], s["loss"])
                s["halved_at_check"] = halve
                s["best_loss_at_check"] = s["best_loss"].clone()
                s["increases"] = torch.zeros_like(s["increases"])
                last_check = k + 1
        if len(idx):
            out[idx] = state["best"]
            out_loss[idx] = state["best_loss"]
        return out, out_success, out_loss

    def _num_classes(self, model: nn.Module, x: torch.Tensor) -> int:
        with torch.no_grad():
            return int(model(x[:1]).shape[1])


class APGD(_APGDBase):
    """Auto-PGD (Croce & Hein 2020) on the cross-entropy ("ce", APGD-CE) or the DLR loss ("dlr").

    ``APGD(eps, norm="linf", steps=100, restarts=1, loss="ce", seed=0)(model, x, y, target=None)
    -> x_adv``; x (N, C, H, W) in the box ``clip`` (default [0, 1]), eps in input units (per pixel
    in l-inf, the Euclidean norm of the whole perturbation in l2). ``steps`` iterations, each one
    forward and backward pass (the last a forward only); no step size to choose: it starts at
    2 * eps and is halved per example at the checkpoints (:func:`apgd_checkpoints`), ``rho`` the
    fraction of rising steps below which it is. With ``restarts`` > 1 the examples not yet broken
    are attacked again from a fresh random start; an example never broken gets its point of
    highest loss over all restarts. Examples the model already misclassifies are returned as they
    are.

    Untargeted by default (success: argmax != y); with ``target`` (N,) the loss is minus the
    cross-entropy to the target, or the targeted DLR loss, and success is argmax == target.
    ``seed`` makes the random starts reproducible (a ``torch.Generator`` on the model's device;
    the global RNG is untouched); None draws a fresh seed per call. On a GPU, non-deterministic
    kernels (cuDNN's) can still make two runs differ in the last bits of a gradient, and so in
    a step (l2, or a sign near 0); ``torch.use_deterministic_algorithms(True)`` removes that.
    """

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
                 loss: str = "ce", seed: Optional[int] = 0, rho: float = 0.75, clip: Box = (0.0, 1.0)):
        super().__init__(eps, norm, steps, restarts, loss, rho, seed, clip)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        if self.loss == "dlr":
            need = 3 if target is None else 4
            k = self._num_classes(model, x)
            if k < need:
                raise ValueError(f"the {'targeted ' if target is not None else ''}DLR loss needs at least "
                                 f"{need} classes, the model has {k}; use loss='ce'")
        gen = self._generator(x.device)
        with torch.no_grad():
            pred = model(x).argmax(1)
        done = pred == target if target is not None else pred != y
        best, best_loss = x.clone(), torch.full((len(x),), -float("inf"), dtype=x.dtype, device=x.device)
        for _ in range(self.restarts):
            todo = (~done).nonzero().flatten()
            if len(todo) == 0:
                break
            t = None if target is None else target[todo]
            x_run, ok, loss = self._run(model, x[todo], y[todo], t, target is not None, gen)
            better = ok | (loss > best_loss[todo])
            best[todo[better]] = x_run[better]
            best_loss[todo] = torch.where(better & ~ok, loss, best_loss[todo])
            done[todo[ok]] = True
        return best


class APGDTargeted(_APGDBase):
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, once per target class.

    ``APGDTargeted(eps, norm="linf", steps=100, n_targets=9, seed=0)(model, x, y) -> x_adv``,
    x (N, C, H, W) in the box, eps in input units. Untargeted in its goal (success: argmax != y),
    it runs APGD (``restarts`` runs per target) toward each of the ``n_targets`` classes the
    model finds most likely on the clean x after y (the 2nd, 3rd, ... highest logits; capped at
    K - 1 for K classes; AutoAttack uses 9), each run only on the examples no earlier target
    broke. An example never broken gets the point, over all runs, where the largest other logit
    is closest to z_y (or beyond it). ``loss="dlr"`` (default; needs K >= 4) or ``"ce"`` (minus
    the cross-entropy to the target). With ``target`` (N,) given, only that target is tried and
    success is argmax == target. ``seed``: as in :class:`APGD`. Examples already misclassified
    (untargeted) or already on target are returned as they are. Costs up to
    n_targets * restarts * steps forward-backward passes per example.
    """

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, n_targets: int = 9,
                 restarts: int = 1, loss: str = "dlr", seed: Optional[int] = 0, rho: float = 0.75,
                 clip: Box = (0.0, 1.0)):
        super().__init__(eps, norm, steps, restarts, loss, rho, seed, clip)
        if int(n_targets) != n_targets or n_targets < 1:
            raise ValueError(f"n_targets must be a positive integer, got {n_targets}")
        self.n_targets = int(n_targets)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor]) -> torch.Tensor:
        k = self._num_classes(model, x)
        if self.loss == "dlr" and k < 4:
            raise ValueError(f"the targeted DLR loss needs at least 4 classes, the model has {k}; use loss='ce'")
        gen = self._generator(x.device)
        with torch.no_grad():
            clean = model(x)
        pred = clean.argmax(1)
        hit_target = target is not None
        done = pred == target if hit_target else pred != y
        if hit_target:
            ranked = target[:, None]
        else:
            # the other classes by decreasing clean logit: the candidate targets
            ranked = clean.scatter(1, y[:, None], -float("inf")).argsort(1, descending=True)[:, :k - 1]
            ranked = ranked[:, :self.n_targets]
        best = x.clone()
        best_score = torch.full((len(x),), -float("inf"), dtype=x.dtype, device=x.device)
        for j in range(ranked.shape[1]):
            for _ in range(self.restarts):
                todo = (~done).nonzero().flatten()
                if len(todo) == 0:
                    return best
                t = ranked[todo, j]
                x_run, ok, _ = self._run(model, x[todo], y[todo], t, hit_target, gen)
                with torch.no_grad():  # compare the unbroken runs across targets on one scale
                    score = _margin_to(model(x_run), y[todo], target[todo] if hit_target else None)
                better = ok | (score > best_score[todo])
                best[todo[better]] = x_run[better]
                best_score[todo] = torch.where(better & ~ok, score, best_score[todo])
                done[todo[ok]] = True
        return best
