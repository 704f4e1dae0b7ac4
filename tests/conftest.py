import inspect
import os

import pytest
import torch

from tutorial_lib import data as D

pytest_plugins = ["pytester"]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_pycollect_makeitem(collector, name, obj):
    """Collect only the test functions a test module defines: a library function whose name
    starts with ``test`` (``data.test_subset``) imported into a test module is not a test."""
    if inspect.isfunction(obj) and isinstance(collector, pytest.Module) \
            and obj.__module__ != collector.obj.__name__:
        return []
    return None


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny tensors: extra threads only add overhead (and stall on
    a busy CPU). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def plain(monkeypatch):
    """A callable that runs its argument with the bounds' fast paths switched off (the dense pass:
    no receptive-field windows, the ReLU's constant terms over every neuron), the reference the
    fast paths are tested against."""
    from tutorial_lib.bounds import patches
    from tutorial_lib.bounds.activations import DualActivation, DualReLU

    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(patches, "applies", lambda layers, i: False)
            m.setattr(DualReLU, "_intercept_dots", DualActivation._intercept_dots)
            return fn()
    return run


@pytest.fixture(scope="session")
def mnist_test():
    """First 1000 MNIST test images (needs the data: $ROBUSTNESS_DATA_DIR or the cache)."""
    return D.test_subset("mnist", 1000)


@pytest.fixture(scope="session")
def natural_model():
    from tutorial_lib.checkpoints import load_checkpoint
    model, _ = load_checkpoint("mnist_small_natural", device="cpu")
    return model


@pytest.fixture
def shared_dir():
    """A directory holding the MNIST .gz files: $ROBUSTNESS_DATA_DIR, else the project cache
    (filled by a first download)."""
    d = os.environ.get(D.DATA_DIR_ENV)
    if d:
        return d
    D.load_dataset("mnist", "test")  # downloads into the cache if needed
    return str(D.cache_dir())
