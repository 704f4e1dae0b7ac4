"""The one training loop for every method in the collection.

A *loss* is any function ``loss_fn(model, x, y)`` returning a scalar loss, or a pair
``(loss, logits)`` so the loop can report training accuracy without a second forward pass.
Natural training, adversarial training, TRADES and certified training differ only there
(:data:`tutorial_lib.training.LOSSES`).

The pieces, from the top down:

* :func:`fit` trains for several epochs, evaluates, logs, and saves/resumes the training state;
* :func:`train_epoch` is one pass over the training loader;
* :func:`save_training_state` / :func:`load_training_state` write and read the resumable state
  (model, optimizer, scheduler, AMP scaler, counters, history and every random number generator
  that decides what the next epoch does: torch's, CUDA's, Python's and the loader's shuffling
  generator), so that an interrupted and resumed run takes exactly the steps of an
  uninterrupted one;
* :func:`capture_rng_state` / :func:`restore_rng_state` are the RNG part of that state.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..runtime import accuracy, default_device, is_distributed, is_main_process, set_seed
from .losses import cross_entropy_loss

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a declared dependency
    tqdm = None

__all__ = ["fit", "train_epoch", "save_training_state", "load_training_state",
           "capture_rng_state", "restore_rng_state", "LossFn"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor],
                  Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]
History = List[Dict[str, float]]


# --------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------

def _all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    """Sum ``values`` over all processes (unchanged when not distributed)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if hasattr(model, "module") and isinstance(
        model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------
# random number generators
# --------------------------------------------------------------------------------------------

def _loader_generators(loader: Optional[DataLoader]) -> List[torch.Generator]:
    """The distinct generators that decide a loader's order, in a fixed order.

    torch 2.x: ``DataLoader(shuffle=True, generator=g)`` builds ``RandomSampler(generator=g)``, so
    the loader (which draws the workers' base seed from it) and its sampler share ``g``. A custom
    sampler or batch sampler may hold its own. A loader without a generator draws from the global
    torch RNG (restored separately); a ``DistributedSampler`` has none and is reseeded by
    ``set_epoch``.
    """
    if loader is None:
        return []
    sampler = getattr(loader, "sampler", None)
    inner = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    found: List[torch.Generator] = []
    for owner in (loader, sampler, inner):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def capture_rng_state(loader: Optional[DataLoader] = None,
                      device: Optional[Union[str, torch.device]] = None) -> Dict[str, Any]:
    """Snapshot of every RNG a training epoch draws from, loadable with ``weights_only=True``.

    Keys: ``torch_rng`` (uint8 tensor, the global CPU generator), ``python_rng`` (``random``'s
    state as ``[version, [625 ints], gauss_next]``), ``loader_rng`` (list of uint8 tensors, one per
    generator of ``loader``, see :func:`_loader_generators`) and ``cuda_rng`` (uint8 tensor of
    ``device``'s CUDA generator, or ``None`` when ``device`` is not a CUDA device).
    """
    version, internal, gauss_next = random.getstate()
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
    return {
        "torch_rng": torch.get_rng_state(),
        "python_rng": [version, list(internal), gauss_next],
        "loader_rng": [g.get_state() for g in _loader_generators(loader)],
        "cuda_rng": torch.cuda.get_rng_state(device) if cuda else None,
    }


def restore_rng_state(state: Dict[str, Any], loader: Optional[DataLoader] = None,
                      device: Optional[Union[str, torch.device]] = None) -> None:
    """Set the RNGs back to a :func:`capture_rng_state` snapshot (missing keys are skipped, so an
    older state file holding only ``torch_rng`` still loads)."""
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"].cpu())
    if state.get("python_rng") is not None:
        version, internal, gauss_next = state["python_rng"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    device = torch.device(device) if device is not None else None
    if state.get("cuda_rng") is not None and device is not None and device.type == "cuda" \
            and torch.cuda.is_available():
        # under DDP every rank gets rank 0's state: the ranks are seeded alike and draw alike
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    generators = _loader_generators(loader)
    saved = state.get("loader_rng")
    if saved is None:
        if generators:
            warnings.warn("the training state holds no loader RNG state (older file): "
                          "the resumed run shuffles differently from an uninterrupted one", stacklevel=3)
        return
    if len(saved) != len(generators):
        warnings.warn(f"the training state holds {len(saved)} loader generator state(s), the "
                      f"loader has {len(generators)}: the loader's order is not restored", stacklevel=3)
        return
    for g, s in zip(generators, saved):
        g.set_state(s.cpu())


# --------------------------------------------------------------------------------------------
# the resumable state
# --------------------------------------------------------------------------------------------

def save_training_state(path: Union[str, Path], model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Optional[Any], scaler: Optional[torch.amp.GradScaler],
                        epoch: int, step: int, history: History,
                        loader: Optional[DataLoader] = None,
                        device: Optional[Union[str, torch.device]] = None) -> None:
    """Write the full training state after ``epoch`` (number of finished epochs) and ``step``
    (number of optimisation steps so far) to ``path``, atomically (a temporary file then
    ``os.replace``: an interrupted save never corrupts the last good state).

    Keys: ``model``, ``optimizer``, ``scheduler``, ``scaler`` (``state_dict()`` or ``None``),
    ``epoch``, ``step``, ``history`` and the RNG states of :func:`capture_rng_state` for
    ``loader`` and ``device``. Everything loads with ``torch.load(path, weights_only=True)``.
    """
    path = Path(path)
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "step": step, "history": history,
        **capture_rng_state(loader, device),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path: Union[str, Path], model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Optional[Any] = None,
                        scaler: Optional[torch.amp.GradScaler] = None,
                        loader: Optional[DataLoader] = None,
                        device: Optional[Union[str, torch.device]] = None) -> Tuple[int, int, History]:
    """Load a :func:`save_training_state` file into ``model``, ``optimizer``, ``scheduler`` and
    ``scaler`` (in place; tensors mapped to ``device``), restore the RNGs (including ``loader``'s
    generator) and return ``(epoch, step, history)``: finished epochs, steps so far, the history
    up to there."""
    device = default_device(device)
    state = torch.load(Path(path), map_location=device, weights_only=True)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state, loader, device)
    return int(state["epoch"]), int(state["step"]), list(state["history"])


