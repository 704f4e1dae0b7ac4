"""Notebook 07: the scaling paper's models certified on the test set, and what a bound costs.

The shipped numbers (``data/results/certified_<model>_<norm><eps>.json``) come from::

    python -m tutorial_lib.studies.scaling_eval mnist_residual_robust --norm linf --eps 0.1 --n 10000 \
        --json data/results/certified_mnist_residual_robust_linf0.1.json

and the same command for every row of :data:`ROWS`. Per model: clean accuracy, certified accuracy
(the exact dual bound of :func:`tutorial_lib.bounds.dual_bounds`, never projections) and the
accuracy under PGD (100 steps, in the same norm): robust accuracy lies between the two. A
certified example that the attack breaks would prove the bound code wrong: :func:`certify` raises.

* :func:`certify`            clean / certified / PGD accuracy of one model on (x, y)
* :func:`bound_cost`         seconds and peak memory of one bound computation, and node shapes
* :func:`cifar_resnet_costs` :func:`bound_cost` of the paper's CIFAR ResNet on CIFAR-shaped random
  inputs (no CIFAR-10 copy is needed), shipped as ``data/results/cifar_resnet_cost.json``::

      python -m tutorial_lib.studies.scaling_eval --cifar-resnet-cost --json data/results/cifar_resnet_cost.json
* :func:`bounds_vs_sampling` dual bounds on every logit beside the range dense sampling finds
  (for sigmoid / tanh networks, which have no exact MILP)
* :func:`load_results`       a shipped result file

Accuracies are fractions in [0, 1]; eps in input units ([0, 1] pixels) of the norm's ball.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..attacks.pgd import PGD
from ..bounds import certified_bounds, dual_bounds, estimated_dual_bounds, float64_copy, is_certified
from ..bounds.layers import build_layers
from ..checkpoints import load_checkpoint
from ..data import REPO_ROOT, test_subset
from .json_output import add_json_arguments, refuse_existing_json, write_json

__all__ = ["ROWS", "PAPER", "RESULTS", "certify", "bound_cost", "cifar_resnet_costs", "bounds_vs_sampling",
           "result_path", "load_results", "load_cifar_resnet_costs", "main"]

RESULTS = REPO_ROOT / "data" / "results"

#: The models of notebook 07's table: checkpoint name -> (norm, eps, what it is).
ROWS: Dict[str, tuple] = {
    "mnist_small_robust_full": ("linf", 0.1, "small CNN, exact bound, 20 epochs (GPU)"),
    "mnist_small_robust": ("linf", 0.1, "small CNN, 50 projections, 6 epochs (CPU)"),
    "mnist_residual_robust": ("linf", 0.1, "residual network, 50 projections, 1 epoch (CPU)"),
    "mnist_small_robust_l2": ("l2", 1.58, "small CNN, 50 projections, 6 epochs (CPU)"),
}

#: What the papers report beside each row (their models, not ours), as text for the table: the
#: abstract of Wong et al. 2018 and the single-model certified accuracies of its Table as listed by
#: the SoK leaderboard of certified robustness (Li, Xie & Li); no verified MNIST l2 number offline.
PAPER: Dict[str, str] = {
    "mnist_small_robust_full": "5.8% (Wong & Kolter 2017, small CNN, exact); 3.67% (Wong et al. 2018, large CNN)",
    "mnist_small_robust": "5.8% (Wong & Kolter 2017, small CNN, exact); 3.67% (Wong et al. 2018, large CNN)",
    "mnist_residual_robust": "no MNIST residual network in the paper (its residual network is the CIFAR ResNet)",
    "mnist_small_robust_l2": "reported for eps 1.58; no verified copy of the number offline",
    "cifar_resnet": "46.11% at 2/255, 78.22% at 8/255 (single ResNet); 36.4% at 2/255 with a cascade",
}


def certify(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str = "linf", batch_size: int = 100,
            attack_steps: int = 100, seed: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Clean, certified and PGD accuracy of ``model`` on (x, y), x (N, C, H, W) in [0, 1], y (N,).

    Certified: clean-correct and every margin's exact dual lower bound > 0 on the ball of radius
    eps in ``norm`` (l_inf: intersected with the pixel box; l2: box dropped, sound), computed in
    float64 with TF32 off (:func:`tutorial_lib.bounds.certified_bounds`). PGD: clean-
    correct and still correct after PGD (``attack_steps`` steps, step 2.5 eps / steps, random
    start, seeded) in the same norm. Raises RuntimeError if PGD breaks a certified example.
    Returns a JSON-ready dict: n, clean_accuracy, certified_accuracy, pgd_accuracy, certified_error,
    attack (its description), seconds_certify, seconds_attack.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of one length, got {len(x)} and {len(y)}")
    model = model.eval()
    device = next(model.parameters()).device
    attack = PGD(eps, steps=attack_steps, norm=norm, seed=seed)
    twin = float64_copy(model)
    clean, cert, robust = [], [], []
    t_cert = t_attack = 0.0
    for a in range(0, len(y), batch_size):
        xb, yb = x[a:a + batch_size].to(device), y[a:a + batch_size].to(device)
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
            t0 = time.perf_counter()
            c = ok & is_certified(certified_bounds(twin, xb, yb, eps, norm=norm).lower)
            t_cert += time.perf_counter() - t0
        t0 = time.perf_counter()
        x_adv = attack(model, xb, yb)
        with torch.no_grad():
            r = ok & (model(x_adv).argmax(1) == yb)
        t_attack += time.perf_counter() - t0
        if bool((c & ~r).any()):
            i = a + int((c & ~r).nonzero()[0])
            raise RuntimeError(f"example {i} is certified at {norm} eps {eps} but PGD broke it: the bound is wrong")
        clean.append(ok.cpu())
        cert.append(c.cpu())
        robust.append(r.cpu())
        if progress:
            done = a + len(yb)
            print(f"\r{done}/{len(y)}: certified {float(torch.cat(cert).double().mean()):.4f}", end="", flush=True)
    if progress:
        print()
    rate = lambda m: round(float(torch.cat(m).double().mean()), 6)  # noqa: E731
    return {"n": len(y), "clean_accuracy": rate(clean), "certified_accuracy": rate(cert),
            "certified_error": round(1 - rate(cert), 6), "pgd_accuracy": rate(robust),
            "attack": f"PGD-{attack_steps} ({norm}, step 2.5 eps / steps, random start, seed {seed})",
            "seconds_certify": round(t_cert, 1), "seconds_attack": round(t_attack, 1)}


class _PeakRSS:
    """Peak resident memory of this process above its level at entry, in bytes, polled from
    /proc/self/statm every ``interval`` seconds (``peak`` None where /proc is missing)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak = interval, None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> Optional[int]:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return None

    def _poll(self) -> None:
        while not self._stop.is_set():
            r = self._rss()
            if r is not None:
                self._max = max(self._max, r)
            time.sleep(self.interval)

    def __enter__(self) -> "_PeakRSS":
        self._start = self._rss()
        self._max = self._start or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if self._start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._start is not None:
            self._thread.join()
            self.peak = max(0, self._max - self._start)


