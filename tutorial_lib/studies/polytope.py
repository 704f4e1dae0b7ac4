"""The convex outer adversarial polytope (Wong & Kolter 2017) in pictures, and small LP/MILP tables.

Plain functions that notebook 04 and the tests call:

* :func:`relu_relaxation_figure`  the ReLU on [l, u] and its triangle relaxation
* :func:`true_image`              f(x') for a dense grid of x' in the eps-box (2-D input, 2 outputs)
* :func:`outer_polytope`          the convex outer polytope from bounds on c^T f for many directions c
* :func:`interval_box`            the interval (IBP) box around the outputs
* :func:`polytope_example`, :func:`draw_polytope_example`, :func:`polytope_explorer`   the explorer
* :func:`train_toy_net`, :func:`tiny_mnist_mlp`, :func:`train_tiny_mnist`   small nets trained in seconds
* :func:`certify_table`           per-example bounds and times of several methods (and the best of
  interval and dual) plus a PGD margin
"""
from __future__ import annotations

import copy
import math
import time
from typing import Dict, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import bounds
from ..attacks import PGD, margin

__all__ = ["relu_relaxation_figure", "directions", "true_image", "outer_polytope", "halfplane_vertices",
           "interval_box", "polytope_example", "draw_polytope_example", "draw_output_plane", "polytope_explorer",
           "train_toy_net", "tiny_mnist_mlp", "train_tiny_mnist", "certify_table", "METHODS",
           "BEST_OF", "EXAMPLE_KEYS"]

EXAMPLE_KEYS = ("x0", "eps", "samples", "vertices", "support", "directions", "box", "method",
                "seconds")


