"""Datasets as tensors in [0, 1] with shape (N, C, H, W), plus 2-D toy problems.

Where MNIST / Fashion-MNIST come from, in order:

1. an explicit directory: the ``data_dir`` argument, else the environment variable
   ``ROBUSTNESS_DATA_DIR``. It holds the original IDX files (``.gz`` or uncompressed),
   either flat or in torchvision's layout ``<dir>/MNIST/raw/``;
2. the project's cache, ``data/cache/`` in the repository (or ``ROBUSTNESS_CACHE_DIR``);
3. torchvision's download into that cache.

Every file is verified by the SHA-256 of its uncompressed content before use.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import numbers
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "DATA_DIR_ENV", "CACHE_DIR_ENV", "DataUnavailableError", "ChecksumError",
    "load_dataset", "get_loaders", "test_subset", "make_toy", "DATASETS", "cache_dir",
    "CLASS_NAMES",
]

DATA_DIR_ENV = "ROBUSTNESS_DATA_DIR"
CACHE_DIR_ENV = "ROBUSTNESS_CACHE_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent


class DataUnavailableError(RuntimeError):
    """The dataset is neither in the given directory, nor cached, nor downloadable."""


class ChecksumError(RuntimeError):
    """A file's content does not match its published SHA-256."""


@dataclass(frozen=True)
class _IdxSpec:
    folder: str  # torchvision's folder name under the root
    files: Dict[str, str]  # role -> file name (uncompressed)
    sha256: Dict[str, str]  # file name -> SHA-256 of the uncompressed content


_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

DATASETS: Dict[str, _IdxSpec] = {
    "mnist": _IdxSpec("MNIST", _MNIST_FILES, {
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    }),
    "fashion_mnist": _IdxSpec("FashionMNIST", _MNIST_FILES, {
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    }),
}

# CIFAR-10 python batches (cifar-10-batches-py/*): MD5 as published with the archive and
# pinned by torchvision; SHA-256 of these pickles is not published, so MD5 is what we can check.
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5: Dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}

_ALIASES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "fashion-mnist": "fashion_mnist",
            "fashionmnist": "fashion_mnist", "cifar10": "cifar10", "cifar-10": "cifar10"}


def _canonical(name: str) -> str:
    key = str(name).lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; known: mnist, fashion_mnist, cifar10")
    return _ALIASES[key]


def cache_dir() -> Path:
    """The project's data cache: ``$ROBUSTNESS_CACHE_DIR`` or ``<repo>/data/cache``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or REPO_ROOT / "data" / "cache")


def _digest(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _find_file(root: Path, folder: str, fname: str) -> Optional[Path]:
    """A copy of ``fname`` (``.gz`` or not) flat in ``root`` or in ``root/folder/raw``."""
    for d in (root, root / folder / "raw", root / folder):
        for candidate in (d / (fname + ".gz"), d / fname):
            if candidate.is_file():
                return candidate
    return None


def _read_verified(path: Path, expected: str, algorithm: str = "sha256") -> bytes:
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ChecksumError(f"cannot read {path}: {e}") from e
    got = _digest(data, algorithm)
    if got != expected:
        raise ChecksumError(
            f"{path} is corrupt or not the original file: {algorithm.upper()} of its "
            f"uncompressed content is {got}, expected {expected}. Delete it and fetch it again.")
    return data


def _parse_idx(data: bytes, path: Path) -> torch.Tensor:
    """Parse an IDX file (big-endian; type 0x08 = uint8) into a uint8 tensor."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ChecksumError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(dims):
        raise ChecksumError(f"{path}: IDX header says {dims} but the file holds {len(data) - offset} bytes")
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(dims)


