"""Benchmark: PGD-40 (l-inf) on the shipped natural MNIST model, ours vs torchattacks.

    make bench-attacks         # installs the `bench` extra and torchattacks (--no-deps), then runs this
    python benchmarks/attacks.py [--n 1000] [--eps 0.1] [--repeats 3]

Prints one table: examples per second of each implementation (best of ``repeats`` runs), their
ratio, and each one's robust accuracy on the same images, eps, steps and step size.
"""
from __future__ import annotations

import argparse
import time

import torch

from tutorial_lib.attacks import PGD
from tutorial_lib.checkpoints import load_checkpoint
from tutorial_lib.data import test_subset
from tutorial_lib.training import default_device


def run(attack_fn, model, x, y, batch):
    advs = [attack_fn(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
    x_adv = torch.cat(advs)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def timed(attack_fn, model, x, y, batch, repeats):
    best, acc = float("inf"), None
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        acc = run(attack_fn, model, x, y, batch)
        if x.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return len(x) / best, acc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    try:
        import torchattacks
    except ImportError as e:
        raise SystemExit("torchattacks is missing: run `make bench-attacks` (installs it with --no-deps)") from e

    device = default_device()
    model, _ = load_checkpoint("mnist_small_natural", device=device)
    x, y = test_subset("mnist", args.n)
    x, y = x.to(device), y.to(device)
    torch.manual_seed(0)
    ours = PGD(args.eps, alpha=args.alpha, steps=args.steps, seed=0)
    theirs = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=True)
    rows = [("tutorial_lib PGD", *timed(lambda a, b: ours(model, a, b), model, x, y, args.batch, args.repeats)),
            ("torchattacks 3.5.1 PGD (baseline)", *timed(theirs, model, x, y, args.batch, args.repeats))]
    print(f"PGD-{args.steps} l-inf, eps={args.eps}, alpha={args.alpha}, {args.n} MNIST test images, "
          f"batch {args.batch}, device {device}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| implementation | examples/s | robust accuracy |")
    print("|---|---|---|")
    for name, speed, acc in rows:
        print(f"| {name} | {speed:.0f} | {100 * acc:.1f}% |")
    ratio = rows[0][1] / rows[1][1]
    diff = 100 * abs(rows[0][2] - rows[1][2])
    print(f"speed ratio ours / baseline: {ratio:.2f}x; robust accuracy difference: {diff:.1f} pt "
          f"({'agree' if diff <= 0.5 else 'DISAGREE'} within 0.5 pt)")


if __name__ == "__main__":
    main()
