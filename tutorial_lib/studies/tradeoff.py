"""The accuracy/robustness trade-off (Zhang et al. 2019, TRADES; notebook 03).

On a 2-D toy problem: train a tiny MLP with TRADES at any (beta, eps) in well under a second, split
its robust error into natural error + boundary error, draw the decision boundary with the
eps-boxes of the points, and explore it all with sliders (:func:`trades_explorer`). On MNIST:
:func:`plot_tradeoff` draws clean vs PGD accuracy of several trained models.

Definitions (TRADES, Sec. 2), for a classifier f and the l-inf ball B(x, eps):
  natural error   R_nat = P[f(x) != y]
  boundary error  R_bdy = P[f(x) = y and some x' in B(x, eps) has f(x') != f(x)]
  robust error    R_rob = R_nat + R_bdy = P[some x' in B(x, eps) has f(x') != y]
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle
from torch import nn

from ..attacks import MarginPGD
from ..data import make_toy
from ..defenses import PGDTrainingLoss, TradesLoss
from ..models import toy_mlp
from ..runtime import set_seed
from ..stats import format_rate, rate_count
from ..training import cross_entropy_loss, predict

__all__ = ["train_toy", "toy_errors", "toy_view", "draw_toy", "trades_explorer", "plot_tradeoff"]


@contextlib.contextmanager
def _one_thread():
    """Run torch on one thread inside the block (restored after): a 2-32-32-2 MLP on 200 points is
    far too small to share across threads, and on a busy 2-core laptop a second thread only waits
    (the same results, several times faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_toy(beta: float = 1.0, eps: float = 0.1, method: str = "trades", dataset: str = "moons",
              n: int = 200, noise: float = 0.2, hidden: Sequence[int] = (32, 32), steps: int = 200,
              seed: int = 0) -> nn.Sequential:
    """A toy_mlp (2 -> 2 logits) trained full-batch for ``steps`` Adam steps (lr 0.01) on make_toy data.

    ``method``: 'trades' (CE + beta KL, inner PGD-10 on the KL), 'pgd' (Madry's loss) or
    'natural'. Inputs are unbounded (no pixel box). The loop is ``training.fit``'s step (zero_grad,
    backward, step) without its data loader and bookkeeping, on one thread: about a second of CPU
    time, several times less than through ``fit`` on a busy 2-core laptop. (Not bit-identical to
    ``fit``: its loader draws a number from the global RNG every epoch, which moves the inner
    attack's random starts.)
    """
    if method not in ("trades", "pgd", "natural"):
        raise ValueError(f"method must be 'trades', 'pgd' or 'natural', got {method!r}")
    if eps < 0 or beta < 0:
        raise ValueError(f"eps and beta must be >= 0, got eps={eps}, beta={beta}")
    torch.manual_seed(seed)
    x, y = make_toy(dataset, n=n, noise=noise, seed=seed)
    with _one_thread():
        model = toy_mlp(2, hidden, 2)
        if method == "trades":
            loss_fn = TradesLoss(beta=beta, eps=eps, alpha=eps / 4, steps=10, clip=None)
        elif method == "pgd":
            loss_fn = PGDTrainingLoss(eps=eps, alpha=eps / 4, steps=10, clip=None)
        else:
            loss_fn = cross_entropy_loss
        set_seed(seed)  # as fit(seed=seed) does
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):  # one full batch per step, as fit with batch_size = n
            loss, _ = loss_fn(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def toy_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> Dict[str, object]:
    """Natural, boundary and robust error (fractions) of ``model`` on (x, y) at l-inf ``eps``.

    The worst point of each ball is searched by PGD on the margin (30 steps, 5 restarts), which in
    2-D finds it essentially always; returns also the per-point masks ``wrong`` and ``boundary``.
    """
    model.eval()
    with _one_thread():
        pred = predict(model, x)
        wrong = pred != y
        if eps > 0:
            x_adv = MarginPGD(eps, alpha=eps / 8, steps=30, restarts=5, clip=None)(model, x, y)
            broken = predict(model, x_adv) != y
        else:
            broken = wrong.clone()
    boundary = ~wrong & broken
    return {"natural": wrong.float().mean().item(), "boundary": boundary.float().mean().item(),
            "robust": (wrong | boundary).float().mean().item(), "wrong": wrong, "boundary_mask": boundary}


def draw_toy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
             errors: Optional[Dict[str, object]] = None, ax=None, title: str = ""):
    """Decision regions of ``model`` over the data's range, the points (x (n, 2), y (n,)) and
    their eps-boxes: grey boxes are robust, orange ones contain the boundary (boundary error),
    red crosses are misclassified points (natural error)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.2))
    errors = errors if errors is not None else toy_errors(model, x, y, eps)
    lo, hi = x.min(0).values - 0.4, x.max(0).values + 0.4
    g0, g1 = torch.meshgrid(torch.linspace(lo[0], hi[0], 200), torch.linspace(lo[1], hi[1], 200), indexing="xy")
    grid = torch.stack([g0.flatten(), g1.flatten()], 1)
    with torch.no_grad():
        p1 = torch.softmax(model(grid), 1)[:, 1].view(200, 200)
    ax.contourf(g0.numpy(), g1.numpy(), p1.numpy(), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
    ax.contour(g0.numpy(), g1.numpy(), p1.numpy(), levels=[0.5], colors="k", linewidths=1.5)
    bdy, wrong = errors["boundary_mask"], errors["wrong"]
    if eps > 0:  # one collection of boxes, not one artist per point: drawn several times faster
        boxes = [Rectangle((float(p[0]) - eps, float(p[1]) - eps), 2 * eps, 2 * eps) for p in x]
        ax.add_collection(PatchCollection(boxes, facecolors="none",
                                          edgecolors=["tab:orange" if b else "0.6" for b in bdy.tolist()],
                                          linewidths=[1.2 if b else 0.5 for b in bdy.tolist()]))
    for c, col in ((0, "tab:blue"), (1, "tab:red")):
        m = (y == c) & ~wrong
        ax.scatter(x[m, 0], x[m, 1], s=10, c=col, label=f"class {c}")
    ax.scatter(x[wrong, 0], x[wrong, 1], s=40, c="k", marker="x", label="misclassified")
    ax.set_xlim(lo[0].item(), hi[0].item())
    ax.set_ylim(lo[1].item(), hi[1].item())
    ax.set_aspect("equal")
    n = len(y)
    robust = format_rate(rate_count(errors["robust"], n), n)
    ax.set_title(title or (f"natural {100 * errors['natural']:.1f}% + boundary "
                           f"{100 * errors['boundary']:.1f}% = robust {robust}\n"
                           f"(robust error on {n} test points, 95 % interval)"),
                 fontsize=10)
    return ax


_VIEWS: Dict[tuple, Dict[str, object]] = {}


def toy_view(beta: float, eps: float, dataset: str = "moons", n: int = 200, noise: float = 0.2,
             seed: int = 0) -> Dict[str, object]:
    """What the explorer shows for one (beta, eps): the toy MLP trained with TRADES
    (:func:`train_toy`, on ``n`` points of seed ``seed``), its errors on ``n`` fresh test points
    (seed ``seed + 1``) and the seconds both took.

    Returns a dict: ``model``, ``errors`` (as :func:`toy_errors`), ``x_test`` (n, 2), ``y_test``
    (n,), ``seconds`` (training + errors, when first computed) and ``cached`` (True when the
    result was already computed in this session: a setting seen once answers at once). The
    cache holds every setting asked for (a few kB each)."""
    key = (float(beta), round(float(eps), 6), dataset, int(n), float(noise), int(seed))
    if key in _VIEWS:
        return {**_VIEWS[key], "cached": True}
    t0 = time.perf_counter()
    model = train_toy(beta, eps, dataset=dataset, n=n, noise=noise, seed=seed)
    x_test, y_test = make_toy(dataset, n=n, noise=noise, seed=seed + 1)
    errors = toy_errors(model, x_test, y_test, eps)
    _VIEWS[key] = {"model": model, "errors": errors, "x_test": x_test, "y_test": y_test,
                   "seconds": time.perf_counter() - t0}
    return {**_VIEWS[key], "cached": False}


def trades_explorer(dataset: str = "moons", n: int = 200, noise: float = 0.2, seed: int = 0,
                    betas: Sequence[float] = (0, 0.1, 0.3, 1, 3, 10, 30), eps_max: float = 0.4,
                    eps_step: float = 0.05, eps_start: float = 0.2, precompute: bool = True):
    """ipywidgets: beta and eps sliders over the toy problem; each move shows :func:`toy_view`
    (the network retrained with TRADES, its decision boundary, its errors on fresh test points).

    ``precompute``: train every beta at the starting eps while the explorer is built (7 short
    trainings), so that moving beta answers at once; a new eps trains live (under a second on an
    idle core) and every setting seen once is cached."""
    import ipywidgets as W

    if precompute:
        for b in betas:
            toy_view(b, eps_start, dataset=dataset, n=n, noise=noise, seed=seed)
    beta = W.SelectionSlider(options=list(betas), value=1 if 1 in betas else betas[0],
                             description="beta", continuous_update=False)
    eps = W.FloatSlider(value=min(eps_start, eps_max), min=0.0, max=eps_max, step=eps_step,
                        description="eps", continuous_update=False, readout_format=".2f")
    out = W.Output()

    def update(_=None):
        view = toy_view(beta.value, eps.value, dataset=dataset, n=n, noise=noise, seed=seed)
        how = "computed earlier" if view["cached"] else f"trained in {view['seconds']:.1f} s"
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            draw_toy(view["model"], view["x_test"], view["y_test"], eps.value, view["errors"], ax=ax)
            ax.set_xlabel(f"beta = {beta.value}, eps = {eps.value:.2f} ({how})")
            plt.show()

    beta.observe(update, names="value")
    eps.observe(update, names="value")
    update()
    return W.VBox([W.HBox([beta, eps]), out])


def plot_tradeoff(points: Mapping[str, Tuple[float, float]],
                  paper: Optional[Mapping[str, Tuple[float, float]]] = None, ax=None,
                  attack: str = "PGD-40"):
    """Clean accuracy (x) vs accuracy under ``attack`` (y), both in [0, 1], one labelled point per
    model; ``paper`` points (from the papers, not measured here) are drawn hollow."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    for name, (clean, rob) in points.items():
        ax.scatter(100 * clean, 100 * rob, s=40)
        ax.annotate(name, (100 * clean, 100 * rob), textcoords="offset points", xytext=(5, 3), fontsize=8)
    for name, (clean, rob) in (paper or {}).items():
        ax.scatter(100 * clean, 100 * rob, s=60, facecolors="none", edgecolors="k")
        ax.annotate(name, (100 * clean, 100 * rob), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{attack} accuracy (%)")
    ax.grid(alpha=0.3)
    return ax
