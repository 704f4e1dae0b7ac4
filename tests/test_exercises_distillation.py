"""Checker of notebook 06's implement exercise (tutorial_lib.exercises.distillation): the reference
solution passes, the stub is reported as not started, typical mistakes are named."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib.exercises import check_logits_over_T_attack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb06_distillation import logits_over_T_attack  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _problems(fn):
    result = check_logits_over_T_attack(fn, verbose=False)
    assert result.started and not result.passed
    return " ".join(result.problems)


def _pgd(model, x, y, T, eps, alpha, steps, divide=True, project=True, clamp=True, sign=1.0):
    """PGD on the cross-entropy, with switches for the usual mistakes."""
    x = x.detach()
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        loss = F.cross_entropy(logits / T if divide else logits, y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + sign * alpha * grad.sign()
            if project:
                x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
            if clamp:
                x_adv = x_adv.clamp(0, 1)
    return x_adv.detach()


def test_reference_solution_passes():
    result = check_logits_over_T_attack(logits_over_T_attack, verbose=False)
    assert result.passed, result.problems
    assert result.cases == 10


def test_stub_is_not_started_and_does_not_raise(capsys):
    def stub(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        raise NotImplementedError("your code here")

    result = check_logits_over_T_attack(stub)
    assert result.started is False and not result.passed
    assert "not implemented yet" in capsys.readouterr().out


def test_forgetting_the_temperature_is_caught():
    """Plain cross-entropy: the saturated softmax of the T = 100 student hides the gradient."""
    def no_temperature(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        return _pgd(model, x, y, T, eps, alpha, steps, divide=False)

    problems = _problems(no_temperature)
    assert "distilled at T = 100" in problems and "divide the logits by T" in problems
    assert "undefended" not in problems  # at T = 1 dividing changes nothing


def test_no_projection_is_named():
    def no_projection(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        return _pgd(model, x, y, T, eps, alpha, steps, project=False)

    assert "more than eps" in _problems(no_projection)


def test_no_clamp_is_named():
    def no_clamp(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        return _pgd(model, x, y, T, eps, alpha, steps, clamp=False)

    assert "leave [0, 1]" in _problems(no_clamp)


def test_descent_instead_of_ascent_is_caught():
    def descent(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        return _pgd(model, x, y, T, eps, alpha, steps, sign=-1.0)

    assert "step up the loss" in _problems(descent)


def test_in_place_change_and_wrong_return_are_named():
    def in_place(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        x_adv = _pgd(model, x, y, T, eps, alpha, steps)
        x.copy_(x_adv)
        return x

    assert "changed x in place" in _problems(in_place)

    def returns_delta_norm(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        return (_pgd(model, x, y, T, eps, alpha, steps) - x).flatten(1).norm(dim=1)

    assert "a tensor shaped like x" in _problems(returns_delta_norm)


def test_a_one_call_answer_through_the_library_pgd_fails():
    """The library's PGD on the logits / T, one call: right images, refused by the checker."""
    from tutorial_lib.attacks import PGD

    class OverT(torch.nn.Module):
        def __init__(self, model, T):
            super().__init__()
            self.model, self.T = model, T

        def forward(self, x):
            return self.model(x) / self.T

    def one_call(model, x, y, T, eps=0.2, alpha=0.04, steps=10):
        return PGD(eps, alpha=alpha, steps=steps, random_start=False)(OverT(model, T).eval(), x, y)

    problems = _problems(one_call)
    assert "calls the library's own" in problems and "PGD" in problems