def bound_cost(model: nn.Module, x: Tensor, eps: float, proj: Optional[int] = None, norm: str = "linf",
               grad: bool = False, seed: int = 0) -> Dict[str, Any]:
    """Cost of one bound computation of ``model`` on x (N, *input shape) in [0, 1].

    proj None: the exact dual bound; k: the k-projection estimate (training's bound). grad: also
    the backward pass of the robust loss's sum (a training step without the optimiser).
    Returns {"seconds": wall time, "peak_bytes": the peak memory above the level before the call
    (CUDA: torch.cuda.max_memory_allocated; CPU: the process's resident memory polled from /proc,
    None elsewhere; memory the process already holds and reuses is not counted, so measure in a
    fresh process, as ``--cifar-resnet-cost`` does), "nodes": [(node type, output shape per
    example)] in topological order, "neurons": activations' inputs in all, per example}.
    """
    y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    layers, _ = build_layers(model, x[:1])
    nodes = [(type(layer).__name__.replace("Dual", ""), tuple(layer.out_shape)) for layer in layers]
    neurons = sum(int(torch.tensor(layer.in_shape).prod()) for layer in layers
                  if type(layer).__name__ in ("DualReLU", "DualSigmoid", "DualTanh"))
    g = torch.Generator(device=x.device).manual_seed(seed)

    def run() -> None:
        with torch.set_grad_enabled(grad):
            if proj is None:
                res = dual_bounds(model, x, y, eps, norm=norm)
            else:
                res = estimated_dual_bounds(model, x, y, eps, proj=proj, generator=g, norm=norm)
            if grad:
                res.lower.sum().backward()

    cuda = x.is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
    t0 = time.perf_counter()
    with _PeakRSS() as rss:
        run()
        if cuda:
            torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(x.device) - base if cuda else rss.peak
    model.zero_grad(set_to_none=True)
    return {"seconds": seconds, "peak_bytes": peak, "nodes": nodes, "neurons": neurons}


def cifar_resnet_costs(settings: Sequence[tuple] = ((1, None, False), (2, 10, True), (2, 50, True)),
                       eps: float = 2 / 255, seed: int = 0,
                       device: Optional[torch.device] = None) -> List[Dict[str, Any]]:
    """:func:`bound_cost` of ``models.cifar_resnet`` (seeded random weights, the paper's init)
    on random inputs of shape (batch, 3, 32, 32) in [0, 1], for each (batch, proj, grad) of
    ``settings`` (proj None: the exact bound). Returns one dict per setting: batch, proj, grad,
    seconds, peak_bytes; the first also carries nodes and neurons."""
    from ..models import cifar_resnet
    torch.manual_seed(seed)
    model = cifar_resnet().to(device or "cpu")
    out = []
    for batch, proj, grad in settings:
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device or "cpu")
        cost = bound_cost(model, x, eps, proj=proj, grad=grad, seed=seed)
        row = {"batch": batch, "proj": proj, "grad": grad, "seconds": round(cost["seconds"], 3),
               "peak_bytes": cost["peak_bytes"]}
        if not out:
            row.update(nodes=cost["nodes"], neurons=cost["neurons"])
        out.append(row)
    return out


