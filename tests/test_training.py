import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, TensorDataset

from tutorial_lib.checkpoints import load_checkpoint, read_registry, register_checkpoint, save_checkpoint, sha256_file
from tutorial_lib.data import get_loaders
from tutorial_lib.models import build_model
from tutorial_lib.training import accuracy, fit, linear_ramp
from tutorial_lib.training.loop import capture_rng_state, restore_rng_state

REPO = Path(__file__).resolve().parent.parent


def test_short_real_training_beats_chance(shared_dir):
    train, _ = get_loaders("mnist", 64, train_subset=6400, data_dir=shared_dir, seed=0)
    from tutorial_lib.data import test_subset
    x, y = test_subset("mnist", 1000, data_dir=shared_dir)
    model = build_model("mnist_small")
    before = accuracy(model, (x, y), "cpu")
    history = fit(model, train, epochs=3, max_steps=300, device="cpu", seed=0, progress=False)
    after = accuracy(model, (x, y), "cpu")
    assert before < 0.3 and after > 0.85, (before, after)
    assert history[-1]["steps"] == 300
    assert {"epoch", "loss", "train_acc", "lr", "seconds"} <= set(history[0])
    assert history[-1]["loss"] < history[0]["loss"]


def _toy_loader(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)


def test_resume_from_saved_state(tmp_path):
    state = tmp_path / "state.pt"
    torch.manual_seed(0)
    a = build_model("toy_mlp")
    fit(a, _toy_loader(), epochs=2, device="cpu", state_path=state, progress=False)
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 2
    # an "interrupted" run of 4 epochs resumes after epoch 2 and ends with 4 history entries
    b = build_model("toy_mlp")
    hist = fit(b, _toy_loader(), epochs=4, device="cpu", state_path=state, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert torch.load(state, weights_only=True)["epoch"] == 4


def _resume_loader(kind: str) -> DataLoader:
    """A small shuffled loader; ``kind`` picks where its order comes from."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 2, generator=g)
    ds = TensorDataset(x, (x[:, 0] + 0.3 * x[:, 1] > 0).long())
    if kind == "generator":  # what get_loaders and run_recipe build
        return DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(7))
    if kind == "global":  # no generator: RandomSampler draws its seed from the global torch RNG
        return DataLoader(ds, batch_size=16, shuffle=True)
    if kind == "batch_sampler":  # a sampler generator distinct from the loader's
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(8))
        return DataLoader(ds, batch_sampler=BatchSampler(sampler, 16, drop_last=False),
                          generator=torch.Generator().manual_seed(9))
    assert kind == "distributed"  # reshuffled by set_epoch, no generator to save
    return DataLoader(ds, batch_size=16, sampler=DistributedSampler(ds, num_replicas=2, rank=0, seed=3))


def _noisy_loss(model, x, y):
    """Cross-entropy on inputs with noise from the global torch RNG, scaled by Python's random."""
    logits = model(x + (0.1 + 0.2 * random.random()) * torch.randn_like(x))
    return torch.nn.functional.cross_entropy(logits, y), logits


def _resume_run(kind, epochs, state_path=None):
    torch.manual_seed(123)
    model = build_model("toy_mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    fit(model, _resume_loader(kind), epochs=epochs, loss_fn=_noisy_loss, optimizer=optimizer,
        scheduler=scheduler, scheduler_step="batch", device="cpu", seed=0,
        state_path=state_path, progress=False)
    return model


@pytest.mark.parametrize("kind", ["generator", "global", "batch_sampler", "distributed"])
def test_resumed_run_is_bit_identical_to_uninterrupted(tmp_path, kind):
    """Interrupt after epoch 1, resume with a fresh model, optimizer and loader (same seeds):
    the same batches, the same noise, the same weights, bit for bit."""
    straight = _resume_run(kind, epochs=3)
    state = tmp_path / "state.pt"
    _resume_run(kind, epochs=1, state_path=state)
    resumed = _resume_run(kind, epochs=3, state_path=state)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), kind
    assert torch.load(state, weights_only=True)["epoch"] == 3


