"""The 95 % interval printed beside every rate measured on a sample."""
import pytest

from tutorial_lib import stats


@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_published_values(k, n, low, high):
    lo, hi = stats.wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_wilson_is_symmetric_and_contains_the_rate():
    for n in (1, 7, 100, 10_000):
        for k in range(0, n + 1, max(1, n // 13)):
            lo, hi = stats.wilson_interval(k, n)
            assert 0 <= lo <= k / n <= hi <= 1
            lo2, hi2 = stats.wilson_interval(n - k, n)
            assert lo2 == pytest.approx(1 - hi) and hi2 == pytest.approx(1 - lo)


def test_wilson_covers_about_95_percent():
    # exact coverage by summing the binomial distribution: close to 95 % for a moderate n
    from math import comb
    n = 200
    for p in (0.05, 0.5, 0.9):
        cover = sum(comb(n, k) * p ** k * (1 - p) ** (n - k)
                    for k in range(n + 1) if stats.wilson_interval(k, n)[0] <= p <= stats.wilson_interval(k, n)[1])
        assert 0.93 <= cover <= 0.97


def test_format_rate_takes_counts_and_rates():
    assert stats.format_rate(467, 500) == stats.format_rate(0.934, 500) == "93.4 % [90.9, 95.3]"
    assert stats.format_rate(0, 100).startswith("0.0 % [0.0, 3.7]")


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (3, 0), (2.5, 10)])
def test_bad_counts_are_refused(k, n):
    with pytest.raises((ValueError, TypeError)):
        stats.wilson_interval(k, n)


def test_a_rate_that_is_not_a_count_is_refused():
    with pytest.raises(ValueError, match="not a count"):
        stats.rate_count(0.9341, 500)


def test_overlap():
    assert stats.intervals_overlap((50, 100), (55, 100))
    assert not stats.intervals_overlap((10, 1000), (900, 1000))
