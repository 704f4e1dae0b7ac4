"""The checkers of notebook 01's exercises: the reference solutions pass, the stubs as handed out
say "not implemented yet" without raising, and typical wrong answers fail with a useful message."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib.exercises import check_fgsm, check_project_l2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb01_attacks import fgsm, project_l2  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def _problems(result):
    return " | ".join(result.problems)


def _gradient(model, x, y):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return grad


# ---------------------------------------------------------------- fgsm

def test_fgsm_solution_passes():
    result = check_fgsm(fgsm, verbose=False)
    assert result.passed, result.problems
    assert result.cases > 0


def test_fgsm_stub_is_not_started():
    result = check_fgsm(_stub, verbose=False)
    assert result.started is False and not result.passed
    assert "not implemented yet" in str(result)


def test_fgsm_without_clamp_fails():
    def no_clamp(model, x, y, eps):
        return x + eps * _gradient(model, x, y).sign()
    result = check_fgsm(no_clamp, verbose=False)
    assert not result.passed
    assert "outside [0, 1]" in _problems(result)


def test_fgsm_descending_fails():
    def descend(model, x, y, eps):
        return (x - eps * _gradient(model, x, y).sign()).clamp(0, 1)
    result = check_fgsm(descend, verbose=False)
    assert not result.passed
    assert "the loss went down" in _problems(result)


def test_fgsm_raw_gradient_fails():
    def raw(model, x, y, eps):
        g = _gradient(model, x, y)
        return (x + eps * g / g.abs().max()).clamp(0, 1)
    result = check_fgsm(raw, verbose=False)
    assert not result.passed
    assert "grad.sign()" in _problems(result)


def test_fgsm_in_place_fails():
    def in_place(model, x, y, eps):
        g = _gradient(model, x, y)
        return x.add_(eps * g.sign()).clamp_(0, 1)
    result = check_fgsm(in_place, verbose=False)
    assert not result.passed
    assert "changed x in place" in _problems(result)


def test_fgsm_error_is_reported_not_raised():
    def broken(model, x, y, eps):
        return x + eps * x.grad.sign()  # x.grad is None: AttributeError
    result = check_fgsm(broken, verbose=False)
    assert not result.passed and result.started
    assert "AttributeError" in _problems(result)


# ---------------------------------------------------------------- project_l2

def test_project_l2_solution_passes():
    result = check_project_l2(project_l2, verbose=False)
    assert result.passed, result.problems


def test_project_l2_stub_is_not_started():
    result = check_project_l2(_stub, verbose=False)
    assert result.started is False and not result.passed


def test_project_l2_always_onto_the_sphere_fails():
    def sphere(x_adv, x, eps):
        delta = x_adv - x
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return (x + delta * (eps / norms).view(-1, 1, 1, 1)).clamp(0, 1)
    result = check_project_l2(sphere, verbose=False)
    assert not result.passed
    assert "already inside the ball was changed" in _problems(result)


def test_project_l2_one_norm_for_the_batch_fails():
    def batch_norm(x_adv, x, eps):
        delta = x_adv - x
        return (x + delta * torch.clamp(eps / delta.norm(), max=1.0)).clamp(0, 1)
    result = check_project_l2(batch_norm, verbose=False)
    assert not result.passed
    assert "one norm for the whole batch" in _problems(result)


def test_project_l2_box_before_ball_fails():
    def box_first(x_adv, x, eps):
        delta = x_adv.clamp(0, 1) - x
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return x + delta * torch.clamp(eps / norms, max=1.0).view(-1, 1, 1, 1)
    result = check_project_l2(box_first, verbose=False)
    assert not result.passed
    assert "clamped to the box before projecting" in _problems(result)


def test_project_l2_without_box_fails():
    def no_box(x_adv, x, eps):
        delta = x_adv - x
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return x + delta * torch.clamp(eps / norms, max=1.0).view(-1, 1, 1, 1)
    result = check_project_l2(no_box, verbose=False)
    assert not result.passed
    assert "outside [0, 1]" in _problems(result)


def test_project_l2_zero_perturbation_nan_fails():
    def unguarded(x_adv, x, eps):
        delta = x_adv - x
        norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        unit = delta / norms  # 0 / 0 = NaN for the example with x_adv == x
        return (x + unit * norms.clamp(max=eps)).clamp(0, 1)
    result = check_project_l2(unguarded, verbose=False)
    assert not result.passed
    assert "norm 0" in _problems(result)


# ---------------------------------------------------------------- one-call answers are refused

def test_fgsm_from_the_library_fails():
    from tutorial_lib.attacks import FGSM as OneStep, PGD

    def one_call(model, x, y, eps):
        return OneStep(eps)(model, x, y)

    def one_step_pgd(model, x, y, eps):
        return PGD(eps, alpha=eps, steps=1, random_start=False)(model, x, y)

    for answer in (one_call, one_step_pgd):
        result = check_fgsm(answer, verbose=False)
        assert result.started and not result.passed
        assert "calls the library's own" in _problems(result)


def test_project_l2_from_the_library_fails():
    from tutorial_lib.attacks import PGD

    def one_call(x_adv, x, eps):
        return PGD(eps, norm="l2").project(x_adv, x)

    result = check_project_l2(one_call, verbose=False)
    assert result.started and not result.passed
    assert "calls the library's own" in _problems(result)
