"""Figures used across the notebooks: each is one short function returning the figure."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

__all__ = ["show_images", "plot_history", "plot_accuracy_vs_eps", "loss_surface", "plot_loss_surface",
           "plot_capacity"]


def _as_image(x: torch.Tensor) -> np.ndarray:
    x = x.detach().cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def show_images(x: torch.Tensor, y: Optional[torch.Tensor] = None, pred: Optional[torch.Tensor] = None,
                ncols: int = 10, class_names: Optional[Sequence[str]] = None, scale: float = 1.2) -> Figure:
    """A grid of images x (N, C, H, W) in [0, 1], titled with labels and predictions (red if wrong)."""
    n = len(x)
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows * 1.15), squeeze=False)
    name = (lambda c: class_names[int(c)]) if class_names else (lambda c: str(int(c)))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
        title, color = "", "black"
        if y is not None:
            title = f"y={name(y[i])}"
        if pred is not None:
            title += f"{' ' if title else ''}pred={name(pred[i])}"
            if y is not None and int(pred[i]) != int(y[i]):
                color = "red"
        ax.set_title(title, fontsize=8, color=color)
    fig.tight_layout()
    return fig


def plot_history(history: List[Dict[str, float]],
                 keys: Sequence[str] = ("loss", "train_acc", "test_acc")) -> Figure:
    """Per-epoch curves of a training history (as returned by ``training.fit``)."""
    keys = [k for k in keys if k in history[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, k in zip(axes[0], keys):
        ax.plot(epochs, [h[k] for h in history], marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(k)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_eps(eps_values: Sequence[float], curves: Dict[str, Sequence[float]],
                         title: str = "accuracy under attack",
                         xlabel: str = r"$\epsilon$ ($\ell_\infty$)") -> Figure:
    """Accuracy (in [0, 1]) against eps, one line per named curve."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, acc in curves.items():
        ax.plot(list(eps_values), [100 * a for a in acc], marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def loss_surface(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n: int = 21,
                 seed: int = 0, clip: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy around one input along two l-inf directions.

    x (1, C, H, W), y (1,). Direction 1 is sign(grad_x loss) (the FGSM direction), direction 2 a
    random sign vector. Returns (a, b, losses): a, b (n,) step sizes in [-eps, eps] along each
    direction and losses (n, n) with ``losses[i, j]`` = loss at x + a[i] d1 + b[j] d2 (clipped to
    [0, 1] if ``clip``).
    """
    if x.dim() < 2 or x.shape[0] != 1:
        raise ValueError(f"x must hold one example, shape (1, ...); got {tuple(x.shape)}")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    d1 = g.sign()
    gen = torch.Generator().manual_seed(seed)
    d2 = (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1).to(x)
    steps = torch.linspace(-eps, eps, n, device=device)
    pts = x + steps.view(n, 1, *[1] * (x.dim() - 1)) * d1  # (n, C, H, W)
    grid = pts[:, None] + steps.view(1, n, *[1] * (x.dim() - 1)) * d2  # (n, n, C, H, W)
    grid = grid.reshape(n * n, *x.shape[1:])
    if clip:
        grid = grid.clamp(0, 1)
    with torch.no_grad():
        losses = F.cross_entropy(model(grid), y.expand(n * n), reduction="none").view(n, n)
    return steps.cpu(), steps.cpu(), losses.cpu()


def plot_loss_surface(a: torch.Tensor, b: torch.Tensor, losses: torch.Tensor, title: str = "loss around x",
                      ax: Optional[Axes] = None) -> Figure:
    """3-D surface of ``losses[i, j]`` over (a[i], b[j]) from :func:`loss_surface`."""
    fig = None
    if ax is None:
        fig = plt.figure(figsize=(5, 4))
        ax = fig.add_subplot(projection="3d")
    A, B = torch.meshgrid(a, b, indexing="ij")
    ax.plot_surface(A.numpy(), B.numpy(), losses.numpy(), cmap="viridis")
    ax.set_xlabel("gradient-sign dir.")
    ax.set_ylabel("random dir.")
    ax.set_zlabel("loss")
    ax.set_title(title)
    return fig if fig is not None else ax.figure


def plot_capacity(results: Dict[str, Any], ax: Optional[Axes] = None) -> Figure:
    """Accuracy (clean, solid; PGD-40, dashed) vs width for each training method, from
    :func:`tutorial_lib.studies.capacity.capacity_sweep` results (log-scale width axis)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    rows = results["rows"]
    for method, colour in (("natural", "tab:blue"), ("pgd", "tab:red")):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["width"])
        if not rs:
            continue
        w = [r["width"] for r in rs]
        ax.plot(w, [100 * r["clean"] for r in rs], "o-", color=colour, label=f"{method} training: clean")
        ax.plot(w, [100 * r["PGD-40"] for r in rs], "s--", color=colour, label=f"{method} training: PGD-40")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width multiplier")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"capacity (eps = {results['eps']}, {results['epochs']} epochs each)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax.figure