def _locate_idx(spec: _IdxSpec, data_dir: Optional[Union[str, Path]], download: bool) -> Dict[str, Path]:
    """Find (and if needed fetch into the cache) every file of an IDX dataset."""
    explicit = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    names = list(spec.files.values())
    if explicit:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            source = "data_dir" if data_dir else DATA_DIR_ENV
            raise DataUnavailableError(f"data directory {root} (from {source}) does not exist")
        found = {n: _find_file(root, spec.folder, n) for n in names}
        missing = [n for n, p in found.items() if p is None]
        if missing:
            raise DataUnavailableError(
                f"{root} lacks {', '.join(m + '.gz' for m in missing)} for {spec.folder} "
                f"(looked in {root} and {root / spec.folder / 'raw'})")
        return found  # type: ignore[return-value]
    cache = cache_dir()
    found = {n: _find_file(cache, spec.folder, n) for n in names}
    if all(found.values()):
        return found  # type: ignore[return-value]
    if not download:
        raise DataUnavailableError(_offline_message(spec, cache, "download=False"))
    try:
        import torchvision.datasets as tvd
        cls = {"MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST}[spec.folder]
        cache.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(root=str(cache), train=train, download=True)
    except Exception as e:  # any network failure
        raise DataUnavailableError(_offline_message(spec, cache, f"download failed: {e}")) from e
    found = {n: _find_file(cache, spec.folder, n) for n in names}
    if not all(found.values()):
        raise DataUnavailableError(_offline_message(spec, cache, "download left files missing"))
    return found  # type: ignore[return-value]


def _offline_message(spec: _IdxSpec, cache: Path, why: str) -> str:
    files = ", ".join(f + ".gz" for f in spec.files.values())
    return (f"{spec.folder} is not available ({why}). Either allow torchvision to download it, "
            f"or set the environment variable {DATA_DIR_ENV} (or pass data_dir=) to a directory "
            f"holding the original files {files} (flat, or in {spec.folder}/raw/). They are the "
            f"standard files distributed by the dataset's authors and torchvision's mirrors; "
            f"the cache is {cache}.")


def _load_idx_dataset(name: str, split: str, data_dir: Optional[Union[str, Path]], download: bool) -> TensorDataset:
    spec = DATASETS[name]
    paths = _locate_idx(spec, data_dir, download)
    prefix = "train" if split == "train" else "test"
    img_name, lbl_name = spec.files[f"{prefix}_images"], spec.files[f"{prefix}_labels"]
    images = _parse_idx(_read_verified(paths[img_name], spec.sha256[img_name]), paths[img_name])
    labels = _parse_idx(_read_verified(paths[lbl_name], spec.sha256[lbl_name]), paths[lbl_name])
    if images.shape[0] != labels.shape[0]:
        raise ChecksumError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
    x = images.unsqueeze(1).float().div_(255.0)
    return TensorDataset(x, labels.long())


def _load_cifar10(split: str, data_dir, download: bool, md5: Dict[str, str] = CIFAR10_MD5) -> TensorDataset:
    explicit = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    roots = [Path(explicit).expanduser()] if explicit else [cache_dir()]
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]

    def find(root: Path):
        for d in (root / CIFAR10_FOLDER, root):
            if all((d / n).is_file() for n in names):
                return d
        return None

    folder = find(roots[0])
    if folder is None and not explicit and download:
        try:
            import torchvision.datasets as tvd
            roots[0].mkdir(parents=True, exist_ok=True)
            tvd.CIFAR10(root=str(roots[0]), train=(split == "train"), download=True)
        except Exception as e:
            raise DataUnavailableError(
                f"CIFAR-10 is not available (download failed: {e}). Set {DATA_DIR_ENV} (or pass "
                f"data_dir=) to a directory holding {CIFAR10_FOLDER}/ from the original "
                f"cifar-10-python.tar.gz archive.") from e
        folder = find(roots[0])
    if folder is None:
        raise DataUnavailableError(
            f"CIFAR-10 is not available in {roots[0]}. Set {DATA_DIR_ENV} (or pass data_dir=) to "
            f"a directory holding {CIFAR10_FOLDER}/ ({', '.join(names)}) from the original "
            f"cifar-10-python.tar.gz archive, or allow the download.")
    xs, ys = [], []
    for n in names:
        raw = _read_verified(folder / n, md5[n], "md5")
        try:
            entry = pickle.loads(raw, encoding="latin1")
            data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
            x = torch.as_tensor(data, dtype=torch.uint8).reshape(-1, 3, 32, 32)
            y = torch.as_tensor(labels, dtype=torch.long)
        except Exception as e:
            raise ChecksumError(f"{folder / n} is not a CIFAR-10 batch: {e}") from e
        xs.append(x)
        ys.append(y)
    return TensorDataset(torch.cat(xs).float().div_(255.0), torch.cat(ys))


_MEMO: Dict[Tuple[str, str, str], TensorDataset] = {}


def load_dataset(name: str, split: str = "train", data_dir: Optional[Union[str, Path]] = None,
                 download: bool = True) -> TensorDataset:
    """Load a whole split as a TensorDataset of x (N, C, H, W) float in [0, 1] and y (N,) long.

    ``name``: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``; ``split``: ``"train"`` or ``"test"``.
    Results are memoised per process (datasets are small enough to keep in memory).
    """
    key = _canonical(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    memo_key = (key, split, str(data_dir or os.environ.get(DATA_DIR_ENV) or cache_dir()))
    if memo_key not in _MEMO:
        if key == "cifar10":
            _MEMO[memo_key] = _load_cifar10(split, data_dir, download)
        else:
            _MEMO[memo_key] = _load_idx_dataset(key, split, data_dir, download)
    return _MEMO[memo_key]


def _subset(ds: TensorDataset, n: Optional[int], what: str = "the split") -> TensorDataset:
    """The first ``n`` examples of ``ds`` (all of it for None); ``n`` must be in [1, len(ds)]."""
    if n is None:
        return ds
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"subset size must be a positive int, got {n!r}")
    x, y = ds.tensors
    if n > len(x):
        raise ValueError(f"asked for {n} examples but {what} has only {len(x)}; "
                         f"pass n <= {len(x)} (or None for all of them)")
    return TensorDataset(x[:n], y[:n])