def test_training_state_is_weights_only_and_holds_every_rng(tmp_path):
    state_path = tmp_path / "state.pt"
    loader = _resume_loader("generator")
    model = build_model("toy_mlp")
    fit(model, loader, epochs=1, loss_fn=_noisy_loss, device="cpu", seed=0, state_path=state_path,
        progress=False)
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    generator_state = loader.generator.get_state()
    state = torch.load(state_path, weights_only=True)
    assert state["epoch"] == 1 and state["cuda_rng"] is None
    assert torch.equal(state["torch_rng"], torch_state)
    assert len(state["loader_rng"]) == 1 and state["loader_rng"][0].dtype == torch.uint8
    assert torch.equal(state["loader_rng"][0], generator_state)
    # restore into other states, then check everything came back
    random.seed(99)
    torch.manual_seed(99)
    loader.generator.manual_seed(99)
    restore_rng_state(state, loader, "cpu")
    assert random.getstate() == python_state
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.equal(loader.generator.get_state(), generator_state)


def test_restore_rng_state_accepts_old_state_files_and_other_loaders():
    old = {"torch_rng": torch.get_rng_state()}  # what the loop saved before loader RNGs
    with pytest.warns(UserWarning, match="no loader RNG"):
        restore_rng_state(old, _resume_loader("generator"))
    restore_rng_state(old, _resume_loader("distributed"))  # nothing to restore, no warning
    two = capture_rng_state(_resume_loader("batch_sampler"))
    assert len(two["loader_rng"]) == 2
    with pytest.warns(UserWarning, match="not restored"):
        restore_rng_state(two, _resume_loader("generator"))


def test_loss_without_logits_and_bad_args():
    model = build_model("toy_mlp")
    hist = fit(model, _toy_loader(), epochs=1, device="cpu", progress=False,
               loss_fn=lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y))
    assert math.isnan(hist[0]["train_acc"])
    with pytest.raises(ValueError):
        fit(model, _toy_loader(), epochs=0)
    with pytest.raises(FloatingPointError):
        fit(model, _toy_loader(), epochs=1, device="cpu", progress=False,
            loss_fn=lambda m, x, y: m(x).sum() * float("nan"))


def test_linear_ramp():
    f = linear_ramp(0.0, 0.3, ramp_steps=10, warmup_steps=5)
    assert f(0) == 0.0 and f(5) == 0.0 and abs(f(10) - 0.15) < 1e-12 and f(15) == 0.3 and f(100) == 0.3


def _tiny_recipe(tmp_path) -> Path:
    recipe = {"name": "tiny", "dataset": "mnist", "model": "mnist_small", "loss": "natural",
              "epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.002},
              "seed": 0, "train_subset": 2048}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(recipe))
    return path


def test_recipe_cli_trains_saves_and_registers(tmp_path, shared_dir):
    out = tmp_path / "ck"
    env = {**os.environ, "ROBUSTNESS_DATA_DIR": shared_dir}
    subprocess.run([sys.executable, "-m", "tutorial_lib.train", str(_tiny_recipe(tmp_path)),
                    "--out", str(out), "--device", "cpu"], check=True, env=env, cwd=REPO,
                   capture_output=True)
    entry = read_registry(out / "registry.json")["tiny"]
    model, info = load_checkpoint("tiny", registry=out / "registry.json")
    assert info["sha256"] == entry["sha256"] and info["metrics"]["world_size"] == 1
    assert not (out / "tiny.state.pt").exists()


def test_torchrun_ddp_gloo_two_processes(tmp_path, shared_dir):
    """The same entry point under torchrun: DDP with gloo on CPU, two processes."""
    out = tmp_path / "ck"
    env = {**os.environ, "ROBUSTNESS_DATA_DIR": shared_dir, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tutorial_lib.train", str(_tiny_recipe(tmp_path)), "--out", str(out), "--device", "cpu"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, info = load_checkpoint("tiny", registry=out / "registry.json")
    assert info["metrics"]["world_size"] == 2
    # 2048 examples over 2 ranks, per-rank batch 32: 32 synchronised steps learn well above chance
    assert info["metrics"]["test_acc"] > 0.6


# --------------------------------------------------------------------------------------------
# runs/, --promote and the announced cost (nothing lost, nothing silently wrong)
# --------------------------------------------------------------------------------------------

def _shipped_snapshot():
    """Name, size and mtime of every file in the shipped data/checkpoints (must never change)."""
    ck = REPO / "data" / "checkpoints"
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in ck.iterdir()}


