"""Notebook 10's exercise checkers: the reference solutions pass, the stubs are 'not started', and
typical wrong answers fail with a message that names the mistake."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tutorial_lib import bounds
from tutorial_lib.exercises import check_crown_lower_slope, check_ibp_beats_crown
from tutorial_lib.exercises.certified_training import _mlp, backward_bound, ibp_pre_bounds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb10_certified_training import crown_lower_slope, ibp_beats_crown  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _problems(check, fn):
    result = check(fn, verbose=False)
    assert result.started and not result.passed
    return " ".join(result.problems)


@pytest.mark.parametrize("check, fn", [(check_crown_lower_slope, crown_lower_slope),
                                       (check_ibp_beats_crown, ibp_beats_crown)])
def test_reference_solutions_pass(check, fn):
    result = check(fn, verbose=False)
    assert result.passed and result.started, result.problems


@pytest.mark.parametrize("check", [check_crown_lower_slope, check_ibp_beats_crown])
def test_stubs_are_not_started(check):
    def stub(*args):
        raise NotImplementedError

    result = check(stub, verbose=False)
    assert result.started is False and not result.passed


def test_the_page_backward_pass_with_the_dual_slope_is_the_dual_over_interval_bounds():
    # the checker's pass is the page's: with u / (u - l) it gives the dual network's bound on the same pre-bounds
    net = _mlp(3)
    x, y = torch.rand(3, 6, dtype=torch.float64), torch.tensor([0, 1, 2])
    linears = [m for m in net if isinstance(m, nn.Linear)]
    pre = ibp_pre_bounds(linears, x, 0.2)
    ours = backward_bound(linears, pre, x, 0.2, bounds.margin_spec(y, 3).double(), lambda l, u: u / (u - l))
    ref = bounds.dual_bounds(net, x, y, 0.2, pre_bounds=pre).lower
    ibp = bounds.interval_bounds(net, x, y, 0.2)
    for (l, u), (l2, u2) in zip(pre, ibp.pre_bounds):
        torch.testing.assert_close(l, l2.flatten(1))
        torch.testing.assert_close(u, u2.flatten(1))
    torch.testing.assert_close(ours, ref)


def test_wrong_slopes_are_named():
    assert "CROWN's is" in _problems(check_crown_lower_slope, lambda l, u: u / (u - l))  # the dual's slope
    assert "CROWN's is" in _problems(check_crown_lower_slope, lambda l, u: (u < -l).to(u.dtype))  # reversed
    assert "outside [0, 1]" in _problems(check_crown_lower_slope, lambda l, u: 2 * torch.ones_like(u))
    assert "shape" in _problems(check_crown_lower_slope, lambda l, u: (u >= -l).double().flatten())


def test_the_library_crown_is_refused():
    def lazy(l, u):
        bounds.crown_bounds(nn.Sequential(nn.Linear(1, 1)), torch.zeros(1, 1), None, 0.1, spec=torch.ones(1, 1))
        return (u >= -l).to(u.dtype)

    assert "library's own" in _problems(check_crown_lower_slope, lazy)


def test_non_examples_and_deeper_nets_fail():
    def two_layers():
        model, x, eps, spec = ibp_beats_crown()
        return nn.Sequential(model[0], nn.ReLU(), nn.Linear(1, 1), nn.ReLU(), model[2]), x, eps, spec

    assert "one hidden layer" in _problems(check_ibp_beats_crown, two_layers)

    def stable():  # x = 2, eps 1: the ReLU is always on, both bounds exact
        model, _, eps, spec = ibp_beats_crown()
        return model, torch.full((1, 1), 2.0), eps, spec

    assert "do not beat CROWN" in _problems(check_ibp_beats_crown, stable)
