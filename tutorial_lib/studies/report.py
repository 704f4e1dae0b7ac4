"""Robustness report of checkpoints: the numbers quoted in the README come from here.

    python -m tutorial_lib.report mnist_small_natural mnist_small_pgd --eps 0.3 --n 1000 \
        --transfer mnist_small_natural=mnist_small_natural_copy mnist_small_pgd=mnist_small_pgd_copy

Prints, per checkpoint, accuracy on the first ``n`` test images: clean, FGSM, PGD-40 (step 0.01,
random start) and PGD-100 with 3 restarts, all l-inf at ``eps``; with ``--transfer
target=source``, also PGD-40 examples crafted on ``source`` (black box for ``target``); with
``--certified``, the certified accuracy (by default the exact dual bound of Wong & Kolter, no
projections; ``--certifiers interval dual crown`` names the bounds, one column each and
"certified" for the examples any of them certifies: every one is sound):

    python -m tutorial_lib.report mnist_small_robust --eps 0.1 --n 10000 --certified --json out.json
    python -m tutorial_lib.report mnist_small_ibp --eps 0.3 --n 10000 --certified --certifiers interval dual

A certified example that some attack of the row breaks would be a false certificate: the report
stops with an error instead of printing it.

``--ensemble`` adds the AutoAttack-style attacks APGD-CE, APGD-T and Square (l-inf, see
:func:`ensemble_attacks`) and the column "ensemble", the per-example worst case over every attack
of the row (notebook 09's table: ``data/results/capstone_eps*.json``).
"""
from __future__ import annotations

import argparse
import difflib
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..attacks import APGD, FGSM, PGD, APGDTargeted, Square, TransferAttack
from ..attacks.evaluation import robust_masks
from ..bounds import CERTIFY_METHODS, UnsupportedLayerError, certified_mask
from ..checkpoints import CheckpointNotFoundError, ChecksumMismatchError, load_checkpoint, read_registry
from ..data import ChecksumError, DataUnavailableError, test_subset
from .json_output import add_json_arguments, refuse_existing_json, write_json

__all__ = ["robustness_table", "ensemble_attacks", "ENSEMBLE_COLUMNS", "main"]


#: The attacks ``ensemble=True`` adds, in the order of AutoAttack's standard version (which also
#: runs FAB-T, not implemented here): APGD with the cross-entropy, targeted APGD with the DLR loss
#: on the 9 most likely wrong classes, and the score-based Square attack (no gradients).
ENSEMBLE_COLUMNS = ("APGD-CE", "APGD-T", "Square")


def ensemble_attacks(eps: float, square_queries: int = 5000, seed: int = 0) -> Dict[str, nn.Module]:
    """{"APGD-CE", "APGD-T", "Square"}: the AutoAttack-style members at l-inf radius ``eps``
    (100 steps each; 9 target classes; ``square_queries`` queries, p_init 0.8 as for MNIST)."""
    return {"APGD-CE": APGD(eps, steps=100, seed=seed),
            "APGD-T": APGDTargeted(eps, steps=100, n_targets=9, seed=seed),
            "Square": Square(eps, n_queries=square_queries, seed=seed)}


