"""Robustness report of checkpoints: the numbers quoted in the README come from here.

    python -m tutorial_lib.report mnist_small_natural mnist_small_pgd --eps 0.3 --n 1000

Prints, per checkpoint, accuracy on the first ``n`` test images: clean, FGSM, PGD-40 (step 0.01,
random start) and PGD-100 with 3 restarts, all l-inf at ``eps``.
"""
from __future__ import annotations

import argparse
from typing import Dict, List

from .attacks import FGSM, PGD, evaluate
from .checkpoints import load_checkpoint
from .data import test_subset


def robustness_table(names: List[str], eps: float, n: int, dataset: str = "mnist",
                     progress: bool = False) -> Dict[str, Dict[str, float]]:
    """{checkpoint: {"clean", "FGSM", "PGD-40", "PGD-100 x3": accuracy in [0, 1]}}."""
    x, y = test_subset(dataset, n)
    attacks = {"FGSM": FGSM(eps), "PGD-40": PGD(eps, alpha=0.01, steps=40),
               "PGD-100 x3": PGD(eps, alpha=0.01, steps=100, restarts=3)}
    return {name: evaluate(load_checkpoint(name)[0], (x, y), attacks, progress=progress) for name in names}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tutorial_lib.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n", type=int, default=1000)
    args = p.parse_args(argv)
    table = robustness_table(args.checkpoints, args.eps, args.n, progress=True)
    cols = ["clean", "FGSM", "PGD-40", "PGD-100 x3"]
    print(f"accuracy (%) on the first {args.n} MNIST test images, l-inf eps = {args.eps}")
    print("| checkpoint | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{100 * row[c]:.1f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
