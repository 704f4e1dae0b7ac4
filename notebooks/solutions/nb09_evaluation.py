"""Reference solution of notebook 09's implement exercise: BPDA (Athalye, Carlini & Wagner 2018)."""
import torch
from torch import nn


class StraightThrough(nn.Module):
    """Wrap a non-differentiable layer (here the rounding ``model[0]``): the forward pass is the
    layer's own output, the backward pass is the identity (a straight-through estimator).

    ``x + (layer(x) - x).detach()`` has the value layer(x) and the derivative of x, which is 1."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.layer(x) - x).detach()


def break_quantized(model, x, y, eps, steps=20, alpha=None):
    """BPDA with the identity as the rounding's backward pass, then plain l-inf PGD on the
    cross-entropy, written out.

    model: nn.Sequential, model[0] the rounding, model[1:] the CNN; x (N, 1, 28, 28) in [0, 1];
    y (N,); eps: l-inf radius in pixel units; ``steps`` PGD steps of size ``alpha`` (default
    2.5 eps / steps). Every forward pass goes through the true model (the rounding included), so
    the loss is the real one; only its gradient is approximated. Returns x_adv (N, 1, 28, 28)."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    bpda = nn.Sequential(StraightThrough(model[0]), *model[1:]).eval()
    x = x.detach()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(bpda(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
