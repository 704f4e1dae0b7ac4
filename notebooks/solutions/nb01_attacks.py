"""Reference solutions of notebook 01 (attacks)."""
import torch
import torch.nn.functional as F


def fgsm(model, x, y, eps):
    """One FGSM step: x (N, C, H, W) in [0, 1], labels y (N,), eps in pixel units.

    Returns x + eps * sign(grad_x CE(model(x), y)), clamped to [0, 1] (N, C, H, W).
    """
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def project_l2(x_adv, x, eps):
    """Project x_adv (N, C, H, W) onto the l2 ball of radius eps around x (N, C, H, W), one ball per
    example, then clamp to [0, 1]. Returns (N, C, H, W)."""
    delta = x_adv - x
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)  # (N,); the clamp keeps delta = 0 finite
    factor = torch.clamp(eps / norms, max=1.0)              # 1 inside the ball, < 1 outside
    return (x + delta * factor.view(-1, 1, 1, 1)).clamp(0, 1)
