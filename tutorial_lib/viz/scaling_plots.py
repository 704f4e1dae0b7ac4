"""Figures of notebook 07 (Wong et al. 2018, *Scaling provable adversarial defenses*).

* :func:`relaxation_lines`        the chord/tangent lines of sigmoid or tanh on [l, u] (plain numbers)
* :func:`draw_relaxation`         an activation, its lines on [l, u] and the region between them
* :func:`draw_residual_dual`      the dual network of a residual block beside the block itself
* :func:`draw_projection_errors`  relative error of the projection estimates against k
* :func:`draw_certified_curves`   certified accuracy against the radius, one curve per model
* :func:`draw_bounds_vs_sampling` dual bounds on each logit beside the sampled range
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import nn

from ..bounds import DualReLU, DualSigmoid, DualTanh

__all__ = ["ACTIVATIONS", "relaxation_lines", "draw_relaxation", "draw_residual_dual", "draw_projection_errors",
           "draw_certified_curves", "draw_bounds_vs_sampling"]

#: name -> (module, dual class) of the activations the relaxation figure draws
ACTIVATIONS = {"sigmoid": (nn.Sigmoid, DualSigmoid), "tanh": (nn.Tanh, DualTanh), "relu": (nn.ReLU, DualReLU)}


def relaxation_lines(activation: str, lo: float, hi: float) -> Tuple[float, float, float, float]:
    """(lower slope, lower intercept, upper slope, upper intercept) of the library's relaxation of
    ``activation`` ('sigmoid', 'tanh' or 'relu') for pre-activation bounds lo <= hi: for every z in
    [lo, hi], lower slope * z + lower intercept <= act(z) <= upper slope * z + upper intercept."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    if not lo <= hi:
        raise ValueError(f"need lo <= hi, got lo={lo}, hi={hi}")
    module, dual = ACTIVATIONS[activation]
    layer = dual(module(), (1,), (1,))
    as_tensor = lambda v: torch.tensor([[float(v)]], dtype=torch.float64)  # noqa: E731
    return tuple(float(t) for t in layer.relax(as_tensor(lo), as_tensor(hi)))


def draw_relaxation(activation: str, lo: float, hi: float, ax: Optional[Axes] = None, margin: float = 1.5) -> Axes:
    """The activation on [lo - margin, hi + margin], its two lines on [lo, hi] (the pre-activation
    bounds) and the region between them (the convex set the dual network works with)."""
    ls, li, us, ui = relaxation_lines(activation, lo, hi)
    l, u = lo, hi  # noqa: E741
    module = ACTIVATIONS[activation][0]()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    z = torch.linspace(l - margin, u + margin, 400, dtype=torch.float64)
    ax.plot(z, module(z), color="black", lw=2, label=activation)
    zz = torch.linspace(l, u, 100, dtype=torch.float64)
    below, above = ls * zz + li, us * zz + ui
    ax.fill_between(zz, below, above, color="tab:blue", alpha=0.2, label="relaxation")
    ax.plot(zz, above, color="tab:red", label=f"upper line (slope {us:.3f})")
    ax.plot(zz, below, color="tab:green", label=f"lower line (slope {ls:.3f})")
    for v in (l, u):
        ax.axvline(v, color="gray", ls=":", lw=1)
    ax.set_xlabel("pre-activation z")
    ax.set_title(f"{activation} on [l, u] = [{l:.2f}, {u:.2f}]")
    ax.legend(fontsize=8, loc="best")
    return ax


def _box(ax: Axes, xy: Tuple[float, float], text: str, color: str) -> None:
    ax.text(*xy, text, ha="center", va="center", fontsize=9,
            bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="gray"))


def _arrow(ax: Axes, a: Tuple[float, float], b: Tuple[float, float], color: str = "black", rad: float = 0.0) -> None:
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="->", color=color, shrinkA=14, shrinkB=14,
                                                    connectionstyle=f"arc3,rad={rad}"))


