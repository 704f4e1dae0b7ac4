"""Figures and the temperature explorer of notebook 06 (defensive distillation).

Every figure is a short named function; the explorer's slider calls :func:`show_temperature`,
a plain function (testable without a widget) on records precomputed by
:func:`temperature_records`; :func:`temperature_widget` is only the ipywidgets wrapper.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from ..defenses.distillation import PAPER, softmax_at
from ..runtime import eval_mode
from ..studies.distillation_study import input_gradient_norm

__all__ = ["plot_soft_labels", "plot_gradient_magnitudes", "plot_study", "temperature_records",
           "show_temperature", "temperature_widget"]

_ZERO_FLOOR = 1e-45  # smallest positive float32 (denormal): where exact zeros are drawn on a log axis


def _plt():
    import matplotlib.pyplot as plt

    return plt


def plot_soft_labels(probs_by_t: Mapping[float, torch.Tensor], image: Optional[torch.Tensor] = None,
                     label: Optional[int] = None):
    """Bars of the soft labels (one row of probabilities per temperature) of one image."""
    plt = _plt()
    n = len(probs_by_t) + (image is not None)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 2.6))
    axes = list(axes) if n > 1 else [axes]
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(image.squeeze().cpu(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"label {label}" if label is not None else "input")
        ax.axis("off")
    for ax, (t, p) in zip(axes, probs_by_t.items()):
        p = p.detach().cpu().flatten()
        entropy = -(p.clamp_min(1e-30) * p.clamp_min(1e-30).log()).sum().item()
        ax.bar(range(len(p)), p.numpy(), color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(len(p)))
        ax.set_title(f"T = {t:g}: entropy {entropy:.2f} nats", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gradient_magnitudes(norms: Mapping[str, torch.Tensor], title: str = ""):
    """Histogram (log10 axis) of per-example input-gradient norms per model; exact zeros are
    counted in a separate bar at the left, labelled "= 0"."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    finite = torch.cat([v[v > 0] for v in norms.values()]) if norms else torch.tensor([])
    lo = math.floor(finite.log10().min().item()) - 1 if len(finite) else -10
    hi = math.ceil(finite.log10().max().item()) + 1 if len(finite) else 1
    bins = torch.linspace(lo, hi, 40).numpy()
    zero_x = lo - 1.5
    for label, v in norms.items():
        v = v.detach().cpu()
        pos = v[v > 0]
        (bars,) = [ax.hist(pos.log10().numpy(), bins=bins, alpha=0.55, label=f"{label}")[2]]
        color = bars[0].get_facecolor() if len(bars) else None
        zeros = int((v == 0).sum())
        if zeros:
            ax.bar([zero_x], [zeros], width=0.8, color=color, alpha=0.55)
    ax.axvline(lo - 0.6, color="gray", lw=0.5)
    ticks = list(range(lo, hi + 1, max(1, (hi - lo) // 8)))
    ax.set_xticks([zero_x] + ticks)
    ax.set_xticklabels(["= 0"] + [f"1e{t}" for t in ticks])
    ax.set_xlabel("norm of the input gradient (Frobenius, per example)")
    ax.set_ylabel("examples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_study(results: Mapping[str, Mapping[str, Mapping[str, float]]], temperatures: Sequence[float],
               softmax_attack: str = "JSMA", logit_attacks: Sequence[str] = ("C&W-L2", "PGD-margin"),
               paper: Mapping[str, float] = PAPER):
    """Side by side, vs T: the success of the softmax attack (JSMA) and of the logit attacks on the
    same distilled students, with the undefended model as a dashed line and the papers' numbers
    as crosses; a third panel gives the mean l2 distortion of the successful logit attacks."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ts = list(temperatures)
    labels = [f"T={t:g}" for t in ts]
    colors = ["tab:orange", "tab:green", "tab:purple"]

    def panel(ax, attack, color, marker="o"):
        ys = [100 * results[lab][attack]["success"] for lab in labels]
        ax.plot(ts, ys, marker=marker, color=color, label=f"{attack}: distilled students")
        if "undefended" in results:
            ax.axhline(100 * results["undefended"][attack]["success"], color=color, ls="--", lw=1,
                       label=f"{attack}: undefended")

    panel(axes[0], softmax_attack, "tab:blue")
    axes[0].scatter([1, 100], [100 * paper["jsma_success_undefended"], 100 * paper["jsma_success_T100"]],
                    marker="x", s=60, color="black", zorder=5, label="paper (undefended; T=100)")
    axes[0].set_title(f"{softmax_attack} (saliency from the softmax)")
    for attack, color in zip(logit_attacks, colors):
        panel(axes[1], attack, color)
    axes[1].scatter([100], [100 * paper["cw_success_T100"]], marker="x", s=60, color="black", zorder=5,
                    label="Carlini & Wagner 2017 (T=100)")
    axes[1].set_title("attacks on the logits")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        ax.set_xlabel("distillation temperature T")
        ax.set_ylabel("targeted success rate (%)")
        ax.legend(fontsize=7, loc="center right")
    for attack, color in zip(logit_attacks, colors):
        ys = [results[lab][attack]["l2"] for lab in labels]
        axes[2].plot(ts, ys, marker="o", color=color, label=attack)
        if "undefended" in results:
            axes[2].axhline(results["undefended"][attack]["l2"], color=color, ls="--", lw=1)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("distillation temperature T")
    axes[2].set_ylabel("mean l2 distortion of successes")
    axes[2].set_title("distortion needed (dashed: undefended)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def temperature_records(students: Mapping[float, nn.Module], x: torch.Tensor, y: int, target: int,
                        jsma, logit_attack) -> Dict[float, Dict[str, object]]:
    """Precompute, per temperature, what the explorer shows for one test image ``x`` (1, C, H, W):
    the deployed student's softmax (T = 1) and logits, the norm of the softmax's and the logits'
    input gradient, and the outcome of JSMA and of the logit attack toward ``target``."""
    records: Dict[float, Dict[str, object]] = {}
    yt = torch.tensor([int(y)])
    tt = torch.tensor([int(target)])
    for t, model in students.items():
        device = next(model.parameters()).device
        with eval_mode(model):
            with torch.no_grad():
                logits = model(x.to(device)).cpu()[0]
            j_adv, j_ok, j_n = jsma.run(model, x, yt, tt)
            c_adv, c_ok, c_l2 = logit_attack.run(model, x, yt, tt)
            with torch.no_grad():
                j_pred = model(j_adv).argmax(1).item()
                c_pred = model(c_adv).argmax(1).item()
        records[t] = {
            "T": t, "label": int(y), "target": int(target), "image": x[0].cpu(),
            "logits": logits, "probs": softmax_at(logits[None], 1.0)[0],
            "softmax_grad": input_gradient_norm(model, x, output="softmax").item(),
            "logit_grad": input_gradient_norm(model, x, output="logits").item(),
            "jsma": {"x_adv": j_adv[0].cpu(), "success": bool(j_ok.item()), "pixels": int(j_n.item()),
                     "pred": j_pred},
            "logit_attack": {"x_adv": c_adv[0].cpu(), "success": bool(c_ok.item()), "l2": float(c_l2.item()),
                             "pred": c_pred},
        }
    return records


def show_temperature(t: float, records: Mapping[float, Mapping[str, object]], draw: bool = True):
    """The explorer's view for temperature ``t``: the deployed student's softmax output (log
    scale; exact zeros drawn at the float32 floor), the input-gradient norms, and the JSMA and
    logit-attack adversarial images. Returns the record (and draws it if ``draw``)."""
    if t not in records:
        raise KeyError(f"no record for T = {t}; precomputed: {sorted(records)}")
    r = records[t]
    if not draw:
        return r
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.0), gridspec_kw={"width_ratios": [1, 1.6, 1, 1]})
    axes[0].imshow(r["image"].squeeze(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"label {r['label']}, target {r['target']}")
    probs = r["probs"].clamp_min(_ZERO_FLOOR).numpy()
    colors = ["tab:green" if k == r["label"] else "tab:red" if k == r["target"] else "tab:gray"
              for k in range(len(probs))]
    axes[1].bar(range(len(probs)), probs, color=colors)
    axes[1].set_yscale("log")
    axes[1].set_ylim(_ZERO_FLOOR / 10, 10)
    axes[1].set_xticks(range(len(probs)))
    axes[1].set_title(f"softmax at T=1 (|dF/dx| = {r['softmax_grad']:.2e}, |dz/dx| = {r['logit_grad']:.2e})",
                      fontsize=8)
    j, c = r["jsma"], r["logit_attack"]
    axes[2].imshow(j["x_adv"].squeeze(), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(f"JSMA: {'success' if j['success'] else 'failed'}\n"
                      f"pred {j['pred']}, {j['pixels']} pixels changed", fontsize=9)
    axes[3].imshow(c["x_adv"].squeeze(), cmap="gray", vmin=0, vmax=1)
    axes[3].set_title(f"logit attack (C&W l2): {'success' if c['success'] else 'failed'}\n"
                      f"pred {c['pred']}, l2 = {c['l2']:.2f}", fontsize=9)
    for ax in (axes[0], axes[2], axes[3]):
        ax.axis("off")
    fig.suptitle(f"student distilled at T = {t:g}, deployed at T = 1", fontsize=10)
    fig.tight_layout()
    plt.show()
    return r


def temperature_widget(records: Mapping[float, Mapping[str, object]]):
    """A slider over the precomputed temperatures that redraws :func:`show_temperature`."""
    import ipywidgets as widgets

    slider = widgets.SelectionSlider(options=sorted(records), value=sorted(records)[0], description="T",
                                     continuous_update=False)
    return widgets.interactive(lambda T: show_temperature(T, records) and None, T=slider)
