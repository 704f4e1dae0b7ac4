"""Benchmark: the exact dual bound of tutorial_lib.bounds vs convex_adversarial 0.4.4.

MNIST small CNN (Wong & Kolter 2017), eps = 0.1 intersected with the pixel box
(convex_adversarial's bounded_input=True), margins z_y - z_j, in two weight settings
(``--weights``):

* ``random``: seeded random weights, random inputs in [0, 1] and random labels (many unstable
  ReLUs: the worst case for both libraries);
* ``trained``: the shipped checkpoint ``mnist_small_robust`` (robustly trained at eps 0.1) on
  the first MNIST test images and their labels (few unstable ReLUs, which convex_adversarial
  exploits: it pushes only the unstable neurons forward).

For each setting, batch size and with and without gradients (robust loss + backward), prints
seconds per batch (median of --reps after a warm-up; with --rounds R > 1 the two libraries run
alternately R times and the median over rounds is kept, so that load from other processes hits
both alike), peak memory (CPU: peak RSS growth of a fresh process; CUDA: peak allocated), the
speed ratio and the max difference of the bounds.

    python benchmarks/dual_bounds.py [--weights random,trained] [--batches 8,32,128] [--reps 3]
                                     [--rounds 1] [--threads 1] [--device cpu] [--proj K]

``--proj K`` times robust training's bound instead: the intermediate bounds estimated with K
Cauchy random projections (Wong et al. 2018; ours ``estimated_dual_bounds``, convex_adversarial's
``DualNetwork(..., proj=K, norm_type='l1_median')``). The estimates are random and the two
libraries draw different projections, so their bounds are not compared (max |diff| is "-").

Needs ``pip install --no-deps convex-adversarial==0.4.4`` (and numpy) in the environment.
Every configuration runs in its own subprocess so peak memory is measured separately.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.1


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


WEIGHTS = ("random", "trained")
TRAINED = "mnist_small_robust"


def _problem(weights: str, batch: int, device: str):
    """(net, x (batch, 1, 28, 28), y (batch,)) of one weight setting (see the module doc)."""
    import torch

    if weights == "random":
        from tutorial_lib.models import mnist_small
        torch.manual_seed(0)
        net = mnist_small()
        x = torch.rand(batch, 1, 28, 28)
        y = torch.randint(0, 10, (batch,))
    elif weights == "trained":
        from tutorial_lib import data
        from tutorial_lib.checkpoints import load_checkpoint
        net = load_checkpoint(TRAINED)[0]
        x, y = data.test_subset("mnist", batch)
    else:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    return net.to(device), x.to(device), y.to(device)


def child(impl: str, weights: str, batch: int, grad: bool, reps: int, device: str, out: str,
          proj: int = 0) -> None:
    sys.path.insert(0, ROOT)
    import torch
    import torch.nn.functional as F

    net, x, y = _problem(weights, batch, device)
    K = 10
    keep = torch.ones(batch, K, dtype=torch.bool, device=device)
    keep[torch.arange(batch, device=device), y] = False

    if impl == "ours":
        from tutorial_lib.bounds import dual_bounds, estimated_dual_bounds
        g = torch.Generator(device=device).manual_seed(0)

        def bound():
            if proj:
                return estimated_dual_bounds(net, x, y, EPS, proj=proj, generator=g).lower
            return dual_bounds(net, x, y, EPS).lower
    else:
        from convex_adversarial import DualNetwork
        eye = torch.eye(K, device=device)
        c = eye[y].unsqueeze(1) - eye.unsqueeze(0)

        def bound():
            kw = {"proj": proj, "norm_type": "l1_median"} if proj else {}
            f = -DualNetwork(net, x, EPS, bounded_input=True, **kw)(c)  # (N, K), 0 at y
            return -f[keep].view(batch, K - 1)

    def run():
        net.zero_grad(set_to_none=True)
        if grad:
            J = bound()
            z = torch.zeros(batch, K, device=device).masked_scatter(keep, -J)
            F.cross_entropy(z, y).backward()
        else:
            with torch.no_grad():
                J = bound()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return J.detach()

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kb() * 1024
    J = run()  # warm-up, and the peak-memory measurement
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    torch.save(J.cpu(), out + ".pt")
    with open(out, "w") as f:
        json.dump({"seconds": statistics.median(times), "peak_bytes": int(peak)}, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="random,trained",
                    help=f"comma-separated weight settings, of {', '.join(WEIGHTS)}")
    ap.add_argument("--batches", default="8,32,128")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run ours and convex_adversarial alternately this many times (median kept)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    ap.add_argument("--lp-examples", type=int, default=5,
                    help="also time interval / dual / LP / MILP per example on a small MLP (0: skip)")
    ap.add_argument("--proj", type=int, default=0,
                    help="time the training bound with this many random projections (0: the exact bound)")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    if a.child:
        impl, weights, batch, grad, device, out = a.child
        child(impl, weights, int(batch), grad == "1", a.reps, device, out, proj=a.proj)
        return
    if a.batches == "none":
        lp_table(a.lp_examples)
        return
    settings = [w.strip() for w in a.weights.split(",") if w.strip()]
    bad = [w for w in settings if w not in WEIGHTS]
    if bad or not settings:
        ap.error(f"--weights: expected a comma-separated subset of {', '.join(WEIGHTS)}, got {a.weights!r}")
    if a.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {a.rounds}")

    import torch
    tmp = tempfile.mkdtemp(prefix="dual_bench_")
    if a.proj < 0:
        ap.error(f"--proj must be >= 0, got {a.proj}")
    what = f"{a.proj} random projections (training's estimate)" if a.proj else "exact dual bound"
    print(f"MNIST small CNN, {what}, eps={EPS}, device={a.device}, torch {torch.__version__}, "
          f"threads={a.threads or torch.get_num_threads()}, rounds={a.rounds}; "
          f"trained = {TRAINED} on MNIST test images")
    hdr = (f"{'weights':>7} {'batch':>5} {'grad':>5} | {'ours s':>8} {'ours MiB':>9} | {'c_a s':>8} "
           f"{'c_a MiB':>9} | {'speedup':>7} {'mem ratio':>9} | {'max |diff|':>10}")
    print(hdr)
    print("-" * len(hdr))
    for weights in settings:
        for batch in [int(b) for b in a.batches.split(",")]:
            for grad in (False, True):
                res = _compare(a, tmp, weights, batch, grad)
                o, c = res["ours"], res["ca"]
                f = lambda r, k, s: "-" if r is None else s.format(r[k] if k != "peak_bytes"
                                                                   else r[k] / 2 ** 20)
                speed = f"{c['seconds'] / o['seconds']:.2f}x" if o and c else "-"
                mem = f"{o['peak_bytes'] / max(c['peak_bytes'], 1):.2f}" if o and c else "-"
                diff = f"{(o['J'] - c['J']).abs().max().item():.2e}" if o and c and not a.proj else "-"
                print(f"{weights:>7} {batch:>5} {str(grad):>5} | {f(o, 'seconds', '{:.3f}'):>8} "
                      f"{f(o, 'peak_bytes', '{:.0f}'):>9} | {f(c, 'seconds', '{:.3f}'):>8} "
                      f"{f(c, 'peak_bytes', '{:.0f}'):>9} | {speed:>7} {mem:>9} | {diff:>10}",
                      flush=True)
    if a.lp_examples:
        lp_table(a.lp_examples)


def _compare(a: argparse.Namespace, tmp: str, weights: str, batch: int, grad: bool) -> dict:
    """Run both libraries on one configuration, alternately ``a.rounds`` times, each run in a
    fresh process. Returns {impl: None (failed) or {seconds (median over rounds), peak_bytes
    (of the first round), J (the bounds, (batch, 9))}}."""
    import torch

    runs = {"ours": [], "ca": []}
    failed = set()
    for r in range(a.rounds):
        for impl in ("ours", "ca"):
            if impl in failed:
                continue
            out = os.path.join(tmp, f"{impl}_{weights}_{batch}_{int(grad)}_{r}.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--reps", str(a.reps),
                   "--threads", str(a.threads), "--proj", str(a.proj),
                   "--child", impl, weights, str(batch), str(int(grad)), a.device, out]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                ok = p.returncode == 0
            except subprocess.TimeoutExpired:
                ok, p = False, None
            if ok:
                with open(out) as f:
                    run = json.load(f)
                run["J"] = torch.load(out + ".pt")
                runs[impl].append(run)
            else:
                why = "timeout" if p is None else (p.stderr.strip().splitlines() or ["?"])[-1]
                failed.add(impl)
                print(f"  [{impl} {weights} batch {batch} grad {grad} failed: {why[:120]}]")
    res = {}
    for impl, rs in runs.items():
        if impl in failed or not rs:
            res[impl] = None
            continue
        res[impl] = {"seconds": statistics.median(r["seconds"] for r in rs),
                     "peak_bytes": rs[0]["peak_bytes"], "J": rs[0]["J"]}
    return res


def lp_table(n: int) -> None:
    """Per-example seconds of interval / dual / LP / MILP on a seeded random MLP 784-32-32-10
    (the MLP keeps the LP and MILP affordable; they grow far slower on the CNN, not timed here)."""
    import torch

    from tutorial_lib import bounds
    from tutorial_lib.studies.polytope import tiny_mnist_mlp
    torch.manual_seed(0)
    net = tiny_mnist_mlp(32).eval()
    x = torch.rand(n, 1, 28, 28)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = 0.005
    print(f"\nper-example seconds, random MLP 784-32-32-10, eps = {eps}, {n} examples (one at a time)")
    print(f"{'method':>9} | {'s / example':>11} | {'mean bound':>10}")
    for name, fn in (("interval", bounds.interval_bounds), ("dual", bounds.dual_bounds),
                     ("LP", bounds.lp_bounds), ("MILP", bounds.milp_bounds)):
        t0, lows = time.perf_counter(), []
        for i in range(n):
            with torch.no_grad():
                lows.append(fn(net, x[i:i + 1], y[i:i + 1], eps).lower.min().item())
        print(f"{name:>9} | {(time.perf_counter() - t0) / n:11.4f} | {sum(lows) / n:10.4f}", flush=True)


if __name__ == "__main__":
    main()
