"""Checker of notebook 03's implement exercise (tutorial_lib.exercises.trades): the reference
solution passes, the stub is reported as not started, typical mistakes are named."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib.exercises import check_trades_kl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb03_trades import trades_kl  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _problems(fn):
    result = check_trades_kl(fn, verbose=False)
    assert result.started and not result.passed
    return " ".join(result.problems)


def test_reference_solution_passes():
    result = check_trades_kl(trades_kl, verbose=False)
    assert result.passed, result.problems
    assert result.cases == 5


def test_stub_is_not_started_and_does_not_raise(capsys):
    def stub(logits_clean, logits_adv):
        raise NotImplementedError("your code here")

    result = check_trades_kl(stub)
    assert result.started is False and not result.passed
    assert "not implemented yet" in capsys.readouterr().out


def test_reversed_direction_is_named():
    def reversed_kl(logits_clean, logits_adv):
        return F.kl_div(F.log_softmax(logits_clean, 1), F.softmax(logits_adv, 1), reduction="batchmean")

    assert "the other way round" in _problems(reversed_kl)


def test_mean_over_classes_is_named():
    def elementwise_mean(logits_clean, logits_adv):
        return F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="mean")

    with pytest.warns(UserWarning):
        assert "divided by the number of classes" in _problems(elementwise_mean)


def test_sum_over_batch_is_named():
    def summed(logits_clean, logits_adv):
        return F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="sum")

    assert "sum over the batch" in _problems(summed)


def test_probabilities_instead_of_log_probabilities_is_named():
    def probs(logits_clean, logits_adv):
        return F.kl_div(F.softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="batchmean")

    assert "log-probabilities as its first argument" in _problems(probs)


def test_a_detached_answer_is_named():
    def detached(logits_clean, logits_adv):
        return trades_kl(logits_clean, logits_adv).detach()

    assert "carries no gradient" in _problems(detached)


def test_per_example_values_and_errors_are_reported_in_words():
    def per_example(logits_clean, logits_adv):
        return (F.softmax(logits_clean, 1) * (F.log_softmax(logits_clean, 1) - F.log_softmax(logits_adv, 1))).sum(1)

    assert "shape (8,), expected ()" in _problems(per_example)

    def broken(logits_clean, logits_adv):
        return logits_clean @ torch.ones(3)

    assert "raised RuntimeError" in _problems(broken)


def test_a_one_call_answer_through_the_library_loss_fails():
    """TradesLoss bent to return the KL (a 'model' that hands back the given logits, no inner steps):
    the value would be right, the checker refuses the call to the library's own loss."""
    from tutorial_lib.defenses import TradesLoss

    def via_library(logits_clean, logits_adv):
        outputs = iter([logits_clean, logits_clean, logits_adv])  # clean, the attack's reference, x'

        def lookup(_x):
            return next(outputs)

        y = logits_clean.argmax(1)
        total, _ = TradesLoss(beta=1.0, eps=1.0, steps=0, clip=None)(lookup, logits_clean, y)
        return total - F.cross_entropy(logits_clean, y)

    problems = _problems(via_library)
    assert "calls the library's own tutorial_lib.defenses.trades.TradesLoss" in problems
