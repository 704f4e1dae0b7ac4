"""Reference solutions of notebook 05's implement exercises."""
import torch

from tutorial_lib import bounds


def count_unstable(model, x, eps):
    """Unstable ReLUs (l < 0 < u) per ReLU layer and image, from the dual network's bounds.

    model: an nn.Sequential the bounds support; x: (N, *input shape) in [0, 1]; eps: the l_inf
    radius (pixel units). The input set is the ball intersected with [0, 1] (the default clip).
    Returns a long tensor (N, L), L the number of ReLU layers.
    """
    with torch.no_grad():
        y = model(x).argmax(1)  # any labels: the pre-activation bounds do not depend on them
        pre = bounds.dual_bounds(model, x, y, eps).pre_bounds
    return torch.stack([((lo < 0) & (up > 0)).flatten(1).sum(1) for lo, up in pre], 1)
