"""Recipes: the JSON files in ``data/recipes/`` that reproduce every shipped checkpoint.

A recipe's top-level fields are the budget the shipped checkpoint was trained with; ``"full"``
holds overrides for the paper's budget. ``run_recipe`` trains it with :func:`..loop.fit` and the
loss the recipe names in :data:`..losses.LOSSES`. The command line is ``python -m
tutorial_lib.train`` (see :mod:`tutorial_lib.training.__main__`).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoints import CHECKPOINT_DIR, register_checkpoint, save_checkpoint
from ..data import load_dataset
from ..models import build_model
from ..runtime import accuracy, default_device, is_main_process, set_seed
from .loop import fit
from .losses import LOSSES

__all__ = ["RECIPE_DIR", "load_recipe", "run_recipe"]

RECIPE_DIR = Path(__file__).resolve().parents[2] / "data" / "recipes"
_REQUIRED = ("name", "dataset", "model", "loss", "epochs", "batch_size", "optimizer")


def load_recipe(name_or_path: Union[str, Path], full: bool = False) -> Dict[str, Any]:
    """Read a recipe by name (``data/recipes/<name>.json``) or path; ``full`` applies its
    ``"full"`` overrides (the paper's budget)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.json")))
        raise FileNotFoundError(f"no recipe {str(name_or_path)!r} (known recipes: {known})")
    recipe = json.loads(path.read_text())
    missing = [k for k in _REQUIRED if k not in recipe]
    if missing:
        raise ValueError(f"recipe {path} lacks {', '.join(missing)}")
    if recipe["loss"] not in LOSSES:
        raise ValueError(f"recipe {path}: unknown loss {recipe['loss']!r}; known: {', '.join(sorted(LOSSES))}")
    overrides = recipe.pop("full", {})
    if full:
        recipe.update(overrides)
    recipe["budget"] = "full" if full else "shipped"
    return recipe


def _optimizer(params, spec: Dict[str, Any]) -> torch.optim.Optimizer:
    spec = dict(spec)
    name = spec.pop("name").lower()
    if name == "adam":
        return torch.optim.Adam(params, **spec)
    if name == "sgd":
        return torch.optim.SGD(params, **spec)
    raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")


def _scheduler(opt: torch.optim.Optimizer, spec: Optional[Dict[str, Any]]):
    if not spec:
        return None
    spec = dict(spec)
    name = spec.pop("name").lower()
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, **spec)
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, **spec)
    raise ValueError(f"unknown scheduler {name!r}; known: step, multistep")


def run_recipe(recipe: Union[str, Path, Dict[str, Any]], full: bool = False,
               out_dir: Union[str, Path] = CHECKPOINT_DIR, register: bool = True,
               device: Optional[Union[str, torch.device]] = None, progress: bool = True,
               data_dir=None) -> Dict[str, Any]:
    """Train the recipe's model, evaluate it on the whole test set, save and register it.

    Returns ``{"path", "sha256", "metrics", "history"}`` (on non-zero ranks: history only).
    Training state is saved every epoch to ``<out_dir>/<name>.state.pt`` and resumed from there.
    """
    if not isinstance(recipe, dict):
        recipe = load_recipe(recipe, full=full)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    device = default_device(device)
    set_seed(recipe.get("seed", 0))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    train = load_dataset(recipe["dataset"], "train", data_dir)
    test = load_dataset(recipe["dataset"], "test", data_dir)
    if recipe.get("train_subset"):
        train = torch.utils.data.TensorDataset(*(t[: recipe["train_subset"]] for t in train.tensors))
    batch_size = int(recipe["batch_size"])
    if distributed:
        world = torch.distributed.get_world_size()
        sampler = DistributedSampler(train, shuffle=True, seed=recipe.get("seed", 0))
        train_loader = DataLoader(train, batch_size=max(1, batch_size // world), sampler=sampler)
    else:
        g = torch.Generator().manual_seed(recipe.get("seed", 0))
        train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=g)

    model = build_model(recipe["model"], **recipe.get("model_kwargs", {})).to(device)
    optimizer = _optimizer(model.parameters(), recipe["optimizer"])
    scheduler = _scheduler(optimizer, recipe.get("scheduler"))
    loss_fn = LOSSES[recipe["loss"]](**recipe.get("loss_kwargs", {}))
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    state_path = out_dir / f"{recipe['name']}.state.pt"
    t0 = time.perf_counter()
    history = fit(net, train_loader, epochs=int(recipe["epochs"]), loss_fn=loss_fn,
                  optimizer=optimizer, scheduler=scheduler, device=device,
                  amp=recipe.get("amp", False), max_steps=recipe.get("max_steps"),
                  state_path=state_path, progress=progress, on_step=getattr(loss_fn, "on_step", None))
    # a resumed run's history holds the earlier epochs too: count the time of every epoch
    seconds = max(time.perf_counter() - t0, sum(h.get("seconds", 0.0) for h in history))
    result: Dict[str, Any] = {"history": history}
    if not is_main_process():
        return result
    test_acc = accuracy(model, (test.tensors[0], test.tensors[1]), device)
    metrics = {"test_acc": round(test_acc, 4), "train_seconds": round(seconds, 1),
               "device": str(device.type), "world_size": torch.distributed.get_world_size() if distributed else 1,
               "torch": str(torch.__version__)}
    path = out_dir / f"{recipe['name']}.pt"
    sha = save_checkpoint(model, path, recipe["model"], recipe.get("model_kwargs"), recipe, metrics)
    if register:
        register_checkpoint(recipe["name"], path, sha, registry=out_dir / "registry.json",
                            model=recipe["model"], recipe=recipe, metrics=metrics)
    state_path.unlink(missing_ok=True)
    result.update(path=str(path), sha256=sha, metrics=metrics)
    if progress:
        print(f"saved {path} (sha256 {sha[:12]}...): test accuracy {test_acc:.4f}")
    return result
