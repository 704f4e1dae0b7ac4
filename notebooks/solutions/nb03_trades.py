"""Reference solutions of notebook 03 (TRADES)."""
import torch
import torch.nn.functional as F


def trades_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """The boundary term of TRADES: KL(f(x) || f(x')) summed over the classes, averaged over the batch.

    logits_clean, logits_adv: (N, K) logits of the clean and the adversarial inputs.
    Returns a 0-dim tensor (nats) that carries the gradient back to both.
    """
    p_clean = F.softmax(logits_clean, dim=1)
    log_p_clean = F.log_softmax(logits_clean, dim=1)
    log_p_adv = F.log_softmax(logits_adv, dim=1)
    return (p_clean * (log_p_clean - log_p_adv)).sum(dim=1).mean()
