"""The checkers of notebook 00's exercises: the reference solutions pass, the stubs as handed out
say "not implemented yet" without raising, and typical wrong answers fail with a useful message."""
import sys
from pathlib import Path

import pytest
import torch

from tutorial_lib.exercises import check_accuracy, check_uniform_noise_in_ball

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb00_baseline import accuracy, uniform_noise_in_ball  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def _problems(result):
    return " | ".join(result.problems)


# ---------------------------------------------------------------- uniform_noise_in_ball

def test_noise_solution_passes():
    result = check_uniform_noise_in_ball(uniform_noise_in_ball, verbose=False)
    assert result.passed, result.problems
    assert result.started and result.cases > 0


def test_noise_stub_is_not_started():
    result = check_uniform_noise_in_ball(_stub, verbose=False)
    assert result.started is False and not result.passed
    assert "not implemented yet" in str(result)


def test_noise_without_clamp_fails():
    def no_clamp(x, eps, generator):
        return x + eps * (2 * torch.rand(x.shape, generator=generator) - 1)
    result = check_uniform_noise_in_ball(no_clamp, verbose=False)
    assert not result.passed
    assert "outside [0, 1]" in _problems(result)


def test_noise_of_one_sign_fails():
    def positive(x, eps, generator):
        return (x + eps * torch.rand(x.shape, generator=generator)).clamp(0, 1)
    result = check_uniform_noise_in_ball(positive, verbose=False)
    assert not result.passed
    assert "only one sign" in _problems(result)


def test_gaussian_noise_fails():
    def gaussian(x, eps, generator):
        return (x + eps * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    result = check_uniform_noise_in_ball(gaussian, verbose=False)
    assert not result.passed
    assert "moved by more than eps" in _problems(result)


def test_noise_from_global_rng_fails():
    def global_rng(x, eps, generator):
        return (x + eps * (2 * torch.rand(x.shape) - 1)).clamp(0, 1)
    result = check_uniform_noise_in_ball(global_rng, verbose=False)
    assert not result.passed
    assert "not the expected draw" in _problems(result)


def test_noise_in_place_fails():
    def in_place(x, eps, generator):
        x += eps * (2 * torch.rand(x.shape, generator=generator) - 1)
        return x.clamp_(0, 1)
    result = check_uniform_noise_in_ball(in_place, verbose=False)
    assert not result.passed
    assert "changed x in place" in _problems(result)


# ---------------------------------------------------------------- accuracy

def test_accuracy_solution_passes():
    result = check_accuracy(accuracy, verbose=False)
    assert result.passed, result.problems


def test_accuracy_stub_is_not_started():
    result = check_accuracy(_stub, verbose=False)
    assert result.started is False and not result.passed


def test_accuracy_as_percentage_fails():
    def percent(model, x, y, batch_size=100):
        return 100 * accuracy(model, x, y, batch_size)
    result = check_accuracy(percent, verbose=False)
    assert not result.passed
    assert "percentage" in _problems(result)


def test_accuracy_in_training_mode_fails():
    def train_mode(model, x, y, batch_size=100):
        with torch.no_grad():
            return sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                       for i in range(0, len(x), batch_size)) / len(x)
    result = check_accuracy(train_mode, verbose=False)
    assert not result.passed
    assert "model.eval()" in _problems(result)


def test_accuracy_dropping_the_last_batch_fails():
    def full_batches(model, x, y, batch_size=100):
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for i in range(0, len(x) - batch_size + 1, batch_size):
                correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                seen += batch_size
        return correct / seen
    result = check_accuracy(full_batches, verbose=False)
    assert not result.passed
    assert "last, smaller batch" in _problems(result)


def test_accuracy_in_one_batch_with_gradients_fails():
    def one_batch(model, x, y, batch_size=100):
        model.eval()
        return (model(x).argmax(1) == y).float().mean().item()
    result = check_accuracy(one_batch, verbose=False)
    assert not result.passed
    problems = _problems(result)
    assert "at most batch_size" in problems and "torch.no_grad()" in problems


def test_accuracy_returning_a_tensor_fails():
    def tensor(model, x, y, batch_size=100):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
                             ).eq(y).float().mean()
    result = check_accuracy(tensor, verbose=False)
    assert not result.passed
    assert ".item()" in _problems(result)


# ---------------------------------------------------------------- one-call answers are refused

def test_noise_from_the_library_pgd_fails():
    from tutorial_lib.attacks import PGD as Attack  # any name: the checker watches the code, not the name

    def one_call(x, eps, generator):
        return Attack(eps)._random_start(x, generator)

    result = check_uniform_noise_in_ball(one_call, verbose=False)
    assert result.started and not result.passed
    assert "calls the library's own" in _problems(result)


def test_accuracy_from_the_library_fails():
    from tutorial_lib import training

    def one_call(model, x, y, batch_size=100):
        return training.accuracy(model, (x, y))

    def via_predict(model, x, y, batch_size=100):
        return (training.predict(model, x, batch_size) == y).float().mean().item()

    for answer in (one_call, via_predict):
        result = check_accuracy(answer, verbose=False)
        assert result.started and not result.passed
        assert "calls the library's own" in _problems(result)
