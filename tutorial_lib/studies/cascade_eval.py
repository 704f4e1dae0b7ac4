"""Notebook 08: the MNIST cascade at eps = 0.1 on the test set -- the paper's certifier, the
cascade attack on what it claims, and the sound certificate.

The shipped numbers (``data/results/cascade_eps0.1.json``) come from::

    python -m tutorial_lib.studies.cascade_eval --eps 0.1 --n 10000 \
        --json data/results/cascade_eps0.1.json

Stages (Wong et al. 2018, Section 3.3; :data:`STAGES`): stage 1 is the shipped robust small CNN
(``mnist_small_robust_full``), stages 2 and 3 small CNNs trained robustly on the training examples
the earlier stages do not accept (recipes ``mnist_cascade_stage2`` / ``_stage3``). Rates are
fractions in [0, 1] of the n test images.

What is attacked: an answer different from y at some x' in the ball can only come from a stage
whose prediction at x itself is not y, or from the fallback at an x' that no stage accepts
(:func:`tutorial_lib.defenses.cascade.sound_certified` proves it), so the attack runs on every
example the paper's certifier claims and the sound certificate does not (up to ``max_attacked``,
a seeded random sample beyond), and on a sample of the soundly certified ones as a check (none may
break).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from ..attacks.cascade import attack_cascade
from ..checkpoints import load_checkpoint
from ..data import REPO_ROOT, test_subset
from ..defenses.cascade import Cascade, certify_cascade
from .json_output import add_json_arguments, refuse_existing_json, write_json

__all__ = ["STAGES", "PAPER", "RESULTS", "load_cascade", "evaluate", "load_results", "main"]

#: The cascade's stages, in order.
STAGES = ("mnist_small_robust_full", "mnist_cascade_stage2", "mnist_cascade_stage3")

RESULTS = REPO_ROOT / "data" / "results"

#: What the papers report (error rates in [0, 1]; their models, not ours).
PAPER: Dict[str, tuple] = {
    "single": (0.058, "Wong & Kolter 2017, MNIST eps 0.1: certified error of one small CNN"),
    "cascade": (0.031, "Wong et al. 2018 (abstract): certified error of their best MNIST cascade, eps 0.1 "
                       "(larger models than ours)"),
    "broken": (0.88, "Mangal et al. 2022: their cascade attack breaks up to 88 % of the claimed certificates "
                     "(over their cascades and data sets)"),
}


def load_cascade(eps: float = 0.1, fallback: int = -1, names: Sequence[str] = STAGES,
                 device: Optional[torch.device] = None) -> Cascade:
    """The shipped stages as a :class:`Cascade` at ``eps`` (l_inf, pixel box), on ``device``."""
    stages = [load_checkpoint(name, device=device)[0].eval() for name in names]
    return Cascade(stages, eps, fallback=fallback).eval()


def evaluate(cascade: Cascade, x: torch.Tensor, y: torch.Tensor, max_attacked: int = 2000,
             check_sound: int = 100, seed: int = 0, batch_size: int = 250, progress: bool = True,
             attack_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Certify and attack the cascade on (x, y): x (N, 1, 28, 28) in [0, 1], y (N,).

    Returns a JSON-ready dict: ``summary`` (rates of :meth:`CascadeCertificate.summary`),
    ``stage_certified`` (stage 1 alone: fraction certified for y at eps), ``attack`` (how many
    paper-certified examples were attacked, how many broke, their indices with the stages that
    answered at x and x'), ``sound_check`` (soundly certified examples attacked, broken: must be 0),
    ``fallback_first`` (the sound certificate of the same stages with the first stage as fallback;
    the paper's certificate does not depend on the fallback).
    """
    t0 = time.perf_counter()
    cert = certify_cascade(cascade, x, y, batch_size=batch_size)
    summary = cert.summary()
    if progress:
        print(f"certified {len(y)} images in {time.perf_counter() - t0:.0f} s: {summary}", flush=True)
    g = torch.Generator().manual_seed(seed)
    claimed = (cert.paper & ~cert.sound).nonzero().flatten()
    attacked = claimed[torch.randperm(len(claimed), generator=g)[:max_attacked]].sort().values
    t1 = time.perf_counter()
    broken_idx, stage_at_x, stage_at_adv = [], [], []
    if len(attacked):
        x_adv, broken, stage = attack_cascade(cascade, x[attacked], y[attacked], **(attack_kwargs or {}))
        broken_idx = attacked[broken.cpu()].tolist()
        stage_at_x = cert.stage[attacked][broken.cpu()].tolist()
        stage_at_adv = stage.cpu()[broken.cpu()].tolist()
    attack_seconds = time.perf_counter() - t1
    if progress:
        print(f"attacked {len(attacked)} claimed, not soundly certified images in {attack_seconds:.0f} s: "
              f"{len(broken_idx)} broken", flush=True)
    sound = cert.sound.nonzero().flatten()
    checked = sound[torch.randperm(len(sound), generator=g)[:check_sound]].sort().values
    sound_broken = 0
    if len(checked):
        _, broken, _ = attack_cascade(cascade, x[checked], y[checked], **(attack_kwargs or {}))
        sound_broken = int(broken.sum())
    # the same cascade with the first stage as fallback: routing by acceptance is unchanged (so is the
    # paper's certificate); condition (b) becomes "stage 1 certified for y", i.e. stage 1 accepts x
    # and predicts y (a stage accepts x exactly when it certifies its own prediction)
    stage1 = cert.accepted & (cert.stage == 0) & (cert.pred == cert.y)
    first_sound = cert.all_agree & stage1
    fallback_first = {"sound_certified_accuracy": _rate(first_sound), "sound_certified_error": 1 - _rate(first_sound),
                      "paper_not_sound": _rate(cert.paper & ~first_sound)}
    stage_certified = {"stage 1": _rate(stage1)}
    return {
        "n": len(y),
        "summary": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in summary.items()},
        "stage_certified": stage_certified,
        "attack": {"claimed_not_sound": len(claimed), "attacked": len(attacked), "broken": len(broken_idx),
                   "broken_indices": broken_idx, "stage_at_x": stage_at_x, "stage_at_x_adv": stage_at_adv,
                   "seconds": round(attack_seconds, 1), "settings": attack_kwargs or {}},
        "sound_check": {"attacked": len(checked), "broken": sound_broken},
        "fallback_first": fallback_first,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _rate(mask: torch.Tensor) -> float:
    return round(float(mask.double().mean()), 6) if mask.numel() else float("nan")