def robustness_table(names: List[str], eps: float, n: int, dataset: str = "mnist",
                     transfer: Optional[Mapping[str, str]] = None, certified: bool = False,
                     progress: bool = False,
                     models: Optional[Mapping[str, nn.Module]] = None, ensemble: bool = False,
                     square_queries: int = 5000, batch_size: int = 500, cert_batch_size: int = 50,
                     certifiers: Sequence[str] = ("dual",),
                     on_row: Optional[Callable[[str, Dict[str, float]], None]] = None
                     ) -> Dict[str, Dict[str, float]]:
    """{checkpoint: {"clean", "FGSM", "PGD-40", "PGD-100 x3"[, "transfer"][, "APGD-CE", "APGD-T",
    "Square", "ensemble"][, "certified"]: accuracy in [0, 1]}} on the first ``n`` test images.

    ``transfer`` maps a checkpoint to the checkpoint whose PGD-40 examples are transferred to it;
    ``ensemble`` adds :func:`ensemble_attacks` and the column "ensemble": per example, the worst
    case over *every* attack of the row (clean-correct and broken by none), so it is at most each
    attack's column; ``certified`` adds the certified accuracy at ``eps`` of the exact bounds
    ``certifiers`` (names of :data:`~tutorial_lib.bounds.CERTIFY_METHODS`, default the dual):
    "certified" counts the examples any of them certifies, and with several certifiers
    "certified (name)" each one's (left out for a model the bounds do not support, e.g. max
    pooling). A certified example broken by any attack of the row raises RuntimeError (a false
    certificate; never printed). ``models`` maps a name to
    the model to use instead of the shipped checkpoint of that name (e.g. a model just retrained
    into ``runs/``). ``batch_size`` (attacks) and ``cert_batch_size`` (bounds) trade memory for
    speed (a GPU takes all 10,000 MNIST test images in one batch). ``on_row(name, row)`` is called
    after each checkpoint (the command line saves the table so far with it).
    """
    models = dict(models or {})
    certifiers = list(certifiers)
    unknown_cert = [c for c in certifiers if c not in CERTIFY_METHODS]
    if not certifiers or unknown_cert:
        raise ValueError(f"certifiers must be a non-empty list of {', '.join(CERTIFY_METHODS)}; got {certifiers}")

    def get(name: str) -> nn.Module:
        return models[name] if name in models else load_checkpoint(name)[0]

    transfer = dict(transfer or {})
    unknown = set(transfer) - set(names)
    if unknown:
        raise ValueError(f"transfer targets {sorted(unknown)} are not among the checkpoints {names}")
    x, y = test_subset(dataset, n)
    pgd40 = PGD(eps, alpha=0.01, steps=40)
    table = {}
    for name in names:
        attacks = {"FGSM": FGSM(eps), "PGD-40": pgd40,
                   "PGD-100 x3": PGD(eps, alpha=0.01, steps=100, restarts=3)}
        if name in transfer:
            attacks["transfer"] = TransferAttack(get(transfer[name]), pgd40)
        if ensemble:
            attacks.update(ensemble_attacks(eps, square_queries))
        model = get(name)
        masks = robust_masks(model, (x, y), attacks, batch_size=batch_size, progress=progress, desc=name)
        row = {k: m.sum().item() / len(m) for k, m in masks.items()}
        if ensemble:
            worst = torch.stack([masks[k] for k in attacks]).all(0)
            row["ensemble"] = worst.sum().item() / len(worst)
        table[name] = row
        if certified:
            try:
                dev = next(model.parameters()).device
                cert = {c: certified_mask(model, x.to(dev), y.to(dev), eps, method=c,
                                          batch_size=cert_batch_size).cpu() for c in certifiers}
            except UnsupportedLayerError:
                cert = {}
            if cert:
                union = torch.stack(list(cert.values())).any(0)
                for k, m in masks.items():
                    broken = union & ~m
                    if broken.any():
                        raise RuntimeError(
                            f"{name}: {int(broken.sum())} certified examples are broken by {k} "
                            f"(first index {int(broken.nonzero()[0])}): a false certificate")
                if len(cert) > 1:
                    for c, m in cert.items():
                        row[f"certified ({c})"] = m.sum().item() / len(m)
                row["certified"] = union.sum().item() / len(union)
        if on_row is not None:
            on_row(name, table[name])
    return table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tutorial_lib.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--transfer", nargs="*", default=[], metavar="TARGET=SOURCE",
                   help="also attack TARGET with PGD-40 examples crafted on SOURCE")
    p.add_argument("--certified", action="store_true", help="add the certified accuracy (exact dual bound)")
    p.add_argument("--certifiers", nargs="+", default=["dual"], choices=list(CERTIFY_METHODS),
                   help="the bounds of --certified (default: dual); an example counts as certified if any certifies it")
    p.add_argument("--ensemble", action="store_true",
                   help="add APGD-CE, APGD-T (9 targets), Square and the per-example worst case over all attacks")
    p.add_argument("--square-queries", type=int, default=5000, help="query budget of Square (default 5000)")
    p.add_argument("--batch-size", type=int, default=500, help="examples per attack batch (default 500)")
    p.add_argument("--cert-batch-size", type=int, default=50, help="examples per bound batch (default 50)")
    add_json_arguments(p, "also write the table (accuracies in [0, 1]) to this file, updated after each checkpoint")
    args = p.parse_args(argv)
    refuse_existing_json(p, args)
    pairs = [t.split("=") for t in args.transfer]
    if any(len(pr) != 2 or not all(pr) for pr in pairs):
        p.error("--transfer takes TARGET=SOURCE pairs")
    registered = sorted(read_registry())
    for name in [*args.checkpoints, *(source for _, source in pairs)]:
        if name not in registered and not Path(name).is_file():  # fail before loading any data
            close = difflib.get_close_matches(name, registered, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            p.exit(2, f"{p.prog}: error: unknown checkpoint {name!r}{hint} "
                      f"(known: {', '.join(registered)}; or give a .pt file)\n")
    start = time.time()
    cmd = "python -m tutorial_lib.report " + " ".join(sys.argv[1:] if argv is None else argv)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    rows: Dict[str, Dict[str, float]] = {}

    def save(name: str, row: Dict[str, float]) -> None:
        rows[name] = row
        if args.json:
            out = {"eps": args.eps, "n": args.n, "command": cmd, "device": device,
                   "seconds": round(time.time() - start, 1), "complete": len(rows) == len(args.checkpoints),
                   "table": rows}
            write_json(out, args.json)

    try:
        table = robustness_table(args.checkpoints, args.eps, args.n, transfer=dict(pairs),
                                 certified=args.certified, progress=True, ensemble=args.ensemble,
                                 square_queries=args.square_queries, batch_size=args.batch_size,
                                 cert_batch_size=args.cert_batch_size, certifiers=args.certifiers,
                                 on_row=save)
    except (CheckpointNotFoundError, ChecksumMismatchError, DataUnavailableError, ChecksumError,
            ValueError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    each = [f"certified ({c})" for c in args.certifiers] if len(args.certifiers) > 1 else []
    cols = ["clean", "FGSM", "PGD-40", "PGD-100 x3"] + (["transfer"] if pairs else []) \
        + ([*ENSEMBLE_COLUMNS, "ensemble"] if args.ensemble else []) + ([*each, "certified"] if args.certified else [])
    print(f"accuracy (%) on the first {args.n} MNIST test images, l-inf eps = {args.eps}")
    print("| checkpoint | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{100 * row[c]:.1f}" if c in row else "-" for c in cols) + " |")


if __name__ == "__main__":
    main()
