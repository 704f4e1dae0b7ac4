"""Notebook explorers: attacks (notebook 01), activation relaxations (07), the 2-D toy cascade (08),
evaluation (09). Each
widget is thin: the function a slider calls is a plain function (``attack_example``,
:func:`tutorial_lib.studies.cascade_toy.cascade_toy_view`, ...) that tests call directly; the
ipywidgets layer only wires controls."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from ..attacks import FGSM, PGD, Attack

if TYPE_CHECKING:  # only for the annotation; ipywidgets is imported when a widget is built
    import ipywidgets

    from ..studies.cascade_toy import ToyCascade

__all__ = ["ATTACKS", "make_attack", "attack_example", "draw_attack_example", "attack_explorer",
           "draw_evaluation", "evaluation_explorer", "cascade_explorer", "relaxation_explorer"]

ATTACKS = ("FGSM", "PGD-40", "PGD-40 targeted (next class)", "PGD-40 l2")


def make_attack(name: str, eps: float) -> Attack:
    """The explorer's attacks by name (l2 uses ``eps`` x 10 as its l2 radius, see the notebook)."""
    if name == "FGSM":
        return FGSM(eps)
    if name in ("PGD-40", "PGD-40 targeted (next class)"):
        return PGD(eps, alpha=max(eps / 10, 1e-4), steps=40)
    if name == "PGD-40 l2":
        return PGD(10 * eps, steps=40, norm="l2")
    raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")


def attack_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                   attack: str = "PGD-40") -> Dict[str, object]:
    """Attack one example x (1, C, H, W) with label y (1,).

    Returns a dict: ``x``, ``x_adv``, ``delta`` (x_adv - x), ``clean_pred``, ``adv_pred``,
    ``clean_conf``/``adv_conf`` (softmax probability of the predicted class), ``target``
    (or None; the targeted attack aims at the next class, ``(y + 1) mod K`` with K the number of
    logits the model outputs), ``linf`` and ``l2`` (the perturbation's norms), ``fooled`` (bool).
    """
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    with torch.no_grad():
        p_clean = model(x.to(device)).softmax(1)[0]
    num_classes = p_clean.shape[0]
    atk = make_attack(attack, eps)
    target = (y + 1) % num_classes if "targeted" in attack else None
    x_adv = atk(model, x, y, target=target)
    with torch.no_grad():
        p_adv = model(x_adv.to(device)).softmax(1)[0]
    delta = (x_adv - x.to(device)).cpu()
    clean_pred, adv_pred = int(p_clean.argmax()), int(p_adv.argmax())
    return {"x": x.cpu(), "x_adv": x_adv.cpu(), "delta": delta,
            "clean_pred": clean_pred, "adv_pred": adv_pred,
            "clean_conf": float(p_clean[clean_pred]), "adv_conf": float(p_adv[adv_pred]),
            "target": None if target is None else int(target), "label": int(y),
            "linf": float(delta.abs().max()), "l2": float(delta.flatten().norm()),
            "fooled": adv_pred != int(y)}


def draw_attack_example(r: Dict[str, object], class_names: Optional[Sequence[str]] = None,
                        fig: Optional[Figure] = None) -> Figure:
    """Clean image, perturbation (magnified to the full colour range) and adversarial image."""
    name = (lambda c: class_names[c]) if class_names else str
    if fig is None:
        fig = plt.figure(figsize=(8, 2.9))
    fig.clf()
    axes = fig.subplots(1, 3)
    img = lambda t: t[0, 0].numpy() if t.shape[1] == 1 else t[0].permute(1, 2, 0).numpy()
    axes[0].imshow(img(r["x"]), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"clean: {name(r['clean_pred'])} ({100 * r['clean_conf']:.1f}%)", fontsize=9)
    scale = max(r["linf"], 1e-8)
    axes[1].imshow(img(r["delta"]) / scale, cmap="seismic", vmin=-1, vmax=1)
    axes[1].set_title(f"perturbation (x{1 / scale:.0f})\nlinf={r['linf']:.3f}, l2={r['l2']:.2f}", fontsize=9)
    axes[2].imshow(img(r["x_adv"]), cmap="gray", vmin=0, vmax=1)
    color = "red" if r["fooled"] else "green"
    axes[2].set_title(f"adversarial: {name(r['adv_pred'])} ({100 * r['adv_conf']:.1f}%)", fontsize=9, color=color)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def attack_explorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    class_names: Optional[Sequence[str]] = None) -> ipywidgets.VBox:
    """ipywidgets explorer: pick an example, an attack and eps; shows clean / perturbation / adversarial."""
    import ipywidgets as W
    from IPython.display import display

    index = W.IntSlider(0, 0, len(x) - 1, description="example")
    eps = W.FloatSlider(value=0.1, min=0.0, max=0.4, step=0.01, description="eps (linf)")
    attack = W.Dropdown(options=list(ATTACKS), value="PGD-40", description="attack")
    out = W.Output()

    def update(*_):
        r = attack_example(model, x[index.value:index.value + 1], y[index.value:index.value + 1],
                           eps.value, attack.value)
        with out:
            out.clear_output(wait=True)
            fig = draw_attack_example(r, class_names)
            display(fig)
            plt.close(fig)

    for w in (index, eps, attack):
        w.observe(update, names="value")
    update()
    box = W.VBox([W.HBox([index, eps, attack]), out])
    return box


