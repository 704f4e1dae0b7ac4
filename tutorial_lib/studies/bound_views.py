"""Notebook 10's picture: on notebook 04's 2-D toy network, the true output set of an l_inf ball
beside the outer bounds of interval bound propagation (a box), CROWN and the dual network (each a
polygon of half-planes, one per direction), as eps moves.

:func:`bounds_view` computes everything for one eps (plain data, tested); :func:`draw_bounds_view`
draws it; :func:`bounds_explorer` is a slider that calls the two.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from torch import nn

from .polytope import draw_output_plane, interval_box, outer_polytope, true_image

__all__ = ["VIEW_METHODS", "bounds_view", "draw_bounds_view", "bounds_explorer", "areas"]

#: the polygons drawn, with their colours: the dual network (05) and CROWN (10); IBP is the box
VIEW_METHODS = {"crown": "tab:green", "dual": "tab:orange"}
_NAMES = {"crown": "CROWN", "dual": "dual network", "crown-ibp": "CROWN-IBP", "dual-opt": "optimised dual",
          "lp": "LP"}


def bounds_view(model: nn.Module, x0, eps: float, n_dirs: int = 32, methods: Sequence[str] = tuple(VIEW_METHODS),
                n_grid: int = 120) -> Dict[str, object]:
    """For the 2-input, 2-output ReLU net ``model`` and the l_inf ball of radius ``eps`` around x0
    (no pixel box): ``samples`` (n_grid^2, 2) sampled true outputs f(x'), ``box`` (2, 2) the IBP
    box (row k = [lo_k, hi_k]), ``polygons`` {method: (V, 2) vertices} of each method's outer
    polytope from ``n_dirs`` directions (:func:`~tutorial_lib.studies.polytope.outer_polytope`),
    ``eps`` and ``seconds`` (all of it)."""
    t0 = time.perf_counter()
    samples = true_image(model, x0, eps, n_grid).numpy()
    box = interval_box(model, x0, eps)
    polygons = {m: outer_polytope(model, x0, eps, n_dirs, method=m)["vertices"] for m in methods}
    return {"eps": float(eps), "samples": samples, "box": box, "polygons": polygons,
            "seconds": time.perf_counter() - t0}


def _shoelace(v: np.ndarray) -> float:
    if len(v) < 3:
        return 0.0
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def areas(view: Dict[str, object]) -> Dict[str, float]:
    """Area of the IBP box ('interval') and of each polygon of a :func:`bounds_view`."""
    (l1, u1), (l2, u2) = view["box"]
    out = {"interval": float((u1 - l1) * (u2 - l2))}
    out.update({m: _shoelace(v) for m, v in view["polygons"].items()})
    return out


def draw_bounds_view(view: Dict[str, object], ax=None, legend: bool = True):
    """The true outputs (blue dots), the IBP box (grey, dashed), each polygon in its colour and the
    decision boundary z_1 = z_2 (dotted)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.8, 4.4))
    else:
        fig = ax.figure
    polygons = [(v, VIEW_METHODS.get(m, "tab:purple"), _NAMES.get(m, m), False) for m, v in view["polygons"].items()]
    draw_output_plane(ax, view["box"], view["samples"], view["eps"], polygons, box_label="IBP box", legend=legend)
    return fig


def bounds_explorer(model: nn.Module, x0, eps_max: float = 0.5, value: Optional[float] = None, n_dirs: int = 32):
    """ipywidgets explorer: an eps slider; each release calls :func:`bounds_view` and redraws."""
    import ipywidgets as W
    from IPython.display import display

    eps = W.FloatSlider(value=value if value is not None else eps_max / 4, min=0.01, max=eps_max, step=0.01,
                        description="eps (linf)", continuous_update=False)
    out = W.Output()

    def update(*_):
        view = bounds_view(model, x0, eps.value, n_dirs=n_dirs)
        with out:
            out.clear_output(wait=True)
            fig = draw_bounds_view(view)
            a = areas(view)
            fig.axes[0].set_title(f"eps = {view['eps']:.2f}: areas IBP {a['interval']:.2g}, CROWN {a['crown']:.2g}, "
                                  f"dual {a['dual']:.2g}", fontsize=9)
            display(fig)
            plt.close(fig)

    eps.observe(update, names="value")
    update()
    return W.VBox([eps, out])
