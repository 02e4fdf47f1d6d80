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

Entries equal to the threshold are then split by index, only when the threshold value is tied
across the cut: from the few rows that hold tied entries, or by a bisection over the index when
many entries are tied (all-equal scores, for instance). The index ties are broken by grows along
the last axis of every layout used here (:data:`TIE_ORDERS`), so a cut is a per-row limit on the
last-axis position and no index tensor is ever formed.
"""

from __future__ import annotations

import math
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


def score_keys(scores: jax.Array) -> jax.Array:
    """uint32 bit patterns of ``|scores|`` (float32), same shape: their order is the order of
    ``|scores|`` (bit 31 is 0), which is what every select works on."""
    return lax.bitcast_convert_type(jnp.abs(scores).astype(jnp.float32), jnp.uint32)


#: How the index that ties are broken by is laid out in a score tensor (static). ``"flat"``: the
#: flat row-major index of the tensor itself. ``"planes"``: the tensor is the planes (r, out, in)
#: of an (out, in r) tensor (:func:`lottery_jax.nets.pruned.to_planes`) and entry (k, o, j) has
#: that tensor's flat index ``o in r + j r + k``. In both the index grows along the last axis with
#: a fixed stride from a base per row, so a cut ``index < c`` is a prefix of every row: masks
#: compare the last-axis position with a per-row limit and never form an index tensor.
TIE_ORDERS = ("flat", "planes")


def _row_base(shape, order: str) -> tuple[jax.Array, int]:
    """(index of the first entry of every last-axis row (int32, ``shape[:-1]``), stride along it)."""
    if order == "planes":
        r, _, n_in = shape
        k, o = (lax.broadcasted_iota(jnp.int32, shape[:-1], d) for d in range(2))
        return o * (n_in * r) + k, r
    if order != "flat":
        raise ValueError(f"unknown tie order {order!r} (choose from {', '.join(TIE_ORDERS)})")
    rows = shape[:-1]
    return lax.iota(jnp.int32, math.prod(rows)).reshape(rows) * shape[-1], 1


def entry_index(shape, order: str = "flat") -> jax.Array:
    """The index ties are broken by, of every entry of a tensor of ``shape`` (int32)."""
    base, stride = _row_base(shape, order)
    return base[..., None] + lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1) * stride


def row_limits(shape, order: str, cut: jax.Array) -> jax.Array:
    """Per last-axis row, how many of its leading entries have index below ``cut`` (int32,
    ``shape[:-1]``): entry (..., j) has index < cut iff j < limit."""
    base, stride = _row_base(shape, order)
    room = jnp.asarray(cut, jnp.int32) - base  # index < cut  <=>  j stride < room
    return jnp.clip(-((-room) // stride), 0, shape[-1])  # ceil(room / stride), in [0, last]


def removed_by_cut(keys: jax.Array, t: jax.Array, cut: jax.Array, order: str = "flat") -> jax.Array:
    """Flags of a *cut* ``(t, cut)``: entry i is removed iff ``keys[i] < t``, or ``keys[i] == t``
    and its index is below ``cut``. Every select returns its answer as a cut. ``order``
    (:data:`TIE_ORDERS`) says which index ties are broken by: by default the flat index."""
    if keys.ndim == 0:
        return removed_by_cut(keys.reshape(1), t, cut, order).reshape(())
    return (keys < t) | ((keys == t) & index_below(keys.shape, order, cut))


def index_below(shape, order: str, cut: jax.Array) -> jax.Array:
    """Flags of the entries whose index (``order``) is below ``cut``, from :func:`row_limits`."""
    # (The limits are computed once: XLA would otherwise fuse the division into every entry.)
    limit = lax.optimization_barrier(row_limits(shape, order, cut))
    return lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1) < limit[..., None]


def _no_cut() -> tuple[jax.Array, jax.Array]:
    """The cut of k == 0: nothing is below pattern 0."""
    return jnp.uint32(0), jnp.int32(0)


#: A tie straddling the cut is split by gathering the rows that hold tied entries when there are
#: at most this many tied entries (one pass over the tensor); else by a bisection over the index.
TIE_ROWS = 16


def _tie_cut(bits, t, take, n_equal, order: str) -> jax.Array:
    """Smallest index J with count(bits == t & index < J) >= take: ``n`` when every tied entry
    goes, 0 when none does, else (the tie is split) the ``take``-th smallest tied index + 1."""
    shape, n = bits.shape, bits.size
    last = shape[-1]
    rows = bits.reshape(-1, last)

    def gather():
        # At most TIE_ROWS rows hold tied entries: their indices, smallest first, give J.
        tied_rows = jnp.max((rows == t).astype(jnp.uint8), axis=1) > 0  # (faster than any)
        ids = jnp.nonzero(tied_rows, size=TIE_ROWS, fill_value=rows.shape[0])[0]
        valid = ids < rows.shape[0]
        ids = jnp.minimum(ids, rows.shape[0] - 1)
        base, stride = _row_base(shape, order)
        index = base.reshape(-1)[ids][:, None] + jnp.arange(last, dtype=jnp.int32)[None] * stride
        big = jnp.iinfo(jnp.int32).max
        cand = jnp.where((rows[ids] == t) & valid[:, None], index, big)

        def next_smallest(_, prev):  # (a sort or top_k of the few rows is far slower on CPU)
            return jnp.min(jnp.where(cand > prev, cand, big))

        return lax.fori_loop(0, take, next_smallest, jnp.int32(-1)) + 1

    def bisect():
        def cond(lohi):
            return lohi[0] < lohi[1]

        def body(lohi):
            lo, hi = lohi
            mid = lo + (hi - lo) // 2
            below = (bits == t) & index_below(shape, order, mid)
            ok = jnp.sum(below, dtype=jnp.int32) >= take
            return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

        return lax.while_loop(cond, body, (jnp.int32(0), jnp.int32(n)))[1]

    split = (take > 0) & (take < n_equal)
    done = jnp.where(take >= n_equal, n, 0).astype(jnp.int32)  # all tied entries go, or none
    branch = jnp.where(split, jnp.where(n_equal <= TIE_ROWS, 1, 2), 0)
    return lax.switch(branch, (lambda: done, gather, bisect))


def select_cut(
    scores: jax.Array, k: jax.Array | int, method: str = "auto", order: str = "flat"
) -> tuple[jax.Array, jax.Array]:
    """The exact top-k of ``|scores|`` as a cut ``(t, cut)`` (see :func:`removed_by_cut`): the
    ``k`` smallest ``|score|`` are removed, among equal ones the lower index first (``order``:
    as in :func:`removed_by_cut`). ``k == 0`` gives ``(0, 0)`` (nothing is below 0). ``k`` may be
    traced."""
    if method == "auto":
        method = default_method(scores.size)
    if method not in METHODS[1:]:
        raise ValueError(f"unknown mask method {method!r} (choose from {', '.join(METHODS)})")
    n = scores.size
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, n)
    keys = score_keys(scores).reshape(scores.shape or (1,))
    bits = keys.ravel()

    def select():
        if method == "sort":
            index = entry_index(keys.shape, order).ravel()
            sorted_bits, sorted_index = lax.sort((bits, index), num_keys=2)
            last = jnp.maximum(k, 1) - 1
            return sorted_bits[last], sorted_index[last] + 1
        t, n_below, n_equal = (_select_radix if method == "radix" else _select_bisect)(
            bits, jnp.maximum(k, 1)
        )
        return t, _tie_cut(keys, t, k - n_below, n_equal, order)

    # Nothing to select at k == 0 (sparsity 0): no pass over the scores at all.
    return lax.cond(k > 0, select, _no_cut)


def pruned_flags(scores: jax.Array, k: jax.Array | int, method: str = "auto") -> jax.Array:
    """Boolean array, True for the ``k`` entries with the smallest ``|score|`` (exact top-k).

    Ties are broken by flat (row-major) index: among equal ``|score|`` the lower index is removed
    first. ``k`` may be traced (an int32 scalar), so one compilation serves every sparsity and the
    function can be ``vmap``-ed over stacked scores and counts.
    """
    t, cut = select_cut(scores, k, method)
    return removed_by_cut(score_keys(scores), t, cut)


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


# ----------------------------------------------------------------------------- masks from cuts


def cut_mask(scores: jax.Array, cut: tuple[jax.Array, jax.Array], order: str = "flat") -> jax.Array:
    """0/1 mask (dtype of ``scores``) of a cut: 0 where :func:`removed_by_cut` removes."""
    removed = removed_by_cut(score_keys(scores), *cut, order)
    return jnp.where(removed, 0, 1).astype(scores.dtype)


def int_cotangent(x: jax.Array) -> np.ndarray:
    """The (float0) cotangent of an integer input of a custom VJP."""
    return np.zeros(np.shape(x), jax.dtypes.float0)


@jax.custom_vjp
def masked_by_cut(weight: jax.Array, scores: jax.Array, t: jax.Array, cut: jax.Array) -> jax.Array:
    """``weight * mask`` for a cut chosen beforehand (:func:`select_cut`), with the gradient of
    :func:`masked`: straight through the mask, then through ``|scores|``:
    ``d scores = (g * weight) * sign(scores)`` (pruned entries too)."""
    return weight * cut_mask(scores, (t, cut))


def _masked_by_cut_fwd(weight, scores, t, cut):
    return masked_by_cut(weight, scores, t, cut), (weight, scores, t, cut)


def _masked_by_cut_bwd(res, g):
    weight, scores, t, cut = res
    mask = cut_mask(scores, (t, cut))
    return g * mask, (g * weight) * jnp.sign(scores), int_cotangent(t), int_cotangent(cut)


masked_by_cut.defvjp(_masked_by_cut_fwd, _masked_by_cut_bwd)


# ----------------------------------------------------------------------------- threshold reuse
#
# Scores move little from one step to the next, so the previous step's cut predicts this one's.
# :func:`select_cut_near` finds the exact top-k with a few counting passes around that guess: a
# pass counts ``keys < h`` for :data:`NEAR_THRESHOLDS` thresholds h at once (one read of the
# scores), keeping a bracket ``count(< lo) < k < count(< hi)``. It is done when a threshold h has
# ``count(keys < h) == k`` exactly: then the k smallest are exactly the entries below h (no tie
# straddles the cut), the same set the full select removes. When the bracket closes to one bit
# pattern t (a tie straddles the cut) the tied entries are split by index as in the full select;
# after :data:`NEAR_PASSES` passes without either, the full select runs instead. So the masks are
# always those of the definition; only the work differs.

#: Thresholds counted per pass of the near select (one variadic reduction).
NEAR_THRESHOLDS = 8
#: Counting passes before the near select gives up and runs the full select.
NEAR_PASSES = 6
#: First passes' spread, relative: the initial error scale is ``t >> NEAR_INITIAL_SHIFT`` patterns.
NEAR_INITIAL_SHIFT = 12
#: Offsets of the first pass around the predicted pattern, in units of the error scale.
_FIRST_OFFSETS = (-8.0, -3.0, -1.0, -1.0 / 3, 1.0 / 3, 1.0, 3.0, 8.0)


def hint_from_cut(cut: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The state :func:`select_cut_near` carries for a tensor, from a cut: (last pattern, last
    drift, error scale) as int32 (patterns of ``|x|`` are below 2^31)."""
    t = cut[0].astype(jnp.int32)
    return t, jnp.int32(0), jnp.maximum(t >> NEAR_INITIAL_SHIFT, 1)


