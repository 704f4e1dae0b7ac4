import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tutorial_lib.checkpoints import load_checkpoint, read_registry
from tutorial_lib.data import get_loaders
from tutorial_lib.models import build_model
from tutorial_lib.training import accuracy, fit, linear_ramp

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
