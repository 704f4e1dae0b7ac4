"""Reference solutions of notebook 02 (adversarial training)."""
import torch


def cw_loss(logits, y, kappa=float("inf")):
    """Carlini & Wagner's margin loss, the objective of the CW and CW+ attacks.

    logits (N, K) (the model's outputs before the softmax), labels y (N,) integers in [0, K),
    kappa > 0 in logit units (inf: no cap). Returns (N,): min(max_{j != y} z_j - z_y, kappa),
    positive once the example is misclassified; differentiable in the logits.
    """
    true = logits.gather(1, y[:, None]).squeeze(1)                      # z_y, (N,)
    others = logits.scatter(1, y[:, None], -float("inf"))             # the true class can never be the max
    return torch.clamp(others.max(1).values - true, max=kappa)         # clamp(max=inf) changes nothing
