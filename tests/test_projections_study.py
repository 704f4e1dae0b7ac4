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
