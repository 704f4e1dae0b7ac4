"""The one training loop for every method in the collection.

A *loss* is any function ``loss_fn(model, x, y)`` returning a scalar loss, or a pair
``(loss, logits)`` so the loop can report training accuracy without a second forward pass.
Natural training, adversarial training, TRADES and certified training differ only there
(:data:`tutorial_lib.training.LOSSES`).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..runtime import accuracy, default_device, is_distributed, is_main_process, set_seed
from .losses import cross_entropy_loss

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a declared dependency
    tqdm = None

__all__ = ["fit", "LossFn"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor],
                  Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]


def _all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _save_state(path: Path, model, optimizer, scheduler, scaler, epoch, history, step) -> None:
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "step": step, "history": history,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never corrupts the last good state


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(
        model, nn.parallel.DistributedDataParallel) else model


def fit(model: nn.Module, train_loader: DataLoader, epochs: int = 1,
        loss_fn: LossFn = cross_entropy_loss,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Optional[object] = None, scheduler_step: str = "epoch",
        test_loader: Optional[DataLoader] = None, device: Optional[Union[str, torch.device]] = None,
        seed: Optional[int] = None, amp: bool = False, max_steps: Optional[int] = None,
        state_path: Optional[Union[str, Path]] = None, progress: bool = True,
        on_step: Optional[Callable[[int], None]] = None) -> List[Dict[str, float]]:
    """Train ``model`` in place and return the per-epoch history.

    Each history entry: ``epoch``, ``loss`` (mean training loss), ``train_acc`` (in [0, 1]),
    ``test_acc`` (if ``test_loader``), ``lr``, ``seconds`` (wall time of the epoch), ``steps``.

    ``optimizer`` defaults to Adam(lr=1e-3). ``scheduler`` is stepped every epoch or every batch
    (``scheduler_step``). ``amp`` enables bfloat16/float16 autocast on CUDA only (ignored on CPU).
    ``max_steps`` caps the total number of optimisation steps (for short demo runs).
    ``state_path``: the full training state is saved there after every epoch, and training
    resumes from it if it exists (so a long run can be interrupted). ``on_step(step)`` is called
    before each step (e.g. to set an eps schedule).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if scheduler_step not in ("epoch", "batch"):
        raise ValueError(f"scheduler_step must be 'epoch' or 'batch', got {scheduler_step!r}")
    device = default_device(device)
    if seed is not None:
        set_seed(seed)
    model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    use_amp = bool(amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    history: List[Dict[str, float]] = []
    start_epoch, step = 0, 0
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        if is_main_process() and progress:
            print(f"resumed from {state_path} after epoch {start_epoch}")

    for epoch in range(start_epoch, epochs):
        if max_steps is not None and step >= max_steps:
            break
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        loss_sum = correct = seen = 0.0
        has_logits = True
        batches = train_loader
        bar = None
        if progress and tqdm is not None and is_main_process():
            bar = batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for x, y in batches:
            if max_steps is not None and step >= max_steps:
                break
            if on_step is not None:
                on_step(step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                out = loss_fn(model, x, y)
            loss, logits = out if isinstance(out, tuple) else (out, None)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if scheduler is not None and scheduler_step == "batch":
                scheduler.step()
            step += 1
            loss_sum += loss.item() * len(y)
            if logits is not None:
                correct += (logits.argmax(1) == y).sum().item()
            else:
                has_logits = False
            seen += len(y)
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if bar is not None:
            bar.close()
        if scheduler is not None and scheduler_step == "epoch":
            scheduler.step()
        loss_sum, correct, seen = _all_reduce_sum([loss_sum, correct, seen], device)
        entry = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
                 "train_acc": correct / max(seen, 1) if has_logits else math.nan,
                 "lr": optimizer.param_groups[0]["lr"], "steps": step,
                 "seconds": time.perf_counter() - t0}
        if test_loader is not None:
            entry["test_acc"] = accuracy(model, test_loader, device)
        history.append(entry)
        if progress and is_main_process():
            msg = f"epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}, train acc {entry['train_acc']:.4f}"
            if "test_acc" in entry:
                msg += f", test acc {entry['test_acc']:.4f}"
            print(msg + f" ({entry['seconds']:.1f} s)")
        if state_path is not None and is_main_process():
            _save_state(state_path, model, optimizer, scheduler, scaler, epoch + 1, history, step)
    return history
