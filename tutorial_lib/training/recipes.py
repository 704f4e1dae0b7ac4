"""Recipes: the JSON files in ``data/recipes/`` that reproduce every shipped checkpoint.

A recipe's top-level fields are the budget the shipped checkpoint was trained with; ``"full"``
holds overrides for the paper's budget. ``run_recipe`` trains it with :func:`..loop.fit` and the
loss the recipe names in :data:`..losses.LOSSES`. The command line is ``python -m
tutorial_lib.train`` (see :mod:`tutorial_lib.training.__main__`).

Nothing is lost, nothing is silently wrong:

* a run trains into its own folder ``runs/<recipe>/<timestamp>/`` (``$ROBUSTNESS_RUNS_DIR``
  moves ``runs/``): ``checkpoint.pt``, the resumable ``state.pt``, ``recipe.json`` and
  ``metrics.json``. An unfinished run of the same recipe (a state file, no checkpoint) is resumed,
  not restarted. The shipped ``data/checkpoints/`` is only ever written by :func:`promote_run`
  (``--promote``), which says what it replaced;
* before training, a few steps are timed on a throw-away copy of the model and the cost is
  printed (:func:`plan_recipe`); a CPU run estimated above an hour is refused unless ``yes=True``
  (``--yes``), with the command to run;
* an ordinary mistake in a recipe (a typo in its name, malformed JSON, an unknown loss, model,
  dataset or optimiser keyword) is a :class:`RecipeError` that names it.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoints import (
    CHECKPOINT_DIR,
    CheckpointNotFoundError,
    load_checkpoint,
    read_registry,
    register_checkpoint,
    save_checkpoint,
    sha256_file,
)
from ..data import _canonical as _dataset_key, load_dataset
from ..models import MODELS, build_model
from ..runtime import accuracy, default_device, is_distributed, is_main_process, set_seed
from .cascade import check_train_on, not_accepted_indices
from .loop import capture_rng_state, fit, restore_rng_state
from .losses import LOSSES

__all__ = ["RECIPE_DIR", "RUNS_DIR_ENV", "CPU_LIMIT_HOURS", "RecipeError", "TrainingTooLongError",
           "Estimate", "load_recipe", "validate_recipe", "runs_dir", "plan_recipe", "time_steps",
           "run_recipe", "retrain", "promote_run", "latest_run", "load_run"]

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE_DIR = REPO_ROOT / "data" / "recipes"
RUNS_DIR_ENV = "ROBUSTNESS_RUNS_DIR"
#: a CPU run estimated above this many hours is refused unless ``yes=True`` / ``--yes``
CPU_LIMIT_HOURS = 1.0
_REQUIRED = ("name", "dataset", "model", "loss", "epochs", "batch_size", "optimizer")
_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
_SCHEDULERS = {"step": torch.optim.lr_scheduler.StepLR, "multistep": torch.optim.lr_scheduler.MultiStepLR}
_CHECKPOINT, _STATE, _METRICS, _RECIPE = "checkpoint.pt", "state.pt", "metrics.json", "recipe.json"


class RecipeError(ValueError):
    """An ordinary mistake in a recipe or in how it is run; the message names the culprit."""


class UnknownRecipeError(RecipeError, FileNotFoundError):
    """No recipe by that name or at that path."""


class TrainingTooLongError(RecipeError):
    """A CPU run estimated above :data:`CPU_LIMIT_HOURS` hours, started without ``yes=True``."""

    def __init__(self, message: str, estimate: "Estimate"):
        super().__init__(message)
        self.estimate = estimate


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------------------------
# reading and checking a recipe
# --------------------------------------------------------------------------------------------

def _recipe_path(name_or_path: Union[str, Path]) -> Path:
    """The file of a recipe: a path (``.json`` may be left out) or a name in :data:`RECIPE_DIR`."""
    text = str(name_or_path)
    path = Path(text)
    if path.is_file():
        return path
    with_json = Path(text + ".json")
    if path.suffix != ".json" and with_json.is_file():
        return with_json
    looks_like_path = os.sep in text or "/" in text or path.suffix == ".json"
    if not looks_like_path:
        stem = path.stem if path.suffix == ".json" else text
        shipped = RECIPE_DIR / f"{stem}.json"
        if shipped.is_file():
            return shipped
    known = sorted(p.stem for p in RECIPE_DIR.glob("*.json"))
    if looks_like_path:
        tried = f"{path}" + ("" if path.suffix == ".json" else f" nor {with_json}")
        raise UnknownRecipeError(f"no recipe file {tried} (known recipes: {', '.join(known)})")
    raise UnknownRecipeError(f"unknown recipe {text!r}{_did_you_mean(text, known)} "
                             f"(known recipes: {', '.join(known)})")


def _check_keywords(fn: Callable, kwargs: Dict[str, Any], what: str, where: str,
                    skip: Sequence[str] = ()) -> None:
    """Refuse keywords ``fn`` does not take (unless it takes ``**kwargs``), naming them."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n not in skip and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        hint = _did_you_mean(bad[0], accepted)
        raise RecipeError(f"{where}: {what} has no keyword {', '.join(map(repr, bad))}{hint} "
                          f"(it takes: {', '.join(accepted)})")


