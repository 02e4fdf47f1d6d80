"""Exact top-k supermasks: counts, tie-breaking, straight-through gradients, variable types."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lottery_jax.nets.supermask import (
    PruneCount,
    Score,
    check_sparsity,
    masked,
    num_pruned,
    pruned_flags,
    removed_by_cut,
    score_keys,
    topk_mask,
)
from lottery_jax.nets.targets import Frozen
from lottery_jax.pruning import PUBLISHED_SPARSITIES

METHODS = ("radix", "bisect", "sort")


def reference_removed(scores: np.ndarray, k: int) -> np.ndarray:
    """argsort-based ranks: the k smallest |score|, lower flat index first among equals."""
    a = np.abs(np.asarray(scores, np.float32)).ravel()
    order = np.lexsort((np.arange(a.size), a))  # stable: by value, then index
    removed = np.zeros(a.size, bool)
    removed[order[:k]] = True
    return removed.reshape(np.shape(scores))


@pytest.fixture(scope="module")
def flags_fn():
    return {m: jax.jit(lambda s, k, m=m: pruned_flags(s, k, m)) for m in METHODS}


CASES = {
    "normal": lambda rng, shape: rng.normal(size=shape),
    "all_equal": lambda rng, shape: np.full(shape, 0.25),
    "all_zero": lambda rng, shape: np.zeros(shape),
    "few_values": lambda rng, shape: rng.integers(-3, 4, size=shape).astype(float),
    "signed_ties": lambda rng, shape: rng.choice([-1.5, 1.5, 0.5, -0.5], size=shape),
    "tiny_and_huge": lambda rng, shape: rng.choice([1e-38, 3e38, 0.0, 1.0], size=shape),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sparsity", PUBLISHED_SPARSITIES)
def test_exact_sparsity_and_ties(flags_fn, method, case, sparsity):
    # A fixed seed per case (``hash`` of a str is salted per process: not reproducible).
    rng = np.random.default_rng([sorted(CASES).index(case), PUBLISHED_SPARSITIES.index(sparsity)])
    shape = (37, 53)
    scores = CASES[case](rng, shape).astype(np.float32)
    k = num_pruned(sparsity, scores.size)
    got = np.asarray(flags_fn[method](scores, k))
    assert got.sum() == k == int(sparsity * scores.size)
    np.testing.assert_array_equal(got, reference_removed(scores, k))


@pytest.mark.parametrize("method", METHODS)
def test_every_k_on_a_small_tensor(flags_fn, method):
    rng = np.random.default_rng(0)
    for scores in (rng.normal(size=(3, 7)), np.ones((3, 7)), rng.integers(0, 3, (3, 7)) * 1.0):
        scores = scores.astype(np.float32)
        for k in range(scores.size + 1):
            got = np.asarray(flags_fn[method](scores, k))
            np.testing.assert_array_equal(got, reference_removed(scores, k))


def test_all_equal_removes_lowest_indices_first():
    mask = np.asarray(topk_mask(jnp.ones((2, 4)), 3))
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1], [1, 1, 1, 1]])


def test_methods_agree_on_a_large_tensor():
    scores = jax.random.normal(jax.random.key(3), (300, 1001))
    radix = jax.jit(lambda s, k: pruned_flags(s, k, "radix"))
    bisect = jax.jit(lambda s, k: pruned_flags(s, k, "bisect"))
    by_sort = jax.jit(lambda s, k: pruned_flags(s, k, "sort"))
    # Coarse values: many ties straddle every cut.
    coarse = jnp.round(scores * 8) / 8
    for s in (0.0, 0.025, 0.5, 0.99):
        for sc in (scores, coarse):
            k = num_pruned(s, sc.size)
            a = radix(sc, k)
            assert int(a.sum()) == k
            np.testing.assert_array_equal(np.asarray(a), np.asarray(bisect(sc, k)))
            np.testing.assert_array_equal(np.asarray(a), np.asarray(by_sort(sc, k)))


def test_auto_method_by_backend():
    from lottery_jax.nets.supermask import RADIX_MIN_SIZE, default_method

    assert default_method(RADIX_MIN_SIZE, "cpu") == "radix"
    assert default_method(RADIX_MIN_SIZE - 1, "cpu") == "bisect"
    assert default_method(10, "gpu") == default_method(2_000_000, "gpu") == "sort"
    assert default_method(2_000_000, "tpu") == "bisect"
    with pytest.raises(ValueError, match="unknown mask method"):
        pruned_flags(jnp.ones(4), 1, "quick")


def test_vmap_over_counts_matches_single_calls():
    scores = jax.random.normal(jax.random.key(1), (4, 50, 20))
    ks = jnp.array([0, 10, 500, 999], jnp.int32)
    for method in METHODS:
        one = jax.jit(lambda s, k, m=method: topk_mask(s, k, m))
        batched = jax.jit(jax.vmap(one))(scores, ks)
        for i in range(4):
            np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(one(scores[i], ks[i])))


def test_num_pruned_is_python_int_of_the_product():
    assert num_pruned(0.99, 1_960_000) == int(0.99 * 1_960_000)
    assert num_pruned(0.0, 10) == 0
    assert num_pruned(0.5, 3) == 1
    for s in PUBLISHED_SPARSITIES:
        assert num_pruned(s, 25_000) == int(s * 25_000)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_check_sparsity_rejects(bad):
    with pytest.raises(ValueError, match="sparsity"):
        check_sparsity(bad)


def test_straight_through_gradient_by_hand():
    """A 2x3 layer: y = x @ (w * m(|s|)).T, loss = sum(y * c). Hand-computed gradient."""
    w = jnp.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    s = jnp.array([[0.1, -0.5, 0.3], [0.2, -0.9, -0.05]])
    x = jnp.array([[1.0, 2.0, -1.0]])
    c = jnp.array([[2.0, -3.0]])
    k = jnp.int32(2)  # removes |s| = 0.05 (index 5) and 0.1 (index 0)

    def loss(scores):
        return jnp.sum((x @ masked(w, scores, k).T) * c)

    mask = np.array([[0, 1, 1], [1, 1, 0]], np.float32)
    np.testing.assert_array_equal(np.asarray(topk_mask(jnp.abs(s), k)), mask)
    # d loss / d w_eff[o, j] = c[o] x[j]; d w_eff / d mask = w; d mask / d s = sign(s) (identity
    # through the mask, then |.|). The pruned entries get gradient too (straight-through).
    expected = (c.T * x) * w * jnp.sign(s)
    got = jax.grad(loss)(s)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6)
    # Forward value: only the kept entries contribute.
    y = x @ (w * mask).T
    np.testing.assert_allclose(float(loss(s)), float(jnp.sum(y * c)), rtol=1e-6)


def test_gradient_under_jit_and_vmap_matches():
    w = jax.random.normal(jax.random.key(0), (8, 5))
    s = jax.random.normal(jax.random.key(1), (3, 8, 5))
    ks = jnp.array([0, 20, 39], jnp.int32)

    def g(sc, k):
        return jax.grad(lambda q: jnp.sum(masked(w, q, k) ** 2))(sc)

    batched = jax.jit(jax.vmap(g))(s, ks)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(g(s[i], ks[i])), rtol=1e-6)


class _Tiny(nnx.Module):
    def __init__(self):
        self.weight = Frozen(jnp.ones((2, 3)))
        self.scores = Score(jnp.full((2, 3), 0.5))
        self.pruned = PruneCount(jnp.int32(1))


def test_variable_types_select_only_scores():
    m = _Tiny()
    flat = dict(nnx.to_flat_state(nnx.state(m, Score)))
    assert list(flat) == [("scores",)]
    # The foundation's ``fit(..., wrt=Score)`` splits like this: frozen weights stay out.
    _, trainable, rest = nnx.split(m, Score, ...)
    assert set(dict(nnx.to_flat_state(trainable))) == {("scores",)}
    assert set(dict(nnx.to_flat_state(rest))) == {("weight",), ("pruned",)}
    assert issubclass(Score, nnx.Param) and not issubclass(Frozen, nnx.Param)


# ----------------------------------------------------------------------------- threshold reuse


@pytest.fixture(scope="module")
def near_fn():
    from lottery_jax.nets.supermask import hint_from_cut, select_cut, select_cut_near

    def both(prev, scores, k):
        hint = hint_from_cut(select_cut(prev, k))
        (t, cut), nxt = select_cut_near(scores, k, hint)
        flags = removed_by_cut(score_keys(scores), t, cut)
        return flags, nxt

    return jax.jit(both)


NEAR_CASES = {
    **CASES,
    "drifted": lambda rng, shape: rng.normal(size=shape),  # (previous: a shrunk, jittered copy)
    "pairs": lambda rng, shape: rng.choice(rng.normal(size=shape[0] * shape[1] // 2), size=shape),
}


@pytest.mark.parametrize("case", sorted(NEAR_CASES))
@pytest.mark.parametrize("sparsity", (0.0, 0.01, 0.25, 0.5, 0.9, 0.99))
def test_near_select_equals_the_full_select(near_fn, case, sparsity):
    """Threshold reuse removes exactly the entries of the definition, ties included, whether the
    hint is close (scores moved a little), stale (unrelated scores) or exact (same scores)."""
    rng = np.random.default_rng([sorted(NEAR_CASES).index(case), int(sparsity * 1000)])
    shape = (61, 47)
    scores = NEAR_CASES[case](rng, shape).astype(np.float32)
    k = num_pruned(sparsity, scores.size)
    moved = (scores * (1 - 1e-4) + 1e-5 * rng.normal(size=shape)).astype(np.float32)
    stale = rng.normal(size=shape).astype(np.float32)
    for prev in (scores, moved, stale):
        flags, _ = near_fn(prev, scores, k)
        np.testing.assert_array_equal(np.asarray(flags), reference_removed(scores, k))


def test_near_select_follows_a_drifting_tensor_with_few_passes():
    """Hints carried over many steps of a shrinking, jittered tensor: always exact."""
    from lottery_jax.nets.supermask import hint_from_cut, select_cut, select_cut_near

    rng = np.random.default_rng(7)
    s = rng.uniform(-0.05, 0.05, size=(200, 300)).astype(np.float32)
    k = num_pruned(0.5, s.size)
    near = jax.jit(lambda s, k, h: select_cut_near(s, k, h))
    hint = hint_from_cut(select_cut(jnp.asarray(s), k))
    for _ in range(40):
        s = (s * (1 - 5e-4) + 2e-5 * rng.normal(size=s.shape)).astype(np.float32)
        (t, cut), hint = near(s, k, hint)
        flags = removed_by_cut(score_keys(jnp.asarray(s)), t, cut)
        np.testing.assert_array_equal(np.asarray(flags), reference_removed(s, k))


@pytest.mark.parametrize("tied", (2, 3, 15, 16, 17, 40))
@pytest.mark.parametrize("order", ("flat", "planes"))
def test_a_straddling_tie_is_split_by_the_published_index(tied, order):
    """A tie of ``tied`` entries across the cut (split from the rows that hold it up to
    TIE_ROWS entries, by bisection above), in either tie order: the k smallest, lower published
    index first, exactly as the argsort reference on the (out, in r) layout."""
    from lottery_jax.nets.pruned import from_planes, to_planes
    from lottery_jax.nets.supermask import TIE_ROWS, hint_from_cut, select_cut, select_cut_near

    assert TIE_ROWS == 16  # (the cases sit on both sides of it)
    rng = np.random.default_rng(tied)
    published = rng.uniform(-1, 1, size=(6, 7 * 3)).astype(np.float32)  # out 6, in 7, r 3
    where = rng.choice(published.size, size=tied, replace=False)
    published.flat[where] = 0.5 * rng.choice([-1, 1], size=tied)
    below = int(np.sum(np.abs(published) < 0.5))
    held = to_planes(jnp.asarray(published), 3) if order == "planes" else jnp.asarray(published)
    unheld = from_planes if order == "planes" else (lambda a: a)
    select = jax.jit(select_cut, static_argnums=(2, 3))  # (one compile per method, any k)
    near = jax.jit(select_cut_near, static_argnums=(3, 4))
    for take in sorted({1, tied // 2, tied - 1}):
        k = below + take
        want = reference_removed(published, k)
        for method in ("radix", "bisect", "sort"):
            cut = select(held, k, method, order)
            got = removed_by_cut(score_keys(held), *cut, order)
            np.testing.assert_array_equal(np.asarray(unheld(got)), want, err_msg=method)
        hint = hint_from_cut(select(held * 0.999, k, "radix", order))
        cut, _ = near(held, k, hint, "radix", order)
        got = removed_by_cut(score_keys(held), *cut, order)
        np.testing.assert_array_equal(np.asarray(unheld(got)), want, err_msg="near")
