"""The capacity study of Madry et al. 2018 (their Fig. 4): train the same network at several
widths, naturally and with PGD, and measure accuracy clean and under PGD-40.

    python -m tutorial_lib.studies.capacity --widths 0.25 0.5 1 2 --epochs 3 --out data/results/capacity.json

The shipped ``data/results/capacity.json`` was produced by that command on the project's CPU
(the file records the recipe, the widths and the seconds each run took). Notebook 02 plots it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..attacks import PGD, evaluate
from ..checkpoints import load_checkpoint
from ..data import REPO_ROOT, test_subset
from ..models import build_model
from ..stats import format_rate
from ..training.recipes import run_recipe
from ..viz.tables import Table

__all__ = ["capacity_recipe", "capacity_sweep", "load_capacity_results", "capacity_table", "RESULTS_PATH"]

RESULTS_PATH = REPO_ROOT / "data" / "results" / "capacity.json"
METHODS = ("natural", "pgd")


def capacity_recipe(width: float, method: str, eps: float = 0.3, epochs: int = 3,
                    train_subset: Optional[int] = None, max_steps: Optional[int] = None,
                    seed: int = 0) -> Dict[str, Any]:
    """The recipe of one run: mnist_small at ``width``; ``method`` 'natural' or 'pgd' (PGD-10,
    step 0.04, eps ramped over the first epoch: mnist_small_pgd's settings, fewer epochs)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    recipe: Dict[str, Any] = {
        "name": f"capacity_{method}_w{width:g}", "dataset": "mnist", "model": "mnist_small",
        "model_kwargs": {"width": width}, "loss": method, "epochs": int(epochs), "batch_size": 64,
        "optimizer": {"name": "adam", "lr": 0.001}, "seed": seed,
        "description": f"capacity study: mnist_small width {width:g}, {method} training"}
    if method == "pgd":
        recipe["loss_kwargs"] = {"eps": eps, "alpha": 0.04 * eps / 0.3, "steps": 10, "ramp_steps": 938}
    if train_subset:
        recipe["train_subset"] = int(train_subset)
    if max_steps:
        recipe["max_steps"] = int(max_steps)
    return recipe


def capacity_sweep(widths: Sequence[float] = (0.25, 0.5, 1, 2), methods: Sequence[str] = METHODS,
                   eps: float = 0.3, epochs: int = 3, n_eval: int = 1000,
                   train_subset: Optional[int] = None, max_steps: Optional[int] = None,
                   data_dir=None, progress: bool = True) -> Dict[str, Any]:
    """Train every (width, method) and evaluate it on the first ``n_eval`` test images.

    Returns ``{"eps", "epochs", "n_eval", "rows": [{"width", "method", "params", "clean",
    "PGD-40", "train_seconds"}]}`` with accuracies in [0, 1] (PGD-40: step 0.01, random start).
    """
    if not widths:
        raise ValueError("widths is empty")
    x, y = test_subset("mnist", n_eval, data_dir=data_dir)
    attack = PGD(eps, alpha=0.01, steps=40)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in widths:
            for method in methods:
                recipe = capacity_recipe(width, method, eps, epochs, train_subset, max_steps)
                res = run_recipe(recipe, out_dir=tmp, register=False, progress=progress,
                                 data_dir=data_dir)
                model, _ = load_checkpoint(res["path"])
                acc = evaluate(model, (x, y), {"PGD-40": attack}, progress=False)
                rows.append({"width": width, "method": method,
                             "params": sum(p.numel() for p in model.parameters()),
                             "clean": round(acc["clean"], 4), "PGD-40": round(acc["PGD-40"], 4),
                             "train_seconds": res["metrics"]["train_seconds"]})
                if progress:
                    print(f"width {width:g} {method}: clean {acc['clean']:.3f}, PGD-40 {acc['PGD-40']:.3f}")
    return {"eps": eps, "epochs": epochs, "n_eval": n_eval, "train_subset": train_subset,
            "recipe": capacity_recipe(1, "pgd", eps, epochs, train_subset, max_steps), "rows": rows}


def load_capacity_results(path=RESULTS_PATH) -> Dict[str, Any]:
    """The shipped results of :func:`capacity_sweep` (see the module docstring for the command)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; produce it with `python -m tutorial_lib.studies.capacity`")
    return json.loads(path.read_text())


def capacity_table(results: Dict[str, Any], caption: Optional[str] = None) -> Table:
    """The sweep as a :class:`~tutorial_lib.viz.tables.Table`: per width and method the parameter
    count, the accuracy clean and under PGD-40 on the ``n_eval`` images of the sweep, each with its
    95 % Wilson interval (:func:`~tutorial_lib.stats.format_rate`), and the training time in seconds
    (as recorded by the run that produced ``results``, on its machine)."""
    n = results["n_eval"]
    rows = [[f"{r['width']:g}", f"{r['params']:,}", r["method"], format_rate(r["clean"], n),
             format_rate(r["PGD-40"], n), f"{r['train_seconds']:.0f}"] for r in results["rows"]]
    total = sum(r["train_seconds"] for r in results["rows"])
    notes = (f"accuracy on the first {n:,} MNIST test images with its 95 % interval; PGD-40 at eps = "
             f"{results['eps']:g}; {results['epochs']} training epochs each; training took {total:.0f} s in all")
    return Table(["width", "parameters", "training", "clean", "PGD-40", "train s"], rows, caption=caption,
                 notes=notes)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tutorial_lib.studies.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n-eval", type=int, default=1000)
    p.add_argument("--out", default=str(RESULTS_PATH))
    args = p.parse_args(argv)
    for w in args.widths:
        build_model("mnist_small", width=w)  # fail fast on a width with no units
    res = capacity_sweep(args.widths, eps=args.eps, epochs=args.epochs, n_eval=args.n_eval)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
