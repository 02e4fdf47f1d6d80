"""Supermasks: trainable scores choose which frozen random weights to keep (edge-popup).

Per tensor, exactly ``int(s * size)`` entries with the smallest ``|score|`` are masked to 0 and the
rest to 1 (s = fraction REMOVED, the paper's Experiment 2); ties are broken by flat index, lower
index removed first. The gradient passes straight through the mask to ``|scores|`` and from there
to the scores (Ramanujan et al. 2020, "What's hidden in a randomly weighted neural network?"; the
published code applies ``GetSubnet`` to ``scores.abs()``).

The published code sorts every score tensor every step. Here the threshold is found exactly without a
sort: for non-negative float32 values the order of the values equals the order of their uint32 bit
patterns, so the k-th smallest ``|score|`` is a k-th smallest uint32. Two selection methods are
provided and agree exactly:

* ``"radix"``: two histogram passes (the top 16 bits, then the low 15 bits inside the chosen bin) --
  two O(N) scatter-adds, fastest on CPU for large tensors;
* ``"bisect"``: 31 counting passes of a bisection on the bit pattern -- reductions only, fast on
  CPU for small tensors;
* ``"sort"``: one stable key-value sort of (bit pattern, flat index), as the published code sorts:
  the k-th pair gives the threshold and the last removed index among the tied entries. One large
  kernel instead of many small ones, so it is the fastest on a GPU, where a step is launch-bound
  (and under ``vmap`` all members' tensors are sorted by one batched sort).

``"auto"`` picks by backend from measured costs (``benchmarks/results/``): on CPU radix for tensors
of at least :data:`RADIX_MIN_SIZE` entries, else bisect; on a GPU the sort (H200, 500 x 3920
scores: sort 0.23 ms, bisect 0.37 ms, radix 0.49 ms); elsewhere (TPU, unmeasured) bisect. All
methods give exactly the same masks, ties included.

Entries equal to the threshold are then split by index with a short bisection over the flat index
that runs only when the threshold value is tied across the cut (all-equal scores, for instance).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

METHODS = ("auto", "radix", "bisect", "sort")


class Score(nnx.Param):
    """Trainable score of a supermask entry (the only thing a pruned network learns).

    A subclass of ``nnx.Param`` so it counts as trainable; the filter ``Score`` selects scores and
    nothing else, and frozen weights (:class:`lottery_jax.nets.targets.Frozen`) are never selected.
    """


class PruneCount(nnx.Variable):
    """Number of entries removed from the sibling score tensor: ``int(s * size)`` (not trained)."""


def num_pruned(sparsity: float, size: int) -> int:
    """``int(sparsity * size)``: exactly what the published code removes (Python float product)."""
    return int(float(sparsity) * int(size))


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float if it lies in [0, 1); raise ValueError otherwise."""
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1) (fraction removed), got {sparsity}")
    return s


#: Below this many entries the bisection is faster on CPU too (the radix histograms have a fixed
#: cost of ~0.3 ms; measured on 2 CPU cores: 50k entries cost the same either way).
RADIX_MIN_SIZE = 1 << 16


def default_method(size: int, backend: str | None = None) -> str:
    """The method ``"auto"`` resolves to for a tensor of ``size`` entries on ``backend``
    (default: JAX's default backend)."""
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return "radix" if size >= RADIX_MIN_SIZE else "bisect"
    if backend in ("gpu", "cuda", "rocm"):
        return "sort"
    return "bisect"