def _check_named(spec: Any, table: Dict[str, Callable], kind: str, where: str, skip: str) -> None:
    if not isinstance(spec, dict) or "name" not in spec:
        raise RecipeError(f"{where}: {kind} must be an object with a \"name\" ({', '.join(table)}), "
                          f"got {spec!r}")
    name = str(spec["name"]).lower()
    if name not in table:
        raise RecipeError(f"{where}: unknown {kind} {spec['name']!r}{_did_you_mean(name, list(table))} "
                          f"(known: {', '.join(table)})")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    _check_keywords(table[name], kwargs, f"{kind} {name!r}", where, skip=(skip,))


def validate_recipe(recipe: Dict[str, Any], where: Optional[str] = None) -> None:
    """Raise :class:`RecipeError` naming the first mistake in ``recipe``: a missing field, an unknown
    loss, model, dataset, optimiser or scheduler, or a keyword one of them does not take.
    ``where`` names the recipe in the message (its file; default: its name)."""
    where = where or f"recipe {recipe.get('name', '?')!r}"
    missing = [k for k in _REQUIRED if k not in recipe]
    if missing:
        raise RecipeError(f"{where} lacks {', '.join(missing)}")
    if recipe["loss"] not in LOSSES:
        raise RecipeError(f"{where}: unknown loss {recipe['loss']!r}{_did_you_mean(recipe['loss'], list(LOSSES))} "
                          f"(known losses: {', '.join(sorted(LOSSES))})")
    _check_keywords(LOSSES[recipe["loss"]], recipe.get("loss_kwargs") or {}, f"loss {recipe['loss']!r}", where)
    if recipe["model"] not in MODELS:
        raise RecipeError(f"{where}: unknown model {recipe['model']!r}{_did_you_mean(recipe['model'], list(MODELS))} "
                          f"(known models: {', '.join(sorted(MODELS))})")
    _check_keywords(MODELS[recipe["model"]], recipe.get("model_kwargs") or {}, f"model {recipe['model']!r}", where)
    try:
        _dataset_key(recipe["dataset"])
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    _check_named(recipe["optimizer"], _OPTIMIZERS, "optimizer", where, skip="params")
    if recipe.get("scheduler"):
        _check_named(recipe["scheduler"], _SCHEDULERS, "scheduler", where, skip="optimizer")
    if recipe.get("train_on") is not None:
        try:
            check_train_on(recipe["train_on"], where)
        except ValueError as e:
            raise RecipeError(str(e)) from None
    for key in ("epochs", "batch_size"):
        if isinstance(recipe[key], bool) or not isinstance(recipe[key], int) or recipe[key] < 1:
            raise RecipeError(f"{where}: {key} must be a positive integer, got {recipe[key]!r}")


def load_recipe(name_or_path: Union[str, Path], full: bool = False) -> Dict[str, Any]:
    """Read a recipe by name (``data/recipes/<name>.json``) or path (``.json`` may be left out);
    ``full`` applies its ``"full"`` overrides (the paper's budget). Mistakes raise
    :class:`RecipeError` (an unknown name: :class:`UnknownRecipeError`, also a FileNotFoundError)."""
    path = _recipe_path(name_or_path)
    try:
        recipe = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RecipeError(f"{path}, line {e.lineno}, column {e.colno}: malformed JSON ({e.msg})") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a JSON object, got {type(recipe).__name__}")
    overrides = recipe.pop("full", {}) or {}
    if full:
        recipe.update(overrides)
    recipe["budget"] = "full" if full else "shipped"
    validate_recipe(recipe, f"recipe {path}" + (" (full budget)" if full else ""))
    return recipe


