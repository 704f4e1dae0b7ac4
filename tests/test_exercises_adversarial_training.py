"""The checker of notebook 02's exercise: the reference solution passes, the stub as handed out
says "not implemented yet" without raising, and typical wrong answers fail with a useful message."""
import sys
from pathlib import Path

import pytest

from tutorial_lib.exercises import check_cw_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb02_adversarial_training import cw_loss  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

INF = float("inf")


def _problems(result):
    return " | ".join(result.problems)


def _true_and_best_other(logits, y):
    true = logits.gather(1, y[:, None]).squeeze(1)
    return true, logits.scatter(1, y[:, None], -INF).max(1).values


def test_cw_loss_solution_passes():
    result = check_cw_loss(cw_loss, verbose=False)
    assert result.passed, result.problems
    assert result.started and result.cases >= 8


def test_cw_loss_stub_is_not_started():
    def stub(logits, y, kappa=INF):
        raise NotImplementedError("your code here")
    result = check_cw_loss(stub, verbose=False)
    assert result.started is False and not result.passed
    assert "not implemented yet" in str(result)


def test_cw_loss_sign_flipped_fails():
    def flipped(logits, y, kappa=INF):
        true, other = _true_and_best_other(logits, y)
        return (true - other).clamp(max=kappa)
    result = check_cw_loss(flipped, verbose=False)
    assert not result.passed
    assert "the sign is flipped" in _problems(result)


def test_cw_loss_true_class_in_the_max_fails():
    def with_true(logits, y, kappa=INF):
        true, _ = _true_and_best_other(logits, y)
        return (logits.max(1).values - true).clamp(max=kappa)
    result = check_cw_loss(with_true, verbose=False)
    assert not result.passed
    assert "never negative" in _problems(result) and "j != y" in _problems(result)


def test_cw_loss_ignoring_kappa_fails():
    def no_cap(logits, y, kappa=INF):
        true, other = _true_and_best_other(logits, y)
        return other - true
    result = check_cw_loss(no_cap, verbose=False)
    assert not result.passed
    assert "not capped at kappa" in _problems(result)


def test_cw_loss_mean_fails():
    def mean(logits, y, kappa=INF):
        return cw_loss(logits, y, kappa).mean()
    result = check_cw_loss(mean, verbose=False)
    assert not result.passed
    assert "one loss per example" in _problems(result)


def test_cw_loss_without_gradient_fails():
    def detached(logits, y, kappa=INF):
        return cw_loss(logits.detach(), y, kappa)
    result = check_cw_loss(detached, verbose=False)
    assert not result.passed
    assert "carries no gradient" in _problems(result)


def test_cw_loss_in_place_fails():
    def in_place(logits, y, kappa=INF):
        true = logits.gather(1, y[:, None]).squeeze(1).clone()
        logits.scatter_(1, y[:, None], -INF)
        return (logits.max(1).values - true).clamp(max=kappa)
    result = check_cw_loss(in_place, verbose=False)
    assert not result.passed
    assert "changed its inputs in place" in _problems(result)


def test_cw_loss_on_probabilities_fails():
    def on_softmax(logits, y, kappa=INF):
        return cw_loss(logits.softmax(1), y, kappa)
    result = check_cw_loss(on_softmax, verbose=False)
    assert not result.passed
    assert "softmax probabilities" in _problems(result)


def test_cw_loss_error_is_reported_not_raised():
    def broken(logits, y, kappa=INF):
        return logits[:, y.max() + 100]
    result = check_cw_loss(broken, verbose=False)
    assert not result.passed and result.started
    assert "IndexError" in _problems(result)


# ---------------------------------------------------------------- a one-call answer is refused

def test_cw_loss_from_the_library_margin_fails():
    from tutorial_lib.attacks import margin as library_margin

    def one_call(logits, y, kappa=float("inf")):
        return (-library_margin(logits, y)).clamp(max=kappa)

    result = check_cw_loss(one_call, verbose=False)
    assert result.started and not result.passed
    assert "calls the library's own" in _problems(result)
