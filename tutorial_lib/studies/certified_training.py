"""Certified training compared (notebook 10): the course's certified models, each certified by
every exact bound, and their certified accuracy against eps.

    python -m tutorial_lib.studies.certified_training --json data/results/certified_training.json

For every eps of ``--eps`` (default 0.1 and 0.3) and every checkpoint of ``--models``, on the
first ``--n`` MNIST test images: how many examples each bound method certifies (interval bound
propagation, CROWN-IBP, CROWN, the dual network, the optimised dual; all in float64 with TF32 off,
:func:`~tutorial_lib.bounds.certified_mask`) and the seconds each took; then the certified
accuracy of every model at the eps of ``--curve-eps`` (an example counts as certified at eps when
the interval bound or the dual certifies it; an example neither certifies at some eps is not
tried at larger ones, which can only under-report). The cross table is the "loose bounds train
better" lesson measured: a model trained with a bound is certified best by that bound.

The shipped ``data/results/certified_training.json`` records the command, the machine and the
seconds; notebook 10 reads it (:func:`load_results`, :func:`cross_table`).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..bounds import certified_mask, float64_copy
from ..checkpoints import load_checkpoint
from ..data import REPO_ROOT, test_subset
from ..stats import format_rate
from ..viz.tables import Table
from .json_output import add_json_arguments, refuse_existing_json, write_json

__all__ = ["MODELS", "METHODS", "TRAINED_WITH", "certify_cross", "certified_curves", "run_study", "load_results",
           "cross_table", "RESULTS_PATH"]

RESULTS_PATH = REPO_ROOT / "data" / "results" / "certified_training.json"

#: the checkpoints compared, weakest training bound last
MODELS = ("mnist_small_pgd", "mnist_small_robust", "mnist_small_robust_full", "mnist_small_ibp_eps01",
          "mnist_small_ibp", "mnist_small_crown_ibp")

#: how each was trained (the table's second column)
TRAINED_WITH = {
    "mnist_small_natural": "natural",
    "mnist_small_pgd": "PGD, eps 0.3",
    "mnist_small_robust": "dual network, eps 0.1 (CPU budget)",
    "mnist_small_robust_full": "dual network, eps 0.1 (paper's budget)",
    "mnist_small_ibp_eps01": "IBP, eps 0.2",
    "mnist_small_ibp": "IBP, eps 0.4",
    "mnist_small_crown_ibp": "CROWN-IBP, eps 0.4",
}

#: the bound methods, loosest first (names of :data:`~tutorial_lib.bounds.CERTIFY_METHODS`)
METHODS = ("interval", "crown-ibp", "crown", "dual", "dual-opt")
METHOD_TITLES = {"interval": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN", "dual": "dual",
                 "dual-opt": "dual, optimised"}

CURVE_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)


def certify_cross(models: Sequence[str], eps: float, n: int, methods: Sequence[str] = METHODS,
                  batch_size: int = 100, n_opt: Optional[int] = None, opt_steps: int = 20,
                  progress: bool = False) -> Dict[str, Any]:
    """{"eps", "n", "rows": {model: {"clean": count, "methods": {method: {"certified": count, "n": images,
    "seconds": s}}, "any": count}}} on the first ``n`` test images: counts of examples (clean:
    correctly classified; a method: certified; any: certified by at least one method, over the first
    ``n`` images). 'dual-opt' (``opt_steps`` steps on the slopes) costs ~10x the dual: it runs on the
    first ``n_opt`` images only (default ``n``), and its "n" says so."""
    x, y = test_subset("mnist", n)
    rows: Dict[str, Any] = {}
    for name in models:
        model = float64_copy(load_checkpoint(name)[0])
        with torch.no_grad():
            clean = int((model(x.double()).argmax(1) == y).sum())
        row: Dict[str, Any] = {"clean": clean, "methods": {}}
        union = torch.zeros(n, dtype=torch.bool)
        for method in methods:
            t0 = time.time()
            k = min(n, n_opt or n) if method == "dual-opt" else n
            extra = {"steps": opt_steps} if method == "dual-opt" else {}
            mask = certified_mask(model, x[:k], y[:k], eps, method=method, batch_size=batch_size, **extra).cpu()
            row["methods"][method] = {"certified": int(mask.sum()), "n": k, "seconds": round(time.time() - t0, 1)}
            union[:k] |= mask
            if progress:
                print(f"eps {eps:g} {name} {method}: {int(mask.sum())}/{k} certified "
                      f"({time.time() - t0:.0f} s)", flush=True)
        row["any"] = int(union.sum())
        rows[name] = row
    return {"eps": eps, "n": n, "rows": rows}


def certified_curves(models: Sequence[str], eps_values: Sequence[float] = CURVE_EPS, n: int = 500,
                     methods: Sequence[str] = ("interval", "dual"), batch_size: int = 100,
                     progress: bool = False) -> Dict[str, Any]:
    """{"eps": eps_values, "n", "methods", "rows": {model: [count certified at each eps]}}: an
    example is certified at eps when any of ``methods`` certifies it; one not certified at an eps
    is not tried at larger ones (the counts can only be too low, never too high)."""
    eps_values = [float(e) for e in eps_values]
    if any(b < a for a, b in zip(eps_values, eps_values[1:])) or (eps_values and eps_values[0] < 0):
        raise ValueError(f"eps_values must be non-negative and increasing, got {eps_values}")
    x, y = test_subset("mnist", n)
    rows: Dict[str, List[int]] = {}
    for name in models:
        model = float64_copy(load_checkpoint(name)[0])
        alive = torch.arange(n)
        counts = []
        for eps in eps_values:
            ok = torch.zeros(len(alive), dtype=torch.bool)
            for method in methods:
                todo = (~ok).nonzero().flatten()
                if len(todo):
                    ok[todo] = certified_mask(model, x[alive[todo]], y[alive[todo]], eps, method=method,
                                              batch_size=batch_size).cpu()
            alive = alive[ok]
            counts.append(len(alive))
        rows[name] = counts
        if progress:
            print(f"curve {name}: {counts}", flush=True)
    return {"eps": eps_values, "n": n, "methods": list(methods), "rows": rows}


def run_study(models: Sequence[str] = MODELS, eps_list: Sequence[float] = (0.1, 0.3), n: int = 300,
              curve_n: int = 200, curve_eps: Sequence[float] = CURVE_EPS, n_opt: int = 100, opt_steps: int = 20,
              progress: bool = False) -> Dict[str, Any]:
    """The cross tables at every eps of ``eps_list`` and the curves (see the module docstring)."""
    start = time.time()
    cross = [certify_cross(models, e, n, n_opt=n_opt, opt_steps=opt_steps, progress=progress) for e in eps_list]
    curves = certified_curves(models, curve_eps, curve_n, progress=progress)
    return {"cross": cross, "curves": curves, "seconds": round(time.time() - start, 1),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "threads": torch.get_num_threads()}


def load_results(path=RESULTS_PATH) -> Dict[str, Any]:
    """The shipped results of :func:`run_study` (see the module docstring for the command)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; produce it with "
                                f"`python -m tutorial_lib.studies.certified_training --json {path}`")
    return json.loads(path.read_text())


