import pytest
import torch

from tutorial_lib.checkpoints import (
    REGISTRY,
    CheckpointNotFoundError,
    ChecksumMismatchError,
    load_checkpoint,
    read_registry,
    register_checkpoint,
    save_checkpoint,
    sha256_file,
)
from tutorial_lib.models import build_model


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("toy_mlp", hidden=(8,))
    path = tmp_path / "toy.pt"
    sha = save_checkpoint(model, path, "toy_mlp", {"hidden": [8]}, recipe={"epochs": 1}, metrics={"acc": 0.5})
    register_checkpoint("toy", path, sha, registry=tmp_path / "registry.json")
    loaded, info = load_checkpoint("toy", registry=tmp_path / "registry.json")
    x = torch.randn(5, 2)
    assert torch.equal(model(x), loaded(x))
    assert info["metrics"] == {"acc": 0.5} and info["recipe"] == {"epochs": 1}
    assert not loaded.training


def test_tampered_file_is_rejected(tmp_path):
    model = build_model("toy_mlp")
    path = tmp_path / "toy.pt"
    sha = save_checkpoint(model, path, "toy_mlp")
    register_checkpoint("toy", path, sha, registry=tmp_path / "registry.json")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        load_checkpoint("toy", registry=tmp_path / "registry.json")


def test_missing_file_is_an_error_not_a_retrain(tmp_path):
    model = build_model("toy_mlp")
    path = tmp_path / "toy.pt"
    register_checkpoint("toy", path, save_checkpoint(model, path, "toy_mlp"), registry=tmp_path / "r.json")
    path.unlink()
    with pytest.raises(CheckpointNotFoundError, match="python -m tutorial_lib.train toy"):
        load_checkpoint("toy", registry=tmp_path / "r.json")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        load_checkpoint("nonexistent", registry=tmp_path / "r.json")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ChecksumMismatchError, match="not a tutorial_lib checkpoint"):
        load_checkpoint(path)


def test_shipped_natural_model_verifies_and_is_accurate(mnist_test):
    entry = read_registry()["mnist_small_natural"]
    assert sha256_file(REGISTRY.parent / entry["file"]) == entry["sha256"]
    model, info = load_checkpoint("mnist_small_natural")
    assert info["metrics"]["test_acc"] >= 0.985
    x, y = mnist_test
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.98
    assert info["recipe"]["budget"] == "shipped" and info["recipe"]["epochs"] >= 1


def test_missing_shipped_file_names_a_restore_command_that_works_from_the_repo_root(tmp_path, monkeypatch):
    from tutorial_lib import checkpoints

    monkeypatch.setattr(checkpoints, "REPO_ROOT", tmp_path)  # tmp_path plays the repository
    ck = tmp_path / "data" / "checkpoints"
    path = ck / "toy.pt"
    register_checkpoint("toy", path, save_checkpoint(build_model("toy_mlp"), path, "toy_mlp"),
                        registry=ck / "registry.json")
    path.unlink()
    with pytest.raises(CheckpointNotFoundError) as err:
        load_checkpoint("toy", registry=ck / "registry.json")
    assert "`git checkout -- data/checkpoints/toy.pt`" in str(err.value)
    assert "python -m tutorial_lib.train toy --promote" in str(err.value)
    with pytest.raises(CheckpointNotFoundError, match="did you mean 'toy'"):
        load_checkpoint("tyo", registry=ck / "registry.json")