def draw_evaluation(eps_values: Sequence[float], curve: Sequence[float], eps: float,
                    r: Dict[str, object], title: str = "", fig: Optional[Figure] = None) -> Figure:
    """Notebook 09's explorer view: robust accuracy against eps (``curve``, in [0, 1], one value per
    eps of ``eps_values``) with the chosen ``eps`` marked, beside one example attacked at ``eps``
    (``r`` from :func:`attack_example`-like dicts: ``x``, ``x_adv``, ``clean_pred``, ``adv_pred``)."""
    if fig is None:
        fig = plt.figure(figsize=(9, 3))
    fig.clf()
    ax, a1, a2 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2.2, 1, 1]})
    ax.plot(eps_values, [100 * c for c in curve], marker="o")
    ax.axvline(eps, color="gray", ls="--")
    ax.set(xlabel="eps (l-inf)", ylabel="robust accuracy (%)", ylim=(-3, 103), title=title)
    ax.title.set_fontsize(9)
    img = lambda t: t[0, 0].numpy() if t.shape[1] == 1 else t[0].permute(1, 2, 0).numpy()
    a1.imshow(img(r["x"]), cmap="gray", vmin=0, vmax=1)
    a1.set_title(f"clean: {r['clean_pred']}", fontsize=9)
    a2.imshow(img(r["x_adv"]), cmap="gray", vmin=0, vmax=1)
    a2.set_title(f"eps={eps:.2f}: {r['adv_pred']}", fontsize=9, color="red" if r["fooled"] else "green")
    for a in (a1, a2):
        a.axis("off")
    fig.tight_layout()
    return fig


def evaluation_explorer(models: Dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                        eps_values: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
                        square_queries: int = 300) -> ipywidgets.VBox:
    """ipywidgets explorer of notebook 09: pick a model, an attack and eps; shows the robust
    accuracy curve on (x, y) (computed once per model and attack, by
    :func:`tutorial_lib.studies.capstone.robust_accuracy_curve`) and example ``index`` attacked at eps."""
    import ipywidgets as W
    from IPython.display import display

    from ..studies.capstone import EXPLORER_ATTACKS, make_attack, robust_accuracy_curve

    model_w = W.Dropdown(options=list(models), description="model")
    attack_w = W.Dropdown(options=list(EXPLORER_ATTACKS), value="PGD-40", description="attack")
    eps_w = W.FloatSlider(value=0.1, min=0.0, max=max(eps_values), step=0.01, description="eps")
    index_w = W.IntSlider(0, 0, len(x) - 1, description="example")
    out = W.Output()
    curves: Dict[tuple, list] = {}

    def update(*_):
        model, name = models[model_w.value], attack_w.value
        key = (model_w.value, name)
        if key not in curves:
            curves[key] = robust_accuracy_curve(model, x, y, name, eps_values, square_queries)
        i, eps = index_w.value, eps_w.value
        xi, yi = x[i:i + 1], y[i:i + 1]
        x_adv = make_attack(name, eps, square_queries)(model, xi, yi) if eps > 0 else xi.clone()
        with torch.no_grad():
            clean_pred, adv_pred = int(model(xi).argmax(1)), int(model(x_adv).argmax(1))
        r = {"x": xi.cpu(), "x_adv": x_adv.cpu(), "clean_pred": clean_pred, "adv_pred": adv_pred,
             "fooled": adv_pred != int(yi)}
        with out:
            out.clear_output(wait=True)
            fig = draw_evaluation(eps_values, curves[key], eps, r,
                                  title=f"{model_w.value}, {name} ({len(x)} images)")
            display(fig)
            plt.close(fig)

    for w in (model_w, attack_w, eps_w, index_w):
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([model_w, attack_w]), W.HBox([eps_w, index_w]), out])