def _count_below(keys: jax.Array, ths: jax.Array) -> jax.Array:
    """count(keys < ths[i]) for every threshold, in ONE pass (a variadic integer reduction)."""
    ops = tuple((keys < ths[i]).astype(jnp.int32) for i in range(ths.shape[0]))
    zeros = tuple(jnp.int32(0) for _ in ops)
    sums = lax.reduce(ops, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)),
                      tuple(range(keys.ndim)))  # fmt: skip
    return jnp.stack(sums)


def _near_thresholds(lo, hi, c_lo, c_hi, k, first, pred, err) -> jax.Array:
    """The next pass's thresholds inside (lo, hi), increasing: around the prediction on the first
    pass, else around the linear interpolation of the count, spaced to cover half the bracket (or
    every pattern of a bracket of at most ``B + 1``)."""
    b = NEAR_THRESHOLDS
    i = jnp.arange(b, dtype=jnp.float32)
    # Offsets in float32 (relative: exact enough), positions in int32 (patterns near 1e9 are far
    # beyond float32's integer resolution).
    w = (hi - lo).astype(jnp.float32)
    frac = (k - c_lo).astype(jnp.float32) / jnp.maximum(c_hi - c_lo, 1).astype(jnp.float32)
    spacing = jnp.maximum(jnp.floor(w / (2 * b)), 1.0)
    interp = jnp.clip(jnp.round(frac * w + (i - (b - 1) / 2) * spacing), 1.0, w - 1)
    around = jnp.round(jnp.asarray(_FIRST_OFFSETS) * err.astype(jnp.float32))
    around = jnp.clip(around, -(2.0**30), 2.0**30).astype(jnp.int32)
    th = jnp.where(first, jnp.clip(pred, 1, 2**31 - 2) + around,
                   lo + jnp.minimum(interp, 2.0**30 * 1.99).astype(jnp.int32))  # fmt: skip
    th = jnp.sort(jnp.clip(th, lo + 1, hi - 1))
    every = jnp.minimum(lo + 1 + jnp.arange(b, dtype=jnp.int32), hi - 1)
    return jnp.clip(jnp.where(hi - lo <= b + 1, every, th), lo + 1, hi - 1)