def draw_residual_dual(ax: Optional[Axes] = None) -> Axes:
    """The residual block y = W_b relu(W_a x) + x (top) and its dual network (bottom): the dual
    runs right to left, copies nu at the sum to both branches and adds the branches' nus where
    they meet at the block's input."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4.2))
    fwd, dual = "#dbe9f6", "#fde2cf"
    ya, yb = 3.0, 1.0
    top = [(0.5, "x"), (2.2, "W_a x"), (3.9, "relu"), (5.6, "W_b ·"), (7.3, "+"), (9.0, "y")]
    for x, t in top:
        _box(ax, (x, ya), t, fwd)
    for (x0, _), (x1, _) in zip(top[:-1], top[1:]):
        _arrow(ax, (x0, ya), (x1, ya))
    _arrow(ax, (0.5, ya), (7.3, ya), color="tab:blue", rad=-0.35)  # the identity shortcut
    ax.text(3.9, ya + 1.05, "shortcut (identity)", ha="center", fontsize=8, color="tab:blue")
    bot = [(0.5, "ν_x = ν_body + ν"), (2.2, "W_aᵀ ·"), (3.9, "relu's dual\n(slopes d)"), (5.6, "W_bᵀ ·"),
           (7.3, "copy ν"), (9.0, "ν (from the\nlayers above)")]
    for x, t in bot:
        _box(ax, (x, yb), t, dual)
    for (x0, _), (x1, _) in zip(bot[1:], bot[:-1]):
        _arrow(ax, (x0, yb), (x1, yb), color="tab:red")
    _arrow(ax, (7.3, yb), (0.5, yb), color="tab:red", rad=0.35)
    ax.text(3.9, yb - 1.1, "the shortcut's dual: ν passes unchanged", ha="center", fontsize=8, color="tab:red")
    ax.text(-1.1, ya, "block", ha="right", va="center", fontsize=10, weight="bold")
    ax.text(-1.1, yb, "dual", ha="right", va="center", fontsize=10, weight="bold")
    ax.set_xlim(-2.0, 10.0)
    ax.set_ylim(-0.5, 4.5)
    ax.axis("off")
    return ax


def draw_projection_errors(errors: Mapping[int, Mapping[str, object]], ax: Optional[Axes] = None) -> Axes:
    """Box plots of the relative error of the k-projection estimates (``studies.projections.
    estimate_errors``'s output) against k, with the fraction of estimates tighter than the exact
    bound on a second axis."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ks = sorted(errors)
    data = [torch.as_tensor(errors[k]["relative_error"]).double().clamp_min(1e-6).numpy() for k in ks]
    ax.boxplot(data, positions=range(len(ks)), showfliers=False)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel("number of random projections k")
    ax.set_ylabel("|estimate - exact| / |exact|")
    twin = ax.twinx()
    twin.plot(range(len(ks)), [100 * float(errors[k]["tighter"]) for k in ks], "o-", color="tab:red")
    twin.set_ylabel("estimates tighter than exact (%)", color="tab:red")
    twin.set_ylim(0, 100)
    return ax


def draw_certified_curves(curves: Mapping[str, Tuple[Sequence[float], Sequence[float]]], ax: Optional[Axes] = None,
                          xlabel: str = "radius",
                          attack_curves: Optional[Mapping[str, Tuple[Sequence[float], Sequence[float]]]] = None,
                          attack: str = "PGD") -> Axes:
    """One solid curve per name: certified accuracy (fractions) against the radii; with
    ``attack_curves`` (same names), the accuracy under an attack as a dashed curve of the same
    colour (robust accuracy lies between the two)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for name, (radii, acc) in curves.items():
        line, = ax.plot(list(radii), [100 * a for a in acc], "o-", label=f"{name}, certified")
        if attack_curves and name in attack_curves:
            r2, a2 = attack_curves[name]
            ax.plot(list(r2), [100 * a for a in a2], "s--", color=line.get_color(), label=f"{name}, {attack}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def draw_bounds_vs_sampling(result: Dict[str, torch.Tensor], ax: Optional[Axes] = None,
                            title: Optional[str] = None) -> Axes:
    """Per logit, centred on the midpoint of its sampled range (the logits' values differ far more
    than their ranges, which would hide both): the dual bounds as an interval with end caps, the
    sampled range as a thick bar inside it with its ends marked
    (``studies.scaling_eval.bounds_vs_sampling``'s output; pass the radius in ``title``)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    K = len(result["lower"])
    js = list(range(K))
    smin, smax = [float(v) for v in result["sample_min"]], [float(v) for v in result["sample_max"]]
    mid = [(a + b) / 2 for a, b in zip(smin, smax)]
    lo = [float(v) - m for v, m in zip(result["lower"], mid)]
    hi = [float(v) - m for v, m in zip(result["upper"], mid)]
    smin, smax = [v - m for v, m in zip(smin, mid)], [v - m for v, m in zip(smax, mid)]
    ax.errorbar(js, [(a + b) / 2 for a, b in zip(lo, hi)], yerr=[(b - a) / 2 for a, b in zip(lo, hi)], fmt="none",
                ecolor="tab:blue", elinewidth=1.5, capsize=6, label="dual bounds (outer)")
    ax.vlines(js, smin, smax, color="black", lw=5, label="sampled range (inner)")
    ax.plot(js + js, smin + smax, "_", color="black", ms=14, mew=2)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(js)
    ax.set_xlabel("logit")
    ax.set_ylabel("value - midpoint of the sampled range")
    ax.set_title(title or "dual bounds vs sampled values, per logit")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return ax