_FALLBACKS = {"last": -1, "first": 0}


def cascade_explorer(toy: ToyCascade, eps_max: float = 0.2, fixed_eps: bool = False,
                     resolution: int = 101) -> ipywidgets.VBox:
    """ipywidgets explorer of notebook 08's 2-D toy cascade: sliders for the point (x1, x2) and
    eps (``fixed_eps``: no eps slider, ``toy.eps`` throughout), a toggle for the fallback stage
    (last, as in the paper, or first). Every change calls
    :func:`tutorial_lib.studies.cascade_toy.cascade_toy_view` and draws it with
    :func:`tutorial_lib.viz.cascade_plots.draw_cascade_view` over the region map
    (:func:`~tutorial_lib.studies.cascade_toy.cascade_grid`, computed once per eps and fallback)."""
    import ipywidgets as W
    from IPython.display import display

    from ..studies import cascade_toy as CT
    from .cascade_plots import draw_cascade_view

    x1_w = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="x1", continuous_update=False)
    x2_w = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="x2", continuous_update=False)
    eps_w = W.FloatSlider(value=toy.eps, min=0.01, max=max(eps_max, toy.eps), step=0.01, description="eps (linf)",
                          continuous_update=False, readout_format=".2f")
    fallback_w = W.ToggleButtons(options=list(_FALLBACKS), value="last", description="fallback")
    out = W.Output()
    grids: Dict[tuple, object] = {}

    def update(*_):
        eps = toy.eps if fixed_eps else eps_w.value
        fallback = _FALLBACKS[fallback_w.value]
        key = (round(eps, 6), fallback)
        if key not in grids:
            grids[key] = CT.cascade_grid(toy, resolution, eps, fallback)
        view = CT.cascade_toy_view(toy, (x1_w.value, x2_w.value), eps, fallback)
        with out:
            out.clear_output(wait=True)
            fig = draw_cascade_view(grids[key], view)
            display(fig)
            plt.close(fig)

    controls = [x1_w, x2_w, fallback_w] + ([] if fixed_eps else [eps_w])
    for w in controls:
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([x1_w, x2_w]), W.HBox(controls[2:]), out])


def relaxation_explorer(activation: str = "sigmoid", lo: float = -2.0, hi: float = 3.0) -> ipywidgets.VBox:
    """ipywidgets explorer of notebook 07's activation relaxations: a menu for the activation
    (sigmoid, tanh, relu) and sliders for the pre-activation bounds l and u. Every change draws
    :func:`tutorial_lib.viz.scaling_plots.draw_relaxation` (the lines come from
    :func:`~tutorial_lib.viz.scaling_plots.relaxation_lines`, the library's relaxation); u is
    kept >= l by moving the other slider."""
    import ipywidgets as W
    from IPython.display import display

    from .scaling_plots import ACTIVATIONS, draw_relaxation

    act_w = W.ToggleButtons(options=list(ACTIVATIONS), value=activation, description="activation")
    lo_w = W.FloatSlider(value=lo, min=-8.0, max=8.0, step=0.1, description="l", continuous_update=False)
    hi_w = W.FloatSlider(value=hi, min=-8.0, max=8.0, step=0.1, description="u", continuous_update=False)
    out = W.Output()

    def update(change=None):
        if lo_w.value > hi_w.value:  # keep l <= u: move the slider that was not touched
            if change is not None and change.get("owner") is hi_w:
                lo_w.value = hi_w.value
            else:
                hi_w.value = lo_w.value
            return  # the moved slider calls update again
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 3.8))
            draw_relaxation(act_w.value, lo_w.value, hi_w.value, ax=ax)
            display(fig)
            plt.close(fig)

    for w in (act_w, lo_w, hi_w):
        w.observe(update, names="value")
    update()
    return W.VBox([act_w, W.HBox([lo_w, hi_w]), out])