def _near_bracket(keys, k, pred, err):
    """The counting passes: (found, h, lo, hi, c_lo, c_hi) after at most :data:`NEAR_PASSES`."""
    n = keys.size
    top = jnp.int32(2**31 - 1)  # every pattern of |x| is below (NaN included); count(< top) = n

    def cond(st):
        found, _, lo, hi, _, _, passes = st
        return (~found) & (hi - lo > 1) & (passes < NEAR_PASSES)

    def body(st):
        _, _, lo, hi, c_lo, c_hi, passes = st
        th = _near_thresholds(lo, hi, c_lo, c_hi, k, passes == 0, pred, err)
        # (The 8 thresholds are computed once: XLA would otherwise fuse their arithmetic into the
        # count and redo it for every entry.)
        c = _count_below(keys, jax.lax.optimization_barrier(th.astype(jnp.uint32)))
        hit = c == k
        below, above = c < k, c > k
        lo2 = jnp.max(jnp.where(below, th, lo))
        c_lo2 = jnp.max(jnp.where(below, c, c_lo))
        hi2 = jnp.min(jnp.where(above, th, hi))
        c_hi2 = jnp.min(jnp.where(above, c, c_hi))
        h = jnp.min(jnp.where(hit, th, top))
        return jnp.any(hit), h, lo2, hi2, c_lo2, c_hi2, passes + 1

    start = (jnp.bool_(False), top, jnp.int32(0), top, jnp.int32(0), jnp.int32(n), jnp.int32(0))
    found, h, lo, hi, c_lo, c_hi, _ = lax.while_loop(cond, body, start)
    return found, h, lo, hi, c_lo, c_hi


