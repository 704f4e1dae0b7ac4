"""Notebook 09's summary figure: every defence's clean, ensemble (worst case over every attack)
and certified accuracy at each radius of the shipped capstone tables."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt

__all__ = ["summary_figure"]


def summary_figure(results: Dict[float, Dict], models: Optional[Sequence[str]] = None):
    """One panel per radius (the keys of ``results``, each a capstone result with a ``table``
    {model: {column: accuracy in [0, 1]}}): per model a bar of clean accuracy, a darker bar of the
    ensemble's robust accuracy inside it, and a black tick at the certified accuracy where there is
    one. Accuracies are shown in %. Returns the matplotlib Figure."""
    radii = list(results)
    models = list(models or next(iter(results.values()))["table"])
    fig, axes = plt.subplots(1, len(radii), figsize=(4.2 * len(radii), 0.35 * len(models) + 1.8),
                             sharey=True, squeeze=False)
    for ax, eps in zip(axes[0], radii):
        table = results[eps]["table"]
        pos = range(len(models))[::-1]
        ax.barh(pos, [100 * table[m]["clean"] for m in models], color="#c6dbef", label="clean")
        ax.barh(pos, [100 * table[m]["ensemble"] for m in models], height=0.5, color="#08519c",
                label="ensemble (worst case)")
        cert = [(p, 100 * table[m]["certified"]) for p, m in zip(pos, models) if table[m].get("certified") is not None]
        if cert:
            ax.scatter([c for _, c in cert], [p for p, _ in cert], marker="|", s=180, color="black",
                       zorder=3, label="certified")
        ax.set(xlim=(0, 100), xlabel="accuracy (%)", title=f"eps = {eps:g} ({results[eps].get('n', '?')} images)")
        ax.set_yticks(list(pos), models, fontsize=8)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
