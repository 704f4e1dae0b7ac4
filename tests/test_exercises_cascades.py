"""Notebook 08's exercise checker: the reference sound_cascade_certificate passes, the stub is 'not
started', typical wrong answers fail with a message that names the mistake."""
import sys
from pathlib import Path

import pytest
import torch

from tutorial_lib import bounds
from tutorial_lib.exercises import cascades as E, check_sound_cascade_certificate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from solutions.nb08_cascades import sound_cascade_certificate  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _problems(fn):
    result = check_sound_cascade_certificate(fn, verbose=False)
    assert result.started and not result.passed
    return " ".join(result.problems)


def _rule(name):
    return lambda stages, x, y, eps: E._rules(stages, x, y, eps)[name]


def test_reference_solution_passes():
    result = check_sound_cascade_certificate(sound_cascade_certificate, verbose=False)
    assert result.passed, result.problems
    assert result.cases >= 3


def test_stub_is_not_started_and_does_not_raise():
    def sound_cascade_certificate(stages, x, y, eps):
        raise NotImplementedError("your code here")

    result = check_sound_cascade_certificate(sound_cascade_certificate, verbose=False)
    assert result.started is False and not result.passed


def test_the_cases_tell_the_wrong_rules_apart():
    """Each typical mistake must give a different answer than the sound rule on some case, or the
    checker could not catch it."""
    for name in E._MESSAGES:
        differs = []
        for seed, eps in ((4, 0.05), (7, 0.15)):
            stages, x, y = E._toy_case(seed)
            rules = E._rules(stages, x, y, eps)
            differs.append(not torch.equal(rules[name], rules["sound"]))
        assert any(differs), name


@pytest.mark.parametrize("name, words", [
    ("paper", "paper's certifier"),
    ("agree only", "no stage accepts"),
    ("last only", "every stage to predict y"),
    ("agree and first", "LAST stage"),
])
def test_typical_wrong_answers_are_named(name, words):
    assert words in _problems(_rule(name))


def test_the_sound_rule_holds_on_sampled_points_of_the_ball():
    """What the checker calls sound is sound: no sampled x' in the ball gets another cascade answer."""
    stages, x, y = E._toy_case(7)
    eps = 0.15
    ok = E._rules(stages, x, y, eps)["sound"]
    assert ok.sum() >= 5
    g = torch.Generator().manual_seed(0)
    for i in ok.nonzero().flatten().tolist()[:10]:
        xs = (x[i] + (torch.rand(400, 2, generator=g) * 2 - 1) * eps).clamp(0, 1)
        with torch.no_grad():
            preds = [s(xs).argmax(1) for s in stages]
        answer = preds[-1].clone()
        decided = torch.zeros(len(xs), dtype=torch.bool)
        for s, p in zip(stages, preds):
            acc = bounds.is_certified(bounds.dual_bounds(s, xs, p, eps).lower) & ~decided
            answer[acc] = p[acc]
            decided |= acc
        assert (answer == y[i]).all(), i


def test_wrong_shape_and_type_are_reported():
    assert "shape" in _problems(lambda stages, x, y, eps: torch.ones(3, dtype=torch.bool))
    assert "torch.Tensor" in _problems(lambda stages, x, y, eps: [True] * len(y))


def test_a_one_call_answer_with_the_library_fails():
    """certify_cascade(...).sound (or sound_certified under any name) answers the exercise in one call:
    the checker refuses it in words, on every case."""
    from tutorial_lib.defenses import Cascade, certify_cascade, sound_certified as renamed

    def via_certify(stages, x, y, eps):
        return certify_cascade(Cascade(list(stages), eps), x, y).sound

    def via_sound(stages, x, y, eps):
        return renamed(Cascade(list(stages), eps), x, y)

    for fn, label in ((via_certify, "certify_cascade"), (via_sound, "sound_certified")):
        result = check_sound_cascade_certificate(fn, verbose=False)
        assert result.started and not result.passed
        assert len(result.problems) == 3, result.problems
        assert all("library's own" in p and label in p for p in result.problems), result.problems
