"""The final-epoch noise floor of the published comparison (lottery_jax.pruning.agreement)."""

import math

import numpy as np
import pytest

from lottery_jax.pruning.agreement import epoch_noise, expected_abs_diff


def test_epoch_noise_is_zero_on_a_straight_line_whatever_its_slope():
    assert epoch_noise([90.0 + 0.7 * t for t in range(30)]) == pytest.approx(0.0, abs=1e-12)


def test_epoch_noise_reads_only_the_last_k_epochs():
    wild_start = [10.0, 90.0, 5.0, 80.0] + [50.0] * 10
    assert epoch_noise(wild_start, k=10) == 0.0
    assert epoch_noise(wild_start, k=14) > 10


def test_epoch_noise_closed_form_on_an_alternating_curve():
    # 60, 64, 60, 64, ...: the 9 differences are +4, -4, ... (5 of one sign, 4 of the other)
    curve = [60.0 + 4.0 * (t % 2) for t in range(10)]
    diffs = [4.0, -4.0] * 4 + [4.0]
    mean = sum(diffs) / 9
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 8)
    assert epoch_noise(curve) == pytest.approx(sd / math.sqrt(2), rel=1e-12)


def test_epoch_noise_recovers_the_sd_of_independent_noise_around_a_trend():
    rng = np.random.default_rng(7)
    curve = 40.0 + 0.01 * np.arange(20000) + rng.normal(0.0, 3.0, 20000)
    assert epoch_noise(list(curve), k=20000) == pytest.approx(3.0, rel=0.03)


def test_expected_abs_diff_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(11)
    x, y = rng.normal(0, 2.0, 400000), rng.normal(5, 3.5, 400000)  # X - Y + 5 has mean 0
    assert expected_abs_diff(2.0, 3.5) == pytest.approx(np.mean(np.abs(x - y + 5)), rel=0.01)
    assert expected_abs_diff(0.0, 0.0) == 0.0


@pytest.mark.parametrize("curve, k", [([1.0, 2.0], 10), ([1.0] * 10, 2)])
def test_epoch_noise_refuses_too_few_epochs(curve, k):
    with pytest.raises(ValueError, match="k >= 3"):
        epoch_noise(curve, k)


def test_expected_abs_diff_refuses_negative_sds():
    with pytest.raises(ValueError, match=">= 0"):
        expected_abs_diff(-1.0, 1.0)