def select_cut_near(
    scores: jax.Array,
    k: jax.Array | int,
    hint: tuple[jax.Array, jax.Array, jax.Array],
    method: str = "auto",
    order: str = "flat",
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    """:func:`select_cut` (the same removed set, ties included) from a hint (:func:`hint_from_cut`,
    or the hint this function returned for the previous scores). Returns (cut, next hint).

    The cut may be written differently from the full select's (``(h, 0)``: the entries below h)
    but it always removes the same entries. ``method`` is the full select's for the fallback.
    """
    n = scores.size
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, n)
    keys = score_keys(scores)
    t_prev, drift, err = hint
    pred = jnp.clip(t_prev + drift, 0, 2**31 - 2)
    found, h, lo, hi, c_lo, c_hi = _near_bracket(keys, k, pred, err)
    tie = (~found) & (hi - lo == 1)

    def near():
        shaped = keys.reshape(scores.shape or (1,))
        cut = _tie_cut(shaped, lo.astype(jnp.uint32), k - c_lo, c_hi - c_lo, order)
        return jnp.where(found, h, lo).astype(jnp.uint32), jnp.where(found, 0, cut)

    def full():
        return select_cut(scores, k, method, order)

    branch = jnp.where(k == 0, 0, jnp.where((found | tie) & (k < n), 1, 2))
    cut = lax.switch(branch, (_no_cut, near, full))
    t_new = jnp.where(found, h, cut[0].astype(jnp.int32))
    miss = jnp.abs(t_new - pred)
    step = t_new - t_prev
    return cut, (t_new, step, jnp.maximum(jnp.maximum(2 * miss, err // 2), 1))
