"""What every package needs to run a model: the device, seeds, eval mode, the distributed rank,
batched prediction and clean accuracy."""
from __future__ import annotations

import contextlib
import random
from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["default_device", "set_seed", "eval_mode", "is_distributed", "is_main_process", "predict",
           "accuracy"]


def default_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``device`` if given, else ``cuda`` when available, else ``cpu``."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_seed(seed: int) -> None:
    """Seed Python, and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Temporarily put ``model`` in eval mode (e.g. to run an attack inside a training step)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    return not is_distributed() or torch.distributed.get_rank() == 0


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes (N,) for inputs x, in batches, on the model's device."""
    device = next(model.parameters()).device
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(x), batch_size)])


@torch.no_grad()
def accuracy(model: nn.Module, data: Union[DataLoader, Tuple[torch.Tensor, torch.Tensor]],
             device: Optional[Union[str, torch.device]] = None) -> float:
    """Clean accuracy in [0, 1] on a loader or an (x, y) pair, in eval mode (on this process's
    data only: under DDP every rank evaluates the full, unsharded test set)."""
    device = default_device(device) if device is not None else next(model.parameters()).device
    batches = [data] if isinstance(data, (tuple, list)) else data
    correct = total = 0
    with eval_mode(model):
        for x, y in batches:
            for i in range(0, len(x), 1000):
                xb, yb = x[i:i + 1000].to(device), y[i:i + 1000].to(device)
                correct += (model(xb).argmax(1) == yb).sum().item()
                total += len(yb)
    return correct / max(total, 1)
