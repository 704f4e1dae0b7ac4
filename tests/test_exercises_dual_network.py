"""Notebook 05's exercise checker: the reference count_unstable passes, the stub is 'not
started', typical wrong answers fail with a message that names the mistake."""
import sys
from pathlib import Path

import pytest
import torch

from tutorial_lib import bounds
from tutorial_lib.exercises import check_count_unstable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb05_dual_network import count_unstable  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _problems(fn):
    result = check_count_unstable(fn, verbose=False)
    assert result.started and not result.passed
    return " ".join(result.problems)


def _pre(model, x, eps, fn=bounds.dual_bounds, **kwargs):
    with torch.no_grad():
        return fn(model, x, model(x).argmax(1), eps, **kwargs).pre_bounds


def _counts(pre, strict=True):
    if strict:
        return torch.stack([((lo < 0) & (up > 0)).flatten(1).sum(1) for lo, up in pre], 1)
    return torch.stack([((lo <= 0) & (up >= 0)).flatten(1).sum(1) for lo, up in pre], 1)


def test_reference_solution_passes():
    result = check_count_unstable(count_unstable, verbose=False)
    assert result.passed, result.problems
    assert result.cases >= 3


def test_stub_is_not_started_and_does_not_raise():
    def count_unstable(model, x, eps):
        raise NotImplementedError("your code here")

    result = check_count_unstable(count_unstable, verbose=False)
    assert result.started is False and not result.passed


def test_interval_bounds_instead_of_dual_fail():
    msg = _problems(lambda m, x, eps: _counts(_pre(m, x, eps, bounds.interval_bounds)))
    assert "counts from interval bounds" in msg


def test_non_strict_inequalities_fail():
    msg = _problems(lambda m, x, eps: _counts(_pre(m, x, eps), strict=False))
    assert "l = 0 or u = 0" in msg


def test_no_pixel_box_fails():
    msg = _problems(lambda m, x, eps: _counts(_pre(m, x, eps, clip=None)))
    assert "ignore the pixel box" in msg


def test_total_instead_of_per_layer_fails():
    msg = _problems(lambda m, x, eps: _counts(_pre(m, x, eps)).sum(1))
    assert "one count per ReLU layer" in msg


def test_fractions_instead_of_counts_fail():
    def fractions(m, x, eps):
        pre = _pre(m, x, eps)
        return torch.stack([((lo < 0) & (up > 0)).flatten(1).float().mean(1) for lo, up in pre], 1)

    assert "not fractions" in _problems(fractions)


def test_wrong_type_fails():
    assert "return a torch.Tensor" in _problems(lambda m, x, eps: _counts(_pre(m, x, eps)).tolist())
