"""Notebook 09 (evaluating defences): the shipped ensemble tables, the lessons read from them,
the papers' numbers beside ours, and the attacks of the explorer.

The tables come from the report command (run on a CPU in about 40 minutes; a GPU is faster)::

    python -m tutorial_lib.report <models> --eps 0.1 --n 1000 --ensemble --certified \
        --json data/results/capstone_eps0.1.json

(the exact commands are stored in each file: the shipped tables ran on all 10,000 test images
on a GPU, three such commands in parallel, one per group of models). Accuracies are fractions
in [0, 1].
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..attacks import APGD, FGSM, PGD, APGDTargeted, Attack, Square, accuracy_vs_eps
from ..data import REPO_ROOT

__all__ = ["RESULTS", "MODELS", "ATTACK_COLUMNS", "PAPER", "BASELINES", "EXPLORER_ATTACKS", "load_results",
           "lessons", "train_label", "make_attack", "robust_accuracy_curve"]

RESULTS = REPO_ROOT / "data" / "results"

#: The course's shipped models, in the table's order, with what each is.
MODELS: Dict[str, str] = {
    "mnist_small_natural": "natural training",
    "mnist_small_pgd": "PGD training (Madry et al.), eps 0.3",
    "mnist_small_trades_b01": "TRADES beta 0.1, eps 0.3",
    "mnist_small_trades_b1": "TRADES beta 1, eps 0.3",
    "mnist_small_trades_b6": "TRADES beta 6, eps 0.3",
    "papernot_student_t100": "defensive distillation, T = 100",
    "mnist_small_robust": "Wong-Kolter robust training, eps 0.1 (CPU budget)",
    "mnist_small_robust_full": "Wong-Kolter robust training, eps 0.1 (paper's budget, GPU)",
    "mnist_small_quantized": "input quantisation (a broken defence)",
}

#: The attack columns of the report, weakest family first.
ATTACK_COLUMNS = ("FGSM", "PGD-40", "PGD-100 x3", "APGD-CE", "APGD-T", "Square")

#: What the papers report for the defence a model reproduces, for *their* models and budgets, not
#: ours: {(model, eps): (accuracy in [0, 1], what the paper measured, source)}. The second field
#: says which column of ours it may be set beside (an attack's accuracy or a certified one).
PAPER: Dict[tuple, tuple] = {
    ("mnist_small_pgd", 0.3): (0.893, "attacked: PGD-100, 20 restarts",
                               "Madry et al. 2018, Table 1 (their larger CNN)"),
    ("mnist_small_trades_b6", 0.3): (0.9607, "attacked: PGD-40",
                                     "TRADES README (SmallCNN); 92.46 % under the strongest submitted attack"),
    ("mnist_small_robust", 0.1): (0.942, "certified (dual bound)", "Wong & Kolter 2017: certified error 5.8 %"),
    ("mnist_small_robust_full", 0.1): (0.942, "certified (dual bound)",
                                       "Wong & Kolter 2017: certified error 5.8 %"),
}

#: The undefended model of the same architecture as a defended one (the baseline to show beside
#: it): the distilled student's is the teacher trained at T = 1, i.e. natural training.
BASELINES: Dict[str, str] = {"papernot_student_t100": "papernot_teacher_t1"}


def train_label(metrics: Dict) -> str:
    """A checkpoint's training time with the hardware it ran on, from its registry ``metrics``:
    e.g. "1933 s, CPU" or "426 s, NVIDIA H200"; "-" without a recorded time."""
    secs = metrics.get("train_seconds")
    if secs is None:
        return "-"
    where = metrics.get("card") or ("CPU" if metrics.get("device", "cpu") == "cpu" else str(metrics["device"]).upper())
    return f"{secs:.0f} s, {where}"


def load_results(eps: float, folder: Optional[Path] = None) -> Dict:
    """The shipped table at ``eps`` (``capstone_eps<eps>.json``): {"eps", "n", "commands", "device",
    "seconds", "complete", "table": {model: {column: accuracy}}}. Refuses an unfinished file."""
    path = Path(folder or RESULTS) / f"capstone_eps{eps:g}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: rerun the command in tutorial_lib/studies/capstone.py "
                                f"(RERUN = True in notebook 09)")
    out = json.loads(path.read_text())
    if not out.get("complete", False):
        raise ValueError(f"{path} is unfinished (the run stopped after {len(out['table'])} models): rerun it")
    return out


def lessons(table: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, object]]:
    """Per model, what the table says: ``best_attack`` (the column with the lowest accuracy; ties
    go to the earlier, cheaper attack), ``overstated_by_pgd40`` (PGD-40 accuracy minus the
    ensemble's: how much a PGD-40-only evaluation overstates robustness), ``unknown`` (the
    ensemble's accuracy minus the certified one: examples neither broken nor proven; None without a
    certificate), ``sound`` (certified <= ensemble, or None)."""
    out = {}
    for name, row in table.items():
        cols = [c for c in ATTACK_COLUMNS if c in row]
        best = min(cols, key=lambda c: (row[c], cols.index(c)))
        cert = row.get("certified")
        out[name] = {"best_attack": best, "overstated_by_pgd40": row["PGD-40"] - row["ensemble"],
                     "unknown": None if cert is None else row["ensemble"] - cert,
                     "sound": None if cert is None else cert <= row["ensemble"]}
    return out


#: The explorer's attacks (smaller budgets than the table, so a slider answers in seconds).
EXPLORER_ATTACKS = ("FGSM", "PGD-40", "APGD-CE", "APGD-T", "Square")


def make_attack(name: str, eps: float, square_queries: int = 1000) -> Attack:
    """An explorer attack by name at l-inf radius ``eps``: PGD-40 (step 2.5 eps / 40), APGD-CE and
    APGD-T with 50 steps (3 targets), Square with ``square_queries`` queries."""
    if name == "FGSM":
        return FGSM(eps)
    if name == "PGD-40":
        return PGD(eps, steps=40)
    if name == "APGD-CE":
        return APGD(eps, steps=50)
    if name == "APGD-T":
        return APGDTargeted(eps, steps=50, n_targets=3)
    if name == "Square":
        return Square(eps, n_queries=square_queries)
    raise ValueError(f"unknown attack {name!r}; known: {', '.join(EXPLORER_ATTACKS)}")


def robust_accuracy_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str,
                          eps_values: Sequence[float], square_queries: int = 1000) -> List[float]:
    """Robust accuracy (clean-correct and not broken, in [0, 1]) of ``model`` on (x, y) under the
    explorer attack ``attack`` at each eps of ``eps_values`` (input units)."""
    return accuracy_vs_eps(model, (x, y), eps_values,
                           lambda e: make_attack(attack, e, square_queries) if e > 0 else FGSM(0.0))