# --------------------------------------------------------------------------------------------
# one epoch
# --------------------------------------------------------------------------------------------

def _optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                    scaler: Optional[torch.amp.GradScaler]) -> None:
    """Backward pass and parameter update (through the AMP grad scaler if there is one)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_epoch(model: nn.Module, loader: DataLoader, loss_fn: LossFn,
                optimizer: torch.optim.Optimizer, device: Union[str, torch.device], *,
                scaler: Optional[torch.amp.GradScaler] = None, scheduler: Optional[Any] = None,
                step: int = 0, max_steps: Optional[int] = None,
                on_step: Optional[Callable[[int], None]] = None,
                desc: Optional[str] = None, progress: bool = False) -> Dict[str, float]:
    """One pass over ``loader`` (batches ``x`` (B, ...) and labels ``y`` (B,)) in train mode.

    ``scaler`` given: autocast is on (the caller makes sure that is on CUDA only). ``scheduler``
    given: stepped after every batch (an epoch scheduler is the caller's business). ``step`` is
    the number of optimisation steps taken before this epoch; the pass stops early once it
    reaches ``max_steps``. ``on_step(step)`` is called before each step. ``desc``/``progress``:
    a tqdm bar on the main process.

    Returns ``loss`` (mean training loss per example over all processes), ``train_acc`` (in
    [0, 1], ``nan`` if the loss returns no logits), ``steps`` (total steps after this epoch) and
    ``seconds`` (wall time of the pass). Raises ``FloatingPointError`` on a non-finite loss.
    """
    device = torch.device(device)
    use_amp = scaler is not None
    model.train()
    t0 = time.perf_counter()
    loss_sum = correct = seen = 0.0
    has_logits = True
    batches = loader
    bar = None
    if progress and tqdm is not None and is_main_process():
        bar = batches = tqdm(loader, desc=desc, leave=False)
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
        _optimizer_step(loss, optimizer, scaler)
        if scheduler is not None:
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
    loss_sum, correct, seen = _all_reduce_sum([loss_sum, correct, seen], device)
    return {"loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1) if has_logits else math.nan,
            "steps": step, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------

def _log_epoch(entry: Dict[str, float], epochs: int) -> None:
    msg = f"epoch {entry['epoch']}/{epochs}: loss {entry['loss']:.4f}, train acc {entry['train_acc']:.4f}"
    if "test_acc" in entry:
        msg += f", test acc {entry['test_acc']:.4f}"
    print(msg + f" ({entry['seconds']:.1f} s)")


def fit(model: nn.Module, train_loader: DataLoader, epochs: int = 1,
        loss_fn: LossFn = cross_entropy_loss,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Optional[Any] = None, scheduler_step: str = "epoch",
        test_loader: Optional[DataLoader] = None, device: Optional[Union[str, torch.device]] = None,
        seed: Optional[int] = None, amp: bool = False, max_steps: Optional[int] = None,
        state_path: Optional[Union[str, Path]] = None, progress: bool = True,
        on_step: Optional[Callable[[int], None]] = None) -> History:
    """Train ``model`` in place and return the per-epoch history.

    Each history entry: ``epoch``, ``loss`` (mean training loss), ``train_acc`` (in [0, 1]),
    ``test_acc`` (if ``test_loader``), ``lr``, ``seconds`` (wall time of the epoch), ``steps``.

    ``optimizer`` defaults to Adam(lr=1e-3). ``scheduler`` is stepped every epoch or every batch
    (``scheduler_step``). ``amp`` enables bfloat16/float16 autocast on CUDA only (ignored on CPU).
    ``max_steps`` caps the total number of optimisation steps (for short demo runs).
    ``state_path``: the full training state is saved there after every epoch (main process
    only), and training resumes from it if it exists (so a long run can be interrupted); the
    state includes the RNGs and the loader's shuffling generator, so a resumed run sees the
    same batches and ends with the same weights as an uninterrupted one (given the same seeds).
    ``on_step(step)`` is called before each step (e.g. to set an eps schedule).
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
    history: History = []
    start_epoch, step = 0, 0
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        start_epoch, step, history = load_training_state(
            state_path, model, optimizer, scheduler, scaler, loader=train_loader, device=device)
        if is_main_process() and progress:
            print(f"resumed from {state_path} after epoch {start_epoch}")

    for epoch in range(start_epoch, epochs):
        if max_steps is not None and step >= max_steps:
            break
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        stats = train_epoch(model, train_loader, loss_fn, optimizer, device, scaler=scaler,
                            scheduler=scheduler if scheduler_step == "batch" else None,
                            step=step, max_steps=max_steps, on_step=on_step,
                            desc=f"epoch {epoch + 1}/{epochs}", progress=progress)
        step = int(stats["steps"])
        if scheduler is not None and scheduler_step == "epoch":
            scheduler.step()
        entry = {"epoch": epoch + 1, "loss": stats["loss"], "train_acc": stats["train_acc"],
                 "lr": optimizer.param_groups[0]["lr"], "steps": step, "seconds": stats["seconds"]}
        if test_loader is not None:
            entry["test_acc"] = accuracy(model, test_loader, device)
        history.append(entry)
        if progress and is_main_process():
            _log_epoch(entry, epochs)
        if state_path is not None and is_main_process():
            save_training_state(state_path, model, optimizer, scheduler, scaler, epoch + 1, step,
                                history, loader=train_loader, device=device)
    return history
