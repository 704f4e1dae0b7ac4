"""Training data of a cascade's next stage (Wong et al. 2018, Section 3.3).

Stage k of a cascade is trained on the training examples that stages 1..k-1 do not handle: the
examples at which no earlier stage certifies its own prediction (the cascade's runtime rule,
:func:`tutorial_lib.cascade_model.stage_accepts`, applied at the training example itself). A
recipe asks for it with::

    "train_on": {"not_accepted_by": ["mnist_small_robust_full", "runs/.../checkpoint.pt"],
                 "eps": 0.1, "norm": "linf"}

Certifying 60,000 training examples with the exact dual bound takes about 25 minutes on one CPU
thread for the small CNN, so the answer is cached under ``runs/_cascade_subsets/`` (keyed by the
SHA-256 of every earlier stage's checkpoint, the data set, eps and norm; partial progress is kept
every few thousand examples, so an interrupted computation resumes).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import cascade_model

__all__ = ["check_train_on", "not_accepted_indices"]

_KEYS = ("not_accepted_by", "eps", "norm")


def check_train_on(spec: Any, where: str) -> None:
    """Raise ValueError naming what is wrong with a recipe's ``"train_on"`` object."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: train_on must be an object with {', '.join(_KEYS)}; got {spec!r}")
    unknown = [k for k in spec if k not in _KEYS]
    if unknown:
        raise ValueError(f"{where}: train_on has no key {', '.join(map(repr, unknown))} (it takes {', '.join(_KEYS)})")
    stages = spec.get("not_accepted_by")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) and s for s in stages):
        raise ValueError(f"{where}: train_on.not_accepted_by must be a non-empty list of checkpoint names or "
                         f"paths; got {stages!r}")
    eps = spec.get("eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{where}: train_on.eps must be a positive number; got {eps!r}")
    from ..bounds.spec import check_norm
    check_norm(spec.get("norm", "linf"))


def _key(shas: Sequence[str], dataset: str, eps: float, norm: str) -> str:
    text = json.dumps({"stages": list(shas), "dataset": dataset, "eps": float(eps), "norm": norm})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def not_accepted_indices(stages: Sequence[str], x: Tensor, eps: float, norm: str = "linf",
                         dataset: str = "mnist", cache_dir: Optional[Union[str, Path]] = None,
                         chunk: int = 2000, progress: bool = True) -> Tensor:
    """Indices (long, increasing) of the rows of x at which no stage of ``stages`` (checkpoint
    names or paths, in cascade order) certifies its own prediction on the ``norm`` ball of radius
    ``eps`` (exact dual bound). x: (N, *input_shape), the whole training split (the cache key
    assumes so: ``dataset`` names it). Each stage only looks at what the stages before it left.
    """
    from ..checkpoints import load_checkpoint
    cache = Path(cache_dir) if cache_dir is not None else None
    left = torch.arange(x.shape[0])
    shas: List[str] = []
    for name in stages:
        model, info = load_checkpoint(name)
        model = model.to(x.device)
        shas.append(info["sha256"])
        key = _key(shas, dataset, eps, norm)
        done_path = cache / f"{key}.pt" if cache else None
        if done_path is not None and done_path.exists():
            left = torch.load(done_path, map_location="cpu", weights_only=True)["left"]
            if progress:
                print(f"cascade subset after {name}: {len(left):,} examples (cached in {done_path})")
            continue
        part_path = cache / f"{key}.partial.pt" if cache else None
        keep: List[Tensor] = []
        start = 0
        if part_path is not None and part_path.exists():
            part = torch.load(part_path, map_location="cpu", weights_only=True)
            keep, start = [part["keep"]], int(part["done"])
        for a in range(start, len(left), chunk):
            idx = left[a:a + chunk]
            _, ok = cascade_model.stage_accepts(model, x[idx], eps, norm=norm)
            keep.append(idx[~ok.cpu()])
            if part_path is not None:
                part_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"keep": torch.cat(keep), "done": a + len(idx)}, part_path)
            if progress:
                print(f"  {name}: {a + len(idx):,}/{len(left):,} examples checked, "
                      f"{int(sum(len(k) for k in keep)):,} not accepted", flush=True)
        left = torch.cat(keep) if keep else left[:0]
        if done_path is not None:
            torch.save({"left": left, "stages": list(stages[:len(shas)]), "sha256": shas,
                        "eps": float(eps), "norm": norm, "dataset": dataset}, done_path)
            if part_path is not None:
                part_path.unlink(missing_ok=True)
        if progress:
            print(f"cascade subset after {name}: {len(left):,} of {x.shape[0]:,} training examples not accepted")
    return left


def describe(spec: Dict[str, Any]) -> str:
    """One line for logs: which stages, radius and norm a train_on spec names."""
    return (f"the training examples not accepted by {', '.join(spec['not_accepted_by'])} "
            f"(eps {spec['eps']}, {spec.get('norm', 'linf')})")