def bounds_vs_sampling(model: nn.Module, x: Tensor, eps: float, samples: int = 20000, seed: int = 0
                       ) -> Dict[str, Tensor]:
    """Dual bounds on every logit over the l_inf ball (in the pixel box) around x, beside the
    range of the logits at random points of that ball.

    x: (1, *input shape) in [0, 1]. Samples: the ball's corners in random sign patterns (half of
    them) and uniform points (the other half), clipped to [0, 1]. Returns {"lower", "upper"}: the
    dual bounds, (K,); {"sample_min", "sample_max"}: the sampled range, (K,). Sound bounds give
    lower <= sample_min and sample_max <= upper for every logit.
    """
    if x.shape[0] != 1:
        raise ValueError(f"x must hold one input, got a batch of {x.shape[0]}")
    model = model.eval()
    with torch.no_grad():
        K = model(x).shape[1]
        eye = torch.eye(K, dtype=x.dtype, device=x.device)
        spec = torch.cat([eye, -eye]).unsqueeze(0)  # rows: +logit_j (lower bound), -logit_j (upper)
        low = dual_bounds(model, x, None, eps, spec=spec).lower[0]
        g = torch.Generator(device=x.device).manual_seed(seed)
        half = samples // 2
        signs = torch.randint(0, 2, (half, *x.shape[1:]), generator=g, device=x.device) * 2 - 1
        uniform = torch.rand((samples - half, *x.shape[1:]), generator=g, device=x.device) * 2 - 1
        pts = (x + eps * torch.cat([signs.to(x.dtype), uniform])).clamp(0, 1)
        logits = torch.cat([model(pts[a:a + 4096]) for a in range(0, samples, 4096)])
    return {"lower": low[:K], "upper": -low[K:], "sample_min": logits.min(0).values,
            "sample_max": logits.max(0).values}


def result_path(name: str, norm: str, eps: float, folder: Optional[Path] = None) -> Path:
    """Where the shipped result of ``name`` at (norm, eps) lives."""
    return Path(folder or RESULTS) / f"certified_{name}_{norm}{eps:g}.json"


def load_results(name: str, folder: Optional[Path] = None) -> Dict[str, Any]:
    """The shipped result of a model of :data:`ROWS` (its norm and eps)."""
    if name not in ROWS:
        raise ValueError(f"unknown row {name!r}; rows: {', '.join(ROWS)}")
    norm, eps, _ = ROWS[name]
    return json.loads(result_path(name, norm, eps, folder).read_text())


def load_cifar_resnet_costs(folder: Optional[Path] = None) -> Dict[str, Any]:
    """The shipped ``cifar_resnet_cost.json``."""
    return json.loads((Path(folder or RESULTS) / "cifar_resnet_cost.json").read_text())


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tutorial_lib.studies.scaling_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="a registered checkpoint name or a checkpoint file")
    p.add_argument("--cifar-resnet-cost", action="store_true",
                   help="instead: time the bounds of the CIFAR ResNet on random CIFAR-shaped inputs")
    p.add_argument("--norm", choices=("linf", "l2", "l1"), default="linf")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--n", type=int, default=10000, help="first n MNIST test images")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--attack-steps", type=int, default=100)
    add_json_arguments(p)
    args = p.parse_args(argv)
    refuse_existing_json(p, args)
    command = "python -m tutorial_lib.studies.scaling_eval " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.cifar_resnet_cost:
        if args.checkpoint:
            p.error("--cifar-resnet-cost takes no checkpoint")
        print("the CIFAR ResNet's exact bound on one image takes about a minute and 1-2 GB on one CPU core", flush=True)
        rows = cifar_resnet_costs()
        write_json({"eps": 2 / 255, "rows": rows, "torch": str(torch.__version__),
                    "threads": torch.get_num_threads(), "device": "cpu", "command": command}, args.json)
        return
    if not args.checkpoint:
        p.error("give a checkpoint (or --cifar-resnet-cost)")
    if args.norm == "l1":
        p.error("PGD has no l1 ball here: use tutorial_lib.attacks.SparseL1Descent by hand for l1")
    model, _ = load_checkpoint(args.checkpoint)
    x, y = test_subset("mnist", args.n)
    t0 = time.perf_counter()
    with torch.no_grad():
        dual_bounds(model.eval(), x[:2], y[:2], args.eps, norm=args.norm)
    per = time.perf_counter() - t0
    print(f"{args.checkpoint} at {args.norm} eps {args.eps} on {args.n} test images: roughly "
          f"{args.n * per / 2 / 60:.0f} min of certificates on this machine, plus PGD-{args.attack_steps}", flush=True)
    out: Dict[str, Any] = {"model": str(args.checkpoint), "norm": args.norm, "eps": args.eps}
    out.update(certify(model, x, y, args.eps, norm=args.norm, batch_size=args.batch_size,
                       attack_steps=args.attack_steps))
    out.update(torch=str(torch.__version__), threads=torch.get_num_threads(), command=command)
    write_json(out, args.json)
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
