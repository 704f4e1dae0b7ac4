"""Notebook 04's exercise checkers: the reference solution passes, the stub is 'not started',
typical wrong answers fail with a message that names the mistake."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tutorial_lib.exercises import check_interval_beats_dual

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb04_polytope import interval_beats_dual  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _problems(fn):
    result = check_interval_beats_dual(fn, verbose=False)
    assert result.started and not result.passed
    return " ".join(result.problems)


def test_reference_solution_passes():
    result = check_interval_beats_dual(interval_beats_dual, verbose=False)
    assert result.passed, result.problems
    assert result.started


def test_stub_is_not_started_and_does_not_raise():
    def interval_beats_dual():
        raise NotImplementedError("your code here")

    result = check_interval_beats_dual(interval_beats_dual, verbose=False)
    assert result.started is False and not result.passed
    assert "not implemented yet" in str(result)


def _pixel_mlp():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


def test_network_where_the_dual_is_tighter_fails():
    """A typical random network: the dual is at least as tight on every margin."""
    net = _pixel_mlp()
    spec = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]])
    msg = _problems(lambda: (net, torch.full((1, 4), 0.5), 0.1, spec))
    assert "interval bounds do not beat the dual" in msg


def test_linear_network_fails():
    """Without a ReLU both bounds are exact: equal, so interval does not beat the dual."""
    net = nn.Sequential(nn.Linear(2, 2))
    msg = _problems(lambda: (net, torch.zeros(1, 2), 1.0, torch.tensor([[1.0, -1.0]])))
    assert "do not beat the dual" in msg


def test_zero_radius_fails():
    model, x, _, spec = interval_beats_dual()
    msg = _problems(lambda: (model, x, 0.0, spec))
    assert "eps must be one number > 0" in msg


def test_wrong_return_value_fails():
    model, x, eps, spec = interval_beats_dual()
    assert "return a tuple (model, x, eps, spec)" in _problems(lambda: (model, x, eps))
    assert "x: expected a floating tensor of shape (1" in _problems(lambda: (model, torch.zeros(1), eps, spec))


def test_unsupported_layer_is_reported_in_words():
    net = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1), nn.ReLU(), nn.Linear(1, 2)).eval()
    msg = _problems(lambda: (net, torch.zeros(1, 1), 1.0, torch.tensor([[1.0, -1.0]])))
    assert "the bound functions refused your example" in msg and "BatchNorm1d" in msg


def test_student_error_is_reported_not_raised():
    def interval_beats_dual():
        return 1 / 0

    msg = _problems(interval_beats_dual)
    assert "ZeroDivisionError" in msg
