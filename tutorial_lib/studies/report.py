"""Robustness report of checkpoints: the numbers quoted in the README come from here.

    python -m tutorial_lib.report mnist_small_natural mnist_small_pgd --eps 0.3 --n 1000 \
        --transfer mnist_small_natural=mnist_small_natural_copy mnist_small_pgd=mnist_small_pgd_copy

Prints, per checkpoint, accuracy on the first ``n`` test images: clean, FGSM, PGD-40 (step 0.01,
random start) and PGD-100 with 3 restarts, all l-inf at ``eps``; with ``--transfer
target=source``, also PGD-40 examples crafted on ``source`` (black box for ``target``); with
``--certified``, the certified accuracy (exact dual bound of Wong & Kolter, no projections):

    python -m tutorial_lib.report mnist_small_robust --eps 0.1 --n 10000 --certified --json out.json
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from torch import nn

from ..attacks import FGSM, PGD, TransferAttack, evaluate
from ..bounds import certified_error
from ..checkpoints import CheckpointNotFoundError, ChecksumMismatchError, load_checkpoint, read_registry
from ..data import ChecksumError, DataUnavailableError, test_subset

__all__ = ["robustness_table", "main"]


def robustness_table(names: List[str], eps: float, n: int, dataset: str = "mnist",
                     transfer: Optional[Mapping[str, str]] = None, certified: bool = False,
                     progress: bool = False,
                     models: Optional[Mapping[str, nn.Module]] = None) -> Dict[str, Dict[str, float]]:
    """{checkpoint: {"clean", "FGSM", "PGD-40", "PGD-100 x3"[, "transfer"][, "certified"]:
    accuracy in [0, 1]}} on the first ``n`` test images.

    ``transfer`` maps a checkpoint to the checkpoint whose PGD-40 examples are transferred to it;
    ``certified`` adds 1 - the certified error of the exact dual bound at ``eps``. ``models``
    maps a name to the model to use instead of the shipped checkpoint of that name (e.g. a model
    just retrained into ``runs/``).
    """
    models = dict(models or {})

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
        model = get(name)
        table[name] = evaluate(model, (x, y), attacks, progress=progress)
        if certified:
            table[name]["certified"] = 1 - certified_error(model, x, y, eps, batch_size=50)
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
    p.add_argument("--json", default=None, help="also write the table (accuracies in [0, 1]) to this file")
    args = p.parse_args(argv)
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
    try:
        table = robustness_table(args.checkpoints, args.eps, args.n, transfer=dict(pairs),
                                 certified=args.certified, progress=True)
    except (CheckpointNotFoundError, ChecksumMismatchError, DataUnavailableError, ChecksumError,
            ValueError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    cols = ["clean", "FGSM", "PGD-40", "PGD-100 x3"] + (["transfer"] if pairs else []) \
        + (["certified"] if args.certified else [])
    print(f"accuracy (%) on the first {args.n} MNIST test images, l-inf eps = {args.eps}")
    print("| checkpoint | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{100 * row[c]:.1f}" if c in row else "-" for c in cols) + " |")
    if args.json:
        cmd = "python -m tutorial_lib.report " + " ".join(sys.argv[1:] if argv is None else argv)
        out = {"eps": args.eps, "n": args.n, "command": cmd, "table": table}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
