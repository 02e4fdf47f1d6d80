"""Exactness of the SubsetSum engine against brute-force enumeration of all 2^n subsets (float64)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from lottery_jax.subsetsum import search as ss

ATOL = 1e-12


def all_sums(coefs_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every subset sum (float64, added in coefficient order) and popcount, indexed by mask."""
    sums = np.zeros(1)
    pop = np.zeros(1, np.int64)
    for a in coefs_row:  # doubling: the new half is the old one with bit i set
        sums = np.concatenate([sums, sums + a])
        pop = np.concatenate([pop, pop + 1])
    return sums, pop


def brute(coefs: np.ndarray, weights: np.ndarray, eps: float):
    """Per weight: (min error, min count or -1, min error at that count)."""
    R, W = weights.shape
    min_err = np.empty((R, W))
    count = np.full((R, W), -1)
    cerr = np.full((R, W), np.inf)
    for r in range(R):
        sums, pop = all_sums(coefs[r])
        for j in range(W):
            err = np.abs(weights[r, j] - sums)
            min_err[r, j] = err.min()
            ok = err <= eps
            if ok.any():
                count[r, j] = pop[ok].min()
                cerr[r, j] = err[ok & (pop == count[r, j])].min()
    return min_err, count, cerr


def check_min_error(coefs, weights, masks, errors, ref):
    recomputed = np.abs(weights - ss.subset_sums(coefs[:, None, :], masks))
    np.testing.assert_allclose(errors, ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(recomputed, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("n", "rows", "width", "eps"),
    [(1, 3, 5, 0.1), (2, 2, 9, 0.05), (7, 3, 11, 0.02), (13, 2, 8, 0.005), (17, 2, 6, 1e-4)],
    ids=["n1", "n2", "n7", "n13", "n17"],
)
def test_min_error_and_count_equal_brute_force(n, rows, width, eps):
    rng = np.random.default_rng(n)
    coefs = rng.uniform(-0.46, 0.54, (rows, n))
    weights = rng.uniform(-0.6, 0.6, (rows, width))
    weights[0, 0] = 0.0  # the empty subset is exact
    ref_err, ref_count, ref_cerr = brute(coefs, weights, eps)
    masks, errors = ss.solve("min-error", coefs, weights)
    check_min_error(coefs, weights, masks, errors, ref_err)

    cm, ce, cc, feas = ss.solve("min-count", coefs, weights, epsilon=eps)
    np.testing.assert_array_equal(cc, ref_count)
    np.testing.assert_array_equal(feas, ref_count >= 0)
    np.testing.assert_allclose(ce[feas], ref_cerr[feas], rtol=0, atol=ATOL)
    pop = ss.mask_to_bits(cm, n).sum(-1)
    np.testing.assert_array_equal(pop[feas], cc[feas])
    recomputed = np.abs(weights - ss.subset_sums(coefs[:, None, :], cm))
    assert np.all(recomputed[feas] <= eps)


@pytest.mark.slow
def test_n22_one_row_matches_brute_force():
    rng = np.random.default_rng(22)
    coefs = rng.uniform(-0.46, 0.54, (1, 22))
    weights = rng.uniform(-0.5, 0.5, (1, 5))
    ref_err, _, _ = brute(coefs, weights, 0.01)
    masks, errors = ss.solve("min-error", coefs, weights)
    check_min_error(coefs, weights, masks, errors, ref_err)


def test_per_weight_instances_width_one():
    rng = np.random.default_rng(5)
    coefs = rng.uniform(-0.46, 0.54, (37, 12))
    weights = rng.uniform(-0.4, 0.4, (37, 1))
    ref_err, _, _ = brute(coefs, weights, 0.01)
    masks, errors = ss.solve("min-error", coefs, weights, rows_per_chunk=8)
    check_min_error(coefs, weights, masks, errors, ref_err)


def test_near_ties_resolved_in_float64():
    # Coefficients 1e-13 apart: float32 could not tell the subsets apart, float64 must.
    coefs = np.array([[0.1, 0.1 + 1e-13, 0.2, 0.3 - 2e-13, 0.05, 0.05 + 3e-14, -0.1, 0.25]])
    weights = np.array([[0.4 + 1.5e-13, 0.3 - 1e-13, 0.15 + 2e-14, -0.05]])
    ref_err, _, _ = brute(coefs, weights, 1e-3)
    masks, errors = ss.solve("min-error", coefs, weights)
    recomputed = np.abs(weights - ss.subset_sums(coefs[:, None, :], masks))
    np.testing.assert_allclose(recomputed, ref_err, rtol=0, atol=1e-15)


def test_exact_ties_and_zero_coefficients():
    coefs = np.zeros((2, 6))
    coefs[1] = [0.25, 0.25, 0.5, 0.5, 0.0, 0.0]
    weights = np.array([[0.0, 0.3, -0.2], [0.5, 1.0, 0.1]])
    ref_err, ref_count, _ = brute(coefs, weights, 0.11)
    masks, errors = ss.solve("min-error", coefs, weights)
    check_min_error(coefs, weights, masks, errors, ref_err)
    _, _, counts, _ = ss.solve("min-count", coefs, weights, epsilon=0.11)
    np.testing.assert_array_equal(counts, ref_count)


def test_infeasible_instance_is_reported():
    # All coefficients positive, weight negative: nothing is within eps; best = empty subset.
    coefs = np.full((1, 10), 0.3) + np.arange(10) * 0.01
    weights = np.array([[-0.2, 0.3105]])
    masks, errors = ss.solve("min-error", coefs, weights)
    assert masks[0, 0] == 0 and errors[0, 0] == pytest.approx(0.2, abs=1e-15)
    _, _, counts, feasible = ss.solve("min-count", coefs, weights, epsilon=0.001)
    assert feasible.tolist() == [[False, True]]
    assert counts.tolist() == [[-1, 1]]


def test_n_coefficients_published_and_readme():
    assert ss.n_coefficients(3, 0.01) == 21
    assert ss.n_coefficients(3, 0.01, "readme") == 20
    for bad in [0.0, 1.0, -0.1, 2.0]:
        with pytest.raises(ValueError):
            ss.n_coefficients(3, bad)
    with pytest.raises(ValueError):
        ss.n_coefficients(0, 0.01)


def test_coefficient_draws_are_explicit_and_in_range():
    a = ss.draw_coefficients(ss.layer_key(7, 0), (4,), 21, -0.46, 0.54)
    b = ss.draw_coefficients(ss.layer_key(7, 0), (4,), 21, -0.46, 0.54)
    c = ss.draw_coefficients(ss.layer_key(7, 1), (4,), 21, -0.46, 0.54)
    assert a.shape == (4, 21) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= -0.46 and a.max() < 0.54
    per_weight = ss.draw_coefficients(ss.layer_key(7, 0), (3, 5), 4, 0.0, 1.0)
    assert per_weight.shape == (3, 5, 4)
    assert ss.coefficient_range([np.array([0.1, 0.5]), np.array([-0.2])]) == (-0.2, 0.5)
    assert ss.coefficient_range([np.array([0.1, 0.5])]) == (0.0, 0.5)


def test_masks_bits_round_trip():
    masks = np.array([[0, 1, 5], [2**20, 2**21 - 1, 7]])
    bits = ss.mask_to_bits(masks, 21)
    assert bits.shape == (2, 3, 21)
    np.testing.assert_array_equal(ss.bits_to_mask(bits), masks)


def test_sharded_over_four_host_devices():
    code = textwrap.dedent(
        """
        import numpy as np, jax
        from lottery_jax.subsetsum import search as ss
        assert len(jax.devices()) == 4
        rng = np.random.default_rng(3)
        coefs = rng.uniform(-0.46, 0.54, (10, 11))
        weights = rng.uniform(-0.5, 0.5, (10, 6))
        solver = ss.compile_solver("min-error", 8, 6, 11)
        assert solver._mesh.devices.size == 4
        try:  # rows must split evenly over the devices
            ss.compile_solver("min-error", 6, 6, 11)
            raise SystemExit("rows=6 over 4 devices was accepted")
        except ValueError:
            pass
        m4, e4 = ss.solve("min-error", coefs, weights, rows_per_chunk=4)
        one = ss.local_mesh(jax.devices()[:1])
        m1, e1 = ss.solve("min-error", coefs, weights, mesh=one)
        np.testing.assert_array_equal(e4, e1)
        c4 = ss.solve("min-count", coefs, weights, epsilon=0.01)
        c1 = ss.solve("min-count", coefs, weights, epsilon=0.01, mesh=one)
        for a, b in zip(c4, c1):
            np.testing.assert_array_equal(a, b)
        print("OK", len(jax.devices()))
        """
    )
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK 4" in proc.stdout


def test_engine_leaves_x64_off():
    ss.solve("min-error", np.ones((1, 3)) * 0.1, np.zeros((1, 2)))
    assert not jax.config.jax_enable_x64


@pytest.mark.parametrize("ka", [1, 3, 8], ids=["sort-path-kb15", "sort-path-kb13", "bitonic-kb8"])
def test_both_half_sort_paths_match_brute_force(ka):
    from functools import partial

    rng = np.random.default_rng(ka)
    coefs = rng.uniform(-0.46, 0.54, (2, 16))
    weights = rng.uniform(-0.5, 0.5, (2, 4))
    ref_err, _, _ = brute(coefs, weights, 0.01)
    with jax.enable_x64(True):
        masks, errors = jax.jit(partial(ss.min_error_kernel, ka=ka))(coefs, weights)
    check_min_error(coefs, weights, np.asarray(masks), np.asarray(errors), ref_err)
