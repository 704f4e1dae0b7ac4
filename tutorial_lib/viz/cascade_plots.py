"""Pictures of notebook 08's 2-D toy cascade (:mod:`tutorial_lib.studies.cascade_toy`).

:func:`plot_cascade_regions` draws, over the unit square, which stage accepts each point (pale
colours; hatched where none does and the fallback answers), the cascade's decision boundary
(black), where the paper's certificate is broken (red outline), the training points, and
optionally one point x with its l_inf box, the box's grid points coloured by the cascade's
answer, and a point x' of the box. :func:`draw_cascade_view` adds the explorer's text below it.
Stages are numbered from 1 in the pictures (stage index 0 is "stage 1").
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..studies.cascade_toy import CascadeGrid, describe_view

__all__ = ["STAGE_COLOURS", "CLASS_COLOURS", "CLASS_MARKERS", "region_image", "plot_cascade_regions",
           "draw_cascade_view"]

STAGE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")
CLASS_COLOURS = ("#222222", "#d62728", "#1f3fbf")
CLASS_MARKERS = ("o", "^", "s")
_PALE = 0.32  # share of the stage's colour mixed into white for its region


def _pale(colour: str) -> tuple:
    """``colour`` mixed into white (RGB): a region's fill, light enough for the points on it."""
    return tuple(1 - _PALE + _PALE * c for c in to_rgb(colour))


def region_image(grid: CascadeGrid) -> np.ndarray:
    """(r, r, 3) RGB image: the pale colour of the first accepting stage, white where none does."""
    if grid.preds.shape[0] > len(STAGE_COLOURS):
        raise ValueError(f"at most {len(STAGE_COLOURS)} stages can be drawn, got {grid.preds.shape[0]}")
    table = np.array([(1.0, 1.0, 1.0)] + [_pale(s) for s in STAGE_COLOURS])
    return table[grid.accepting.numpy() + 1]


def _contour_of(ax: Axes, coords: np.ndarray, mask: torch.Tensor, **kwargs) -> None:
    """Outline of the True region of an (r, r) bool mask (nothing when it is all one value)."""
    m = mask.float().numpy()
    if 0 < m.sum() < m.size:
        ax.contour(coords, coords, m, levels=[0.5], **kwargs)


def plot_cascade_regions(grid: CascadeGrid, ax: Optional[Axes] = None, point: Optional[Sequence[float]] = None,
                         eps: Optional[float] = None, x_prime: Optional[Sequence[float]] = None,
                         show_unsound: bool = True, show_training: bool = True,
                         title: Optional[str] = None) -> Axes:
    """The toy cascade's map over [0, 1]^2 from :func:`tutorial_lib.studies.cascade_toy.cascade_grid`.

    ``point`` (x1, x2): draw its l_inf box of radius ``eps`` (default: the grid's eps; the box is
    cut to the unit square) and colour the grid points inside it by the cascade's answer (class
    colours as the training points); ``x_prime``: mark a second point (e.g. from
    :func:`~tutorial_lib.studies.cascade_toy.find_unsound_spot`). ``show_unsound``: outline in red
    where the paper certifies the cascade's answer yet a grid point of the box answers otherwise.
    Returns the axes.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7.2, 5.2))
    eps = grid.eps if eps is None else float(eps)
    coords = grid.coords.numpy()
    num_stages = grid.preds.shape[0]
    half = 0.5 * grid.spacing
    extent = (-half, 1 + half, -half, 1 + half)
    ax.imshow(region_image(grid), origin="lower", extent=extent, interpolation="nearest")
    none = (grid.accepting < 0).float().numpy()
    if none.any():
        with plt.rc_context({"hatch.color": "0.55", "hatch.linewidth": 0.6}):
            ax.contourf(coords, coords, none, levels=[0.5, 1.5], colors="none", hatches=["///"])
    for c in range(len(CLASS_COLOURS)):
        _contour_of(ax, coords, grid.answer == c, colors="k", linewidths=1.3)
    if show_unsound:
        _contour_of(ax, coords, grid.unsound, colors="red", linewidths=1.6, linestyles="--")
    if show_training:
        tx, ty = grid.train_x.numpy(), grid.train_y.numpy()
        for c, (col, mk) in enumerate(zip(CLASS_COLOURS, CLASS_MARKERS)):
            ax.scatter(tx[ty == c, 0], tx[ty == c, 1], s=12, c=col, marker=mk, edgecolors="white",
                       linewidths=0.4, zorder=3)
    if point is not None:
        p = np.asarray(point, dtype=float).reshape(2)
        lo, hi = np.clip(p - eps, 0, 1), np.clip(p + eps, 0, 1)
        ax.add_patch(Rectangle(tuple(lo), *(hi - lo), fill=False, ec="k", lw=1.8, zorder=4))
        pts = grid.points.numpy()
        inside = (pts >= lo - 1e-9).all(1) & (pts <= hi + 1e-9).all(1)
        answers = grid.answer.flatten().numpy()
        for c, col in enumerate(CLASS_COLOURS):
            sel = inside & (answers == c)
            ax.scatter(pts[sel, 0], pts[sel, 1], s=5, c=col, marker="s", linewidths=0, zorder=4)
        ax.scatter([p[0]], [p[1]], s=160, marker="*", c="gold", edgecolors="k", linewidths=1.0, zorder=5)
        if x_prime is not None:
            q = np.asarray(x_prime, dtype=float).reshape(2)
            ax.scatter([q[0]], [q[1]], s=90, marker="X", c="white", edgecolors="k", linewidths=1.2, zorder=5)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    handles = [Patch(fc=_pale(STAGE_COLOURS[k]), ec="0.5", label=f"stage {k + 1} accepts") for k in range(num_stages)]
    handles.append(Patch(fc="white", ec="0.5", hatch="///", label=f"none accepts (stage {grid.fallback + 1} answers)"))
    handles.append(Line2D([], [], color="k", lw=1.3, label="cascade's decision boundary"))
    if show_unsound:
        handles.append(Line2D([], [], color="red", lw=1.6, ls="--", label="paper certifies, box has another answer"))
    handles += [Line2D([], [], ls="", marker=mk, color=col, label=f"class {c}")
                for c, (col, mk) in enumerate(zip(CLASS_COLOURS, CLASS_MARKERS))]
    if point is not None:
        handles.append(Line2D([], [], ls="", marker="*", ms=11, mfc="gold", mec="k", label="x (box: radius eps)"))
        if x_prime is not None:
            handles.append(Line2D([], [], ls="", marker="X", ms=8, mfc="white", mec="k", label="x' (another answer)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"Which stage accepts each point (l_inf, eps = {grid.eps:.3g}); "
                          f"fallback: stage {grid.fallback + 1}", fontsize=10)
    return ax


def draw_cascade_view(grid: CascadeGrid, view: Dict[str, object], fig: Optional[Figure] = None) -> Figure:
    """The explorer's picture: :func:`plot_cascade_regions` at ``view``'s point and x' (from
    :func:`~tutorial_lib.studies.cascade_toy.cascade_toy_view`), its text below."""
    if fig is None:
        fig = plt.figure(figsize=(8.5, 6.0))
    fig.clf()
    ax = fig.add_axes((0.08, 0.26, 0.6, 0.68))
    x_prime = view["x_prime"].tolist() if view["x_prime"] is not None else None
    plot_cascade_regions(grid, ax=ax, point=view["point"].tolist(), eps=view["eps"], x_prime=x_prime)
    colour = "red" if view["broken"] else "black"
    fig.text(0.03, 0.02, describe_view(view), fontsize=9, family="monospace", color=colour, va="bottom")
    return fig
