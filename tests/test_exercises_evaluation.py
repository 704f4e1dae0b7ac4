"""Notebook 09's checker: the reference (BPDA) passes, the stub is not started, and the two
classic mistakes are named: PGD on the rounding model (zero gradient) and leaving the ball."""
import sys
from pathlib import Path

import torch

from tutorial_lib.attacks import PGD
from tutorial_lib.exercises import check_break_quantized

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb09_evaluation import break_quantized  # noqa: E402


def test_reference_breaks_the_quantized_model():
    assert check_break_quantized(break_quantized, verbose=False).passed


def test_stub_is_not_started():
    def stub(model, x, y, eps):
        raise NotImplementedError("your code here")

    result = check_break_quantized(stub, verbose=False)
    assert not result.started and not result.passed


def test_plain_pgd_is_masked():
    result = check_break_quantized(lambda m, x, y, eps: PGD(eps, steps=10)(m, x, y), verbose=False)
    assert not result.passed and "robust under your attack" in result.problems[0]
    assert "BPDA" in result.problems[0]


def test_leaving_the_ball_is_named():
    def too_far(model, x, y, eps):
        return (x + 2 * eps * torch.sign(0.5 - x)).clamp(0, 1)

    result = check_break_quantized(too_far, verbose=False)
    assert any("moved by" in p for p in result.problems)
