"""Madry et al. 2018's MNIST evaluation (their Table 1) run on our checkpoints, for notebook 02.

    python -m tutorial_lib.studies.madry_table --n 500

Every row is one attack at l-inf ``eps`` (0.3 in the paper) from one *source* network:

* ``A``  -- the attacked model itself (white box);
* ``A'`` -- an independently trained copy of it (same recipe, another seed), whose adversarial
  examples are handed to the attacked model (black box, transfer);
* ``B``  -- a network of a different architecture (black box, transfer). The paper's B is
  architecture B of Tramer et al. 2017 ("Ensemble adversarial training"); notebook 02 uses the
  shipped ``papernot_teacher_t1`` (Papernot et al.'s distillation network at temperature 1, i.e.
  trained naturally), which is not the paper's B.

The attacks: FGSM; PGD on the cross-entropy (step 0.01, random start, ``restarts`` runs with the
worst kept per image); "Targeted" (PGD-40 toward a random target class per image, drawn with
:func:`~tutorial_lib.attacks.random_targets`); CW (PGD-40 on Carlini & Wagner's margin loss,
:class:`~tutorial_lib.attacks.MarginPGD`) and CW+ (the same with confidence ``kappa`` = 50).
An image counts as robust only if the model classifies it correctly clean *and* on the attack's
output (as :func:`~tutorial_lib.attacks.evaluate` counts). Examples crafted on a source shared by
several attacked models (B) are computed once.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..attacks import FGSM, PGD, MarginPGD, random_targets
from ..stats import format_rate, rate_count, wilson_interval
from ..viz.tables import Table

__all__ = ["Row", "ROWS", "PAPER_TABLE_1", "make_attack", "madry_table", "format_table", "table_view", "main"]


@dataclass(frozen=True)
class Row:
    """One row of the table: ``method`` ("natural", "FGSM", "PGD", "Targeted", "CW", "CW+"),
    ``steps`` and ``restarts`` (None where they do not apply) and ``source`` ("-", "A", "A'", "B")."""

    method: str
    steps: Optional[int] = None
    restarts: Optional[int] = None
    source: str = "A"

    @property
    def label(self) -> str:
        """A short name, e.g. "PGD-100 x3 (A)", "FGSM (B)", "natural"."""
        if self.method == "natural":
            return "natural"
        name = self.method + (f"-{self.steps}" if self.steps else "")
        name += f" x{self.restarts}" if self.restarts and self.restarts > 1 else ""
        return f"{name} ({self.source})"


#: The rows notebook 02 runs, in the paper's order (the paper's PGD 40 x 20 and 100 x 20 restarts,
#: its PGD-100 from A' and its CW+ from B are left out to keep the notebook within minutes on a CPU).
ROWS: Tuple[Row, ...] = (
    Row("natural", source="-"),
    Row("FGSM", source="A"),
    Row("PGD", 40, 1, "A"),
    Row("PGD", 100, 3, "A"),
    Row("Targeted", 40, 1, "A"),
    Row("CW", 40, 1, "A"),
    Row("CW+", 40, 1, "A"),
    Row("FGSM", source="A'"),
    Row("PGD", 40, 1, "A'"),
    Row("CW", 40, 1, "A'"),
    Row("CW+", 40, 1, "A'"),
    Row("FGSM", source="B"),
    Row("PGD", 40, 1, "B"),
)

#: Madry et al. 2018, Table 1 (MNIST, eps = 0.3, their adversarially trained network): accuracy in %
#: per (method, steps, restarts, source), as printed in the paper. Rows our table does not run are
#: kept here so the notebook can quote them.
PAPER_TABLE_1: Dict[Row, float] = {
    Row("natural", source="-"): 98.8,
    Row("FGSM", source="A"): 95.6,
    Row("PGD", 40, 1, "A"): 93.2,
    Row("PGD", 100, 1, "A"): 91.8,
    Row("PGD", 40, 20, "A"): 90.4,
    Row("PGD", 100, 20, "A"): 89.3,
    Row("Targeted", 40, 1, "A"): 92.7,
    Row("CW", 40, 1, "A"): 94.0,
    Row("CW+", 40, 1, "A"): 93.9,
    Row("FGSM", source="A'"): 96.8,
    Row("PGD", 40, 1, "A'"): 96.0,
    Row("PGD", 100, 20, "A'"): 95.7,
    Row("CW", 40, 1, "A'"): 97.0,
    Row("CW+", 40, 1, "A'"): 96.4,
    Row("FGSM", source="B"): 95.4,
    Row("PGD", 40, 1, "B"): 96.4,
    Row("CW+", None, None, "B"): 95.7,
}

#: Attack = a function ``(source_model, x, y) -> x_adv``.
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def make_attack(row: Row, eps: float, alpha: float = 0.01, kappa: float = 50.0, seed: int = 0,
                classes: int = 10) -> AttackFn:
    """The attack of one row at ``eps``: a function ``(model, x, y) -> x_adv`` run on the source.

    PGD-type rows take ``row.steps`` steps of ``alpha`` (input units) from a random start drawn
    with ``seed``; "Targeted" aims every image at a class drawn by ``random_targets(y, classes,
    seed)``; "CW+" caps the margin at ``kappa`` (logit units).
    """
    if row.method == "natural":
        raise ValueError("the 'natural' row has no attack")
    if row.method == "FGSM":
        return FGSM(eps)
    restarts = row.restarts or 1
    if row.method == "PGD":
        return PGD(eps, alpha=alpha, steps=row.steps, restarts=restarts, seed=seed)
    if row.method == "CW":
        return MarginPGD(eps, alpha=alpha, steps=row.steps, restarts=restarts, seed=seed)
    if row.method == "CW+":
        return MarginPGD(eps, alpha=alpha, steps=row.steps, restarts=restarts, seed=seed, kappa=kappa)
    if row.method == "Targeted":
        pgd = PGD(eps, alpha=alpha, steps=row.steps, restarts=restarts, seed=seed)

        def targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return pgd(model, x, y, target=random_targets(y, classes, seed))
        return targeted
    raise ValueError(f"unknown method {row.method!r}")


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return (model(x.to(device)).argmax(1) == y.to(device)).cpu()


def _adversarial(attack: AttackFn, source: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> torch.Tensor:
    """The attack's outputs for all of x, in batches, on the CPU."""
    device = next(source.parameters()).device
    return torch.cat([attack(source, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(x), batch_size)])


