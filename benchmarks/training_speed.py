"""Benchmark: cost of one training step of each defence, as a ratio to natural training.

    make bench-training
    python benchmarks/training_speed.py [--steps 30] [--batch 64] [--threads 1]

Baseline: natural training (cross-entropy) of the same network, batch and optimizer in the same
run. Each loss trains a fresh mnist_small (Adam 1e-3) on real MNIST batches for ``steps`` timed
steps after 3 warm-up steps; prints seconds per 100 steps, the ratio to natural, and the
projected time of one 60k-image epoch.
"""
from __future__ import annotations

import argparse
import time

import torch

from tutorial_lib.data import load_dataset
from tutorial_lib.defenses import (
    CROWNIBPTrainingLoss,
    IBPTrainingLoss,
    PGDTrainingLoss,
    RobustTrainingLoss,
    TradesLoss,
)
from tutorial_lib.models import build_model
from tutorial_lib.training import cross_entropy_loss, default_device


def time_loss(loss_fn, batches, device, warmup=3):
    torch.manual_seed(0)
    model = build_model("mnist_small").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss, _ = loss_fn(model, x.to(device), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (len(batches) - warmup)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device(args.device)
    x, y = load_dataset("mnist", "train").tensors
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(x), generator=g)[: (args.steps + 3) * args.batch]
    batches = [(x[idx[i:i + args.batch]], y[idx[i:i + args.batch]]) for i in range(0, len(idx), args.batch)]
    losses = {
        "natural (baseline)": cross_entropy_loss,
        "PGD-10 training (shipped recipe)": PGDTrainingLoss(eps=0.3, alpha=0.04, steps=10),
        "PGD-40 training (paper)": PGDTrainingLoss(eps=0.3, alpha=0.01, steps=40),
        "TRADES, 10 KL steps (shipped recipe)": TradesLoss(beta=6, eps=0.3, alpha=0.04, steps=10),
        "robust dual bound, 50 projections": RobustTrainingLoss(eps=0.1, proj=50),
        "robust dual bound, exact": RobustTrainingLoss(eps=0.1),
        # past the ramp (kappa 0.5); CROWN-IBP with beta 1, its cost during the ramp (beta 0 is IBP's)
        "IBP, eps 0.4": IBPTrainingLoss(eps=0.4, kappa_start=0.5, kappa_end=0.5),
        "CROWN-IBP, eps 0.4, beta 1": CROWNIBPTrainingLoss(eps=0.4, kappa_start=0.5, kappa_end=0.5,
                                                           beta_start=1.0, beta_end=1.0),
    }
    per_step = {name: time_loss(fn, batches, device) for name, fn in losses.items()}
    base = per_step["natural (baseline)"]
    steps_per_epoch = 60000 / args.batch
    print(f"mnist_small, batch {args.batch}, {args.steps} timed steps, device {device}, "
          f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print("| training loss | s / 100 steps | ratio to natural | min / epoch (60k images) |")
    print("|---|---|---|---|")
    for name, t in per_step.items():
        print(f"| {name} | {100 * t:.2f} | {t / base:.1f}x | {t * steps_per_epoch / 60:.1f} |")


if __name__ == "__main__":
    main()
