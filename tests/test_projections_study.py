"""Random projections measured (studies.projections): the estimates approach the exact bounds as
k grows, some come out tighter than the sound bound, and the step timer reports every setting."""
import pytest
import torch
from torch import nn

from tutorial_lib.studies import projections as PR

pytestmark = pytest.mark.usefixtures("one_thread")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(),
                         nn.Linear(30, 5)).double().eval()


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
def test_estimates_converge_to_the_exact_bounds(norm, eps):
    x = torch.rand(6, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r = PR.estimate_errors(_net(), x, eps, ks=[5, 1000], trials=2, norm=norm)
    assert r[1000]["median"] < r[5]["median"] / 4
    assert r[1000]["median"] < 0.05
    assert 0 < r[5]["tighter"] < 1  # an estimate lands on both sides of the exact bound: not a bound
    assert r[5]["relative_error"].numel() == r[1000]["relative_error"].numel() > 0


def test_step_seconds_times_every_setting():
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    out = PR.step_seconds(_net(), x, torch.tensor([0, 1, 2, 3]), 0.05, ks=[None, 10], reps=1)
    assert set(out) == {"exact", "k=10"} and all(v > 0 for v in out.values())


def test_median_bias_shows_the_lower_rule_bias_at_even_k():
    r = PR.median_bias([10, 11], draws=20000, seed=3)
    tol = 4 * (0.25 / 20000) ** 0.5
    assert abs(r[10]["lower_exact"] - 0.623) < 1e-3 and r[11]["lower_exact"] == 0.5
    assert abs(r[10]["lower"] - r[10]["lower_exact"]) < tol
    assert abs(r[11]["lower"] - 0.5) < tol and abs(r[11]["mid"] - 0.5) < tol
    assert r[10]["mid"] < 0.5 + tol   # the mean of the two middle values is not optimistic


def test_estimate_errors_lower_rule_is_more_often_tighter():
    x = torch.rand(6, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r = {rule: PR.estimate_errors(_net(), x, 0.05, ks=[10], trials=4, median=rule)[10] for rule in ("mid", "lower")}
    assert r["lower"]["tighter"] > r["mid"]["tighter"]
