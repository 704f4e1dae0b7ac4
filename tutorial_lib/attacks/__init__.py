"""Attacks with one call shape: ``attack(model, x, y, target=None) -> x_adv``.

An attack is an object holding its parameters (eps, steps, ...); calling it on a model, inputs
x (N, ...) and labels y (N,) returns adversarial inputs of the same shape, inside the eps-ball
around x and inside the input box (``clip``, default the pixel box [0, 1]). With ``target``
(N,) the attack is targeted: it pushes each input toward its target class.

The model must be in eval mode: an attack on a model in training mode would see dropout
noise and update batch statistics, so the attacks refuse it (use ``model.eval()``, or
``training.eval_mode(model)`` inside a training step).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["Attack", "FGSM", "PGD", "evaluate", "margin", "check_inputs"]

Box = Optional[Tuple[float, float]]


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, clip: Box,
                 target: Optional[torch.Tensor] = None) -> None:
    """Raise a clear error for inputs no attack should silently accept."""
    if model.training:
        raise RuntimeError("the model is in training mode; call model.eval() before attacking it "
                           "(dropout/batch-norm would make the attack see a different function)")
    if not torch.is_tensor(x) or not torch.is_tensor(y):
        raise TypeError("x and y must be tensors")
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension, shape (N, ...); got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x {tuple(x.shape)}; got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if target is not None and (target.dim() != 1 or target.shape[0] != x.shape[0]):
        raise ValueError(f"target must have shape ({x.shape[0]},); got {tuple(target.shape)}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if clip is not None:
        lo, hi = clip
        if x.numel() and (x.min().item() < lo - 1e-6 or x.max().item() > hi + 1e-6):
            raise ValueError(f"inputs must lie in [{lo}, {hi}] (got min {x.min().item():.4g}, "
                             f"max {x.max().item():.4g}); normalisation belongs inside the model")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per example (N,): negative means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -float("inf"))
    return true - other.max(1).values


def _per_example_loss(logits, y, target):
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


class Attack(ABC):
    """Base class: subclasses implement ``_perturb(model, x, y, target) -> x_adv``."""

    norm = "linf"

    def __init__(self, eps: float, clip: Box = (0.0, 1.0)):
        if not math.isfinite(float(eps)) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        if clip is not None and not clip[0] < clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {clip}")
        self.eps, self.clip = float(eps), clip

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_inputs(model, x, y, self.eps, self.clip, target)
        device = next(model.parameters()).device
        x, y = x.to(device), y.to(device)
        target = target.to(device) if target is not None else None
        if self.eps == 0:
            return x.clone()
        return self._perturb(model, x.detach(), y, target).detach()

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            x_adv = torch.max(torch.min(x_adv, x + self.eps), x - self.eps)
        else:
            delta = x_adv - x
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * _broadcast(torch.clamp(self.eps / norms, max=1.0), delta)
            x_adv = x + delta
        if self.clip is not None:
            x_adv = x_adv.clamp(*self.clip)
        return x_adv

    @abstractmethod
    def _perturb(self, model, x, y, target):
        """Adversarial inputs for validated x (N, ...) on the model's device."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps along sign(grad)."""

    def _perturb(self, model, x, y, target):
        x_req = x.clone().requires_grad_(True)
        loss = _per_example_loss(model(x_req), y, target).sum()
        (grad,) = torch.autograd.grad(loss, x_req)
        return self._project(x + self.eps * grad.sign(), x)


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) in l-inf or l2.

    ``steps`` steps of size ``alpha`` (default 2.5 * eps / steps) on the cross-entropy, each
    followed by projection onto the eps-ball and the box. ``random_start`` starts from a uniform
    point of the ball. With ``restarts`` > 1 the attack is repeated from fresh random starts and,
    per example, the worst result is kept: a misclassified (or, targeted, on-target) point first,
    then the highest loss. ``seed`` fixes the random starts (restart 0 of a run with ``restarts=k``
    equals a run with ``restarts=1`` and the same seed).
    """

    def __init__(self, eps: float, alpha: Optional[float] = None, steps: int = 40,
                 restarts: int = 1, norm: str = "linf", random_start: bool = True,
                 clip: Box = (0.0, 1.0), seed: Optional[int] = 0):
        super().__init__(eps, clip)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {restarts}")
        alpha = 2.5 * eps / steps if alpha is None else alpha
        if not (alpha > 0 or (alpha == 0 and eps == 0)):
            raise ValueError(f"step size alpha must be > 0, got {alpha}")
        self.alpha, self.steps, self.restarts = float(alpha), int(steps), int(restarts)
        self.norm, self.random_start, self.seed = norm, bool(random_start), seed

    def _random_start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1
            return self._project(x + self.eps * noise, x)
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=gen, device=x.device)
        direction = direction / _broadcast(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        radius = torch.rand(x.shape[0], generator=gen, device=x.device) ** (1.0 / d) * self.eps
        return self._project(x + direction * _broadcast(radius, x), x)

    def _run(self, model, x, y, target, gen):
        x_adv = self._random_start(x, gen) if self.random_start else x.clone()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = self._loss(model(x_adv), y, target).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / _broadcast(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
                x_adv = self._project(x_adv + self.alpha * step, x)
        with torch.no_grad():
            logits = model(x_adv)
            loss = self._loss(logits, y, target)
            success = logits.argmax(1) != y if target is None else logits.argmax(1) == target
        return x_adv.detach(), success, loss

    def _loss(self, logits, y, target):
        """Per-example loss (N,) that the attack maximises: cross-entropy (minus, if targeted)."""
        return _per_example_loss(logits, y, target)

    def _perturb(self, model, x, y, target):
        gen = torch.Generator(device=x.device)
        if self.seed is not None:
            gen.manual_seed(self.seed)
        else:
            gen.seed()
        best, best_success, best_loss = self._run(model, x, y, target, gen)
        for _ in range(self.restarts - 1):
            x_adv, success, loss = self._run(model, x, y, target, gen)
            better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
            best = torch.where(_broadcast(better, x), x_adv, best)
            best_success, best_loss = best_success | success, torch.where(better, loss, best_loss)
        return best


class TransferAttack(Attack):
    """Black-box transfer attack: run ``attack`` on a ``source`` model and hand its adversarial
    inputs to the attacked model, whose gradients are never used (Madry et al.'s "A'" when
    ``source`` is an independently trained copy). The source must be in eval mode."""

    def __init__(self, source: nn.Module, attack: Attack):
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an Attack (e.g. PGD(0.3)), got {type(attack).__name__}")
        super().__init__(attack.eps, attack.clip)
        self.source, self.attack, self.norm = source, attack, attack.norm

    def _perturb(self, model, x, y, target):
        device = next(self.source.parameters()).device
        x_adv = self.attack(self.source, x.to(device), y.to(device),
                            None if target is None else target.to(device))
        return x_adv.to(x.device)

    def __repr__(self) -> str:
        return f"TransferAttack(source={type(self.source).__name__}, attack={self.attack!r})"


__all__ += ["TransferAttack"]


def evaluate(model: nn.Module, data: Union[DataLoader, Tuple[torch.Tensor, torch.Tensor]],
             attacks: Optional[Mapping[str, Callable]] = None, batch_size: int = 500,
             progress: bool = True, device=None) -> Dict[str, float]:
    """Accuracy (in [0, 1]) clean and under each attack: ``{"clean": a0, name: a, ...}``.

    ``data`` is a DataLoader or an (x, y) pair (split into batches of ``batch_size``).
    An example counts as robust under an attack if the model classifies the attack's output
    correctly. The model is put in eval mode for the evaluation and restored afterwards.
    """
    attacks = dict(attacks or {})
    if "clean" in attacks:
        raise ValueError("'clean' is reserved for clean accuracy; rename that attack")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if isinstance(data, (tuple, list)):
        x_all, y_all = data
        if len(x_all) != len(y_all):
            raise ValueError(f"x and y differ in length: {len(x_all)} vs {len(y_all)}")
        batches = [(x_all[i:i + batch_size], y_all[i:i + batch_size]) for i in range(0, len(x_all), batch_size)]
    else:
        batches = data
    correct = {name: 0 for name in ["clean", *attacks]}
    total = 0
    was_training = model.training
    model.eval()
    try:
        it = batches
        if progress and tqdm is not None:
            it = tqdm(batches, desc="evaluate", leave=False)
        for xb, yb in it:
            xb, yb = xb.to(device), yb.to(device)
            with torch.no_grad():
                correct["clean"] += (model(xb).argmax(1) == yb).sum().item()
            for name, attack in attacks.items():
                x_adv = attack(model, xb, yb)
                with torch.no_grad():
                    correct[name] += (model(x_adv).argmax(1) == yb).sum().item()
            total += len(yb)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("no examples to evaluate")
    return {name: c / total for name, c in correct.items()}


def accuracy_vs_eps(model: nn.Module, data: Tuple[torch.Tensor, torch.Tensor], eps_values,
                    make_attack: Callable[[float], Callable], progress: bool = False) -> list:
    """Robust accuracy (in [0, 1]) for each eps: ``[evaluate(model, data, {a: make_attack(eps)})[a]]``.
    ``make_attack(eps)`` builds the attack for one radius, e.g. ``lambda e: PGD(e, steps=20)``."""
    out = []
    for eps in eps_values:
        out.append(evaluate(model, data, {"attack": make_attack(float(eps))}, progress=progress)["attack"])
    return out


__all__ += ["accuracy_vs_eps"]


# ----------------------------------------------------------------------------------------------
# Attacks of the defensive-distillation study (notebook 06): JSMA, and two attacks on the logits.
# ----------------------------------------------------------------------------------------------

def _random_targets(y: torch.Tensor, classes: int, seed: Optional[int]) -> torch.Tensor:
    """A target class != y per example, uniform over the other classes (seeded, on CPU)."""
    gen = torch.Generator()
    gen.manual_seed(0 if seed is None else int(seed))
    shift = torch.randint(1, classes, (len(y),), generator=gen)
    return (y.cpu() + shift) % classes


def _margin_to(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    """The attacker's margin objective (N,), to be maximised; success iff it is > 0 (ties aside).

    Untargeted: ``max_{j != y} z_j - z_y``; targeted: ``z_t - max_{j != t} z_j``. On logits, not
    on the softmax, so it does not vanish when the softmax saturates (Carlini & Wagner 2017).
    """
    return -margin(logits, y) if target is None else margin(logits, target)


class JSMA(Attack):
    """Jacobian-based saliency map attack (Papernot et al., EuroS&P 2016), the attack of the
    defensive-distillation paper: targeted, increasing pixels, pairs of features.

    Each iteration takes the Jacobian of the model's softmax output F (at T = 1, the deployed
    model) and, over pairs (p, q) of pixels still in the search domain, computes
    ``alpha = dF_t/dx_p + dF_t/dx_q`` and ``beta = sum_{j != t} (dF_j/dx_p + dF_j/dx_q)``; it picks
    the pair maximising ``-alpha * beta`` subject to ``alpha > 0`` and ``beta < 0``, adds ``theta``
    to both pixels (clipped to the box) and removes them from the domain. It stops when the model
    predicts the target, when at most ``gamma`` of the pixels have been changed (the paper's
    maximum distortion, 14.5 %), or when no pair satisfies the conditions: a saturated softmax has a
    zero Jacobian, and then the attack has nothing to follow and fails (that is how defensive
    distillation defeats it). ``saliency="logits"`` uses the logits' Jacobian instead (the
    variant Carlini & Wagner call JSMA-Z), which does not saturate.

    ``attack(model, x, y, target)`` returns x_adv; :meth:`run` also returns success and the
    number of pixels changed. Without ``target``, a random class != y is drawn (``seed``).
    All examples of a batch run together; ``chunk`` bounds the (chunk, d, d) pair tensors' memory.
    """

    norm = "l0"

    def __init__(self, gamma: float = 0.145, theta: float = 1.0, saliency: str = "softmax",
                 clip: Box = (0.0, 1.0), chunk: int = 16, seed: Optional[int] = 0):
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma (fraction of pixels) must lie in [0, 1], got {gamma}")
        if theta <= 0:
            raise ValueError(f"theta must be > 0 (this JSMA increases pixels), got {theta}")
        if saliency not in ("softmax", "logits"):
            raise ValueError(f"saliency must be 'softmax' or 'logits', got {saliency!r}")
        if int(chunk) != chunk or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk}")
        if clip is None:
            raise ValueError("JSMA needs a box (clip) to know when a pixel is saturated")
        super().__init__(eps=gamma, clip=clip)
        self.gamma, self.theta, self.saliency = float(gamma), float(theta), saliency
        self.chunk, self.seed = int(chunk), seed

    def max_pixels(self, d: int) -> int:
        """Pixels the attack may change on an input of ``d`` features: 2 * floor(gamma * d / 2)."""
        return 2 * int(math.floor(self.gamma * d / 2 + 1e-9))

    def _gradients(self, model, x_flat, shape, target):
        x_req = x_flat.detach().clone().requires_grad_(True)
        logits = model(x_req.view(-1, *shape))
        out = F.softmax(logits, dim=1) if self.saliency == "softmax" else logits
        onehot = F.one_hot(target, out.shape[1]).to(out.dtype)
        (g_t,) = torch.autograd.grad((out * onehot).sum(), x_req, retain_graph=True)
        (g_o,) = torch.autograd.grad((out * (1 - onehot)).sum(), x_req)
        return g_t, g_o, logits.detach()

    def _select_pairs(self, g_t, g_o, domain):
        """Best pair (p, q) per row and whether any pair satisfies the conditions."""
        n, d = g_t.shape
        # a pixel outside the search domain gets alpha = -inf, so no pair containing it is admissible
        g_t = g_t.masked_fill(~domain, -float("inf"))
        ps, qs, found = [], [], []
        for i in range(0, n, self.chunk):
            a, b = g_t[i:i + self.chunk], g_o[i:i + self.chunk]
            alpha = a[:, :, None] + a[:, None, :]
            beta = b[:, :, None] + b[:, None, :]
            valid = (alpha > 0) & (beta < 0)
            valid.diagonal(dim1=1, dim2=2).fill_(False)  # a pair is two different pixels
            score = alpha.mul_(beta).neg_().masked_fill_(~valid, -1.0).flatten(1)
            best = score.argmax(1)
            ps.append(best // d)
            qs.append(best % d)
            found.append(valid.flatten(1).any(1))
        return torch.cat(ps), torch.cat(qs), torch.cat(found)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_adv, success, n_changed)``: success (N,) bool = the model predicts the target on
        x_adv; n_changed (N,) long = pixels that differ from x (at most :meth:`max_pixels`)."""
        check_inputs(model, x, y, self.eps, self.clip, target)
        device = next(model.parameters()).device
        x, y = x.to(device).detach(), y.to(device)
        if target is None:
            with torch.no_grad():
                classes = model(x[:1]).shape[1]
            target = _random_targets(y, classes, self.seed)
        target = target.to(device)
        if (target == y).any():
            raise ValueError("JSMA is targeted: every target must differ from the true label")
        n, shape = x.shape[0], x.shape[1:]
        d = x[0].numel()
        lo, hi = self.clip
        x0 = x.flatten(1)
        x_adv = x0.clone()
        domain = x_adv < hi
        active = torch.ones(n, dtype=torch.bool, device=device)
        for _ in range(self.max_pixels(d) // 2):
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            g_t, g_o, logits = self._gradients(model, x_adv[idx], shape, target[idx])
            done = logits.argmax(1) == target[idx]
            p, q, found = self._select_pairs(g_t, g_o, domain[idx])
            step = ~done & found
            active[idx[~step]] = False  # reached the target, or no admissible pair: stop
            rows = idx[step]
            if len(rows) == 0:
                break
            p, q = p[step], q[step]
            for col in (p, q):
                x_adv[rows, col] = (x_adv[rows, col] + self.theta).clamp(lo, hi)
                domain[rows, col] = False
        x_adv = x_adv.view_as(x)
        with torch.no_grad():
            success = model(x_adv).argmax(1) == target
        n_changed = (x_adv != x).flatten(1).sum(1)
        return x_adv.detach(), success, n_changed

    def _perturb(self, model, x, y, target):
        return self.run(model, x, y, target)[0]


class CarliniWagnerL2(Attack):
    """Carlini & Wagner (S&P 2017) l2 attack on the logits.

    Minimises ``||x' - x||_2^2 + c * max(m(x'), -kappa)`` over ``w`` with
    ``x' = lo + (hi - lo) * (tanh(w) + 1) / 2`` (the change of variables keeps x' in the box), with
    Adam (``lr``, ``steps`` per value of c). ``m`` is the margin on the logits: targeted,
    ``max_{j != t} z_j - z_t``; untargeted, ``z_y - max_{j != y} z_j``. A binary search over c
    (``binary_steps`` values, starting at ``c_init``) keeps, per example, the successful x' of
    smallest l2 distortion. The search runs in log scale: c is multiplied by 10 while no success has
    been found, divided by 10 while every value succeeded, then bisected geometrically; the right c
    scales inversely with the logits, which a distilled network multiplies by about T, so a
    log-scale search finds it in a few steps where Carlini & Wagner's arithmetic bisection (with
    many more steps) would halve it slowly. Examples never attacked successfully are returned
    unchanged. This is a minimum-distortion attack: there is no eps-ball (``self.eps``
    is a placeholder of the base class). :meth:`run` returns ``(x_adv, success, l2)``.

    ``tanh_margin``: x is mapped into w-space as ``atanh`` of its box coordinate clamped to
    ``1 - tanh_margin``, so a pixel at 0 or 1 starts at a finite w (about 3.8 for 1e-3) that Adam
    can leave within a few hundred steps; unchanged pixels then move by at most
    ``tanh_margin / 2`` of the box (included in the reported l2).
    """

    norm = "l2"

    def __init__(self, c_init: float = 1.0, kappa: float = 0.0, steps: int = 100, binary_steps: int = 5,
                 lr: float = 0.05, clip: Box = (0.0, 1.0), abort_early: bool = True,
                 tanh_margin: float = 1e-3):
        if not c_init > 0:
            raise ValueError(f"c_init must be > 0, got {c_init}")
        if kappa < 0:
            raise ValueError(f"kappa (confidence) must be >= 0, got {kappa}")
        if int(steps) != steps or steps < 1 or int(binary_steps) != binary_steps or binary_steps < 1:
            raise ValueError(f"steps and binary_steps must be positive integers, got {steps}, {binary_steps}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if clip is None:
            raise ValueError("the tanh change of variables needs a box (clip)")
        super().__init__(eps=1.0, clip=clip)
        self.c_init, self.kappa, self.steps, self.binary_steps = float(c_init), float(kappa), int(steps), int(binary_steps)
        if not 0 < tanh_margin < 1:
            raise ValueError(f"tanh_margin must lie in (0, 1), got {tanh_margin}")
        self.lr, self.abort_early, self.tanh_margin = float(lr), bool(abort_early), float(tanh_margin)

    def _to_x(self, w):
        lo, hi = self.clip
        return lo + (hi - lo) * (torch.tanh(w) + 1) / 2

    def _to_w(self, x):
        lo, hi = self.clip
        u = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + self.tanh_margin, 1 - self.tanh_margin)
        return torch.atanh(u)

    def _succeeded(self, logits, y, target):
        # success at the attack's own confidence kappa (kappa = 0: the prediction flips)
        m = _margin_to(logits, y, target)
        return m > self.kappa if self.kappa > 0 else (
            logits.argmax(1) != y if target is None else logits.argmax(1) == target)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_adv, success, l2)``; l2 (N,) is ||x_adv - x||_2 (0 where the attack failed)."""
        check_inputs(model, x, y, self.eps, self.clip, target)
        device = next(model.parameters()).device
        x, y = x.to(device).detach(), y.to(device)
        target = target.to(device) if target is not None else None
        n = x.shape[0]
        c = torch.full((n,), self.c_init, device=device)
        lower = torch.zeros(n, device=device)
        upper = torch.full((n,), float("inf"), device=device)
        best_l2 = torch.full((n,), float("inf"), device=device)
        best = x.clone()
        w0 = self._to_w(x)
        for _ in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=device)
            prev = float("inf")
            for it in range(self.steps):
                x_adv = self._to_x(w)
                logits = model(x_adv)
                l2sq = (x_adv - x).flatten(1).pow(2).sum(1)
                f = torch.clamp(-_margin_to(logits, y, target), min=-self.kappa)
                loss_each = l2sq + c * f
                loss = loss_each.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    ok = self._succeeded(logits.detach(), y, target)
                    l2 = l2sq.detach().sqrt()
                    improved = ok & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best[improved] = x_adv.detach()[improved]
                    found |= ok
                if self.abort_early and it % max(10, self.steps // 10) == 0:  # no progress: stop this c
                    if loss.item() > prev * 0.9999:
                        break
                    prev = loss.item()
            with torch.no_grad():  # search on c, per example, in log scale
                upper = torch.where(found, torch.min(upper, c), upper)
                lower = torch.where(found, lower, torch.max(lower, c))
                bracketed = torch.isfinite(upper) & (lower > 0)
                c = torch.where(bracketed, (lower * upper).clamp_min(1e-30).sqrt(),
                                torch.where(torch.isfinite(upper), c / 10, c * 10))
        with torch.no_grad():
            success = self._succeeded(model(best), y, target) & torch.isfinite(best_l2)
        l2 = torch.where(success, (best - x).flatten(1).norm(dim=1), torch.zeros_like(best_l2))
        return best.detach(), success, l2

    def _perturb(self, model, x, y, target):
        return self.run(model, x, y, target)[0]


class MarginPGD(PGD):
    """PGD (l-inf or l2) on the margin of the logits instead of the cross-entropy.

    Maximises ``max_{j != y} z_j - z_y`` (untargeted) or ``z_t - max_{j != t} z_j`` (targeted):
    the loss of Carlini & Wagner, whose gradient does not vanish when the softmax saturates, so
    it is not fooled by defensive distillation. Same parameters and call shape as :class:`PGD`.
    """

    def _loss(self, logits, y, target):
        return _margin_to(logits, y, target)


__all__ += ["JSMA", "CarliniWagnerL2", "MarginPGD"]