def relu_relaxation_figure(l: float = -1.0, u: float = 1.5, ax=None):
    """The ReLU a = max(0, z) on [l, u] (l < 0 < u) and its triangle relaxation
    a >= 0, a >= z, a <= u (z - l) / (u - l). Returns the figure."""
    if not l < 0 < u:
        raise ValueError(f"the relaxation figure needs l < 0 < u, got l={l}, u={u}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
    else:
        fig = ax.figure
    tri = np.array([[l, 0.0], [0.0, 0.0], [u, u]])
    ax.fill(tri[:, 0], tri[:, 1], color="tab:orange", alpha=0.3, label="triangle relaxation")
    ax.plot([l, u], [0, u], "--", color="tab:orange", lw=1.2, label=r"$a \leq u(z-l)/(u-l)$")
    z = np.linspace(l, u, 200)
    ax.plot(z, np.maximum(z, 0), color="k", lw=2, label=r"$a = \max(0, z)$")
    ax.axvline(l, color="gray", lw=0.6, ls=":")
    ax.axvline(u, color="gray", lw=0.6, ls=":")
    ax.text(l, -0.12 * u, r"$\ell$", ha="center", va="top")
    ax.text(u, -0.12 * u, r"$u$", ha="center", va="top")
    ax.set_xlabel(r"pre-activation $z$")
    ax.set_ylabel(r"activation $a$")
    ax.set_ylim(-0.25 * u, 1.15 * u)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("ReLU and its convex relaxation", fontsize=10)
    fig.tight_layout()
    return fig


def directions(n_dirs: int) -> torch.Tensor:
    """n_dirs unit vectors evenly spaced on the circle, (n_dirs, 2)."""
    if n_dirs < 3:
        raise ValueError(f"need at least 3 directions for a bounded polygon, got {n_dirs}")
    t = 2 * math.pi * torch.arange(n_dirs, dtype=torch.float64) / n_dirs
    return torch.stack([torch.cos(t), torch.sin(t)], 1)


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _x0(model: nn.Module, x0) -> torch.Tensor:
    p = next(model.parameters())
    x = torch.as_tensor(x0, dtype=p.dtype, device=p.device).reshape(1, -1)
    if x.shape[1] != 2:
        raise ValueError(f"the polytope explorer needs a 2-D input, got {x.shape[1]} dims")
    return x


def true_image(model: nn.Module, x0, eps: float, n: int = 200) -> torch.Tensor:
    """f(x') for x' on an n x n grid of the box |x' - x0|_inf <= eps (its edges included):
    a dense sample of the true output set Z_eps(x0). Returns (n*n, 2) on the CPU."""
    x = _x0(model, x0)
    g = torch.linspace(-1.0, 1.0, n, dtype=x.dtype, device=x.device) * eps
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    pts = x + torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        out = model(pts)
    if out.shape[1] != 2:
        raise ValueError(f"the polytope explorer needs 2 outputs, got {out.shape[1]}")
    return out.detach().cpu()


def halfplane_vertices(C: np.ndarray, h: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Vertices (in counter-clockwise order) of the polygon {z : C z >= h}, C (m, 2), h (m,).

    Every pair of boundary lines is intersected and the feasible points are kept (m is small)."""
    C, h = np.asarray(C, dtype=np.float64), np.asarray(h, dtype=np.float64)
    i, j = np.triu_indices(len(h), k=1)
    A = np.stack([C[i], C[j]], 1)  # (P, 2, 2)
    det = np.linalg.det(A)
    ok = np.abs(det) > 1e-12
    pts = np.linalg.solve(A[ok], np.stack([h[i], h[j]], 1)[ok][..., None])[..., 0]
    scale = 1.0 + np.abs(h).max()
    feas = (pts @ C.T - h >= -tol * scale).all(1)
    pts = pts[feas]
    if len(pts) == 0:
        return np.zeros((0, 2))
    c = pts.mean(0)
    order = np.argsort(np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0]))
    pts = pts[order]
    keep = np.r_[True, np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-9 * scale]
    return pts[keep]


def outer_polytope(model: nn.Module, x0, eps: float, n_dirs: int = 48, method: str = "lp",
                   steps: int = 60) -> Dict[str, object]:
    """The convex outer adversarial polytope around the outputs of a 2-input, 2-output ReLU net.

    For every unit direction c_i (n_dirs on the circle) a certified lower bound
    h_i <= min { c_i^T f(x') : |x' - x0|_inf <= eps } over the triangle relaxation is computed
    in ONE batched call with spec = the (n_dirs, 2) matrix of directions (no input box: clip=None).
    The polygon {z : c_i^T z >= h_i for all i} contains the relaxation's output set, hence the
    true output set. ``method``:

    * ``"lp"`` (default): :func:`bounds.lp_bounds`, the exact triangle-relaxation LP (the
      polytope of the paper), one warm HiGHS solve per direction: ~0.1 s for 48 directions on a
      2-(16, 16)-2 net on one CPU core (plus ~0.7 s for importing cvxpy on the first call);
    * ``"dual-opt"`` (~0.1 s): :func:`bounds.optimized_dual_bounds` with ``steps`` Adam steps on
      the lower slopes; approaches the LP from below, always sound;
    * ``"dual"``: :func:`bounds.dual_bounds`, the paper's fixed slopes;
    * ``"crown"`` / ``"crown-ibp"``: :func:`bounds.crown_bounds` (CROWN's adaptive lower slopes;
      intermediate bounds by CROWN or by interval arithmetic).

    Returns dict: ``directions`` (n_dirs, 2), ``support`` (n_dirs,) the h_i, ``vertices`` (V, 2)
    counter-clockwise, ``method``, ``seconds``.
    """
    x = _x0(model, x0)
    C = directions(n_dirs).to(dtype=x.dtype, device=x.device)
    t0 = time.perf_counter()
    if method == "dual-opt":
        r = bounds.optimized_dual_bounds(model, x, None, eps, spec=C, clip=None, steps=steps)
    elif method == "lp":
        r = bounds.lp_bounds(model, x, None, eps, spec=C, clip=None)
    elif method == "dual":
        with torch.no_grad():
            r = bounds.dual_bounds(model, x, None, eps, spec=C, clip=None)
    elif method in ("crown", "crown-ibp"):
        with torch.no_grad():
            r = bounds.crown_bounds(model, x, None, eps, spec=C, clip=None,
                                    pre="crown" if method == "crown" else "interval")
    else:
        raise ValueError(f"unknown method {method!r}; known: dual-opt, lp, dual, crown, crown-ibp")
    seconds = time.perf_counter() - t0
    h = r.lower[0].detach().double().cpu().numpy()
    Cn = C.double().cpu().numpy()
    return {"directions": Cn, "support": h, "vertices": halfplane_vertices(Cn, h),
            "method": method, "seconds": seconds}


def interval_box(model: nn.Module, x0, eps: float) -> np.ndarray:
    """The interval-bound box [[lo_1, hi_1], [lo_2, hi_2]] around the two outputs (no clip)."""
    x = _x0(model, x0)
    spec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=x.dtype, device=x.device)
    with torch.no_grad():
        low = bounds.interval_bounds(model, x, None, eps, spec=spec, clip=None).lower[0]
    low = low.double().cpu().numpy()
    return np.array([[low[0], -low[2]], [low[1], -low[3]]])


def polytope_example(model: nn.Module, x0, eps: float, n_dirs: int = 48, method: str = "lp",
                     n_grid: int = 150, steps: int = 60) -> Dict[str, object]:
    """Everything the explorer draws for one eps.

    Keys (:data:`EXAMPLE_KEYS`): ``x0`` (2,), ``eps``, ``samples`` (n_grid^2, 2) sampled true
    outputs f(x'), ``vertices`` (V, 2) of the outer polytope, ``support`` (n_dirs,) its lower
    support values h_i along ``directions`` (n_dirs, 2), ``box`` (2, 2) the interval box
    (row k = [lo_k, hi_k]), ``method`` and ``seconds`` (dict: sampling, polytope, box times).
    """
    model.eval()
    t0 = time.perf_counter()
    samples = true_image(model, x0, eps, n_grid)
    t1 = time.perf_counter()
    poly = outer_polytope(model, x0, eps, n_dirs, method, steps)
    t2 = time.perf_counter()
    box = interval_box(model, x0, eps)
    t3 = time.perf_counter()
    return {"x0": _x0(model, x0)[0].cpu().numpy(), "eps": float(eps), "samples": samples.numpy(),
            "vertices": poly["vertices"], "support": poly["support"], "directions": poly["directions"],
            "box": box, "method": method,
            "seconds": {"sampling": t1 - t0, "polytope": t2 - t1, "box": t3 - t2}}


_METHOD_NAMES = {"dual-opt": "optimised dual", "lp": "LP", "dual": "dual (paper slopes)", "crown": "CROWN",
                 "crown-ibp": "CROWN-IBP"}


def draw_output_plane(ax, box: np.ndarray, samples: np.ndarray, eps: float,
                      polygons: Sequence[Tuple[np.ndarray, str, str, bool]] = (), box_label: str = "interval box",
                      legend: bool = True) -> None:
    """The plane of the two logits: the interval box (gray, dashed; ``box`` (2, 2), row k = [lo_k, hi_k]),
    each polygon of ``polygons`` ((V, 2) vertices, colour, label, filled), the sampled true outputs
    ``samples`` (M, 2) (blue) and the decision boundary z_1 = z_2 (dotted), framed around box and samples."""
    (l1, u1), (l2, u2) = box
    ax.add_patch(plt.Rectangle((l1, l2), u1 - l1, u2 - l2, fill=False, ec="gray", lw=1.5, ls="--", label=box_label))
    for v, colour, label, filled in polygons:
        if len(v):
            vv = np.vstack([v, v[:1]])
            if filled:
                ax.fill(vv[:, 0], vv[:, 1], color=colour, alpha=0.25)
            ax.plot(vv[:, 0], vv[:, 1], color=colour, lw=1.5, label=label)
    ax.scatter(samples[:, 0], samples[:, 1], s=1, color="tab:blue", alpha=0.3, rasterized=True,
               label=r"true outputs $f(x')$ (sampled)")
    lo = np.minimum(box[:, 0], samples.min(0))
    hi = np.maximum(box[:, 1], samples.max(0))
    pad = 0.05 * (hi - lo).max() + 1e-6
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    a, b = min(lo) - pad, max(hi) + pad
    ax.plot([a, b], [a, b], color="k", lw=0.8, ls=":", label=r"decision boundary $z_1 = z_2$")
    ax.set_xlabel(r"logit $z_1$")
    ax.set_ylabel(r"logit $z_2$")
    ax.set_title(f"eps = {eps:.3g}", fontsize=10)
    if legend:
        ax.legend(fontsize=7, loc="best")


def draw_polytope_example(r: Dict[str, object], ax=None, legend: bool = True):
    """Sampled true outputs (blue), the convex outer polytope (orange) and the interval box (gray)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.2))
    else:
        fig = ax.figure
    label = f"outer polytope ({_METHOD_NAMES.get(r['method'], r['method'])})"
    draw_output_plane(ax, r["box"], r["samples"], r["eps"], [(r["vertices"], "tab:orange", label, True)],
                      legend=legend)
    return fig


def polytope_explorer(model: nn.Module, x0, eps_max: float = 0.5, n_dirs: int = 48,
                      method: str = "lp"):
    """ipywidgets explorer: an eps slider; each move calls :func:`polytope_example` and redraws."""
    import ipywidgets as W
    from IPython.display import display

    eps = W.FloatSlider(value=eps_max / 5, min=0.01, max=eps_max, step=0.01, description="eps (linf)",
                        continuous_update=False)
    out = W.Output()

    def update(*_):
        r = polytope_example(model, x0, eps.value, n_dirs=n_dirs, method=method)
        with out:
            out.clear_output(wait=True)
            fig = draw_polytope_example(r)
            fig.axes[0].set_title(f"eps = {r['eps']:.2f}: polytope {r['seconds']['polytope']:.2f} s",
                                  fontsize=10)
            display(fig)
            plt.close(fig)

    eps.observe(update, names="value")
    update()
    return W.VBox([eps, out])


# --------------------------------------------------------------------------- small trained nets

def train_toy_net(hidden: Sequence[int] = (16, 16), dataset: str = "moons", n: int = 400,
                  epochs: int = 30, seed: int = 0) -> nn.Sequential:
    """A toy_mlp (2 inputs, 2 logits) trained in about a second on a 2-D toy set, seeded."""
    from ..data import make_toy
    from ..models import toy_mlp
    from ..training import fit
    torch.manual_seed(seed)
    x, y = make_toy(dataset, n=n, seed=seed)
    model = toy_mlp(2, hidden, 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    fit(model, loader, epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        device="cpu", seed=seed, progress=False)
    return model.eval()


def tiny_mnist_mlp(hidden: int = 32) -> nn.Sequential:
    """Flatten -> Linear(784, h) -> ReLU -> Linear(h, h) -> ReLU -> Linear(h, 10): small enough
    for exact LP/MILP verification in seconds per example."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, 10))


def train_tiny_mnist(n_train: int = 10000, epochs: int = 1, hidden: int = 32, seed: int = 0,
                     data_dir=None) -> nn.Sequential:
    """:func:`tiny_mnist_mlp` trained (Adam, batch 64, CPU) on the first n_train MNIST training
    images; a few seconds. Returned in float32, eval mode.

    Seeded, and trained in float64, then rounded to float32 once: float32 training would carry
    the machine's rounding (CPU family, thread count, BLAS build) into every weight and so into the
    accuracy and the bounds that notebook 04 prints; in float64 those differences stay far below
    float32's last digit, and the same weights come out on any machine."""
    from ..data import get_loaders
    from ..training import fit
    torch.manual_seed(seed)
    train_loader, _ = get_loaders("mnist", batch_size=64, train_subset=n_train, test_subset=1,
                                  data_dir=data_dir, seed=seed)
    model = tiny_mnist_mlp(hidden).double()

    def loss_float64(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = m(x.double())
        return F.cross_entropy(logits, y), logits

    fit(model, train_loader, epochs=epochs, loss_fn=loss_float64, device="cpu", seed=seed, progress=False)
    return model.float().eval()


# --------------------------------------------------------------------------- certification table

METHODS = ("interval", "dual", "dual-opt", "lp", "milp")

#: the key of :func:`certify_table`'s row-wise maximum of the interval and dual bounds
BEST_OF = "max(interval, dual)"


def _milp_min_over_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                        lp_rows: np.ndarray) -> Dict[str, np.ndarray]:
    """The exact minimum over the K-1 margin rows per example (MILP), solving rows in increasing
    order of their LP bound ``lp_rows`` (N, K-1) until the next LP bound is >= the smallest MILP
    value found (a row's MILP value is >= its LP bound). Returns {"lower": (N,), "seconds": (N,),
    "rows_solved": (N,)}."""
    with torch.no_grad():
        K = int(model(x[:1]).shape[1])
    low, sec, solved = [], [], []
    for i in range(x.shape[0]):
        t0 = time.perf_counter()
        C = bounds.margin_spec(y[i:i + 1], K)  # (1, K-1, K), rows in the order of lp_rows[i]
        best, n = np.inf, 0
        for j in np.argsort(lp_rows[i], kind="stable"):
            if lp_rows[i][j] >= best:
                break
            r = bounds.milp_bounds(model, x[i:i + 1], None, eps, spec=C[:, j:j + 1])
            best, n = min(best, float(r.lower.detach()[0, 0])), n + 1
        low.append(best)
        sec.append(time.perf_counter() - t0)
        solved.append(n)
    return {"lower": np.array(low, dtype=np.float64), "seconds": np.array(sec), "rows_solved": np.array(solved)}


def certify_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                  methods: Sequence[str] = METHODS, pgd_steps: int = 100, pgd_restarts: int = 5,
                  opt_steps: int = 100) -> Dict[str, Dict[str, np.ndarray]]:
    """Lower bounds on the worst-case margin min_{x'} min_{j != y} (z_y - z_j)(x') per example.

    For every method of ``methods`` (names as :data:`METHODS`) and for ``"pgd"`` (the margin
    z_y - max_{j != y} z_j at the strongest PGD point found, an UPPER bound on the true minimum; the
    attack runs on a float64 copy of the model, so its path and margin do not depend on float32 rounding):
    ``{"lower": (N,) min over the K-1 margin rows, "seconds": (N,) time per example}``.
    When both "interval" and "dual" are computed, :data:`BEST_OF` (the key right after the later
    of the two) holds the min over rows of the row-wise max(interval, dual) (seconds: their sum):
    both are sound, so their maximum is, and neither is always the larger (the paper's dual
    bounds an unstable ReLU from below by a line that goes below 0, where interval arithmetic
    keeps relu(l) = 0).

    What soundness guarantees, up to solver tolerance: every method (and BEST_OF) <= MILP (the
    exact minimum) <= PGD. dual <= dual-opt <= LP also holds, because the three share the dual
    network's pre-activation bounds (dual-opt starts at the paper's slopes and keeps its best
    iterate, the LP is the optimum over all slopes). Interval bounds have no fixed place in
    that order. MILP uses the dual bounds intersected with interval bounds as big-M constants
    (the exact minimum does not depend on them).

    The MILP column is the exact minimum over rows, computed without solving every row when "lp"
    comes before it in ``methods`` (as in :data:`METHODS`): the rows are solved in increasing order
    of their LP bound, and once a row's LP bound is >= the smallest MILP value found so far, that
    row and every later one are skipped (a row's MILP value is >= its LP bound, so none of them can
    be smaller). Its "seconds" are then the time of the rows solved; ``"rows_solved"`` (N,) counts
    them (K-1 without the LP).
    """
    fns = {
        "interval": lambda xi, yi: bounds.interval_bounds(model, xi, yi, eps),
        "dual": lambda xi, yi: bounds.dual_bounds(model, xi, yi, eps),
        "dual-opt": lambda xi, yi: bounds.optimized_dual_bounds(model, xi, yi, eps, steps=opt_steps),
        "lp": lambda xi, yi: bounds.lp_bounds(model, xi, yi, eps),
        "milp": lambda xi, yi: bounds.milp_bounds(model, xi, yi, eps),
    }
    model.eval()
    out: Dict[str, Dict[str, np.ndarray]] = {}
    rows: Dict[str, np.ndarray] = {}  # per method: (N, K-1) bounds on every margin row
    for name in methods:
        if name not in fns:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
        if name == "milp" and "lp" in rows:
            out[name] = _milp_min_over_rows(model, x, y, eps, rows["lp"])
            continue
        low, sec = [], []
        for i in range(x.shape[0]):
            t0 = time.perf_counter()
            if name in ("interval", "dual"):
                with torch.no_grad():
                    r = fns[name](x[i:i + 1], y[i:i + 1])
            else:
                r = fns[name](x[i:i + 1], y[i:i + 1])
            sec.append(time.perf_counter() - t0)
            low.append(r.lower.detach()[0].double().cpu().numpy())
        rows[name] = np.stack(low)
        out[name] = {"lower": rows[name].min(1), "seconds": np.array(sec)}
        if name == "milp":
            out[name]["rows_solved"] = np.full(x.shape[0], rows[name].shape[1])
        if name in ("interval", "dual") and {"interval", "dual"} <= set(rows):
            out[BEST_OF] = {"lower": np.maximum(rows["interval"], rows["dual"]).min(1),
                            "seconds": out["interval"]["seconds"] + out["dual"]["seconds"]}
    t0 = time.perf_counter()
    # the attack runs on a float64 copy: its path follows the signs of gradients, which float32 rounding
    # (CPU family, threads) can flip; in float64 the same point, and margin, come out on any machine
    model64 = copy.deepcopy(model).double()
    x_adv = PGD(eps, alpha=eps / 10, steps=pgd_steps, restarts=pgd_restarts, seed=0)(model64, x.double(), y)
    with torch.no_grad():
        m = margin(model64(x_adv), y).cpu().numpy()
    out["pgd"] = {"lower": m.astype(np.float64),
                  "seconds": np.full(x.shape[0], (time.perf_counter() - t0) / x.shape[0])}
    return out