def _small_recipe(tmp_path, **changes) -> Path:
    """_tiny_recipe, smaller (8 steps an epoch) and with ``changes``; name from ``changes`` or tiny."""
    recipe = {**json.loads(_tiny_recipe(tmp_path).read_text()), "train_subset": 512, **changes}
    path = tmp_path / f"{recipe['name']}.json"
    path.write_text(json.dumps(recipe))
    return path


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_writes_a_run_folder_not_the_shipped_checkpoints(tmp_path, shared_dir, capsys):
    from tutorial_lib.training import recipes

    before, registry = _shipped_snapshot(), (REPO / "data" / "checkpoints" / "registry.json").read_bytes()
    runs = tmp_path / "runs"
    res = recipes.run_recipe(_small_recipe(tmp_path), device="cpu", data_dir=shared_dir, root=runs,
                             progress=False)
    run = Path(res["run_dir"])
    assert run.parent == runs / "tiny" and res["path"] == str(run / "checkpoint.pt")
    assert {p.name for p in run.iterdir()} == {"checkpoint.pt", "state.pt", "recipe.json", "metrics.json"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test_acc", "train_seconds", "device", "torch", "recipe", "sha256"} <= set(metrics)
    assert metrics["recipe"]["name"] == "tiny" and metrics["recipe"]["budget"] == "shipped"
    assert _shipped_snapshot() == before
    assert (REPO / "data" / "checkpoints" / "registry.json").read_bytes() == registry
    # the notebooks' helpers find and load it
    assert recipes.latest_run("tiny", root=runs) == run
    assert recipes.latest_run("tiny", full=True, root=runs) is None
    model, info = recipes.load_run("tiny", device="cpu", root=runs)
    assert info["sha256"] == metrics["sha256"] == res["sha256"] and info["run_dir"] == str(run)
    with pytest.raises(recipes.CheckpointNotFoundError, match="no finished run"):
        recipes.load_run("mnist_small_natural", root=runs)


def test_an_unfinished_run_is_resumed_not_restarted(tmp_path, shared_dir, monkeypatch, capsys):
    """Interrupted after epoch 1 of 2: the same call resumes that folder and ends with the weights
    of an uninterrupted run, bit for bit."""
    from tutorial_lib.training import recipes

    recipe = _small_recipe(tmp_path, epochs=2)
    # progress as in the resumed call below: fit's progress bar draws from the loader's generator
    straight = recipes.run_recipe(recipe, device="cpu", data_dir=shared_dir, root=tmp_path / "a", progress=True)

    real_fit = recipes.fit

    def interrupted(*args, **kwargs):
        real_fit(*args, **{**kwargs, "epochs": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        recipes.run_recipe(recipe, device="cpu", data_dir=shared_dir, root=tmp_path / "b", progress=True)
    [run] = (tmp_path / "b" / "tiny").iterdir()
    assert (run / "state.pt").exists() and not (run / "checkpoint.pt").exists()
    monkeypatch.setattr(recipes, "fit", real_fit)
    capsys.readouterr()
    resumed = recipes.run_recipe(recipe, device="cpu", data_dir=shared_dir, root=tmp_path / "b", progress=True)
    assert "resuming the unfinished run" in capsys.readouterr().out
    assert resumed["run_dir"] == str(run) and len(list((tmp_path / "b" / "tiny").iterdir())) == 1
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert _same_weights(straight["path"], resumed["path"])
    # a finished run is not resumed: the next call starts a new folder
    again = recipes.run_recipe(recipe, device="cpu", data_dir=shared_dir, root=tmp_path / "b", progress=False)
    assert again["run_dir"] != str(run)


def test_promote_replaces_the_checkpoint_and_says_what_it_replaced(tmp_path, shared_dir, capsys, monkeypatch):
    from tutorial_lib.training import __main__ as cli, recipes

    ck = tmp_path / "ck"  # stands for data/checkpoints
    old = ck / "tiny.pt"
    old_sha = save_checkpoint(build_model("mnist_small"), old, "mnist_small", metrics={"test_acc": 0.5})
    register_checkpoint("tiny", old, old_sha, registry=ck / "registry.json", metrics={"test_acc": 0.5})
    res = recipes.run_recipe(_small_recipe(tmp_path), device="cpu", data_dir=shared_dir, root=tmp_path / "runs",
                             promote=True, checkpoint_dir=ck)
    out = capsys.readouterr().out
    entry = read_registry(ck / "registry.json")["tiny"]
    assert entry["sha256"] == res["sha256"] == sha256_file(old) != old_sha
    assert entry["metrics"]["test_acc"] == res["metrics"]["test_acc"]
    new_acc = f"{100 * res['metrics']['test_acc']:.2f} %"
    assert f"replaced sha256 {old_sha[:12]} (test accuracy 50.00 %) -> sha256 {res['sha256'][:12]} " \
           f"(test accuracy {new_acc})" in out
    load_checkpoint("tiny", registry=ck / "registry.json")  # verifies against the new hash
    # the command line promotes a finished run folder (here: back to the same weights)
    monkeypatch.setattr(recipes, "CHECKPOINT_DIR", ck)
    cli.main([res["run_dir"], "--promote"])
    assert f"replaced sha256 {res['sha256'][:12]}" in capsys.readouterr().out


def test_out_refuses_the_shipped_folder_without_promote(tmp_path):
    from tutorial_lib.training import recipes

    with pytest.raises(recipes.RecipeError, match="--promote"):
        recipes.run_recipe(_small_recipe(tmp_path), out_dir=REPO / "data" / "checkpoints", device="cpu",
                           data_dir=tmp_path / "no-data-here", progress=False)


def test_cpu_run_over_an_hour_is_refused_unless_yes(tmp_path, shared_dir, monkeypatch, capsys):
    from tutorial_lib.training import __main__ as cli, recipes

    monkeypatch.setattr(recipes, "time_steps", lambda *a, **k: 200.0)  # 8 steps x 200 s = 27 min
    recipe = _small_recipe(tmp_path, epochs=3)  # 24 steps x 200 s = 1 h 20 min
    plan = recipes.plan_recipe(recipe, device="cpu", data_dir=shared_dir, root=tmp_path / "runs")
    assert str(plan).startswith("estimated 24 steps x 200 s = 1 h 20 min on cpu") and plan.too_long()
    with pytest.raises(recipes.TrainingTooLongError, match="--yes"):
        recipes.run_recipe(recipe, device="cpu", data_dir=shared_dir, root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # nothing started
    assert recipes.retrain(recipe, full=False, device="cpu", data_dir=shared_dir, root=tmp_path / "runs") is None
    assert f"python -m tutorial_lib.train {recipe} --yes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu", "--data-dir", shared_dir])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "1 h 20 min" in err and f"python -m tutorial_lib.train {recipe} --yes" in err
    assert not (tmp_path / "out" / "tiny.pt").exists()
    # under an hour it starts; on a GPU it would start too (only CPUs are refused)
    monkeypatch.setattr(recipes, "time_steps", lambda *a, **k: 100.0)
    assert not recipes.plan_recipe(recipe, device="cpu", data_dir=shared_dir).too_long()


def test_the_estimate_leaves_the_trained_weights_unchanged(tmp_path, shared_dir):
    """The timed steps run on a copy and every RNG is restored: the same weights, bit for bit, as
    a run without the estimate. TRADES starts its attack from noise of the global RNG, so an
    estimate that left the RNG moved would change every batch's attack (checked: it does)."""
    from tutorial_lib.training import recipes

    recipe = _small_recipe(tmp_path, loss="trades", train_subset=256,
                           loss_kwargs={"beta": 1.0, "eps": 0.3, "alpha": 0.1, "steps": 1})
    kw = dict(device="cpu", data_dir=shared_dir, progress=False)
    with_estimate = recipes.run_recipe(recipe, root=tmp_path / "a", estimate=True, **kw)
    without = recipes.run_recipe(recipe, root=tmp_path / "b", estimate=False, **kw)
    assert _same_weights(with_estimate["path"], without["path"])


RECIPE_FILES = sorted((Path(__file__).resolve().parents[1] / "data" / "recipes").glob("*.json"))


@pytest.mark.parametrize("name", [p.stem for p in RECIPE_FILES])
def test_every_shipped_recipe_is_valid_in_both_budgets(name):
    from tutorial_lib.training.recipes import load_recipe, validate_recipe
    for full in (False, True):
        recipe = load_recipe(name, full=full)
        validate_recipe(recipe)
        assert recipe["name"] == name and recipe["description"]
