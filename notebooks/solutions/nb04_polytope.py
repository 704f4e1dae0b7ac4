"""Reference solutions of notebook 04's implement exercises."""
import torch
from torch import nn


def interval_beats_dual():
    """A network, an input, a radius and a spec on which interval bounds beat the dual network.

    One hidden ReLU on the input itself, z = x with x = 0 and eps = 1, so l = -1 < 0 < u = 1; the
    spec row is the margin z_0 - z_1 = relu(x). Interval arithmetic bounds relu(z) below by
    relu(l) = 0; the dual network's lower line is a >= u/(u-l) * z = z / 2, whose minimum over
    [-1, 1] is -1/2. Both bounds are sound (the true minimum is 0), so their maximum is too.
    Returns (model, x (1, 1), eps, spec (1, 2)).
    """
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0], [0.0]]))
        model[2].bias.zero_()
    x = torch.zeros(1, 1)
    spec = torch.tensor([[1.0, -1.0]])
    return model, x, 1.0, spec
