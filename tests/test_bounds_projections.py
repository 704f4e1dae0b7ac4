"""The median estimator of the random projections (bounds.dual.median_abs, Wong et al. 2018).

The median of |Cauchy(scale s)| is s. Over many seeded draws of k projections, the 'mid' rule's
estimate is above s about half the time (binomial tolerance), for odd and even k; the 'lower' rule
(torch.median, convex_adversarial's choice) is below s with probability 1/2 + C(k, k/2) / 2^(k+1)
for even k, which the draws show as well.
"""
import math

import pytest
import torch

from tutorial_lib import bounds
from tutorial_lib.bounds import dual as DU

pytestmark = pytest.mark.usefixtures("one_thread")

DRAWS = 20000


def _abs_cauchy(k, scale, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(DRAWS, k, dtype=torch.float64, generator=g)
    return scale * torch.tan(math.pi * (u - 0.5))


def _share_above(est, scale):
    return float((est > scale).double().mean())


def _tolerance(p):
    return 4 * math.sqrt(p * (1 - p) / DRAWS)   # 4 binomial standard deviations


@pytest.mark.parametrize("k", [5, 11, 51])
def test_odd_k_median_is_above_the_true_median_half_the_time(k):
    scale = 2.5
    for rule in ("mid", "lower"):   # one middle value: both rules take it
        est = DU.median_abs(_abs_cauchy(k, scale, seed=k), dim=1, rule=rule)
        assert est.shape == (DRAWS,)
        assert abs(_share_above(est, scale) - 0.5) < _tolerance(0.5)


@pytest.mark.parametrize("k", [10, 50])
def test_even_k_mid_rule_is_not_optimistic(k):
    # the mean of the two middle values: |Cauchy| is skewed to the right, so it is above s a little
    # MORE often than half the time (about 52 % at k = 10): the estimated bound errs towards loose
    scale = 2.5
    share = _share_above(DU.median_abs(_abs_cauchy(k, scale, seed=k), dim=1, rule="mid"), scale)
    assert 0.5 - _tolerance(0.5) < share < 0.55


@pytest.mark.parametrize("k", [10, 50])
def test_lower_rule_is_biased_low_for_even_k(k):
    scale = 0.7
    est = DU.median_abs(_abs_cauchy(k, scale, seed=100 + k), dim=1, rule="lower")
    p_above = 0.5 - math.comb(k, k // 2) / 2 ** (k + 1)   # at least k/2 + 1 of the k draws above s
    share = _share_above(est, scale)
    assert abs(share - p_above) < _tolerance(p_above)
    assert share < 0.5 - _tolerance(0.5)   # visibly optimistic: the l1 norm is underestimated
    mid = _share_above(DU.median_abs(_abs_cauchy(k, scale, seed=100 + k), dim=1, rule="mid"), scale)
    assert mid > share + 2 * _tolerance(0.5)   # same draws: the mid rule removes the bias


def test_rules_agree_for_odd_k_and_differ_for_even_k():
    V = torch.tensor([[3.0, -1.0, 2.0, -5.0], [1.0, 4.0, -2.0, 0.5]])
    assert torch.equal(DU.median_abs(V, dim=1, rule="lower"), torch.tensor([2.0, 1.0]))
    assert torch.equal(DU.median_abs(V, dim=1, rule="mid"), torch.tensor([2.5, 1.5]))
    W = V[:, :3]
    assert torch.equal(DU.median_abs(W, dim=1, rule="mid"), DU.median_abs(W, dim=1, rule="lower"))
    with pytest.raises(ValueError, match="rule"):
        DU.median_abs(V, rule="upper")


def test_mid_rule_is_differentiable():
    V = torch.tensor([[3.0, -1.0, 2.0, -5.0]], requires_grad=True)
    DU.median_abs(V, dim=1).sum().backward()
    assert torch.equal(V.grad, torch.tensor([[0.5, 0.0, 0.5, 0.0]]))


def test_estimated_bounds_take_the_rule_and_stay_out_of_certificates():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 20), torch.nn.ReLU(), torch.nn.Linear(20, 20),
                              torch.nn.ReLU(), torch.nn.Linear(20, 3)).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    out = {}
    for rule in ("mid", "lower"):
        g = torch.Generator().manual_seed(0)
        out[rule] = bounds.estimated_dual_bounds(net, x, y, 0.05, proj=10, generator=g, median=rule)
    # same draws: the lower middle value gives a smaller l1 estimate, so a higher (more optimistic) lower bound
    lo_mid, lo_low = out["mid"].pre_bounds[1][0], out["lower"].pre_bounds[1][0]
    assert (lo_low >= lo_mid - 1e-12).all() and (lo_low > lo_mid).any()
    with pytest.raises(ValueError, match="median"):
        bounds.estimated_dual_bounds(net, x, y, 0.05, proj=10, median="upper")
    with pytest.raises(ValueError, match="not certificates"):
        _ = out["mid"].certified
