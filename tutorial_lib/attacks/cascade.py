"""The cascade attack (after CasA, Mangal et al. 2022, "On the Perils of Cascading Robust
Classifiers", arXiv 2206.00278): points within eps of x that a cascade of certified models
(:class:`tutorial_lib.cascade_model.Cascade`, Wong et al. 2018) answers wrongly, also where
Wong et al.'s certifier (:func:`~tutorial_lib.defenses.cascade.paper_certified`) claims it cannot.

Where can a wrong answer at a point x' of the ball come from? Only from one of two routes:

(i)  stage j accepts x' with a wrong label t, and no stage before j accepts x'. When the attack's
     ball lies inside the cascade's (same norm, eps <= the cascade's eps), t is stage j's
     prediction at x itself: stage j certifies t on the ball around x', which contains x. So only
     the stages that are wrong at x are candidates.
(ii) no stage accepts x' and the fallback stage predicts a wrong label at x'. Impossible where
     the fallback is certified for y on the attack's ball around x.

For each route the attack takes ``steps`` projected gradient steps (sign steps in l_inf,
normalised steps in l2) on a differentiable objective of x', for the examples it can break:

(i)  c_j^t(x') - penalty * sum_{i<j} relu(c_i(x') + margin),
(ii) (max_{k != y} z_k - z_y)(fallback at x') - penalty * sum_{all i} relu(c_i(x') + margin),

where c_j^t(x') is stage j's certificate for label t on the ball around x' (the smallest dual
lower bound of the margins z_t - z_k; > 0 iff it certifies t) and c_i(x') stage i's certificate
for its own prediction at x' (> 0 iff stage i accepts x'); the sums run over the stages whose
own prediction at x' is right (one that accepts x' with a wrong label breaks x as well, and an
iterate counts as a break whenever the bounds computed there decide the cascade's answer and it
is wrong). Targeted (``target`` t given): the margins are toward t, and "wrong" means "= t".

Route (ii) first tries the cheap thing: ``steps`` steps of plain PGD on the fallback's margin (no
bounds; untargeted, then toward each wrong class), whose end point often lies where no stage
accepts; the full objective then starts from the untargeted end point. Each candidate point is
checked by the cascade's own routing (:meth:`Cascade.route`, inside the ball and the box); an
example counts as broken only if that check says the answer at x' is wrong.

Gradients of the dual bound w.r.t. the input: :func:`tutorial_lib.bounds.dual_bounds` builds the
input set (the box [max(x' - eps, lo), min(x' + eps, hi)]; for l2/l1 the ball's centre) from x'
itself, so its lower bound is differentiable in x' (``test_cascade.py`` checks the gradient
against finite differences).

Cost: per step and example, one dual bound with its backward pass per stage up to j (route (i))
or per stage (route (ii)); an example leaves a run as soon as the bounds say it is broken, and
(``prune``) the examples a proof protects are never attacked. Measured on MNIST, small CNN
stages, eps 0.1, one CPU thread (a shared machine): 0.1-0.2 s per example for two robust stages
(nearly every example pruned), 0.5-1 s for a robust stage with a natural fallback (most examples
broken, the rest attacked for all steps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..bounds import dual_bounds, is_certified
from ..cascade_model import Cascade
from .base import Box, NormBallAttack, _broadcast, _margin_to

__all__ = ["CascadeAttack", "CascadeAttackReport", "attack_cascade"]

#: the norms whose balls contain a ball of the same radius in each attack norm (||d||_q <= ||d||_p)
_CONTAINS = {"linf": ("linf", "l2"), "l2": ("l2",), "l1": ()}


def _dual_lower(model: nn.Module, x: Tensor, labels: Tensor, eps: float, norm: str,
                clip: Box) -> Tensor:
    """The dual lower bounds (N, K-1) of the margins z_label - z_k (k != label, increasing k) on
    the ``norm`` ball of radius eps around x (N, ...) intersected with the box ``clip``
    (:func:`tutorial_lib.bounds.dual_bounds`, differentiable w.r.t. x)."""
    return dual_bounds(model, x, labels, eps, clip=clip, norm=norm).lower


@dataclass
class CascadeAttackReport:
    """What the last run of :class:`CascadeAttack` found; each field (N,), on the inputs' device.

    broken:   bool, the cascade's answer at x_adv is wrong (not y; targeted: the target), as its
              own routing says (x_adv = x where the cascade is already wrong at x).
    pred:     long, the cascade's answer at x_adv (x_adv = x where not broken).
    stage:    long, the stage that answered at x_adv.
    accepted: bool, that stage accepted x_adv (route (i)); False: the fallback answered (route (ii)).
    """

    broken: Tensor
    pred: Tensor
    stage: Tensor
    accepted: Tensor


class CascadeAttack(NormBallAttack):
    """Points of the eps-ball around x where a :class:`~tutorial_lib.defenses.cascade.Cascade`
    answers wrongly (see the module doc for the two routes and the objectives).

    ``CascadeAttack(eps, steps=30, step_size=None, restarts=1, norm="linf", clip=(0., 1.),
    seed=0, penalty=1.0, margin=0.0, prune=True, batch_size=64)(cascade, x, y, target=None) ->
    x_adv``. ``model`` must be a Cascade (TypeError otherwise) in eval mode; eps and norm ('linf'
    or 'l2') are the attack's (usually the cascade's own); the attack's box must lie inside the
    cascade's (its bounds refuse inputs outside it). ``step_size`` (input units) defaults to
    2.5 * eps / steps. Restart 0 starts at x, each further restart at a uniform random point of
    the ball (drawn from ``seed``; None: a fresh seed per call). ``penalty`` weighs the hinge
    ``relu(c_i + margin)`` on the certificates (logit units) of the stages that must not accept.
    ``prune`` skips what a proof rules out: route (i) for stages right at x when the attack's
    ball lies inside the cascade's (see the module doc), route (ii) where the fallback is
    certified for y on the attack's ball; ``prune=False`` runs every route on every example (to
    test the proofs). ``batch_size``: examples attacked together.

    Returns x_adv: where a break was found and checked by :meth:`Cascade.route`, the breaking
    point (inside the ball and the box), else x. ``last_report`` (:class:`CascadeAttackReport`)
    holds per example whether it was broken and which stage answers at x_adv. Targeted
    (``target`` given): a break is a point the cascade answers with the target.
    """

    def __init__(self, eps: float, steps: int = 30, step_size: Optional[float] = None,
                 restarts: int = 1, norm: str = "linf", clip: Box = (0.0, 1.0),
                 seed: Optional[int] = 0, penalty: float = 1.0, margin: float = 0.0,
                 prune: bool = True, batch_size: int = 64):
        super().__init__(eps, norm=norm, clip=clip)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {restarts}")
        step_size = 2.5 * self.eps / steps if step_size is None else step_size
        if not (step_size > 0 or (step_size == 0 and self.eps == 0)):
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if not penalty >= 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        if not margin >= 0:
            raise ValueError(f"margin (logit units) must be >= 0, got {margin}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.steps, self.step_size, self.restarts = int(steps), float(step_size), int(restarts)
        self.seed, self.penalty, self.margin = seed, float(penalty), float(margin)
        self.prune, self.batch_size = bool(prune), int(batch_size)
        self.last_report: Optional[CascadeAttackReport] = None

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, target: Optional[Tensor] = None) -> Tensor:
        if not isinstance(model, Cascade):
            raise TypeError(f"CascadeAttack attacks a Cascade (tutorial_lib.defenses.Cascade), got "
                            f"{type(model).__name__}; use PGD for a single model")
        if model.clip is not None and (self.clip is None or self.clip[0] < model.clip[0]
                                       or self.clip[1] > model.clip[1]):
            raise ValueError(f"the attack's box {self.clip} must lie inside the cascade's {model.clip}: "
                             "the cascade's bounds refuse inputs outside its box")
        self.last_report = None
        x_adv = super().__call__(model, x, y, target)
        if self.last_report is None:  # eps = 0: x itself
            decision = model.route(x_adv)
            wrong = decision.pred != y.to(x_adv.device) if target is None else decision.pred == target.to(x_adv.device)
            self.last_report = CascadeAttackReport(wrong, decision.pred, decision.stage, decision.accepted)
        return x_adv

    def _ball_inside_cascade(self, cascade: Cascade) -> bool:
        return self.norm in _CONTAINS[cascade.norm] and self.eps <= cascade.eps

    def _random_start(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1
            return self.project(x + self.eps * noise, x)
        direction = torch.randn(x.shape, generator=gen, device=x.device)
        direction = direction / _broadcast(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        radius = torch.rand(x.shape[0], generator=gen, device=x.device) ** (1.0 / x[0].numel()) * self.eps
        return self.project(x + direction * _broadcast(radius, x), x)

    def _perturb(self, model: nn.Module, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        gen = torch.Generator(device=x.device)
        if self.seed is not None:
            gen.manual_seed(self.seed)
        else:
            gen.seed()
        parts = [self._attack_batch(model, x[a:a + self.batch_size], y[a:a + self.batch_size],
                                    None if target is None else target[a:a + self.batch_size], gen)
                 for a in range(0, max(x.shape[0], 1), self.batch_size)]  # one (empty) batch for N = 0
        self.last_report = CascadeAttackReport(*(torch.cat([p[1][k] for p in parts]) for k in range(4)))
        return torch.cat([p[0] for p in parts])

    def _wrong(self, pred: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        return pred != y if target is None else pred == target

    def _attack_batch(self, cascade: Cascade, x: Tensor, y: Tensor, target: Optional[Tensor],
                      gen: torch.Generator) -> Tuple[Tensor, Tuple[Tensor, Tensor, Tensor, Tensor]]:
        """x_adv and (broken, pred, stage, accepted) at x_adv for one batch."""
        n = len(cascade.stages)
        decision = cascade.route(x)
        broken = self._wrong(decision.pred, y, target)
        pred, stage, accepted = decision.pred.clone(), decision.stage.clone(), decision.accepted.clone()
        x_adv = x.clone()
        preds_at_x = cascade.stage_predictions(x)  # (n, N)
        inside = self._ball_inside_cascade(cascade)
        # route (ii) is possible only where the fallback is not certified for y on the attack's ball
        fallback_open = ~broken
        if self.prune:
            idx = (fallback_open & (preds_at_x[cascade.fallback] == y)).nonzero().flatten()
            if idx.numel():
                with torch.no_grad():
                    low = dual_bounds(cascade.stages[cascade.fallback], x[idx], y[idx], self.eps,
                                      clip=self.clip, norm=self.norm).lower
                fallback_open[idx[is_certified(low)]] = False
        start = self._fallback_pgd(cascade, x, y, target, fallback_open, x_adv, broken, pred, stage, accepted)
        for j in range(n):  # route (i): stage j accepts x' with a wrong label t
            if target is not None:
                t = target
            elif inside and self.prune:
                t = preds_at_x[j]
            else:  # stage j's prediction at x if wrong, else its runner-up class there
                with torch.no_grad():
                    logits = cascade.stages[j](x)
                runner_up = logits.scatter(1, y[:, None], -float("inf")).argmax(1)
                t = torch.where(preds_at_x[j] != y, preds_at_x[j], runner_up)
            todo = ~broken
            if self.prune and inside:
                todo &= self._wrong(preds_at_x[j], y, target)
            self._route(cascade, j, x, y, target, t, todo, gen, x_adv, broken, pred, stage, accepted)
        self._route(cascade, n, x, y, target, None, fallback_open & ~broken, gen, x_adv, broken, pred, stage,
                    accepted, start)
        return x_adv, (broken, pred, stage, accepted)

    def _check(self, cascade: Cascade, idx: Tensor, points: Tensor, y: Tensor, target: Optional[Tensor],
               x_adv: Tensor, broken: Tensor, pred: Tensor, stage: Tensor, accepted: Tensor) -> None:
        """Route the candidate points (B, ...) of the examples idx (B,) through the cascade; where
        its answer is wrong, write the point and the decision into x_adv, broken, ... in place."""
        decision = cascade.route(points)
        ok = self._wrong(decision.pred, y[idx], None if target is None else target[idx])
        hit = idx[ok]
        x_adv[hit], broken[hit] = points[ok], True
        pred[hit], stage[hit], accepted[hit] = decision.pred[ok], decision.stage[ok], decision.accepted[ok]

    def _fallback_pgd(self, cascade: Cascade, x: Tensor, y: Tensor, target: Optional[Tensor], todo: Tensor,
                      x_adv: Tensor, broken: Tensor, pred: Tensor, stage: Tensor, accepted: Tensor) -> Tensor:
        """The cheap first try of route (ii): plain PGD from x (``steps`` steps, no bounds) on the
        fallback's margin, untargeted, then toward each wrong class in turn (most likely first,
        by the fallback's logits at x; targeted: the target only). An end point at which the
        fallback is wrong is checked by the cascade's routing (breaks written in place). Returns
        the untargeted end points (N, ...) (x outside ``todo``): route (ii)'s first start."""
        start = x.clone()
        idx = todo.nonzero().flatten()
        if idx.numel() == 0:
            return start
        model = cascade.stages[cascade.fallback]
        with torch.no_grad():
            logits = model(x[idx]).scatter(1, y[idx, None], -float("inf"))
        if target is not None:
            aims = [None, target[idx]]
        else:  # untargeted, then the wrong classes by decreasing logit at x
            order = logits.argsort(1, descending=True)[:, :logits.shape[1] - 1]
            aims = [None] + [order[:, r] for r in range(order.shape[1])]
        for r, aim in enumerate(aims):
            keep = ~broken[idx]
            if r > 0 and not keep.any():
                break
            sub = idx if r == 0 else idx[keep]
            aim = None if aim is None else (aim if r == 0 else aim[keep])
            x0 = x[sub]
            xa = x0.clone()
            for _ in range(self.steps):
                xa.requires_grad_(True)
                (grad,) = torch.autograd.grad(_margin_to(model(xa), y[sub], aim).sum(), xa)
                with torch.no_grad():
                    xa = self.project(xa + self.step_size * self._direction(grad), x0)
            if r == 0:
                start[sub] = xa
            with torch.no_grad():
                wrong = self._wrong(model(xa).argmax(1), y[sub], None if target is None else target[sub])
            if wrong.any():
                self._check(cascade, sub[wrong], xa[wrong], y, target, x_adv, broken, pred, stage, accepted)
        return start

    def _direction(self, grad: Tensor) -> Tensor:
        """The steepest ascent direction of unit norm: sign (l_inf) or normalised (l2) gradient."""
        if self.norm == "linf":
            return grad.sign()
        return grad / _broadcast(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)

    def _objective(self, cascade: Cascade, route: int, xa: Tensor, y: Tensor, target: Optional[Tensor],
                   t: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(objective (B,) to maximise, predicted break (B,) bool) at the points xa (B, ...).

        The predicted break is the cascade's answer as far as the bounds computed here decide it
        (the first accepting stage among those bounded; for route (ii) every stage, so the answer
        is known), and wrong. The hinge covers the stages whose own prediction at x' is right: a
        stage that accepts x' with a wrong label breaks the example just as well."""
        eps, norm, clip = cascade.eps, cascade.norm, cascade.clip
        n = len(cascade.stages)
        hinge = xa.new_zeros(xa.shape[0])
        answer = torch.full((xa.shape[0],), -1, dtype=torch.long, device=xa.device)  # -1: not decided
        for i in range(route if route < n else n):  # the stages that must not accept x' with a right label
            with torch.no_grad():
                own = cascade.stages[i](xa).argmax(1)
            low = _dual_lower(cascade.stages[i], xa, own, eps, norm, clip)
            right = ~self._wrong(own, y, target)
            hinge = hinge + torch.relu(low.min(1).values + self.margin) * right
            answer = torch.where((answer < 0) & is_certified(low.detach()), own, answer)
        if route < n:
            low = _dual_lower(cascade.stages[route], xa, t, eps, norm, clip)
            gain = low.min(1).values
            answer = torch.where((answer < 0) & is_certified(low.detach()), t, answer)
        else:
            logits = cascade.stages[cascade.fallback](xa)
            gain = _margin_to(logits, y, target)
            answer = torch.where(answer < 0, logits.detach().argmax(1), answer)
        return gain - self.penalty * hinge, (answer >= 0) & self._wrong(answer, y, target)

    def _route(self, cascade: Cascade, route: int, x: Tensor, y: Tensor, target: Optional[Tensor],
               t: Optional[Tensor], todo: Tensor, gen: torch.Generator, x_adv: Tensor, broken: Tensor,
               pred: Tensor, stage: Tensor, accepted: Tensor, start: Optional[Tensor] = None) -> None:
        """Run one route (stage index j < n: route (i); n: route (ii)) on the examples in ``todo``,
        every restart (the first from ``start`` (N, ...), default x); write checked breaks into
        x_adv, broken, pred, stage, accepted in place."""
        for restart in range(self.restarts):
            idx = (todo & ~broken).nonzero().flatten()
            if idx.numel() == 0:
                return
            x0, y0 = x[idx], y[idx]
            t0 = None if t is None else t[idx]
            tg0 = None if target is None else target[idx]
            if restart == 0:
                xa = x0.clone() if start is None else start[idx].clone()
            else:
                xa = self._random_start(x0, gen)
            found = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
            x_found = x0.clone()
            active = torch.arange(idx.numel(), device=x.device)
            for step in range(self.steps + 1):
                last = step == self.steps
                xs = xa[active].requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    obj, success = self._objective(cascade, route, xs, y0[active],
                                                   None if tg0 is None else tg0[active],
                                                   None if t0 is None else t0[active])
                x_found[active[success]] = xs.detach()[success]
                found[active[success]] = True
                if last or bool(success.all()):
                    break
                (grad,) = torch.autograd.grad(obj.sum(), xs)
                with torch.no_grad():
                    moved = self.project(xs.detach() + self.step_size * self._direction(grad), x0[active])
                keep = ~success
                xa[active[keep]] = moved[keep]
                active = active[keep]
            if found.any():  # the cascade's own routing decides
                f = found.nonzero().flatten()
                self._check(cascade, idx[f], x_found[f], y, target, x_adv, broken, pred, stage, accepted)


def attack_cascade(cascade: Cascade, x: Tensor, y: Tensor, eps: Optional[float] = None,
                   norm: Optional[str] = None, **kwargs) -> Tuple[Tensor, Tensor, Tensor]:
    """Run :class:`CascadeAttack` on ``cascade`` at x (N, *input_shape), labels y (N,).

    eps and norm default to the cascade's own (the threat model its certificate is about);
    ``kwargs`` go to :class:`CascadeAttack` (steps, step_size, restarts, clip (default the
    cascade's box), seed, penalty, margin, prune, batch_size). Returns (x_adv, broken (N,) bool,
    stage (N,) long: the stage that answers at x_adv), all on the cascade's device.
    """
    if not isinstance(cascade, Cascade):
        raise TypeError(f"attack_cascade attacks a Cascade, got {type(cascade).__name__}")
    kwargs.setdefault("clip", cascade.clip)
    attack = CascadeAttack(cascade.eps if eps is None else eps, norm=cascade.norm if norm is None else norm,
                           **kwargs)
    x_adv = attack(cascade, x, y)
    report = attack.last_report
    return x_adv, report.broken, report.stage
