import os

import pytest
import torch

from tutorial_lib.data import DATA_DIR_ENV

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mnist_test():
    """First 1000 MNIST test images (needs the data: $ROBUSTNESS_DATA_DIR or the cache)."""
    from tutorial_lib.data import test_subset
    return test_subset("mnist", 1000)


@pytest.fixture(scope="session")
def natural_model():
    from tutorial_lib.checkpoints import load_checkpoint
    model, _ = load_checkpoint("mnist_small_natural", device="cpu")
    return model


@pytest.fixture
def shared_dir():
    """A directory holding the MNIST .gz files: $ROBUSTNESS_DATA_DIR, else the project cache
    (filled by a first download)."""
    from tutorial_lib.data import cache_dir, load_dataset
    d = os.environ.get(DATA_DIR_ENV)
    if d:
        return d
    load_dataset("mnist", "test")  # downloads into the cache if needed
    return str(cache_dir())