def cross_table(results: Dict[str, Any], eps: float, caption: Optional[str] = None) -> Table:
    """The cross table at ``eps`` as a :class:`~tutorial_lib.viz.tables.Table`: one row per model
    (how it was trained, clean accuracy), one column per bound method (certified accuracy with
    its 95 % Wilson interval), and the examples any method certifies."""
    found = [c for c in results["cross"] if abs(c["eps"] - eps) < 1e-12]
    if not found:
        raise KeyError(f"no cross table at eps {eps} (have {[c['eps'] for c in results['cross']]})")
    c = found[0]
    n = c["n"]
    methods = list(next(iter(c["rows"].values()))["methods"])
    rows = []
    for name, row in c["rows"].items():
        rows.append([name, TRAINED_WITH.get(name, "?"), format_rate(row["clean"], n)]
                    + [format_rate(row["methods"][m]["certified"], row["methods"][m].get("n", n)) for m in methods]
                    + [format_rate(row["any"], n)])
    fewer = sorted({f"{METHOD_TITLES.get(m, m)} on the first {r['methods'][m]['n']:,}" for r in c["rows"].values()
                    for m in methods if r["methods"][m].get("n", n) != n})
    notes = (f"certified accuracy (%) at l_inf eps = {eps:g} on the first {n:,} MNIST test images"
             + (f" ({'; '.join(fewer)})" if fewer else "")
             + ", with 95 % intervals; every bound exact and in float64; 'any': certified by at least one of them")
    return Table(["model", "trained with", "clean", *[METHOD_TITLES.get(m, m) for m in methods], "any"], rows,
                 caption=caption, notes=notes)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tutorial_lib.studies.certified_training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3])
    p.add_argument("--n", type=int, default=300, help="test images of the cross tables (default 300)")
    p.add_argument("--n-opt", type=int, default=100, help="test images of the optimised dual (default 100)")
    p.add_argument("--opt-steps", type=int, default=20, help="steps of the optimised dual (default 20)")
    p.add_argument("--curve-n", type=int, default=200, help="test images of the curves (default 200)")
    add_json_arguments(p, "write the results here")
    args = p.parse_args(argv)
    refuse_existing_json(p, args)
    print(f"certifying {len(args.models)} models with {len(METHODS)} bounds at eps {args.eps} on {args.n} images "
          f"(the optimised dual on {args.n_opt}), and {len(CURVE_EPS)} eps on {args.curve_n}: with the defaults about "
          "20 min on a busy 2-core CPU (CROWN and the optimised dual dominate)", flush=True)
    res = run_study(args.models, args.eps, args.n, args.curve_n, n_opt=args.n_opt, opt_steps=args.opt_steps,
                    progress=True)
    res["command"] = "python -m tutorial_lib.studies.certified_training " + " ".join(
        sys.argv[1:] if argv is None else argv)
    write_json(res, args.json)
    for e in args.eps:
        print(cross_table(res, e))


if __name__ == "__main__":
    main()