def madry_table(targets: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float = 0.3,
                copies: Optional[Mapping[str, nn.Module]] = None, other: Optional[nn.Module] = None,
                rows: Sequence[Row] = ROWS, skip: Optional[Mapping[str, Iterable[Row]]] = None,
                batch_size: int = 500, seed: int = 0) -> Dict[Row, Dict[str, Optional[float]]]:
    """Accuracy (in [0, 1]) of every model in ``targets`` under every row: ``{row: {name: acc}}``.

    ``x`` (N, C, H, W) in [0, 1], ``y`` (N,). ``copies[name]`` is the A' source of target ``name``
    (rows from A' are skipped for a target without a copy), ``other`` the B source shared by all
    targets (B rows need it). ``skip[name]``: rows not run for that target (their value is None).
    All models must be in eval mode (the attacks refuse a model in training mode).
    """
    copies, skip = dict(copies or {}), {k: set(v) for k, v in (skip or {}).items()}
    if any(r.source == "B" for r in rows) and other is None:
        raise ValueError("rows from source B need the `other` network")
    clean = {name: _correct(model, x, y) for name, model in targets.items()}
    shared: Dict[Row, torch.Tensor] = {}  # B's adversarial examples, computed once for every target
    table: Dict[Row, Dict[str, Optional[float]]] = {}
    for row in rows:
        table[row] = {}
        for name, model in targets.items():
            if row in skip.get(name, ()) or (row.source == "A'" and name not in copies):
                table[row][name] = None
                continue
            if row.method == "natural":
                table[row][name] = clean[name].float().mean().item()
                continue
            if row.source == "B":
                if row not in shared:
                    shared[row] = _adversarial(make_attack(row, eps, seed=seed), other, x, y, batch_size)
                x_adv = shared[row]
            else:
                source = model if row.source == "A" else copies[name]
                x_adv = _adversarial(make_attack(row, eps, seed=seed), source, x, y, batch_size)
            table[row][name] = (clean[name] & _correct(model, x_adv, y)).float().mean().item()
    return table