def load_results(eps: float = 0.1, folder: Optional[Path] = None) -> Dict[str, Any]:
    """The shipped evaluation at ``eps`` (``cascade_eps<eps>.json``)."""
    path = Path(folder or RESULTS) / f"cascade_eps{eps:g}.json"
    return json.loads(path.read_text())


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tutorial_lib.studies.cascade_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--n", type=int, default=10000, help="first n MNIST test images")
    p.add_argument("--max-attacked", type=int, default=2000)
    p.add_argument("--check-sound", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    add_json_arguments(p)
    args = p.parse_args(argv)
    refuse_existing_json(p, args)
    x, y = test_subset("mnist", args.n)
    cascade = load_cascade(args.eps)
    print(f"cascade of {', '.join(STAGES)} at eps {args.eps} on {args.n} test images: about "
          f"{args.n * 0.03 / 60:.0f}-{args.n * 0.06 / 60:.0f} min of certificates on one CPU core, plus the attack",
          flush=True)
    out = evaluate(cascade, x, y, max_attacked=args.max_attacked, check_sound=args.check_sound, seed=args.seed,
                   batch_size=args.batch_size)
    out.update(eps=args.eps, stages=list(STAGES), torch=str(torch.__version__),
               command="python -m tutorial_lib.studies.cascade_eval "
               + " ".join(sys.argv[1:] if argv is None else argv))
    write_json(out, args.json)
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
