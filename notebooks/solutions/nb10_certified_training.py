"""Reference solutions of notebook 10's implement exercises."""
from solutions.nb04_polytope import interval_beats_dual


def crown_lower_slope(l, u):
    """CROWN's lower slope of an unstable ReLU (l < 0 < u): the line a >= z (slope 1) when u >= -l,
    else a >= 0 (slope 0); the one that leaves the smaller area (l^2 / 2 against u^2 / 2)."""
    return (u >= -l).to(u.dtype)


def ibp_beats_crown():
    """Notebook 04's example serves again: one hidden ReLU on the input itself, z = x with x = 0 and
    eps = 1, so l = -1, u = 1, a tie, where CROWN takes the slope 1. The spec row is relu(z): interval
    arithmetic bounds it below by relu(l) = 0, CROWN by min over [-1, 1] of z = -1 (the dual network's
    slope 1/2 gives -1/2, which is notebook 04's Exercise 3). Returns (model, x (1, 1), eps, spec (1, 2))."""
    return interval_beats_dual()