def get_loaders(name: str, batch_size: int = 64, train_subset: Optional[int] = None,
                test_subset: Optional[int] = None, data_dir: Optional[Union[str, Path]] = None, seed: int = 0,
                num_workers: int = 0, download: bool = True) -> Tuple[DataLoader, DataLoader]:
    """(train_loader, test_loader). The train loader shuffles with a seeded generator;
    subsets are the first ``n`` examples of each split (deterministic; a subset larger than its
    split is a ValueError)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    train = _subset(load_dataset(name, "train", data_dir, download), train_subset, f"the {name} train split")
    test = _subset(load_dataset(name, "test", data_dir, download), test_subset, f"the {name} test split")
    g = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=g, num_workers=num_workers),
            DataLoader(test, batch_size=max(batch_size, 256), shuffle=False, num_workers=num_workers))


def test_subset(name: str = "mnist", n: int = 1000, data_dir: Optional[Union[str, Path]] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test examples as tensors (x (n, C, H, W) in [0, 1], y (n,)).

    ``n`` must be between 1 and the size of the test split (10,000 for MNIST); anything else is a
    ValueError that names the available size. (Tests call it as ``data.test_subset`` through the
    module, so pytest never mistakes this function for a test.)
    """
    return _subset(load_dataset(name, "test", data_dir), n, f"the {name} test split").tensors


def make_toy(name: str = "moons", n: int = 200, noise: float = 0.1, seed: int = 0
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """2-D two-class toy data: x (n, 2) float, y (n,) long in {0, 1}.

    ``name``: ``"moons"`` (two interleaved half circles), ``"circles"`` (a disc inside a ring),
    ``"blobs"`` (two Gaussian clusters) or ``"spiral"`` (two interleaved spirals).
    Coordinates are roughly in [-1.5, 2.5]; ``noise`` is the std of added Gaussian noise.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    g = torch.Generator().manual_seed(seed)
    n0 = n // 2
    y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n - n0, dtype=torch.long)])
    t = torch.rand(n, generator=g)
    if name == "moons":
        a = math.pi * t
        x = torch.stack([torch.cos(a), torch.sin(a)], 1)
        x[n0:] = torch.stack([1 - torch.cos(a[n0:]), 0.5 - torch.sin(a[n0:])], 1)
    elif name == "circles":
        a = 2 * math.pi * t
        r = torch.where(y == 0, torch.full_like(t, 1.0), torch.full_like(t, 0.4))
        x = torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
    elif name == "blobs":
        centers = torch.tensor([[-0.7, -0.3], [0.7, 0.3]])
        x = centers[y] + 0.35 * torch.randn(n, 2, generator=g)
    elif name == "spiral":
        r = 0.2 + t
        a = 3 * math.pi * t + math.pi * y.float()
        x = torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
    else:
        raise ValueError(f"unknown toy dataset {name!r}; known: moons, circles, blobs, spiral")
    x = x + noise * torch.randn(n, 2, generator=g)
    return x, y


def prepare(names: Sequence[str] = ("mnist",), data_dir: Optional[Union[str, Path]] = None) -> None:
    """Load (downloading if needed) and verify each dataset; prints one line per split."""
    for name in names:
        for split in ("train", "test"):
            x, y = load_dataset(name, split, data_dir).tensors
            print(f"{name} {split}: {tuple(x.shape)} in [{x.min():.0f}, {x.max():.0f}], "
                  f"{len(y.unique())} classes, verified")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m tutorial_lib.data [NAMES] [--data-dir DIR]``: fetch and verify datasets. An
    unknown name, a missing or corrupt file is one line on stderr and exit code 2."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m tutorial_lib.data",
        description="Load (downloading into the cache if needed) and verify datasets; one line per "
                    f"split. Offline: set {DATA_DIR_ENV} (or --data-dir) to a directory holding the "
                    f"original files; {CACHE_DIR_ENV} moves the cache (default data/cache/).")
    p.add_argument("names", nargs="*", default=["mnist"], metavar="NAME",
                   help="mnist (default), fashion_mnist or cifar10")
    p.add_argument("--data-dir", default=None, help=f"directory with the original files (else ${DATA_DIR_ENV})")
    args = p.parse_args(argv)
    try:
        for name in args.names:
            _canonical(name)  # every name checked before anything is downloaded
        prepare(args.names, args.data_dir)
    except (ValueError, DataUnavailableError, ChecksumError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")


__all__ += ["main"]

if __name__ == "__main__":
    main()
