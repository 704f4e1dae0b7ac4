"""A 2-D cascade you can look at (notebook 08; Wong et al. 2018, Sec. 3.3; Mangal et al. 2022).

Three tiny ReLU networks (``Linear(2, 16) - ReLU - Linear(16, 3)``) on a three-class pinwheel in
the unit square [0, 1]^2, trained as a cascade in a few seconds on one CPU core:

* stage 1 is trained with the robust loss (CE on the dual bounds) at the l_inf radius ``eps`` on
  every training point;
* stage k > 1 on the training points that no earlier stage *accepts* (certifies its own
  prediction on the eps-box around the point, :func:`tutorial_lib.defenses.cascade.stage_accepts`).

At an input x the cascade answers with the first stage that accepts x, else with the fallback
stage (the last one in the paper). Its two certificates at x for a label y:

* the paper's: the first accepting stage predicts y. UNSOUND: a point x' of the box around x can
  be accepted by a later stage, or by none, and get another answer (Mangal et al., Figure 1);
* the sound one: every stage predicts y at x and the fallback stage accepts x. Then any stage
  that accepts some x' of the box certifies its prediction on a box that contains x, where it
  predicts y; and where no stage accepts, the fallback answers y on the whole box around x.

Everything is l_inf with the box ``clip = (0, 1)`` (the square drawn in the pictures). Stages
are numbered from 0 in the code (``stage`` 0 is the paper's stage 1); -1 means "no stage".

The cascade's rule and both certificates come from :mod:`tutorial_lib.defenses.cascade`
(:class:`~tutorial_lib.defenses.cascade.Cascade`, :func:`~tutorial_lib.defenses.cascade.paper_certified`,
:func:`~tutorial_lib.defenses.cascade.sound_certified`); this module trains the toy and evaluates them
over the square.

* :func:`toy_data`, :func:`train_stage`, :func:`toy_cascade`   the data and the trained cascade
* :func:`toy_as_cascade`       the toy's stages as a Cascade at any eps and fallback
* :func:`cascade_grid`         region maps on an r x r grid: who accepts, the answer, both certificates
* :func:`find_unsound_spot`    a point the paper certifies and a point of its box answered differently
* :func:`cascade_toy_view`, :func:`describe_view`   what the explorer shows at one point
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks.cascade import attack_cascade
from ..bounds import robust_loss
from ..defenses.cascade import Cascade, paper_certified, sound_certified, stage_accepts

__all__ = ["DEFAULT_EPS", "CLIP", "toy_data", "train_stage", "ToyCascade", "toy_cascade", "toy_as_cascade",
           "CascadeGrid", "cascade_grid", "UnsoundSpot", "find_unsound_spot", "ball_samples",
           "cascade_toy_view", "describe_view"]

DEFAULT_EPS = 0.08
CLIP = (0.0, 1.0)
NUM_CLASSES = 3
_BATCH = 4096  # points per bound computation: the toy's networks are tiny


def toy_data(n: int = 300, seed: int = 0, twist: float = 3.0) -> Tuple[Tensor, Tensor]:
    """A three-class pinwheel: x (n, 2) float32 uniform in [0, 1]^2, y (n,) long in {0, 1, 2}.

    The class is the sector (of three, 120 degrees each) of the angle around the centre
    (0.5, 0.5), the angle turned by ``twist`` radians per unit of distance from the centre, so
    the three boundaries are curved arms that meet in the middle.
    """
    if n < NUM_CLASSES:
        raise ValueError(f"n must be >= {NUM_CLASSES}, got {n}")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g)
    d = x - 0.5
    angle = torch.atan2(d[:, 1], d[:, 0]) + twist * d.norm(dim=1)
    sector = torch.floor(torch.remainder(angle, 2 * math.pi) / (2 * math.pi / NUM_CLASSES)).long()
    return x, sector.clamp(max=NUM_CLASSES - 1)


def train_stage(x: Tensor, y: Tensor, eps: float, seed: int = 0, hidden: int = 16, steps: int = 300,
                lr: float = 0.02) -> nn.Sequential:
    """``Linear(2, hidden) - ReLU - Linear(hidden, 3)`` trained full-batch with the robust loss.

    x: (n, 2) in [0, 1]^2; y: (n,). Adam for ``steps`` steps; the radius grows linearly from 0 to
    ``eps`` over the first half (a robust loss at the full radius from the start gets stuck at a
    constant prediction). The initial weights come from ``seed`` without touching torch's global
    generator. About one second on one CPU core for 300 points. Returned in eval mode.
    """
    if x.ndim != 2 or x.shape[1] != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need x (n, 2) and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no training points")
    if not eps > 0 or steps < 1:
        raise ValueError(f"need eps > 0 and steps >= 1, got eps={eps}, steps={steps}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ramp = max(1, steps // 2)
    for step in range(steps):
        step_eps = eps * min(1.0, (step + 1) / ramp)
        loss, _ = robust_loss(model, x, y, step_eps, clip=CLIP)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@dataclass
class ToyCascade:
    """A trained toy cascade.

    ``stages``: the networks in cascade order; ``x`` (n, 2), ``y`` (n,): all training points;
    ``eps``: the l_inf radius they were trained and are certified at; ``trained_on``: how many
    training points each stage was trained on; ``accepted``: how many of those it accepts;
    ``cascade``: the same stages as a :class:`tutorial_lib.defenses.cascade.Cascade` at ``eps``
    (fallback: the last stage, as in the paper).
    """

    stages: List[nn.Sequential]
    x: Tensor
    y: Tensor
    eps: float
    seed: int
    trained_on: List[int]
    accepted: List[int]
    cascade: Cascade


def toy_cascade(seed: int = 0, eps: float = DEFAULT_EPS, n: int = 300, num_stages: int = 3,
                hidden: int = 16, steps: int = 300, min_points: int = 10) -> ToyCascade:
    """Train a toy cascade of ``num_stages`` stages on :func:`toy_data` (n points, ``seed``).

    Stage k is trained (:func:`train_stage`, seed ``seed + k``) on the training points that stages
    0..k-1 do not accept at ``eps``. When fewer than ``min_points`` are left, there is nothing
    sensible to learn from; that stage is trained on all points instead (``trained_on`` says so).
    Deterministic: the same arguments give the same weights. About 3 s on one CPU core.
    """
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    x, y = toy_data(n, seed)
    left = torch.arange(n)
    stages: List[nn.Sequential] = []
    trained_on: List[int] = []
    accepted: List[int] = []
    for k in range(num_stages):
        rows = left if len(left) >= min_points else torch.arange(n)
        model = train_stage(x[rows], y[rows], eps, seed=seed + k, hidden=hidden, steps=steps)
        _, ok = stage_accepts(model, x[left], eps, clip=CLIP)
        stages.append(model)
        trained_on.append(len(rows))
        accepted.append(int(ok.sum()))
        left = left[~ok]
    cascade = Cascade(stages, eps, norm="linf", clip=CLIP, fallback=-1, batch_size=_BATCH)
    return ToyCascade(stages, x, y, float(eps), seed, trained_on, accepted, cascade)


def toy_as_cascade(toy: ToyCascade, eps: Optional[float] = None, fallback: int = -1) -> Cascade:
    """``toy``'s stages as a :class:`~tutorial_lib.defenses.cascade.Cascade` at radius ``eps``
    (default ``toy.eps``; the stages are not retrained) with stage ``fallback`` (-1: the last)
    answering where none accepts. ``toy.cascade`` itself when nothing differs."""
    eps = toy.eps if eps is None else float(eps)
    if eps == toy.eps and fallback % len(toy.stages) == toy.cascade.fallback:
        return toy.cascade
    return Cascade(toy.stages, eps, norm="linf", clip=CLIP, fallback=fallback, batch_size=_BATCH)


def _check_points(x) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {tuple(x.shape)}")
    if x.numel() and not (x.min() >= CLIP[0] and x.max() <= CLIP[1]):
        raise ValueError(f"points must lie in the box [{CLIP[0]}, {CLIP[1]}]^2")
    return x


@dataclass
class CascadeGrid:
    """A toy cascade evaluated on an r x r grid of [0, 1]^2 (edges included).

    Maps are (r, r) with row i at x2 = ``coords[i]`` and column j at x1 = ``coords[j]`` (draw with
    ``imshow(..., origin="lower", extent=(0, 1, 0, 1))``); ``points`` (r*r, 2) lists the grid
    points in that order (row-major). Per stage, (S, r, r): ``preds`` (its prediction) and
    ``accepts`` (it certifies that prediction on the box; :func:`stage_accepts`). From the
    cascade (:meth:`Cascade.route`): ``accepting``, the stage that accepts (the first one), -1
    for none; ``stage``, the stage that answers; ``answer``, the cascade's answer. ``label``: the
    label certified (the cascade's answer unless a class was given); ``paper`` and ``sound``:
    :func:`paper_certified` and :func:`sound_certified` for ``label``; ``unsound``: the paper
    certifies and a grid point of the box gets another answer (broken, found on the grid).
    ``train_x`` (n, 2) / ``train_y`` (n,): the training points, for the pictures.
    """

    coords: Tensor
    points: Tensor
    preds: Tensor
    accepts: Tensor
    accepting: Tensor
    stage: Tensor
    answer: Tensor
    label: Tensor
    paper: Tensor
    sound: Tensor
    unsound: Tensor
    eps: float
    fallback: int
    train_x: Tensor
    train_y: Tensor

    @property
    def resolution(self) -> int:
        return len(self.coords)

    @property
    def spacing(self) -> float:
        return 1.0 / (self.resolution - 1)


def _grid_points(resolution: int) -> Tuple[Tensor, Tensor]:
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    coords = torch.linspace(0.0, 1.0, resolution)
    x2, x1 = torch.meshgrid(coords, coords, indexing="ij")
    return coords, torch.stack([x1.reshape(-1), x2.reshape(-1)], 1)


def _box_steps(eps: float, spacing: float) -> int:
    """How many grid steps fit in eps: points that many steps apart are in each other's box (up to
    float32 rounding of the grid coordinates, which :func:`_confirms` checks again)."""
    return int(math.floor(eps / spacing + 1e-6))


def _other_answer_nearby(answer: Tensor, label: Tensor, steps: int) -> Tensor:
    """(r, r) bool: some grid point at most ``steps`` grid steps away (l_inf) answers != label."""
    if steps == 0:
        return answer != label
    found = torch.zeros_like(answer, dtype=torch.bool)
    for c in range(NUM_CLASSES):
        other = (answer != c).float()[None, None]
        near = F.max_pool2d(other, 2 * steps + 1, stride=1, padding=steps)[0, 0] > 0
        found |= near & (label == c)
    return found


def cascade_grid(toy: ToyCascade, resolution: int = 101, eps: Optional[float] = None, fallback: int = -1,
                 label: Optional[int] = None) -> CascadeGrid:
    """Evaluate ``toy``'s cascade at every point of an r x r grid of [0, 1]^2 (see :class:`CascadeGrid`).

    ``eps``: the radius of the cascade's rule and of both certificates (default ``toy.eps``);
    ``fallback``: the stage that answers where none accepts (-1: the last, the paper's choice);
    ``label``: certify this class everywhere instead of the cascade's own answer. About 0.2 s
    for r = 101 on one CPU core.
    """
    if label is not None and not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be a class in 0..{NUM_CLASSES - 1}, got {label}")
    cascade = toy_as_cascade(toy, eps, fallback)
    coords, points = _grid_points(resolution)
    shape = (resolution, resolution)
    decision = cascade.route(points)
    target = decision.pred if label is None else torch.full_like(decision.pred, label)
    preds, accepts = zip(*(stage_accepts(m, points, cascade.eps, "linf", CLIP, _BATCH) for m in toy.stages))
    accepting = torch.where(decision.accepted, decision.stage, torch.full_like(decision.stage, -1))
    answer = decision.pred.view(shape)
    paper = paper_certified(cascade, points, target).view(shape)
    sound = sound_certified(cascade, points, target).view(shape)
    unsound = paper & _other_answer_nearby(answer, target.view(shape), _box_steps(cascade.eps, 1 / (resolution - 1)))
    return CascadeGrid(coords, points, torch.stack(preds).view(-1, *shape), torch.stack(accepts).view(-1, *shape),
                       accepting.view(shape), decision.stage.view(shape), answer, target.view(shape), paper, sound,
                       unsound, cascade.eps, cascade.fallback, toy.x, toy.y)


class UnsoundSpot(NamedTuple):
    """A counterexample to the paper's certificate: it certifies ``x`` (2,) for the cascade's
    answer there, yet ``x_prime`` (2,), with ||x' - x||_inf <= eps, gets another answer.
    ``stage_at_x`` accepts x; ``stage_at_x_prime`` answers at x' (the fallback if none accepts)."""

    x: Tensor
    x_prime: Tensor
    stage_at_x: int
    stage_at_x_prime: int


def _confirms(cascade: Cascade, x: Tensor, x_prime: Tensor) -> Optional[UnsoundSpot]:
    """Recompute the claim at the two points alone (no batch shared with other points)."""
    if (x_prime - x).abs().max() > cascade.eps:
        return None
    at_x, at_xp = cascade.route(x[None]), cascade.route(x_prime[None])
    if not paper_certified(cascade, x[None], at_x.pred)[0] or at_x.pred[0] == at_xp.pred[0]:
        return None
    return UnsoundSpot(x.clone(), x_prime.clone(), int(at_x.stage[0]), int(at_xp.stage[0]))


def find_unsound_spot(toy: ToyCascade, resolution: int = 101, eps: Optional[float] = None, fallback: int = -1,
                      method: str = "grid", attack_points: int = 200) -> UnsoundSpot:
    """A point x the paper's certifier certifies (for the cascade's own answer) and a point x' of
    its eps-box with another answer.

    ``method="grid"``: search the grid of :func:`cascade_grid` (x and x' are grid points at most
    eps apart). Among the broken points it takes the one whose box holds the largest share of
    other answers, and as x' the nearest such point of its box (the picture then shows a clear
    case). ``method="attack"``: run :func:`tutorial_lib.attacks.cascade.attack_cascade` (the
    gradient attack on the stages' bounds) on up to ``attack_points`` of the grid points the paper
    certifies, evenly spread, and take the first one it breaks. Either way the pair is checked
    again at the two points alone before it is returned. LookupError when there is none.
    """
    if method not in ("grid", "attack"):
        raise ValueError(f"method must be 'grid' or 'attack', got {method!r}")
    g = cascade_grid(toy, resolution, eps, fallback)
    cascade = toy_as_cascade(toy, g.eps, g.fallback)
    return _spot_on_grid(cascade, g) if method == "grid" else _spot_by_attack(cascade, g, attack_points)


def _spot_on_grid(cascade: Cascade, g: CascadeGrid) -> UnsoundSpot:
    r, steps = g.resolution, _box_steps(g.eps, g.spacing)
    other = (g.answer != g.label).float()[None, None]
    share = F.avg_pool2d(other, 2 * steps + 1, stride=1, padding=steps, count_include_pad=False)[0, 0]
    score = torch.where(g.unsound, share, torch.full_like(share, -1.0)).flatten()
    for flat in score.argsort(descending=True).tolist():
        if score[flat] < 0:
            break
        i, j = divmod(flat, r)
        di, dj = torch.meshgrid(torch.arange(-steps, steps + 1), torch.arange(-steps, steps + 1), indexing="ij")
        ii, jj = i + di.flatten(), j + dj.flatten()
        inside = (ii >= 0) & (ii < r) & (jj >= 0) & (jj < r)
        ii, jj, dist = ii[inside], jj[inside], torch.maximum(di.flatten().abs(), dj.flatten().abs())[inside]
        differs = g.answer[ii, jj] != g.label[i, j]
        for k in dist[differs].argsort().tolist():
            spot = _confirms(cascade, g.points[flat], g.points[int(ii[differs][k]) * r + int(jj[differs][k])])
            if spot is not None:
                return spot
    raise LookupError(f"no grid point certified by the paper's rule has another answer in its box "
                      f"(eps={g.eps}, resolution {r}, fallback stage {g.fallback})")


def _spot_by_attack(cascade: Cascade, g: CascadeGrid, attack_points: int) -> UnsoundSpot:
    if attack_points < 1:
        raise ValueError(f"attack_points must be >= 1, got {attack_points}")
    rows = g.paper.flatten().nonzero()[:, 0]
    rows = rows[torch.linspace(0, len(rows) - 1, min(attack_points, len(rows))).round().long()] if len(rows) else rows
    x, y = g.points[rows], g.label.flatten()[rows]
    x_adv, broken, _ = attack_cascade(cascade, x, y)
    for k in broken.nonzero()[:, 0].tolist():
        spot = _confirms(cascade, x[k], x_adv[k].detach())
        if spot is not None:
            return spot
    raise LookupError(f"the attack broke none of the {len(rows)} grid points the paper certifies (eps={g.eps})")


def ball_samples(point: Tensor, eps: float, samples: int = 41) -> Tensor:
    """A samples x samples grid of the l_inf box of radius eps around point (2,), cut to [0, 1]^2
    (edges included): (samples^2, 2)."""
    if samples < 2:
        raise ValueError(f"samples must be >= 2, got {samples}")
    lo, hi = (point - eps).clamp(*CLIP), (point + eps).clamp(*CLIP)
    a = torch.linspace(0.0, 1.0, samples)
    a1, a2 = torch.meshgrid(lo[0] + a * (hi[0] - lo[0]), lo[1] + a * (hi[1] - lo[1]), indexing="ij")
    return torch.stack([a1.reshape(-1), a2.reshape(-1)], 1)


def cascade_toy_view(toy: ToyCascade, point: Sequence[float], eps: Optional[float] = None, fallback: int = -1,
                     samples: int = 41) -> Dict[str, object]:
    """What the explorer shows at one point of [0, 1]^2, for the cascade's own answer there.

    Returns a dict: ``point`` (2,), ``eps``, ``fallback`` (stage index), ``answer``, ``stage``
    (the stage that answers), ``accepting`` (first accepting stage, -1 for none), ``stage_preds``
    and ``stage_accepts`` (one entry per stage), ``paper`` (the paper certifies the answer),
    ``sound`` (the sound certificate holds), ``other_answer`` (one of the samples x samples points
    of the box answers differently), ``x_prime`` (the nearest such point, else None),
    ``x_prime_answer`` / ``x_prime_stage`` (else None), ``box_answers`` and ``box_stages``
    (sorted lists of the answers and answering stages met in the box), ``broken`` (``paper``
    and ``other_answer``: the paper's certificate is wrong here).
    """
    cascade = toy_as_cascade(toy, eps, fallback)
    x = _check_points(torch.as_tensor(point, dtype=torch.float32).reshape(1, 2))
    at_x = cascade.route(x)
    answer, stage = at_x.pred, int(at_x.stage[0])
    preds, accepts = zip(*(stage_accepts(m, x, cascade.eps, "linf", CLIP) for m in toy.stages))
    x = x[0]
    box = ball_samples(x, cascade.eps, samples)
    in_box = cascade.route(box)
    differs = in_box.pred != answer
    x_prime = xp_answer = xp_stage = None
    if differs.any():
        k = int((box[differs] - x).abs().max(1).values.argmin())
        x_prime = box[differs][k]
        xp_answer, xp_stage = int(in_box.pred[differs][k]), int(in_box.stage[differs][k])
    paper = bool(paper_certified(cascade, x[None], answer)[0])
    return {"point": x, "eps": cascade.eps, "fallback": cascade.fallback, "answer": int(answer[0]), "stage": stage,
            "accepting": stage if bool(at_x.accepted[0]) else -1,
            "stage_preds": [int(p[0]) for p in preds], "stage_accepts": [bool(ok[0]) for ok in accepts],
            "paper": paper, "sound": bool(sound_certified(cascade, x[None], answer)[0]),
            "other_answer": bool(differs.any()), "x_prime": x_prime, "x_prime_answer": xp_answer,
            "x_prime_stage": xp_stage, "box_answers": sorted(set(in_box.pred.tolist())),
            "box_stages": sorted(set(in_box.stage.tolist())), "broken": paper and bool(differs.any())}


def describe_view(view: Dict[str, object]) -> str:
    """A few lines of plain text saying what :func:`cascade_toy_view` found (stages counted from 1)."""
    p, a = view["point"], view["answer"]
    who = (f"stage {view['accepting'] + 1} accepts x and answers" if view["accepting"] >= 0
           else f"no stage accepts x: the fallback (stage {view['fallback'] + 1}) answers")
    lines = [f"x = ({p[0]:.2f}, {p[1]:.2f}), eps = {view['eps']:.3g}: {who} class {a}.",
             "stage predictions: " + ", ".join(
                 f"stage {k + 1}: {c}{' (accepts)' if ok else ''}"
                 for k, (c, ok) in enumerate(zip(view["stage_preds"], view["stage_accepts"])))]
    lines.append(f"paper's certificate: {'CERTIFIED' if view['paper'] else 'not certified'}; "
                 f"sound certificate: {'CERTIFIED' if view['sound'] else 'not certified'}.")
    if view["other_answer"]:
        q = view["x_prime"]
        lines.append(f"x' = ({q[0]:.3f}, {q[1]:.3f}) in the box gets class {view['x_prime_answer']} "
                     f"from stage {view['x_prime_stage'] + 1}"
                     + (": the paper's certificate is WRONG here." if view["broken"] else "."))
    else:
        lines.append("every sampled point of the box gets the same answer.")
    return "\n".join(lines)
