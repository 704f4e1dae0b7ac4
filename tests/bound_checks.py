"""What the bound tests share (not a test module): the attack that upper-bounds each row's minimum."""
import torch

DT = torch.float64


def attack_min(net, C, lo, hi, steps=60, restarts=4, seed=0):
    """Smallest C @ net(x') over the box [lo, hi] found by signed-gradient descent from random
    starts, for every row of C separately: (N, m), an upper bound on each row's minimum.
    C: (N, m, K); lo, hi: (N, *input shape), float64."""
    N, m = C.shape[:2]
    g = torch.Generator().manual_seed(seed)
    rep = lambda t: t.repeat_interleave(m, 0)  # noqa: E731
    lo_r, hi_r, C_r = rep(lo), rep(hi), C.reshape(N * m, -1)
    best = torch.full((N * m,), float("inf"), dtype=DT)
    for _ in range(restarts):
        xa = lo_r + (hi_r - lo_r) * torch.rand(lo_r.shape, generator=g, dtype=DT)
        for t in range(steps):
            xa.requires_grad_(True)
            val = (net(xa) * C_r).sum(-1)
            best = torch.minimum(best, val.detach())
            (grad,) = torch.autograd.grad(val.sum(), xa)
            step = 0.25 * (1 - t / steps) + 0.01
            xa = torch.max(torch.min(xa.detach() - step * (hi_r - lo_r) * grad.sign(), hi_r), lo_r)
    return best.view(N, m)