def format_table(table: Mapping[Row, Mapping[str, Optional[float]]], names: Sequence[str],
                 headers: Optional[Sequence[str]] = None, paper: bool = True, n: Optional[int] = None) -> str:
    """The table as aligned text: one line per row, accuracy in % per model (``-`` where not run),
    and the paper's number for that row (Table 1, its adversarially trained network) if ``paper``.
    With ``n`` (the number of images the table was measured on) each accuracy carries its 95 %
    Wilson interval, e.g. ``93.6 [91.1, 95.5]``."""
    headers = list(headers or names)
    cols = headers + (["paper"] if paper else [])
    width = max(20 if n else 12, *(len(h) + 2 for h in cols))
    lines = [f"{'attack (source)':20s}" + "".join(f"{h:>{width}s}" for h in cols)]

    def cell(v: float) -> str:
        if n is None:
            return f"{100 * v:.1f}"
        lo, hi = wilson_interval(rate_count(v, n), n)
        return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    for row, values in table.items():
        cells = ["-" if values.get(name) is None else cell(values[name]) for name in names]
        if paper:
            cells.append(f"{PAPER_TABLE_1[row]:.1f}" if row in PAPER_TABLE_1 else "-")
        lines.append(f"{row.label:20s}" + "".join(f"{c:>{width}s}" for c in cells))
    return "\n".join(lines)


def table_view(table: Mapping[Row, Mapping[str, Optional[float]]], names: Sequence[str], n: int,
               headers: Optional[Sequence[str]] = None, paper: bool = True, caption: Optional[str] = None,
               notes: Optional[str] = None) -> Table:
    """The table for a notebook (:class:`~tutorial_lib.viz.tables.Table`, HTML in Jupyter): one row
    per attack, per model its accuracy on the ``n`` images it was measured on with the 95 % Wilson
    interval (:func:`~tutorial_lib.stats.format_rate`, ``-`` where not run), and, if ``paper``, a
    last column with Madry et al.'s Table 1 number for that row (their adversarially trained
    network on 10,000 images; ``-`` where the paper has no such row)."""
    header = ["attack (source)"] + list(headers or names)
    if paper:
        header.append("paper, PGD-trained (10,000 images)")
    rows = []
    for row, values in table.items():
        cells = [row.label] + ["-" if values.get(name) is None else format_rate(values[name], n) for name in names]
        if paper:
            cells.append(f"{PAPER_TABLE_1[row]:.1f} %" if row in PAPER_TABLE_1 else "-")
        rows.append(cells)
    return Table(header, rows, caption=caption, notes=notes)


def main(argv: Optional[List[str]] = None) -> None:
    from ..checkpoints import load_checkpoint
    from ..data import test_subset

    p = argparse.ArgumentParser(prog="python -m tutorial_lib.studies.madry_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="first n MNIST test images")
    p.add_argument("--eps", type=float, default=0.3)
    args = p.parse_args(argv)
    names = {"mnist_small_natural": "mnist_small_natural_copy", "mnist_small_pgd": "mnist_small_pgd_copy"}
    load = lambda name: load_checkpoint(name, device="cpu")[0]  # noqa: E731
    targets = {name: load(name) for name in names}
    copies = {name: load(copy) for name, copy in names.items()}
    x, y = test_subset("mnist", args.n)
    table = madry_table(targets, x, y, args.eps, copies=copies, other=load("papernot_teacher_t1"))
    print(f"accuracy (%) on the first {args.n} MNIST test images, l-inf eps = {args.eps}; "
          f"A' = the copies {', '.join(names.values())}, B = papernot_teacher_t1")
    print(format_table(table, list(names), n=args.n))


if __name__ == "__main__":
    main()
