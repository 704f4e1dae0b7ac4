import gzip
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tutorial_lib import data as D


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(D, "_MEMO", {})


def _copy_mnist(src_root: Path, dst: Path, layout: str) -> Path:
    src = Path(src_root) / "MNIST" / "raw"
    target = dst / "MNIST" / "raw" if layout == "torchvision" else dst
    target.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.gz"):
        shutil.copy(f, target / f.name)
    return target


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_loads_from_directory_of_gz_copies(shared_dir, tmp_path, layout):
    _copy_mnist(shared_dir, tmp_path, layout)
    x, y = D.load_dataset("mnist", "test", data_dir=tmp_path).tensors
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    # published MNIST test label counts
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_env_variable_is_used(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    _copy_mnist(shared_dir, tmp_path, "flat")
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(D.DataUnavailableError, match="train-labels-idx1-ubyte.gz"):
        D.load_dataset("mnist", "train")


def test_checksum_failure_names_the_file(shared_dir, tmp_path):
    target = _copy_mnist(shared_dir, tmp_path, "flat")
    f = target / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(f.read_bytes()))
    content[100] = (content[100] + 1) % 10  # one label changed: still a valid IDX file
    f.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(D.ChecksumError, match="t10k-labels-idx1-ubyte"):
        D.load_dataset("mnist", "test", data_dir=tmp_path)


def test_unreadable_file_is_a_clear_error(shared_dir, tmp_path):
    target = _copy_mnist(shared_dir, tmp_path, "flat")
    (target / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(D.ChecksumError, match="t10k-images"):
        D.load_dataset("mnist", "test", data_dir=tmp_path)


def test_offline_without_copy_says_which_variable_to_set(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(D.CACHE_DIR_ENV, str(tmp_path / "cache"))

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(D.DataUnavailableError) as e:
        D.load_dataset("mnist", "train")
    assert D.DATA_DIR_ENV in str(e.value) and "train-images-idx3-ubyte.gz" in str(e.value)
    with pytest.raises(D.DataUnavailableError, match=D.DATA_DIR_ENV):
        D.load_dataset("mnist", "train", download=False)


def test_cache_is_used_after_download(shared_dir, tmp_path, monkeypatch):
    """A copy in the project cache (torchvision layout) is found without any setting."""
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(D.CACHE_DIR_ENV, str(tmp_path))
    _copy_mnist(shared_dir, tmp_path, "torchvision")
    x, y = D.load_dataset("mnist", "test", download=False).tensors
    assert len(x) == 10000


def test_fashion_mnist_from_shared(shared_dir):
    x, y = D.load_dataset("fashion-mnist", "test", data_dir=shared_dir).tensors
    assert x.shape == (10000, 1, 28, 28) and torch.bincount(y).tolist() == [1000] * 10


def test_bad_names():
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        D.load_dataset("mnist", "validation")


def _write_fake_cifar(root: Path, n: int = 20) -> dict:
    folder = root / D.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    md5 = {}
    for name in list(D.CIFAR10_MD5):
        entry = {"data": torch.randint(0, 256, (n, 3072), generator=g, dtype=torch.uint8).numpy(),
                 "labels": torch.randint(0, 10, (n,), generator=g).tolist()}
        raw = pickle.dumps(entry)
        (folder / name).write_bytes(raw)
        md5[name] = D._digest(raw, "md5")
    return md5


def test_cifar10_code_path_on_synthetic_files(tmp_path, monkeypatch):
    md5 = _write_fake_cifar(tmp_path)
    with pytest.raises(D.ChecksumError, match="MD5"):  # real checksums reject synthetic files
        D.load_dataset("cifar10", "test", data_dir=tmp_path)
    for k, v in md5.items():
        monkeypatch.setitem(D.CIFAR10_MD5, k, v)
    D._MEMO.clear()
    x, y = D.load_dataset("cifar10", "train", data_dir=tmp_path).tensors
    assert x.shape == (100, 3, 32, 32) and y.shape == (100,)
    assert 0 <= x.min() and x.max() <= 1
    raw = pickle.loads((tmp_path / D.CIFAR10_FOLDER / "data_batch_1").read_bytes())
    # channel-first layout: the first 1024 bytes of a row are the red plane
    assert torch.allclose(x[0, 0].flatten() * 255, torch.as_tensor(raw["data"][0, :1024]).float())


def test_subsets_and_loaders_are_deterministic(shared_dir):
    x1, y1 = D.test_subset("mnist", 100, data_dir=shared_dir)
    x2, y2 = D.load_dataset("mnist", "test", data_dir=shared_dir).tensors
    assert torch.equal(x1, x2[:100]) and torch.equal(y1, y2[:100])
    a, _ = D.get_loaders("mnist", 32, train_subset=256, data_dir=shared_dir, seed=3)
    b, _ = D.get_loaders("mnist", 32, train_subset=256, data_dir=shared_dir, seed=3)
    assert torch.equal(next(iter(a))[1], next(iter(b))[1])


@pytest.mark.parametrize("n", [0, -5, 2.5, True, "100"])
def test_subset_refuses_a_size_that_is_not_a_positive_int(shared_dir, n):
    with pytest.raises(ValueError, match="positive int"):
        D.test_subset("mnist", n, data_dir=shared_dir)


def test_subset_larger_than_the_split_names_the_available_size(shared_dir):
    assert len(D.test_subset("mnist", 10000, data_dir=shared_dir)[0]) == 10000  # the whole split is fine
    with pytest.raises(ValueError, match=r"20000 .*mnist test split has only 10000"):
        D.test_subset("mnist", 20000, data_dir=shared_dir)
    with pytest.raises(ValueError, match=r"train split has only 60000"):
        D.get_loaders("mnist", 32, train_subset=60001, data_dir=shared_dir)
    with pytest.raises(ValueError, match=r"test split has only 10000"):
        D.get_loaders("mnist", 32, test_subset=10001, data_dir=shared_dir)


def test_library_function_named_test_subset_is_not_collected(pytester):
    """A library function named test_* imported into a test module is not run as a test."""
    pytester.makeconftest(open(__file__.replace("test_data.py", "conftest.py")).read())
    pytester.makepyfile(test_imports="from tutorial_lib.data import test_subset\n\n"
                                     "def test_real():\n    pass\n")
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("name", ["moons", "circles", "blobs", "spiral"])
def test_toys(name):
    x, y = D.make_toy(name, n=101, seed=1)
    assert x.shape == (101, 2) and set(y.tolist()) == {0, 1}
    assert torch.equal(x, D.make_toy(name, n=101, seed=1)[0])
    with pytest.raises(ValueError):
        D.make_toy("swissroll")