# --------------------------------------------------------------------------------------------
# the pieces of a run
# --------------------------------------------------------------------------------------------

def _optimizer(params, spec: Dict[str, Any]) -> torch.optim.Optimizer:
    spec = dict(spec)
    name = spec.pop("name").lower()
    if name not in _OPTIMIZERS:
        raise RecipeError(f"unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}")
    return _OPTIMIZERS[name](params, **spec)


def _scheduler(opt: torch.optim.Optimizer, spec: Optional[Dict[str, Any]]):
    if not spec:
        return None
    spec = dict(spec)
    name = spec.pop("name").lower()
    if name not in _SCHEDULERS:
        raise RecipeError(f"unknown scheduler {name!r}; known: {', '.join(_SCHEDULERS)}")
    return _SCHEDULERS[name](opt, **spec)


def _make_loss(recipe: Dict[str, Any]):
    return LOSSES[recipe["loss"]](**copy.deepcopy(recipe.get("loss_kwargs") or {}))


def _budget(recipe: Dict[str, Any], full: bool = False) -> str:
    return str(recipe.get("budget", "full" if full else "shipped"))


def _command(recipe: Dict[str, Any], source: Optional[str] = None) -> str:
    """The command line that trains ``recipe`` (given as ``source``: a name or path) past the
    CPU limit."""
    flag = " --full" if _budget(recipe) == "full" else ""
    return f"python -m tutorial_lib.train {source or recipe['name']}{flag} --yes"


def runs_dir(root: Optional[Union[str, Path]] = None) -> Path:
    """Where runs go: ``root`` if given, else ``$ROBUSTNESS_RUNS_DIR``, else ``<repo>/runs``."""
    return Path(root or os.environ.get(RUNS_DIR_ENV) or REPO_ROOT / "runs")