def _select_bisect(bits: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """k-th smallest bit pattern t (1 <= k <= N) by bisection over [0, 2^31): 31 counting passes.

    Returns (t, count(bits < t), count(bits == t)).
    """

    def body(_, lohi):
        lo, hi = lohi
        mid = lo + (hi - lo) // 2
        ok = jnp.sum(bits <= mid, dtype=jnp.int32) >= k
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    _, t = lax.fori_loop(0, 31, body, (jnp.uint32(0), jnp.uint32(0x7FFFFFFF)))
    return t, jnp.sum(bits < t, dtype=jnp.int32), jnp.sum(bits == t, dtype=jnp.int32)


def _select_radix(bits: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Same result as :func:`_select_bisect` from two histograms (radix select on 16 + 15 bits)."""
    high = (bits >> 15).astype(jnp.int32)  # bit 31 is 0 for |x|: 0 .. 65535
    low = (bits & 0x7FFF).astype(jnp.int32)  # 0 .. 32767
    h1 = jnp.zeros(1 << 16, jnp.int32).at[high].add(1)
    c1 = jnp.cumsum(h1)
    b1 = jnp.sum(c1 < k, dtype=jnp.int32)  # first bin whose cumulative count reaches k
    below1 = c1[b1] - h1[b1]
    # Entries outside bin b1 get an out-of-range index and are dropped (no update, no hot bin).
    inside = jnp.where(high == b1, low, 1 << 15)
    h2 = jnp.zeros(1 << 15, jnp.int32).at[inside].add(1, mode="drop")
    c2 = jnp.cumsum(h2)
    b2 = jnp.sum(c2 < k - below1, dtype=jnp.int32)
    t = (b1.astype(jnp.uint32) << 15) | b2.astype(jnp.uint32)
    return t, below1 + c2[b2] - h2[b2], h2[b2]


def _removed_by_sort(bits: jax.Array, k: jax.Array) -> jax.Array:
    """Flat flags of the ``k`` smallest bit patterns (lower index first among equal ones) from one
    stable sort of (bits, index): entry i is removed iff (bits[i], i) <= the k-th sorted pair."""
    index = lax.iota(jnp.int32, bits.size)
    sorted_bits, sorted_index = lax.sort((bits, index), num_keys=1, is_stable=True)
    last = jnp.maximum(k, 1) - 1
    t, cut = sorted_bits[last], sorted_index[last]
    return (k > 0) & ((bits < t) | ((bits == t) & (index <= cut)))


def pruned_flags(scores: jax.Array, k: jax.Array | int, method: str = "auto") -> jax.Array:
    """Boolean array, True for the ``k`` entries with the smallest ``|score|`` (exact top-k).

    Ties are broken by flat (row-major) index: among equal ``|score|`` the lower index is removed
    first. ``k`` may be traced (an int32 scalar), so one compilation serves every sparsity and the
    function can be ``vmap``-ed over stacked scores and counts.
    """
    if method == "auto":
        method = default_method(scores.size)
    if method not in METHODS[1:]:
        raise ValueError(f"unknown mask method {method!r} (choose from {', '.join(METHODS)})")
    n = scores.size
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, n)
    bits = lax.bitcast_convert_type(jnp.abs(scores).astype(jnp.float32).ravel(), jnp.uint32)
    if method == "sort":
        return _removed_by_sort(bits, k).reshape(scores.shape)
    select = _select_radix if method == "radix" else _select_bisect
    t, n_below, n_equal = select(bits, jnp.maximum(k, 1))
    take = jnp.where(k > 0, k - n_below, 0)  # how many of the tied entries are removed
    index = lax.iota(jnp.int32, n)

    # Smallest cut J with count(equal & index < J) >= take: runs only when the tie is split.
    def cond(lohi):
        return lohi[0] < lohi[1]

    def body(lohi):
        lo, hi = lohi
        mid = lo + (hi - lo) // 2
        ok = jnp.sum((bits == t) & (index < mid), dtype=jnp.int32) >= take
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    done = jnp.where(take >= n_equal, n, 0)  # all tied entries go (n), or none (k == 0)
    split = (take > 0) & (take < n_equal)
    lo0 = jnp.where(split, 0, done).astype(jnp.int32)
    hi0 = jnp.where(split, n, done).astype(jnp.int32)
    _, cut = lax.while_loop(cond, body, (lo0, hi0))
    removed = (k > 0) & ((bits < t) | ((bits == t) & (index < cut)))
    return removed.reshape(scores.shape)


def topk_mask(scores: jax.Array, k: jax.Array | int, method: str = "auto") -> jax.Array:
    """0/1 mask (dtype of ``scores``) with exactly ``k`` zeros at the smallest ``|score|``."""
    return jnp.where(pruned_flags(scores, k, method), 0, 1).astype(scores.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def supermask(scores: jax.Array, k: jax.Array, method: str = "auto") -> jax.Array:
    """:func:`topk_mask` in the forward pass, identity in the backward pass (straight-through).

    ``d loss / d scores = d loss / d mask``, as the published ``GetSubnet.backward`` returns ``g``.
    """
    return topk_mask(scores, k, method)


def _supermask_fwd(scores, k, method):
    return topk_mask(scores, k, method), jnp.zeros_like(k)


def _supermask_bwd(method, k_zero, g):
    del method
    # The count is an integer: its cotangent is float0.
    return g, np.zeros(np.shape(k_zero), jax.dtypes.float0)


supermask.defvjp(_supermask_fwd, _supermask_bwd)


def masked(weight: jax.Array, scores: jax.Array, k: jax.Array, method: str = "auto") -> jax.Array:
    """``weight * supermask(|scores|, k)``: the effective weight of a pruned tensor.

    As in the published code (``GetSubnet.apply(scores.abs(), k)``), the straight-through mask is
    taken of ``|scores|``, so ``d loss / d scores = d loss / d mask * sign(scores)`` with
    ``d loss / d mask = d loss / d (effective weight) * weight``.
    """
    return weight * supermask(jnp.abs(scores), k, method)
