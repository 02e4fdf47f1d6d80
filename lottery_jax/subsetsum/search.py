"""Exact SubsetSum approximation of weights by random coefficients (Pensia et al. 2020, Experiment 1).

Every weight ``w`` is approximated by a subset sum of ``n`` random coefficients ``a_1..a_n``:

* ``min-error`` (the paper's objective, Sec. 4): ``min_x |w - sum_i a_i x_i|`` over ``x in {0,1}^n``,
  solved to the exact optimum (the published run used a MIP with a 1% gap);
* ``min-count`` (ours): the fewest coefficients with ``|w - sum| <= eps``, ties broken by the smaller
  error. The empty subset (sum 0, count 0) is a subset.

The search is a meet-in-the-middle enumeration in float64: the coefficients are split into a small
half ``A`` (``ka`` bits) and a large half ``B`` (``kb = n - ka`` bits). ``B``'s ``2^kb`` sums are
sorted once per instance (per output row when the coefficients are shared by a row, which is the
published setting; a bitonic doubling network for small halves, ``lax.sort`` beyond) and indexed
by a bucket table (a histogram over ``[min B, max B]`` with ``2^kb .. 2^(kb+2)`` cells, and its
prefix sums). Each query ``t = w - a`` (``a`` one of ``A``'s ``2^ka`` sums) finds its cell in O(1),
then binary-searches only inside that cell (a few steps: the bucket map is monotone, so the lower
bound of ``t`` always lies within its cell's index range), and compares the two neighbours. The
best of all ``2^ka`` queries is the exact optimum over all ``2^n`` subsets. Everything is float64,
so near-ties are resolved as a float64 brute force would (to rounding, ~1e-16).

min-count runs the same search per subset size: ``B`` grouped by popcount, levels ``c = 0, 1, ..``
in a ``while_loop`` that stops once every weight has a subset within eps.

Everything here is pure: arrays and PRNG keys in, arrays out. The functions run under float64
(``jax.enable_x64``) whatever the global setting, are jit-compiled ahead of time (so callers can
time compilation apart from solving) and shard the instance batch across all local devices.

Masks: a subset is an integer whose bit ``i`` (least significant first) says ``x_i = 1``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

Rounding = Literal["published", "readme"]

#: Largest sorted half built by the bitonic network (its stages are unrolled: compile time grows
#: as kb^2); larger halves use ``lax.sort``.
BITONIC_MAX_BITS = 12

#: Smallest ``rows x 2^kb`` sorted by the bitonic network: below it sorting costs little either way
#: and ``lax.sort`` compiles several times faster (small matrices from the Python API).
BITONIC_MIN_SIZE = 2**15

#: Largest n the enumeration tier accepts (beyond it: JAX heuristic incumbent + SCIP).
MAX_ENUM_N = 34


# ----------------------------------------------------------------------------------------------
# Instances
# ----------------------------------------------------------------------------------------------


def n_coefficients(c: float, epsilon: float, rounding: Rounding = "published") -> int:
    """Number of random coefficients per weight.

    ``published``: ``int(c * round(log2(1/eps)))`` as the published code computes it (21 for c=3,
    eps=0.01). ``readme``: ``round(c * log2(1/eps))`` as the paper's README states it (20).
    """
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c}")
    return max(raw_n_coefficients(c, epsilon, rounding), 1)


def raw_n_coefficients(c: float, epsilon: float, rounding: Rounding = "published") -> int:
    """:func:`n_coefficients` before it is raised to at least 1 (0 for a tiny ``c``: a caller
    that takes ``c`` from a user refuses that rather than silently using n = 1)."""
    if rounding == "published":
        return int(c * round(math.log2(1 / epsilon)))
    if rounding == "readme":
        return int(round(c * math.log2(1 / epsilon)))
    raise ValueError(f"unknown rounding {rounding!r}")


#: Ratio ``min(|low|, high) / max(|low|, high)`` of the published range below which ``auto``
#: uses the symmetric range instead.
AUTO_SYMMETRY = 0.5

RANGE_MODES = ("auto", "published", "symmetric")


def coefficient_range(
    weights: Sequence[np.ndarray], mode: str = "published"
) -> tuple[float, float]:
    """The range the coefficients are drawn from, over the whole target network.

    ``published``: ``[min(0, min w), max(0, max w)]``, as the published code draws them (nearly
    symmetric for the paper's FC2: [-0.464, 0.541]). ``symmetric``: ``[-max|w|, max|w|]``, the
    theory's uniform coefficients on [-1, 1] up to scale. ``auto``: the published range unless its
    shorter side is under half the longer one (LeNet5's [-0.67, 1.43]): then a row of ``n``
    coefficients often holds too few of one sign to reach its weights (39 to 166 of LeNet5's weights
    proved infeasible at n = 21 for each seed tried), and the symmetric range is used.
    """
    low = min(0.0, *(float(np.min(w)) for w in weights))
    high = max(0.0, *(float(np.max(w)) for w in weights))
    if mode not in RANGE_MODES:
        raise ValueError(f"unknown range mode {mode!r}")
    m = max(-low, high)
    if mode == "symmetric" or (mode == "auto" and m > 0 and min(-low, high) < AUTO_SYMMETRY * m):
        return -m, m
    return low, high


def draw_coefficients(
    key: jax.Array, shape: tuple[int, ...], n: int, low: float, high: float
) -> np.ndarray:
    """``shape + (n,)`` coefficients, i.i.d. uniform on ``[low, high)``, float64.

    ``shape`` is ``(out,)`` for one set per output row (published) or ``(out, in)`` for one set per
    weight. The draw is a pure function of ``key`` (threefry), so the seed regenerates it exactly.
    """
    with jax.enable_x64(True):
        u = jax.random.uniform(key, (*shape, n), dtype=jnp.float64)
        return np.asarray(low + (high - low) * np.asarray(u, dtype=np.float64))


def draw_nested_coefficients(
    key: jax.Array, shape: tuple[int, ...], n: int, low: float, high: float
) -> np.ndarray:
    """Like :func:`draw_coefficients`, but coefficient ``i`` comes from ``fold_in(key, i)``: the
    draw for ``n`` is the first ``n`` coefficients of the draw for any larger ``n``."""
    cols = [draw_coefficients(jax.random.fold_in(key, i), shape, 1, low, high) for i in range(n)]
    return np.concatenate(cols, axis=-1)


def layer_key(seed: int, layer_index: int) -> jax.Array:
    """The key of layer ``layer_index``'s coefficient draw: ``fold_in(key(seed), layer_index)``."""
    return jax.random.fold_in(jax.random.key(seed), layer_index)


#: Masks are int64 integers up to this many coefficients; beyond it they are packed bits: uint8
#: arrays ``(..., ceil(n/8))`` in little bit order (coefficient ``i`` is bit ``i % 8`` of byte
#: ``i // 8``, as in the ticket). :func:`mask_to_bits` and :func:`subset_sums` take either.
INT_MASK_BITS = 62


def packed_masks(n: int) -> bool:
    """Whether masks of ``n`` coefficients are packed uint8 bits (n > :data:`INT_MASK_BITS`)."""
    return n > INT_MASK_BITS


def mask_to_bits(masks: np.ndarray, n: int) -> np.ndarray:
    """Masks to booleans ``(..., n)`` (bit ``i`` = coefficient ``i``).

    ``masks`` are integers ``(...)`` for ``n <= INT_MASK_BITS`` and packed uint8 ``(..., ceil(n/8))``
    beyond it.
    """
    if packed_masks(n):
        masks = np.asarray(masks)
        if masks.dtype != np.uint8 or masks.shape[-1:] != ((n + 7) // 8,):
            raise ValueError(f"masks of n={n} coefficients are packed uint8 (..., {(n + 7) // 8})")
        return unpack_bits(masks, n)
    masks = np.asarray(masks, dtype=np.uint64)
    return ((masks[..., None] >> np.arange(n, dtype=np.uint64)) & np.uint64(1)).astype(bool)


def bits_to_mask(bits: np.ndarray) -> np.ndarray:
    """Booleans ``(..., n)`` to masks: int64 ``(...)``, or packed uint8 for n > INT_MASK_BITS."""
    n = bits.shape[-1]
    if packed_masks(n):
        return pack_bits(bits)
    return (bits.astype(np.int64) << np.arange(n, dtype=np.int64)).sum(-1)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Booleans ``(..., n)`` as packed uint8 ``(..., ceil(n/8))``, bit ``i`` of byte ``i // 8``
    little-endian: the masks' form beyond :data:`INT_MASK_BITS` and the tickets' form at any n."""
    return np.packbits(np.asarray(bits, bool), axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, n: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_bits`: booleans ``(..., n)`` (every stored bit when ``n`` is None,
    so that padding bits can be checked)."""
    return np.unpackbits(packed, axis=-1, count=n, bitorder="little").astype(bool)


def bits_to_ints(bits: np.ndarray) -> np.ndarray:
    """Booleans ``(..., n)`` as an object array of Python integers (bit ``i`` = coefficient ``i``;
    any n), shape ``(...)``."""
    bits = np.asarray(bits, bool)
    out = np.empty(bits.shape[:-1], dtype=object)
    weights = [1 << i for i in range(bits.shape[-1])]
    for idx in np.ndindex(out.shape):
        out[idx] = sum(wt for wt, b in zip(weights, bits[idx], strict=True) if b)
    return out


def ints_to_bits(ints: np.ndarray, n: int) -> np.ndarray:
    """Python-integer masks ``(...)`` as booleans ``(..., n)``; inverse of :func:`bits_to_ints`."""
    ints = np.asarray(ints, dtype=object)
    bits = np.zeros((*ints.shape, n), bool)
    for idx in np.ndindex(ints.shape):
        v = int(ints[idx])
        bits[idx] = [(v >> i) & 1 for i in range(n)]
    return bits


def masks_to_ints(masks: np.ndarray, n: int) -> np.ndarray:
    """Masks (either form) as an object array of Python integers (any n), shape ``(...)``."""
    return bits_to_ints(mask_to_bits(masks, n))


def ints_to_masks(ints: np.ndarray, n: int) -> np.ndarray:
    """Python-integer masks ``(...)`` back to this module's form for ``n`` coefficients."""
    return bits_to_mask(ints_to_bits(ints, n))


def broadcast_coefficients(coefs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Coefficients ``(out, n)`` (per row) or ``shape + (n,)`` (per weight) viewed so that they
    broadcast against masks' bits ``shape + (n,)``: a row's set is shared by its whole slice."""
    coefs = np.asarray(coefs)
    if coefs.shape[:-1] == tuple(shape):
        return coefs
    return coefs.reshape(coefs.shape[0], *([1] * (len(shape) - 1)), coefs.shape[-1])


def subset_sums(coefs: np.ndarray, masks: np.ndarray, n: int | None = None) -> np.ndarray:
    """Float64 sums of the chosen coefficients. ``coefs (..., n)`` broadcast against the masks'
    bits (``n`` defaults to the coefficients' last axis)."""
    n = coefs.shape[-1] if n is None else n
    bits = mask_to_bits(masks, n)
    return np.where(bits, np.asarray(coefs, np.float64), 0.0).sum(-1)


# ----------------------------------------------------------------------------------------------
# Kernels (one shard of instances). Shapes: coefs (R, n), weights (R, W).
# ----------------------------------------------------------------------------------------------


def default_a_bits(n: int, width: int) -> int:
    """Bits of the small half: balance ``W * 2^ka`` queries against the ``2^kb`` sorted sums."""
    if width <= 1:  # one instance per weight: about balanced halves (measured best on CPU)
        return (n + 1) // 2
    ka = round((n + 3 - math.log2(width)) / 2)
    return int(min(max(ka, 0), n))


def _half_sums(coefs: jax.Array, lo: int, k: int) -> jax.Array:
    """All ``2^k`` subset sums of ``coefs[:, lo:lo+k]``; index = local mask.

    Built by doubling (``S <- [S, S + a_i]``), so each sum adds its coefficients in index order
    with ``2^k`` additions in all.
    """
    sums = jnp.zeros((coefs.shape[0], 1), coefs.dtype)
    for i in range(k):
        sums = jnp.concatenate([sums, sums + coefs[:, lo + i : lo + i + 1]], axis=1)
    return sums


def _sorted_half_sums(coefs: jax.Array, lo: int, k: int) -> tuple[jax.Array, jax.Array]:
    """The ``2^k`` subset sums of ``coefs[:, lo:lo+k]`` in ascending order, and their local masks.

    Sorted by construction (Horowitz-Sahni doubling): ``S`` sorted and ``S + a_i`` sorted make the
    bitonic sequence ``[S, reverse(S + a_i)]``, which a bitonic merge network (elementwise min/max
    over reshaped halves: no gathers, no comparator calls) sorts in ``i + 1`` stages. On CPU this is
    several times faster than a general sort of the same ``2^k`` values.
    """
    R = coefs.shape[0]
    vals = jnp.zeros((R, 1), coefs.dtype)
    masks = jnp.zeros((R, 1), jnp.int32)
    for i in range(k):
        L = vals.shape[1]
        x = jnp.concatenate([vals, (vals + coefs[:, lo + i : lo + i + 1])[:, ::-1]], axis=1)
        p = jnp.concatenate([masks, (masks | (1 << i))[:, ::-1]], axis=1)
        stride = L
        while stride >= 1:
            x4 = x.reshape(R, -1, 2, stride)
            p4 = p.reshape(R, -1, 2, stride)
            a, b = x4[:, :, 0], x4[:, :, 1]
            pa, pb = p4[:, :, 0], p4[:, :, 1]
            swap = a > b
            x = jnp.stack([jnp.where(swap, b, a), jnp.where(swap, a, b)], axis=2).reshape(R, -1)
            p = jnp.stack([jnp.where(swap, pb, pa), jnp.where(swap, pa, pb)], axis=2).reshape(R, -1)
            stride //= 2
        vals, masks = x, p
    return vals, masks


def _lower_bound(sorted_vals: jax.Array, q: jax.Array, lo: jax.Array, hi: jax.Array, steps):
    """First index in ``[lo, hi]`` with ``sorted_vals[idx] >= q`` (``hi`` if none), per query.

    ``sorted_vals (R, m)``, ``q, lo, hi (R, Q)``; ``steps >= bit_length(max(hi - lo))``.
    """
    m = sorted_vals.shape[1]

    def body(_, state):
        pos, length = state
        half = length >> 1
        mid = pos + half
        v = jnp.take_along_axis(sorted_vals, jnp.minimum(mid, m - 1), axis=1)
        go = (v < q) & (length > 0)
        pos = jnp.where(go, mid + 1, pos)
        length = jnp.where(go, length - half - 1, half)
        return pos, length

    pos, _ = lax.fori_loop(0, steps, body, (lo, hi - lo))
    return pos


def _nearest(sorted_vals: jax.Array, q: jax.Array, pos: jax.Array):
    """Nearest of ``sorted_vals[pos-1]`` and ``sorted_vals[pos]`` to ``q``: (error, index)."""
    m = sorted_vals.shape[1]
    p1 = jnp.clip(pos - 1, 0, m - 1)
    p2 = jnp.clip(pos, 0, m - 1)
    e1 = jnp.abs(q - jnp.take_along_axis(sorted_vals, p1, axis=1))
    e2 = jnp.abs(q - jnp.take_along_axis(sorted_vals, p2, axis=1))
    take2 = e2 < e1
    return jnp.where(take2, e2, e1), jnp.where(take2, p2, p1)


def min_error_kernel(
    coefs: jax.Array, weights: jax.Array, *, ka: int, cells_log2: int | None = None
):
    """Exact ``min_x |w - sum a_i x_i|`` for every weight. Returns ``(masks int64, errors f64)``.

    ``coefs (R, n)`` are shared by the ``W`` weights of a row: ``weights (R, W)``.
    """
    R, n = coefs.shape
    W = weights.shape[1]
    kb = n - ka
    if cells_log2 is None:  # table cost ~ cells, search cost ~ queries x steps: balance them
        cells_log2 = min(max(round(math.log2(W * 2**ka / 2)), kb), kb + 2)
    M = 2**cells_log2
    A = _half_sums(coefs, 0, ka)  # (R, 2^ka)
    if kb <= BITONIC_MAX_BITS and R * 2**kb >= BITONIC_MIN_SIZE:  # (R, 2^kb) ascending + masks
        Bs, perm = _sorted_half_sums(coefs, ka, kb)
    else:  # the unrolled network would compile slowly; one sort per row is cheap here anyway
        B = _half_sums(coefs, ka, kb)
        iota = lax.broadcasted_iota(jnp.int32, B.shape, 1)
        Bs, perm = lax.sort((B, iota), dimension=1, num_keys=1)
    bmin = Bs[:, :1]
    span = Bs[:, -1:] - bmin
    inv_h = jnp.where(span > 0, M / jnp.where(span > 0, span, 1.0), 0.0)

    def cell(x):  # monotone in x: the bucket map every lookup relies on
        return jnp.clip(jnp.floor((x - bmin) * inv_h), 0, M - 1).astype(jnp.int32)

    flat = cell(Bs) + (jnp.arange(R, dtype=jnp.int32) * M)[:, None]
    counts = jnp.zeros(R * M, jnp.int32).at[flat.reshape(-1)].add(1).reshape(R, M)
    table = jnp.concatenate([jnp.zeros((R, 1), jnp.int32), jnp.cumsum(counts, axis=1)], axis=1)
    steps = 32 - lax.clz(jnp.max(counts))

    q = (weights[:, :, None] - A[:, None, :]).reshape(R, -1)  # (R, W * 2^ka)
    c = cell(q)
    lo = jnp.take_along_axis(table, c, axis=1)
    hi = jnp.take_along_axis(table, c + 1, axis=1)
    pos = _lower_bound(Bs, q, lo, hi, steps)
    err, bidx = _nearest(Bs, q, pos)
    err = err.reshape(R, W, -1)
    ai = jnp.argmin(err, axis=2)  # (R, W)
    best_err = jnp.take_along_axis(err, ai[..., None], axis=2)[..., 0]
    bsorted = jnp.take_along_axis(bidx.reshape(R, W, -1), ai[..., None], axis=2)[..., 0]
    borig = jnp.take_along_axis(perm, bsorted, axis=1)
    masks = ai.astype(jnp.int64) | (borig.astype(jnp.int64) << ka)
    return masks, best_err


def _popcount_groups(k: int) -> list[np.ndarray]:
    idx = np.arange(2**k)
    pop = np.array([bin(i).count("1") for i in idx], dtype=np.int64)
    return [idx[pop == p] for p in range(k + 1)]


def _sorted_by_popcount(B: jax.Array, groups_b: list[np.ndarray]):
    """``B``'s sums grouped by popcount, each group sorted and padded with +inf to the largest:
    ``(R, kb+1, gmax)`` sums, the B-masks they come from, and ``gmax``."""
    gmax = max(len(g) for g in groups_b)
    pad_idx = np.stack([np.concatenate([g, np.full(gmax - len(g), -1)]) for g in groups_b])
    vals = jnp.where(pad_idx >= 0, B[:, np.maximum(pad_idx, 0)], jnp.inf)
    bmask = jnp.broadcast_to(jnp.asarray(np.maximum(pad_idx, 0), jnp.int64), vals.shape)
    b_sorted, b_masks = lax.sort((vals, bmask), dimension=2, num_keys=1)
    return b_sorted, b_masks, gmax


def min_count_kernel(coefs: jax.Array, weights: jax.Array, epsilon, *, ka: int):
    """Fewest coefficients with ``|w - sum| <= eps``, ties broken by the smaller error.

    Levels ``c = 0, 1, ...`` (subset sizes) are searched in order inside a ``while_loop`` that stops
    once every weight of the shard is settled; the first feasible level is the minimum count and its
    nearest subset of that size the tie-break. Level ``c`` pairs ``A``'s subsets of size ``pa`` with
    ``B``'s of size ``c - pa``; ``B`` is grouped by popcount, each group sorted (padded with +inf to
    the largest group). Returns ``(masks, errors, counts, feasible)``; infeasible weights get
    ``count = -1`` (the caller keeps their min-error approximation).
    """
    R, n = coefs.shape
    W = weights.shape[1]
    kb = n - ka
    A = _half_sums(coefs, 0, ka)
    B = _half_sums(coefs, ka, kb)
    groups_a = _popcount_groups(ka)
    b_sorted, b_masks, gmax = _sorted_by_popcount(B, _popcount_groups(kb))
    steps = int(gmax).bit_length()

    def level(state):
        c, done, masks, errs, counts = state
        best_e = jnp.full((R, W), jnp.inf)
        best_m = jnp.zeros((R, W), jnp.int64)
        for pa, ga in enumerate(groups_a):
            pb = c - pa
            valid = (pb >= 0) & (pb <= kb)

            def pair(best, pa=pa, ga=ga, pb=pb):
                # A's subsets of size pa against B's of size pb = c - pa.
                best_e, best_m = best
                pbc = jnp.clip(pb, 0, kb)
                bs = lax.dynamic_index_in_dim(b_sorted, pbc, axis=1, keepdims=False)
                bmk = lax.dynamic_index_in_dim(b_masks, pbc, axis=1, keepdims=False)
                q = (weights[:, :, None] - A[:, ga][:, None, :]).reshape(R, -1)
                lo = jnp.zeros(q.shape, jnp.int32)
                hi = jnp.full(q.shape, gmax, jnp.int32)
                pos = _lower_bound(bs, q, lo, hi, steps)
                e, bi = _nearest(bs, q, pos)
                e = e.reshape(R, W, len(ga))
                ai = jnp.argmin(e, axis=2)
                e = jnp.take_along_axis(e, ai[..., None], axis=2)[..., 0]
                bi = jnp.take_along_axis(bi.reshape(R, W, len(ga)), ai[..., None], axis=2)[..., 0]
                m = jnp.asarray(ga, jnp.int64)[ai] | (jnp.take_along_axis(bmk, bi, axis=1) << ka)
                better = e < best_e
                return jnp.where(better, e, best_e), jnp.where(better, m, best_m)

            # Pairs outside this level are skipped, not computed and masked.
            best_e, best_m = lax.cond(valid, pair, lambda b: b, (best_e, best_m))
        newly = (~done) & (best_e <= epsilon)
        return (
            c + 1,
            done | newly,
            jnp.where(newly, best_m, masks),
            jnp.where(newly, best_e, errs),
            jnp.where(newly, c, counts),
        )

    state = (
        jnp.int32(0),
        jnp.zeros((R, W), bool),
        jnp.zeros((R, W), jnp.int64),
        jnp.full((R, W), jnp.inf),
        jnp.full((R, W), -1, jnp.int32),
    )
    state = lax.while_loop(lambda s: (s[0] <= n) & ~jnp.all(s[1]), level, state)
    _, done, masks, errs, counts = state
    return masks, errs, counts, done


# ----------------------------------------------------------------------------------------------
# Compiled, sharded solvers
# ----------------------------------------------------------------------------------------------


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh ``("inst",)`` over all local devices: instances are split across it."""
    devs = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devs), ("inst",))


@dataclass
class CompiledSolver:
    """An ahead-of-time compiled solver for fixed chunk shapes ``(rows, n)`` and ``(rows, width)``.

    ``rows`` is a multiple of the mesh size. Call it with numpy arrays of exactly those shapes.
    """

    kind: str
    rows: int
    width: int
    n: int
    ka: int
    compile_seconds: float
    _fn: Callable
    _mesh: Mesh
    epsilon: float | None = None  # min-count: a runtime argument (one compile serves every eps)

    def __call__(self, coefs: np.ndarray, weights: np.ndarray):
        with jax.enable_x64(True):
            args = [jnp.asarray(coefs, jnp.float64), jnp.asarray(weights, jnp.float64)]
            if self.kind == "min-count":
                args.append(jnp.asarray(self.epsilon, jnp.float64))
            return jax.tree.map(np.asarray, self._fn(*args))


_COMPILED: dict[tuple, CompiledSolver] = {}


def compile_solver(
    kind: Literal["min-error", "min-count"],
    rows: int,
    width: int,
    n: int,
    *,
    epsilon: float | None = None,
    ka: int | None = None,
    mesh: Mesh | None = None,
) -> CompiledSolver:
    """Compile ``min_error_kernel`` / ``min_count_kernel`` for one chunk shape, sharded over the
    mesh's ``inst`` axis (``rows`` must divide evenly). Compile time is measured and returned;
    solvers are cached per process (a cache hit reports 0 compile seconds)."""
    mesh = mesh or local_mesh()
    ndev = mesh.devices.size
    if rows % ndev:
        raise ValueError(f"rows={rows} is not a multiple of the {ndev} devices")
    if n > MAX_ENUM_N:
        raise ValueError(f"n={n} exceeds the enumeration limit {MAX_ENUM_N}")
    ka = default_a_bits(n, width) if ka is None else ka
    key = (
        kind,
        rows,
        width,
        n,
        ka,
        tuple(d.id for d in mesh.devices.flat),
    )
    eps = None if kind != "min-count" or epsilon is None else float(epsilon)
    if key in _COMPILED:  # same shapes again in this process: no compile time to report
        return dataclasses.replace(_COMPILED[key], compile_seconds=0.0, epsilon=eps)
    if kind == "min-error":
        kernel = partial(min_error_kernel, ka=ka)
        out_specs = (PartitionSpec("inst"), PartitionSpec("inst"))
    elif kind == "min-count":
        if epsilon is None:
            raise ValueError("min-count needs epsilon")
        kernel = partial(min_count_kernel, ka=ka)
        out_specs = tuple(PartitionSpec("inst") for _ in range(4))
    else:
        raise ValueError(f"unknown objective {kind!r}")
    spec = PartitionSpec("inst")
    in_specs = (spec, spec, PartitionSpec()) if kind == "min-count" else (spec, spec)
    fn = jax.shard_map(kernel, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        sharding = jax.sharding.NamedSharding(mesh, spec)
        args = (
            jax.ShapeDtypeStruct((rows, n), jnp.float64, sharding=sharding),
            jax.ShapeDtypeStruct((rows, width), jnp.float64, sharding=sharding),
        )
        if kind == "min-count":
            rep = jax.sharding.NamedSharding(mesh, PartitionSpec())
            args = (*args, jax.ShapeDtypeStruct((), jnp.float64, sharding=rep))
        compiled = jax.jit(fn).lower(*args).compile()
    solver = CompiledSolver(
        kind, rows, width, n, ka, time.perf_counter() - t0, compiled, mesh, epsilon=eps
    )
    if len(_COMPILED) >= 64:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = solver
    return solver


def bucket(x: int, minimum: int = 8) -> int:
    """Shape bucket: the next power of two up to 256, then the next multiple of 64.

    Solvers are compiled per bucket, so nearby shapes (a 4 x 6 matrix, then a 5 x 7 one) reuse one
    compiled program; the padding is at most 2x for small shapes and < 64 entries beyond.
    """
    x = max(int(x), minimum)
    if x <= 256:
        return 1 << (x - 1).bit_length()
    return -(-x // 64) * 64


def pad_columns(weights: np.ndarray, width: int) -> np.ndarray:
    """Pad ``(R, W)`` weights to ``width`` columns with copies of column 0 (dropped afterwards)."""
    if weights.shape[1] >= width:
        return weights
    pad = np.repeat(weights[:, :1], width - weights.shape[1], axis=1)
    return np.concatenate([weights, pad], axis=1)


@dataclass
class SolveStats:
    """Seconds spent by :func:`solve` calls: solving (compile excluded) and compiling."""

    seconds: float = 0.0
    compile_seconds: float = 0.0


def solve(
    kind: Literal["min-error", "min-count"],
    coefs: np.ndarray,
    weights: np.ndarray,
    *,
    epsilon: float | None = None,
    rows_per_chunk: int | None = None,
    mesh: Mesh | None = None,
    stats: SolveStats | None = None,
):
    """Solve all rows (chunked, padded to shape buckets and the mesh) and return numpy outputs.

    ``coefs (R, n)``, ``weights (R, W)``. min-error returns ``(masks, errors)``; min-count returns
    ``(masks, errors, counts, feasible)``. Rows and columns are padded to :func:`bucket` sizes so
    that compiled solvers are reused across nearby shapes (cached per process); ``stats``
    accumulates solving and compile seconds.
    """
    coefs = np.asarray(coefs, np.float64)
    weights = np.asarray(weights, np.float64)
    R, n = coefs.shape
    W = weights.shape[1]
    mesh = mesh or local_mesh()
    ndev = mesh.devices.size
    Wb = bucket(W, 1)
    if rows_per_chunk is None:  # chunks sized for bounded memory, short inputs to their bucket
        rows = min(default_rows_per_chunk(n, Wb, ndev), bucket(-(-R // ndev)) * ndev)
    else:  # every chunk padded to exactly this many rows (one compiled solver)
        rows = rows_per_chunk
    rows = -(-rows // ndev) * ndev
    solver = compile_solver(kind, rows, Wb, n, epsilon=epsilon, mesh=mesh)
    outs = []
    t0 = time.perf_counter()
    for start in range(0, R, rows):
        c, w = pad_rows(coefs[start : start + rows], weights[start : start + rows], rows)
        out = solver(c, pad_columns(w, Wb))
        outs.append(tuple(o[: min(rows, R - start), :W] for o in out))
    if stats is not None:
        stats.seconds += time.perf_counter() - t0
        stats.compile_seconds += solver.compile_seconds
    return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))


def pad_rows(coefs: np.ndarray, weights: np.ndarray, rows: int):
    """Pad a short chunk with copies of its first row (results for the padding are dropped)."""
    k = coefs.shape[0]
    if k == rows:
        return coefs, weights
    idx = np.concatenate([np.arange(k), np.zeros(rows - k, np.int64)])
    return coefs[idx], weights[idx]


def default_queries() -> int:
    """Searches per chunk: cache-sized on CPU (2^19), large on accelerators (2^24, ~1 GB)."""
    return 2**19 if jax.default_backend() == "cpu" else 2**24


def default_rows_per_chunk(n: int, width: int, ndev: int = 1, queries: int | None = None) -> int:
    """Rows per chunk so one chunk holds about ``queries`` searches (bounded memory)."""
    queries = queries or default_queries() * ndev
    ka = default_a_bits(n, width)
    per_row = max(width * 2**ka, 2 ** (n - ka + 1))
    rows = max(1, queries // per_row)
    return -(-rows // ndev) * ndev


# ----------------------------------------------------------------------------------------------
# Cost model, exact ceiling, feasibility groups
# ----------------------------------------------------------------------------------------------

#: Seconds per unit of :func:`exact_ops_per_weight` on one CPU core pair, measured on a 2-core
#: x86 CPU with the paper's FC2 rows (n = 21: 6.6 us a weight; n = 26: 52 us; n = 28: 106 us).
SECONDS_PER_OP = 21e-9

#: The exact tier is used while it costs at most this many operations a weight (about 55 us on
#: that CPU; n = 26 for rows of 784 weights, 25 for rows of 500). Beyond it the feasibility tier
#: (a few us a weight at any n) is much cheaper.
EXACT_BUDGET_OPS = 2600

#: Below this n the exact tier is always used (at most ~30 us a weight in any shape).
EXACT_FLOOR_N = 22


def exact_ops_per_weight(n: int, width: int) -> float:
    """Cost model of the exact meet-in-the-middle search: ``W 2^ka`` queries plus ``kb 2^kb`` to
    build and sort the shared half, per weight (measured within ~30% on CPU for n = 21 .. 28)."""
    ka = default_a_bits(n, width)
    kb = n - ka
    return (width * 2.0**ka + kb * 2.0**kb) / width


def exact_ceiling(width: int) -> int:
    """Largest n the exact tier handles for rows of ``width`` weights (see :data:`EXACT_BUDGET_OPS`)."""
    n = EXACT_FLOOR_N
    while n < MAX_ENUM_N and exact_ops_per_weight(n + 1, width) <= EXACT_BUDGET_OPS:
        n += 1
    return n


def feasibility_bits(epsilon: float, low: float, high: float, n: int) -> int:
    """Coefficients per feasibility group: ``log2((high - low) / eps) + 5``, at most ``n`` and
    :data:`MAX_ENUM_N`. The ``2^k`` subset sums of a group then put, on average, tens of sums
    within eps of a typical weight, so nearly every weight is settled by the first group."""
    k = math.ceil(math.log2(max(high - low, 1e-300) / epsilon)) + 5
    return int(min(max(k, 8), n, MAX_ENUM_N))


def group_columns(n: int, k: int, g: int, seed: int) -> np.ndarray:
    """Coefficient indices of feasibility group ``g``: disjoint blocks ``[g k, (g+1) k)`` while
    they fit in ``n``, then random ``k``-subsets drawn from ``default_rng([seed, g])``."""
    if (g + 1) * k <= n:
        return np.arange(g * k, (g + 1) * k)
    rng = np.random.default_rng([int(seed), int(g)])
    return np.sort(rng.choice(n, size=k, replace=False))


def expected_unsettled(
    weights: np.ndarray, epsilon: float, low: float, high: float, k: int, groups: int
) -> float:
    """Expected number of weights no feasibility group settles (Gaussian model of the subset sums
    of ``k`` uniform coefficients: a weight expects ``2^k * 2 eps * density(w)`` sums within eps)."""
    mu = (low + high) / 2
    var = (high - low) ** 2 / 12
    mean = k * mu / 2
    sd = math.sqrt(k * (var / 2 + mu * mu / 4))
    w = np.asarray(weights, np.float64).reshape(-1)
    dens = np.exp(-0.5 * ((w - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    lam = 2.0**k * 2 * epsilon * dens
    return float(np.exp(-lam * groups).sum())
