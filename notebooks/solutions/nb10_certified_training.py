"""Reference solutions of notebook 10's implement exercises."""
import torch
from torch import nn


def crown_lower_slope(l, u):
    """CROWN's lower slope of an unstable ReLU (l < 0 < u): the line a >= z (slope 1) when u >= -l,
    else a >= 0 (slope 0); the one that leaves the smaller area (l^2 / 2 against u^2 / 2)."""
    return (u >= -l).to(u.dtype)


def ibp_beats_crown():
    """One hidden ReLU on the input itself, z = x with x = 0 and eps = 1: l = -1, u = 1, a tie, where
    CROWN takes the slope 1. The spec row is relu(z): interval arithmetic bounds it below by
    relu(l) = 0, CROWN by min over [-1, 1] of z = -1. Returns (model, x (1, 1), eps, spec (1, 2))."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
        model[2].bias.zero_()
    return model, torch.zeros(1, 1), 1.0, torch.tensor([[1.0, -1.0]])
