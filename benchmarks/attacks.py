"""Benchmark: our attacks vs torchattacks 3.5.1 on shipped MNIST models, same images and budgets.

    make bench-attacks         # installs the `bench` extra and torchattacks (--no-deps), then runs this
    python benchmarks/attacks.py [--n 1000] [--eps 0.1] [--repeats 3]
    python benchmarks/attacks.py --only apgd-ce,apgd-t,square --auto-n 200 --auto-repeats 1

Comparisons (``--only`` picks some, comma-separated):

* ``pgd``: PGD-40 (l-inf, eps ``--eps``, step ``--alpha``) on the natural model
  (``mnist_small_natural``), ``--n`` images, best of ``--repeats`` runs;
* ``apgd-ce``, ``apgd-t``, ``square``: AutoAttack's attacks on the PGD-trained model
  (``mnist_small_pgd``) at l-inf eps ``--auto-eps`` (0.3), ``--auto-n`` images, best of
  ``--auto-repeats`` runs: APGD-CE (``--apgd-steps`` iterations, 1 restart) vs torchattacks.APGD,
  APGD-T (``--apgd-steps`` iterations, 9 targets, 1 restart) vs torchattacks.APGDT (n_classes=10:
  9 targets), Square (``--n-queries`` queries, p_init 0.8) vs torchattacks.Square.

Prints one Markdown table: examples per second of each implementation, their ratio, and each
one's robust accuracy (the model classifies the attack's output correctly) on the same images.
The accuracies of randomised attacks agree up to their random draws, not to the example.
"""
from __future__ import annotations

import argparse
import time

import torch

from tutorial_lib.attacks import APGD, PGD, APGDTargeted, Square
from tutorial_lib.checkpoints import load_checkpoint
from tutorial_lib.data import test_subset
from tutorial_lib.training import default_device

COMPARISONS = ("pgd", "apgd-ce", "apgd-t", "square")


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
    p.add_argument("--n", type=int, default=1000, help="images for PGD")
    p.add_argument("--eps", type=float, default=0.1, help="l-inf eps of PGD (natural model)")
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default=",".join(COMPARISONS), help="comma-separated subset of " + ", ".join(COMPARISONS))
    p.add_argument("--auto-n", type=int, default=200, help="images for APGD-CE, APGD-T and Square")
    p.add_argument("--auto-eps", type=float, default=0.3, help="l-inf eps of APGD/Square (PGD-trained model)")
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--n-queries", type=int, default=5000)
    p.add_argument("--auto-repeats", type=int, default=1)
    args = p.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(COMPARISONS))
    if unknown:
        raise SystemExit(f"unknown comparison(s) {unknown}; choose from {', '.join(COMPARISONS)}")
    try:
        import torchattacks
    except ImportError as e:
        raise SystemExit("torchattacks is missing: run `make bench-attacks` (installs it with --no-deps)") from e

    device = default_device()
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}")
    rows = []  # (comparison, setting, ours (speed, acc), theirs (speed, acc))
    if "pgd" in only:
        model, _ = load_checkpoint("mnist_small_natural", device=device)
        x, y = test_subset("mnist", args.n)
        x, y = x.to(device), y.to(device)
        torch.manual_seed(0)
        ours = PGD(args.eps, alpha=args.alpha, steps=args.steps, seed=0)
        theirs = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=True)
        rows.append((f"PGD-{args.steps}", f"natural, eps {args.eps}, alpha {args.alpha}, {args.n} images, "
                     f"best of {args.repeats}",
                     timed(lambda a, b: ours(model, a, b), model, x, y, args.batch, args.repeats),
                     timed(theirs, model, x, y, args.batch, args.repeats)))
    auto = [c for c in only if c != "pgd"]
    if auto:
        model, _ = load_checkpoint("mnist_small_pgd", device=device)
        x, y = test_subset("mnist", args.auto_n)
        x, y = x.to(device), y.to(device)
        eps, steps, nq = args.auto_eps, args.apgd_steps, args.n_queries
        pairs = {
            "apgd-ce": (f"APGD-CE ({steps} steps)", APGD(eps, steps=steps, loss="ce", seed=0),
                        torchattacks.APGD(model, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0)),
            "apgd-t": (f"APGD-T ({steps} steps, 9 targets)", APGDTargeted(eps, steps=steps, n_targets=9, seed=0),
                       torchattacks.APGDT(model, eps=eps, steps=steps, n_restarts=1, n_classes=10, seed=0)),
            "square": (f"Square ({nq} queries)", Square(eps, n_queries=nq, p_init=0.8, seed=0),
                       torchattacks.Square(model, eps=eps, n_queries=nq, n_restarts=1, p_init=0.8, seed=0)),
        }
        for c in auto:
            name, ours, theirs = pairs[c]
            rows.append((name, f"PGD-trained, eps {eps}, {args.auto_n} images, best of {args.auto_repeats}",
                         timed(lambda a, b, o=ours: o(model, a, b), model, x, y, args.batch, args.auto_repeats),
                         timed(theirs, model, x, y, args.batch, args.auto_repeats)))
    print("| attack | setting (l-inf, MNIST test images) | ours ex/s | torchattacks 3.5.1 ex/s | speed ratio | "
          "ours robust acc | theirs robust acc |")
    print("|---|---|---|---|---|---|---|")
    for name, setting, (s_ours, a_ours), (s_theirs, a_theirs) in rows:
        print(f"| {name} | {setting} | {s_ours:.0f} | {s_theirs:.0f} | {s_ours / s_theirs:.2f}x | "
              f"{100 * a_ours:.1f}% | {100 * a_theirs:.1f}% |")
    for name, _, (_, a_ours), (_, a_theirs) in rows:
        diff = 100 * abs(a_ours - a_theirs)
        verdict = "agree" if diff <= 0.5 else "DIFFER"
        print(f"{name}: robust accuracy difference {diff:.1f} pt ({verdict} within 0.5 pt)")


if __name__ == "__main__":
    main()
