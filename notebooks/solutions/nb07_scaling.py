"""Reference solutions of notebook 07's implement exercises."""
import torch


def sigmoid_upper_line(l, u):  # noqa: E741 (the notebook's notation)
    """A line slope * z + intercept above the sigmoid s on [l, u], per neuron.

    l, u: (n,) float tensors with l <= u. Returns (slope, intercept), each (n,).
    s is convex left of 0 and concave right of 0: the chord when it lies above s (u <= 0, or
    around 0 when s'(u) >= the chord's slope), else a tangent at t >= d, d > 0 the point whose
    tangent passes through (l, s(l)) (found by bisection; 0 when l >= 0), at the midpoint when
    that is further right; the tangent at l when l == u.
    """
    s = torch.sigmoid
    ds = lambda z: s(z) * s(-z)  # noqa: E731  s'(z)
    width = u - l
    chord_slope = (s(u) - s(l)) / torch.where(width > 0, width, torch.ones_like(width))
    use_chord = (width > 0) & ((u <= 0) | ((l < 0) & (ds(u) >= chord_slope)))
    # tangent point: d solves s(d) + s'(d) (l - d) = s(l) on [0, u] when l < 0 < u
    lo, hi = torch.zeros_like(u), torch.where(l < 0, u.clamp(min=0), torch.zeros_like(u))
    for _ in range(60):
        m = (lo + hi) / 2
        above = s(m) + ds(m) * (l - m) >= s(l)  # the tangent at m passes above (l, s(l))
        hi, lo = torch.where(above, m, hi), torch.where(above, lo, m)
    t = torch.where(width > 0, torch.maximum(hi, (l + u) / 2), l)  # l == u: the tangent at l
    slope = torch.where(use_chord, chord_slope, ds(t))
    intercept = torch.where(use_chord, s(l) - chord_slope * l, s(t) - ds(t) * t)
    return slope, intercept