def _device_label(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(device)


def _from_main(value: Any) -> Any:
    """``value`` as rank 0 has it, on every rank (itself when not distributed)."""
    if not is_distributed():
        return value
    box = [value if is_main_process() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _same_dir(a: Union[str, Path], b: Union[str, Path]) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _normalised(recipe: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(recipe, sort_keys=True))


# --------------------------------------------------------------------------------------------
# the cost, announced before the run
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """What a run will cost: ``steps`` still to take x ``seconds_per_step`` on ``device``."""
    recipe: str
    budget: str
    steps: int
    seconds_per_step: float
    device: str          # as printed, e.g. "cuda:0 (NVIDIA H100 80GB HBM3)"
    device_type: str     # "cpu", "cuda", ...
    command: str         # the command that trains it anyway on a CPU

    @property
    def seconds(self) -> float:
        return self.steps * self.seconds_per_step

    def too_long(self, limit_hours: float = CPU_LIMIT_HOURS) -> bool:
        """On a CPU and above ``limit_hours``: refused unless asked for with ``yes``."""
        return self.device_type == "cpu" and self.seconds > limit_hours * 3600

    def duration(self) -> str:
        if self.seconds < 60:
            return f"{self.seconds:.0f} s"
        h, m = divmod(int(round(self.seconds / 60)), 60)
        return f"{h} h {m} min"

    def __str__(self) -> str:
        return (f"estimated {self.steps:,} steps x {self.seconds_per_step:.3g} s = {self.duration()} "
                f"on {self.device}")


def time_steps(model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
               batches: Sequence[Tuple[torch.Tensor, torch.Tensor]], device: torch.device,
               amp: bool = False, warmup: int = 1) -> float:
    """Seconds per training step: one step per batch, the first ``warmup`` untimed. It trains
    ``model`` and ``optimizer`` in place, so pass copies; the caller restores any RNG it needs."""
    if len(batches) <= warmup:
        raise ValueError(f"need more than {warmup} batches to time, got {len(batches)}")
    model.train()
    use_amp = bool(amp) and device.type == "cuda"
    t0 = 0.0
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, enabled=use_amp):
            out = loss_fn(model, x, y)
        loss = out[0] if isinstance(out, tuple) else out
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / (len(batches) - warmup)


def _estimate(recipe: Dict[str, Any], model: nn.Module, train, batch_size: int, total_steps: int,
              done_steps: int, device: torch.device, source: Optional[str] = None,
              steps: int = 3, warmup: int = 1) -> Estimate:
    """Time ``steps`` steps (after ``warmup``) of the real loss and batch size on a deep copy of
    ``model``, with a fresh optimizer and loss; every RNG is restored afterwards, so the real run
    is unaffected (bit for bit)."""
    rng = capture_rng_state(None, device)
    try:
        probe = copy.deepcopy(model)
        optimizer = _optimizer(probe.parameters(), recipe["optimizer"])
        loss_fn = _make_loss(recipe)
        if hasattr(loss_fn, "on_step"):  # time the schedule's full radius: most steps run at it
            loss_fn.on_step(max(total_steps - 1, 0))
        x, y = train.tensors[0], train.tensors[1]
        batches = []
        for i in range(warmup + steps):
            idx = torch.arange(i * batch_size, (i + 1) * batch_size) % len(x)
            batches.append((x[idx], y[idx]))
        per_step = time_steps(probe, loss_fn, optimizer, batches, device,
                              amp=recipe.get("amp", False), warmup=warmup)
        del probe, optimizer, loss_fn
    finally:
        restore_rng_state(rng, None, device)
    return Estimate(recipe=recipe["name"], budget=_budget(recipe), steps=max(total_steps - done_steps, 0),
                    seconds_per_step=float(per_step), device=_device_label(device),
                    device_type=device.type, command=_command(recipe, source))


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------

def _run_dirs(name: str, root: Optional[Union[str, Path]] = None) -> List[Path]:
    """The run folders of recipe ``name``, newest first."""
    base = runs_dir(root) / name
    return sorted((d for d in base.iterdir() if d.is_dir()), reverse=True) if base.is_dir() else []


def _unfinished_run(recipe: Dict[str, Any], root: Optional[Union[str, Path]]) -> Optional[Path]:
    """The newest run of the same recipe (every field, budget included) with a training state
    and no final checkpoint."""
    want = _normalised(recipe)
    for d in _run_dirs(recipe["name"], root):
        if (d / _STATE).exists() and not (d / _CHECKPOINT).exists():
            try:
                if json.loads((d / _RECIPE).read_text()) == want:
                    return d
            except (OSError, ValueError):
                continue
    return None


def _new_run_dir(name: str, root: Optional[Union[str, Path]]) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir(root) / name
    d, i = base / stamp, 2
    while d.exists():
        d, i = base / f"{stamp}-{i}", i + 1
    return d


def latest_run(recipe: str, full: Optional[bool] = None,
               root: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """The newest finished run (a folder holding ``checkpoint.pt``) of the recipe named
    ``recipe`` under ``runs/`` (or ``root``); ``full`` True/False keeps only runs of the full /
    shipped budget. None when there is none."""
    for d in _run_dirs(str(recipe), root):
        if not (d / _CHECKPOINT).exists():
            continue
        if full is not None:
            try:
                budget = json.loads((d / _METRICS).read_text())["recipe"].get("budget")
            except (OSError, ValueError, KeyError):
                continue
            if budget != ("full" if full else "shipped"):
                continue
        return d
    return None


def load_run(run: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
             full: Optional[bool] = None, root: Optional[Union[str, Path]] = None) -> Tuple[nn.Module, Dict]:
    """``(model, info)`` of a finished run: ``run`` is a run folder, or a recipe name for its
    newest finished run (see :func:`latest_run`). ``info`` is :func:`load_checkpoint`'s, plus
    ``run_dir``. Raises :class:`CheckpointNotFoundError` when there is no such run."""
    path = Path(run)
    if not (path / _CHECKPOINT).exists():
        found = latest_run(str(run), full=full, root=root)
        if found is None:
            where = runs_dir(root) / str(run)
            raise CheckpointNotFoundError(
                f"no finished run of {str(run)!r} in {where}; train one with "
                f"`python -m tutorial_lib.train {run}`" + (" --full" if full else ""))
        path = found
    model, info = load_checkpoint(path / _CHECKPOINT, device=device)
    info["run_dir"] = str(path)
    return model, info


def _promote(checkpoint: Path, recipe: Dict[str, Any], metrics: Dict[str, Any],
             checkpoint_dir: Optional[Union[str, Path]] = None, progress: bool = True) -> Dict[str, Any]:
    checkpoint_dir = Path(checkpoint_dir or CHECKPOINT_DIR)
    registry = checkpoint_dir / "registry.json"
    name = recipe["name"]
    old = read_registry(registry).get(name)
    target = checkpoint_dir / f"{name}.pt"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".pt.tmp")
    shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, target)
    sha = sha256_file(target)
    register_checkpoint(name, target, sha, registry=registry, model=recipe["model"], recipe=recipe,
                        metrics=metrics)

    def acc(m: Optional[Dict]) -> str:
        value = (m or {}).get("test_acc")
        return f"test accuracy {100 * value:.2f} %" if isinstance(value, (int, float)) else "test accuracy ?"

    new = f"sha256 {sha[:12]} ({acc(metrics)})"
    if old:
        change = f"replaced sha256 {old.get('sha256', '?')[:12]} ({acc(old.get('metrics'))}) -> {new}"
    else:
        change = f"new entry: {new}"
    if progress:
        print(f"promoted {checkpoint} to {target}: {change}; registry {registry} updated")
    return {"name": name, "path": str(target), "sha256": sha, "replaced": old, "message": change}


