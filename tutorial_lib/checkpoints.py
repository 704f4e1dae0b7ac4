"""Checkpoints: weights with their recipe and metrics, verified by SHA-256.

A checkpoint file is a plain dict (loadable with ``torch.load(weights_only=True)``):
``{"format": 1, "model": name, "model_kwargs": {...}, "state_dict": {...}, "recipe": {...},
"metrics": {...}}``. The registry ``data/checkpoints/registry.json`` records, per name, the file
and its SHA-256; loading a registered name refuses a file whose hash differs.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from .models import build_model
from .runtime import default_device

__all__ = ["CHECKPOINT_DIR", "REGISTRY", "ChecksumMismatchError", "CheckpointNotFoundError",
           "save_checkpoint", "register_checkpoint", "load_checkpoint", "read_registry", "sha256_file"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = REPO_ROOT / "data" / "checkpoints"
REGISTRY = CHECKPOINT_DIR / "registry.json"


class ChecksumMismatchError(RuntimeError):
    """A checkpoint's SHA-256 differs from the one in the registry."""


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint is neither registered nor present on disk."""


def _repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (for a git command run
    there), else as it is."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: Union[str, Path], model_name: str,
                    model_kwargs: Optional[Dict[str, Any]] = None, recipe: Optional[Dict] = None,
                    metrics: Optional[Dict] = None) -> str:
    """Save weights (moved to CPU) with their recipe and metrics; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": 1, "model": model_name, "model_kwargs": dict(model_kwargs or {}),
               "state_dict": state, "recipe": dict(recipe or {}), "metrics": dict(metrics or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return sha256_file(path)


def read_registry(registry: Union[str, Path] = REGISTRY) -> Dict[str, Dict]:
    registry = Path(registry)
    if not registry.exists():
        return {}
    return json.loads(registry.read_text())


def register_checkpoint(name: str, path: Union[str, Path], sha256: str,
                        registry: Union[str, Path] = REGISTRY, **info) -> None:
    """Record ``name -> {file, sha256, **info}`` in the registry (file relative to the registry)."""
    registry = Path(registry)
    entries = read_registry(registry)
    path = Path(path).resolve()
    try:
        rel = str(path.relative_to(registry.resolve().parent))
    except ValueError:
        rel = str(path)
    entries[name] = {"file": rel, "sha256": sha256, **info}
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


def load_checkpoint(name_or_path: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
                    registry: Union[str, Path] = REGISTRY) -> Tuple[nn.Module, Dict]:
    """Load a registered checkpoint (by name) or a file (by path) into a fresh model in eval mode.

    Returns ``(model, info)`` with ``info`` = the file's recipe, metrics and sha256. A registered
    name whose file is missing raises :class:`CheckpointNotFoundError`; a file whose SHA-256 differs
    from the registry raises :class:`ChecksumMismatchError`. Nothing is ever retrained silently.
    """
    registry = Path(registry)
    entries = read_registry(registry)
    name = str(name_or_path)
    if name in entries:
        entry = entries[name]
        path = Path(entry["file"])
        if not path.is_absolute():
            path = registry.resolve().parent / path
        if not path.exists():
            raise CheckpointNotFoundError(
                f"checkpoint {name!r} is registered but {path} is missing; restore it from the "
                f"repository root with `git checkout -- {_repo_relative(path)}`, or retrain and replace "
                f"it with `python -m tutorial_lib.train {name} --promote`")
        got = sha256_file(path)
        if got != entry["sha256"]:
            raise ChecksumMismatchError(
                f"{path} has SHA-256 {got} but the registry records {entry['sha256']}: the file is "
                f"corrupt or was replaced. Restore it from the repository root with `git checkout -- "
                f"{_repo_relative(path)}`, or retrain it with `python -m tutorial_lib.train {name} --promote`.")
    else:
        path = Path(name_or_path)
        if not path.exists():
            known = ", ".join(sorted(entries)) or "none"
            close = difflib.get_close_matches(name, sorted(entries), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CheckpointNotFoundError(f"no checkpoint named or at {name!r}{hint} (registered: {known})")
        got = sha256_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ChecksumMismatchError(f"{path} is not a readable checkpoint: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != 1 or "state_dict" not in payload:
        raise ChecksumMismatchError(f"{path} is not a tutorial_lib checkpoint (format 1)")
    model = build_model(payload["model"], **payload.get("model_kwargs", {}))
    model.load_state_dict(payload["state_dict"])
    model.to(default_device(device)).eval()
    info = {"name": name, "path": str(path), "sha256": got, "model": payload["model"],
            "recipe": payload.get("recipe", {}), "metrics": payload.get("metrics", {})}
    return model, info
