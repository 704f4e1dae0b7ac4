"""Reference solutions of notebook 06 (defensive distillation)."""
import torch
import torch.nn.functional as F


def logits_over_T_attack(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
    """Untargeted l-inf PGD on the cross-entropy of the logits divided by T.

    model: the deployed network, (N, 1, 28, 28) -> logits (N, 10), in eval mode; x: images
    (N, 1, 28, 28) in [0, 1]; y: labels (N,); T: temperature (> 0); eps: radius of the l-inf ball
    and alpha: step size (pixel units); steps: number of steps, from x (no random start).
    Returns x_adv (N, 1, 28, 28) within eps of x and in [0, 1].
    """
    x = x.detach()
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv) / T, y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