def promote_run(run_dir: Union[str, Path], checkpoint_dir: Optional[Union[str, Path]] = None,
                progress: bool = True) -> Dict[str, Any]:
    """Replace the shipped checkpoint of a finished run's recipe by the run's: copy its
    ``checkpoint.pt`` to ``data/checkpoints/<recipe>.pt`` (or ``checkpoint_dir``), update the
    registry and print what it replaced (old sha256 and test accuracy -> new). Returns ``{"name",
    "path", "sha256", "replaced" (the old registry entry or None), "message"}``."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / _CHECKPOINT
    if not checkpoint.exists():
        state = " (it is unfinished: rerun its recipe to resume it)" if (run_dir / _STATE).exists() else ""
        raise RecipeError(f"{run_dir} holds no finished run: {checkpoint} is missing{state}")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return _promote(checkpoint, payload.get("recipe", {}), payload.get("metrics", {}), checkpoint_dir, progress)


# --------------------------------------------------------------------------------------------
# planning and running
# --------------------------------------------------------------------------------------------

def _prepare(recipe: Dict[str, Any], device: torch.device, data_dir, distributed: bool,
             root: Optional[Union[str, Path]] = None):
    """Data, loader, model, optimizer, scheduler and loss of a run, seeded as the recipe says
    (in this order: the shipped checkpoints were made so). ``"train_on"`` (a cascade's next
    stage, :mod:`.cascade`) keeps the training examples the earlier stages do not accept."""
    set_seed(recipe.get("seed", 0))
    train = load_dataset(recipe["dataset"], "train", data_dir)
    test = load_dataset(recipe["dataset"], "test", data_dir)
    if recipe.get("train_on"):
        spec = recipe["train_on"]
        rng = capture_rng_state(None, device)
        idx = not_accepted_indices(spec["not_accepted_by"], train.tensors[0], spec["eps"],
                                   spec.get("norm", "linf"), _dataset_key(recipe["dataset"]),
                                   cache_dir=runs_dir(root) / "_cascade_subsets")
        restore_rng_state(rng, None, device)
        if len(idx) == 0:
            raise RecipeError(f"recipe {recipe['name']!r}: the earlier stages accept every training example; "
                              f"there is nothing left to train the next stage on")
        train = torch.utils.data.TensorDataset(*(t[idx] for t in train.tensors))
    if recipe.get("train_subset"):
        train = torch.utils.data.TensorDataset(*(t[: recipe["train_subset"]] for t in train.tensors))
    batch_size = int(recipe["batch_size"])
    world = torch.distributed.get_world_size() if distributed else 1
    if distributed:
        sampler = DistributedSampler(train, shuffle=True, seed=recipe.get("seed", 0))
        batch_size = max(1, batch_size // world)
        train_loader = DataLoader(train, batch_size=batch_size, sampler=sampler)
    else:
        g = torch.Generator().manual_seed(recipe.get("seed", 0))
        train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=g)
    model = build_model(recipe["model"], **recipe.get("model_kwargs", {})).to(device)
    optimizer = _optimizer(model.parameters(), recipe["optimizer"])
    scheduler = _scheduler(optimizer, recipe.get("scheduler"))
    loss_fn = _make_loss(recipe)
    steps = int(recipe["epochs"]) * math.ceil(math.ceil(len(train) / world) / batch_size)
    if recipe.get("max_steps"):
        steps = min(steps, int(recipe["max_steps"]))
    return train, test, train_loader, batch_size, model, optimizer, scheduler, loss_fn, steps


def _resolve(recipe: Union[str, Path, Dict[str, Any]], full: bool) -> Tuple[Dict[str, Any], Optional[str]]:
    """(the recipe, checked; the name or path it was given as, None for a dict)."""
    if isinstance(recipe, dict):
        recipe = copy.deepcopy(recipe)
        validate_recipe(recipe)
        return recipe, None
    return load_recipe(recipe, full=full), str(recipe)


def _done_steps(state_path: Path) -> int:
    if not state_path.exists():
        return 0
    return int(torch.load(state_path, map_location="cpu", weights_only=True)["step"])


def plan_recipe(recipe: Union[str, Path, Dict[str, Any]], full: bool = False,
                device: Optional[Union[str, torch.device]] = None, data_dir=None,
                root: Optional[Union[str, Path]] = None) -> Estimate:
    """What training ``recipe`` would cost here, without training: the steps still to take (an
    unfinished run in ``runs/`` counts as done up to its state) x the seconds per step timed on
    ``device``. ``print(estimate)`` says it; ``estimate.too_long()`` is what refuses a CPU run
    above :data:`CPU_LIMIT_HOURS`; ``estimate.command`` trains it anyway. The RNGs are restored."""
    recipe, source = _resolve(recipe, full)
    device = default_device(device)
    rng = capture_rng_state(None, device)
    try:
        train, _, _, batch_size, model, _, _, _, total = _prepare(recipe, device, data_dir, False, root)
        unfinished = _unfinished_run(recipe, root)
        done = _done_steps(unfinished / _STATE) if unfinished else 0
        return _estimate(recipe, model, train, batch_size, total, done, device, source)
    finally:
        restore_rng_state(rng, None, device)


def run_recipe(recipe: Union[str, Path, Dict[str, Any]], full: bool = False,
               out_dir: Optional[Union[str, Path]] = None, register: Optional[bool] = None,
               device: Optional[Union[str, torch.device]] = None, progress: bool = True,
               data_dir=None, *, promote: bool = False, yes: bool = False,
               root: Optional[Union[str, Path]] = None, estimate: bool = True,
               checkpoint_dir: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Train the recipe's model, evaluate it on the whole test set and save it, never over a
    shipped checkpoint unless ``promote``.

    Where: by default a run folder ``runs/<name>/<timestamp>/`` (``root`` or
    ``$ROBUSTNESS_RUNS_DIR`` moves ``runs/``) holding ``checkpoint.pt``, the resumable
    ``state.pt`` (saved every epoch), ``recipe.json`` and ``metrics.json``; an unfinished run of
    the same recipe and budget is resumed instead of starting a new one. With ``out_dir``, the old
    flat layout there (``<name>.pt``, ``<name>.state.pt``, and ``registry.json`` unless
    ``register=False``); ``out_dir`` may not be the shipped ``data/checkpoints`` unless
    ``promote``. ``promote``: then copy the checkpoint into ``data/checkpoints/`` (or
    ``checkpoint_dir``) and update its registry (:func:`promote_run`).

    Cost: unless ``estimate=False``, a few steps are timed first on a copy of the model (RNGs
    restored: the weights are the same as without) and the estimate printed; a CPU run above
    :data:`CPU_LIMIT_HOURS` raises :class:`TrainingTooLongError` unless ``yes``.

    Returns ``{"run_dir" (None with out_dir), "path", "sha256", "metrics", "history",
    "promoted"}`` (on non-zero ranks: ``run_dir`` and ``history`` only).
    """
    recipe, source = _resolve(recipe, full)
    name = recipe["name"]
    shipped_dir = Path(checkpoint_dir or CHECKPOINT_DIR)
    if out_dir is not None and any(_same_dir(out_dir, d) for d in (CHECKPOINT_DIR, shipped_dir)):
        if not promote:
            raise RecipeError(f"--out {out_dir} is the shipped checkpoint folder: training does not "
                              f"overwrite {name}.pt there; add --promote to replace it, or leave "
                              f"out --out to train into {runs_dir(root)}/{name}/")
        out_dir = None  # train into runs/, then promote: the replacement is reported
    distributed = is_distributed()
    if distributed and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    device = default_device(device)
    train, test, train_loader, batch_size, model, optimizer, scheduler, loss_fn, total = \
        _prepare(recipe, device, data_dir, distributed, root)

    run_dir: Optional[Path] = None
    resumed = False
    if out_dir is None:
        if is_main_process():
            found = _unfinished_run(recipe, root)
            resumed = found is not None
            run_dir = found or _new_run_dir(name, root)
        run_dir, resumed = _from_main((str(run_dir), resumed))
        run_dir = Path(run_dir)
        state_path, path = run_dir / _STATE, run_dir / _CHECKPOINT
    else:
        out_dir = Path(out_dir)
        state_path, path = out_dir / f"{name}.state.pt", out_dir / f"{name}.pt"
    if resumed and progress and is_main_process():
        print(f"resuming the unfinished run {run_dir} (state after step {_done_steps(state_path)} of {total})")

    if estimate:
        est = None
        if is_main_process():
            est = _estimate(recipe, model, train, batch_size, total, _done_steps(state_path), device,
                            source)
            if progress:
                print(est)
        est = _from_main(est)
        if est.too_long() and not yes:
            raise TrainingTooLongError(
                f"{name} ({est.budget} budget) would take about {est.duration()} on this CPU "
                f"({est.steps:,} steps x {est.seconds_per_step:.3g} s), over the {CPU_LIMIT_HOURS:g} h "
                f"limit; start it anyway with `{est.command}`, or run it on a GPU", est)

    if is_main_process():
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resumed:
                (run_dir / _RECIPE).write_text(json.dumps(_normalised(recipe), indent=1) + "\n")
                if progress:
                    print(f"training {name} into {run_dir}")
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
    if distributed:
        torch.distributed.barrier()
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    t0 = time.perf_counter()
    history = fit(net, train_loader, epochs=int(recipe["epochs"]), loss_fn=loss_fn,
                  optimizer=optimizer, scheduler=scheduler, device=device,
                  amp=recipe.get("amp", False), max_steps=recipe.get("max_steps"),
                  state_path=state_path, progress=progress, on_step=getattr(loss_fn, "on_step", None))
    # a resumed run's history holds the earlier epochs too: count the time of every epoch
    seconds = max(time.perf_counter() - t0, sum(h.get("seconds", 0.0) for h in history))
    result: Dict[str, Any] = {"history": history, "run_dir": str(run_dir) if run_dir else None}
    if not is_main_process():
        return result
    test_acc = accuracy(model, (test.tensors[0], test.tensors[1]), device)
    metrics = {"test_acc": round(test_acc, 4), "train_seconds": round(seconds, 1),
               "device": str(device.type), "world_size": torch.distributed.get_world_size() if distributed else 1,
               "torch": str(torch.__version__)}
    if recipe.get("train_on"):  # a cascade stage: how many training examples the earlier stages left
        metrics["train_examples"] = len(train)
    sha = save_checkpoint(model, path, recipe["model"], recipe.get("model_kwargs"), recipe, metrics)
    if run_dir is not None:
        record = {**metrics, "sha256": sha, "checkpoint": _CHECKPOINT, "recipe": _normalised(recipe),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (run_dir / _METRICS).write_text(json.dumps(record, indent=1) + "\n")
    else:
        if register is None or register:
            register_checkpoint(name, path, sha, registry=out_dir / "registry.json",
                                model=recipe["model"], recipe=recipe, metrics=metrics)
        state_path.unlink(missing_ok=True)
    result.update(path=str(path), sha256=sha, metrics=metrics, promoted=None)
    if progress:
        print(f"saved {path} (sha256 {sha[:12]}...): test accuracy {test_acc:.4f}")
    if promote:
        result["promoted"] = _promote(path, recipe, metrics, shipped_dir, progress)
    elif progress and run_dir is not None:
        print(f"the shipped checkpoint is unchanged; to replace it: python -m tutorial_lib.train {run_dir} --promote")
    return result


def retrain(recipe: Union[str, Path, Dict[str, Any]], full: bool = True,
            device: Optional[Union[str, torch.device]] = None, **kwargs: Any) -> Optional[Path]:
    """What a notebook's ``RETRAIN`` switch calls: train ``recipe`` into a new run folder (or
    resume an unfinished one) and return the folder, for :func:`load_run`. The shipped
    checkpoint is not touched. When the estimate on a CPU is above :data:`CPU_LIMIT_HOURS`, it
    trains nothing: it prints the estimate and the command to run instead, and returns None."""
    try:
        result = run_recipe(recipe, full=full, device=device, **kwargs)
    except TrainingTooLongError as e:
        print(f"not started: {e}")
        return None
    return Path(result["run_dir"]) if result.get("run_dir") else None
