"""Notebook 07's exercise checker: the reference sigmoid_upper_line passes, the stub is 'not
started', typical wrong lines fail with a message that names the mistake."""
import sys
from pathlib import Path

import pytest
import torch

from tutorial_lib.exercises import check_sigmoid_upper_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb07_scaling import sigmoid_upper_line  # noqa: E402

s = torch.sigmoid


def ds(z):
    return s(z) * s(-z)


def _problems(fn):
    result = check_sigmoid_upper_line(fn, verbose=False)
    assert result.started and not result.passed
    return " ".join(result.problems)


def test_reference_solution_passes():
    result = check_sigmoid_upper_line(sigmoid_upper_line, verbose=False)
    assert result.passed, result.problems
    assert result.cases == 5


def test_stub_is_not_started_and_does_not_raise():
    def sigmoid_upper_line(l, u):  # noqa: E741
        raise NotImplementedError("your code here")

    result = check_sigmoid_upper_line(sigmoid_upper_line, verbose=False)
    assert result.started is False and not result.passed


def chord(l, u):  # noqa: E741
    k = (s(u) - s(l)) / (u - l)
    return k, s(l) - k * l


def tangent_at_midpoint(l, u):  # noqa: E741
    t = (l + u) / 2
    return ds(t), s(t) - ds(t) * t


def chord_left_tangent_right(l, u):  # noqa: E741 (forgets the case around 0)
    (k, c), (a, b) = chord(l, u), tangent_at_midpoint(l, u)
    left = u <= 0
    return torch.where(left, k, a), torch.where(left, c, b)


def constant(l, u):  # noqa: E741 (valid, loose)
    return torch.zeros_like(l), s(u)


def reference_but_nan_when_degenerate(l, u):  # noqa: E741
    a, b = sigmoid_upper_line(l, u)
    bad = l == u
    return torch.where(bad, torch.nan, a), b


@pytest.mark.parametrize("fn, words", [
    (chord, "a chord lies BELOW a concave function"),
    (tangent_at_midpoint, "a tangent lies BELOW a convex function"),
    (chord_left_tangent_right, "contains the inflection point 0"),
    (constant, "valid but loose"),
    (reference_but_nan_when_degenerate, "l == u"),
    (lambda l, u: s(u), "return a pair"),  # noqa: E741
    (lambda l, u: (torch.zeros(1), torch.ones(1)), "shape"),  # noqa: E741
])
def test_typical_wrong_answers_are_named(fn, words):
    assert words in _problems(fn)


def test_another_valid_line_passes():
    """CROWN's choice around 0 (the tangent at d itself, the point whose tangent passes through
    (l, s(l)), instead of the midpoint when that is further right): valid, a little looser,
    within the allowed looseness."""
    def crown(l, u):  # noqa: E741
        a, b = sigmoid_upper_line(l, u)
        need = (l < 0) & (u > 0) & (ds(u) < (s(u) - s(l)) / (u - l).clamp(min=1e-12))
        lo, hi = torch.zeros_like(u), u.clamp(min=0)
        for _ in range(60):
            m = (lo + hi) / 2
            ok = s(m) + ds(m) * (l - m) >= s(l)
            hi, lo = torch.where(ok, m, hi), torch.where(ok, lo, m)
        return torch.where(need, ds(hi), a), torch.where(need, s(hi) - ds(hi) * hi, b)
    result = check_sigmoid_upper_line(crown, verbose=False)
    assert result.passed, result.problems


def test_not_callable_is_a_type_error():
    with pytest.raises(TypeError):
        check_sigmoid_upper_line(None)


def test_a_one_call_answer_fails():
    """Calling the library's relaxation (directly, through the figure's helper, or through tanh)
    fails the case in words."""
    from tutorial_lib import bounds as B
    from tutorial_lib.viz import scaling_plots

    def library(l, u):  # noqa: E741
        n = l.numel()
        _, _, a, b = B.DualSigmoid(torch.nn.Sigmoid(), (n,), (n,)).relax(l.view(1, -1), u.view(1, -1))
        return a.view(-1), b.view(-1)

    def via_figure_helper(l, u):  # noqa: E741
        lines = [scaling_plots.relaxation_lines("sigmoid", float(a), float(b)) for a, b in zip(l, u)]
        return (torch.tensor([t[2] for t in lines], dtype=torch.float64),
                torch.tensor([t[3] for t in lines], dtype=torch.float64))

    def via_tanh(l, u):  # noqa: E741
        n = l.numel()
        _, _, a, b = B.DualTanh(torch.nn.Tanh(), (n,), (n,)).relax(l.view(1, -1) / 2, u.view(1, -1) / 2)
        return a.view(-1) / 4, (1 + b.view(-1)) / 2

    for fn in (library, via_figure_helper, via_tanh):
        assert "the library's own" in _problems(fn)
