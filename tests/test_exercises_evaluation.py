"""Notebook 09's checker: the reference (BPDA, a straight-through gradient for the rounding) passes,
the stub is not started, one-call answers with the library's attacks are refused, and the two
classic mistakes are named: gradient steps on the rounding model (zero gradient) and leaving the ball."""
import sys
from pathlib import Path

import torch

from tutorial_lib.attacks import PGD, Square, TransferAttack
from tutorial_lib.exercises import check_break_quantized
from tutorial_lib.models import InputQuantization

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb09_evaluation import StraightThrough, break_quantized  # noqa: E402


def test_reference_breaks_the_quantized_model():
    assert check_break_quantized(break_quantized, verbose=False).passed


def test_straight_through_forward_is_the_layer_backward_the_identity():
    ste = StraightThrough(InputQuantization(16))
    x = torch.tensor([0.01, 0.49, 0.97], requires_grad=True)
    out = ste(x)
    assert torch.equal(out.detach(), InputQuantization(16)(x.detach()))
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_stub_is_not_started():
    def stub(model, x, y, eps):
        raise NotImplementedError("your code here")

    result = check_break_quantized(stub, verbose=False)
    assert not result.started and not result.passed


def test_one_square_call_is_refused():
    result = check_break_quantized(lambda m, x, y, eps: Square(eps, n_queries=50)(m, x, y), verbose=False)
    assert not result.passed
    assert any("library's own" in p and "Square" in p for p in result.problems)


def test_transfer_from_model_without_rounding_is_refused():
    def transfer(model, x, y, eps):
        return TransferAttack(model[1:].eval(), PGD(eps, steps=5))(model, x, y)

    result = check_break_quantized(transfer, verbose=False)
    assert not result.passed
    assert any("library's own" in p and "PGD" in p for p in result.problems)


def test_gradient_steps_on_the_rounding_model_are_masked():
    def plain_pgd(model, x, y, eps):  # written by hand, no straight-through: the gradient is zero
        x_adv = x.clone()
        for _ in range(5):
            x_adv.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = (x_adv.detach() + eps / 4 * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
        return x_adv

    result = check_break_quantized(plain_pgd, verbose=False)
    assert not result.passed and "robust under your attack" in result.problems[0]
    assert "BPDA" in result.problems[0]


def test_leaving_the_ball_is_named():
    def too_far(model, x, y, eps):
        return (x + 2 * eps * torch.sign(0.5 - x)).clamp(0, 1)

    result = check_break_quantized(too_far, verbose=False)
    assert any("moved by" in p for p in result.problems)
