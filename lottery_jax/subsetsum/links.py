"""SubsetSum over the links of a redundant layer: which of a weight's r random links to keep.

In a redundant layer (Pensia et al. 2020, Sec. 3; the published ``RedundantLinear``) the weight
W[o, j] of the target is replaced by r paths ``x_j -> w1[k, j] -> w2[o, j r + k]``. Without a
ReLU between them the paths add up to ``sum_k w2[o, j r + k] w1[k, j]``, so the products
``a_k = w2[o, j r + k] w1[k, j]`` are the coefficients of one SubsetSum instance per weight
(per-weight coefficients), and keeping a path means keeping its ``w2`` entry. With the ReLU a path
passes ``x_j >= 0`` only when ``w1[k, j] > 0`` and ``x_j < 0`` only when ``w1[k, j] < 0``: a side
is the SubsetSum over those links alone.

:func:`solve_side` chooses the subsets with the exact tiers of :mod:`lottery_jax.subsetsum.search`:

* the **exact** meet-in-the-middle search while a weight has at most ``max_enum_n`` usable links
  (``optimal-enumeration`` or, proved by that search, ``infeasible``); instances are padded with
  zero coefficients to a few bucketed sizes (a zero never changes a sum and is dropped again), so
  every size compiles once;
* the **feasibility** tier beyond it: the same exact search over groups of ``k`` of the usable
  links (:func:`search.feasibility_bits`, :func:`search.group_columns`): within eps is
  ``feasible``; a weight outside ``[sum of negative products, sum of positive ones] +- eps`` is
  ``infeasible`` (proved by that bound); what no group settles is ``unsolved``.

Every chosen subset is re-summed in float64 and checked against eps. No MIP tier here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lottery_jax.subsetsum import search as ss
from lottery_jax.subsetsum.network import FEASIBLE, INFEASIBLE, OPT_ENUM, UNSOLVED

#: Largest usable-link count solved by the exact tier by default: the exact ceiling of one
#: instance per weight (:func:`search.exact_ceiling` of width 1: 22).
DEFAULT_MAX_ENUM_N = ss.exact_ceiling(1)

#: Severity of a status, to combine the two sides of a ReLU weight (the worse one stands).
_RANK = {OPT_ENUM: 0, FEASIBLE: 1, UNSOLVED: 2, INFEASIBLE: 3}


@dataclass(frozen=True)
class SideSolve:
    """How a side is solved: objective, eps, exact ceiling, feasibility groups, group seed."""

    epsilon: float
    objective: str = "min-error"
    max_enum_n: int = DEFAULT_MAX_ENUM_N
    feasibility_groups: int = 8
    seed: int = 0


@dataclass
class SideResult:
    """Per weight: the chosen links ``bits (N, r)``, float64 sum and error, status (uint8)."""

    bits: np.ndarray
    sums: np.ndarray
    errors: np.ndarray
    status: np.ndarray


def link_products(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``a[o, j, k] = w2[o, j r + k] * w1[k, j]`` in float64: ``(out, in, r)``."""
    r, n_in = w1.shape
    w2 = np.asarray(w2, np.float64).reshape(w2.shape[0], n_in, r)
    return w2 * np.asarray(w1, np.float64).T[None]


def _bucket_n(n: int, cap: int) -> int:
    """Exact-tier size for ``n`` usable links: the next even number (at most ``cap``)."""
    return min(cap, n + (n % 2))


def _rows_per_chunk(n: int) -> int:
    """One fixed chunk size per ``n`` (one compiled solver per size, bounded memory)."""
    return min(ss.default_rows_per_chunk(n, 1), 4096)


def _search(coefs: np.ndarray, w: np.ndarray, how: SideSolve, stats: ss.SolveStats):
    """Exact best subset of each row's coefficients: ``(bits (N, n), errors)``; min-count keeps
    the min-error subset where no subset is within eps."""
    n = coefs.shape[1]
    rows = _rows_per_chunk(n)
    m, e = ss.solve("min-error", coefs, w[:, None], rows_per_chunk=rows, stats=stats)
    if how.objective == "min-count":
        mc, ec, _, feas = ss.solve(
            "min-count", coefs, w[:, None], epsilon=how.epsilon, rows_per_chunk=rows, stats=stats
        )
        m, e = np.where(feas, mc, m), np.where(feas, ec, e)
    return ss.mask_to_bits(m[:, 0], n), e[:, 0]


def _compact(coefs: np.ndarray, usable: np.ndarray):
    """Usable links first in each row (stable order), zeros after: ``(coefs, order, counts)``."""
    order = np.argsort(~usable, axis=1, kind="stable")
    packed = np.take_along_axis(np.where(usable, coefs, 0.0), order, axis=1)
    return packed, order, usable.sum(axis=1)


def _exact_rows(packed, counts, w, rows, how, stats, bits, status):
    """The exact tier for ``rows`` (at most ``max_enum_n`` usable links), by size bucket."""
    cap = min(how.max_enum_n, packed.shape[1])
    sizes = np.array([_bucket_n(int(c), cap) for c in counts[rows]], np.int64)
    for n in np.unique(sizes):
        sel = rows[sizes == n]
        if n == 0:  # no usable link: the empty subset
            continue
        b, _ = _search(packed[sel, :n], w[sel], how, stats)
        bits[sel, :n] = b & (np.arange(n)[None] < counts[sel, None])
        status[sel] = OPT_ENUM


def _feasibility_rows(packed, counts, w, rows, how, stats, bits, status):
    """The feasibility tier for ``rows`` (more usable links than the exact ceiling): exact search
    over groups of ``k`` of each row's usable links, row groups of equal count share columns."""
    if not rows.size:
        return
    span = float(np.abs(packed[rows]).sum(axis=1).max())
    k = ss.feasibility_bits(how.epsilon, -span, span, how.max_enum_n)
    best = np.full(w.shape, np.inf)
    for g in range(how.feasibility_groups):
        for n in np.unique(counts[rows]):
            sel = rows[(counts[rows] == n) & ~(best[rows] <= how.epsilon)]
            if not sel.size:
                continue
            cols = ss.group_columns(int(n), k, g, how.seed)
            b, e = _search(packed[sel][:, cols], w[sel], how, stats)
            better = e < best[sel]
            upd = sel[better]
            bits[upd] = False
            bits[upd[:, None], cols[None]] = b[better]
            best[upd] = e[better]
        if np.all(best[rows] <= how.epsilon):
            break
    status[rows] = np.where(best[rows] <= how.epsilon, FEASIBLE, UNSOLVED)
    _bound_proof(packed, w, rows, how.epsilon, bits, status)


def _bound_proof(packed, w, rows, eps, bits, status):
    """Unsolved weights beyond the sum of the negative (positive) products are infeasible; they
    keep the subset of all links of their sign, the closest one can get."""
    left = rows[status[rows] == UNSOLVED]
    neg = np.minimum(packed[left], 0).sum(1)
    pos = np.maximum(packed[left], 0).sum(1)
    below, above = w[left] < neg - eps, w[left] > pos + eps
    for sel, take in ((below, packed[left] < 0), (above, packed[left] > 0)):
        idx = left[sel]
        bits[idx] = take[sel]
        status[idx] = INFEASIBLE


def solve_side(
    coefs: np.ndarray, usable: np.ndarray, targets: np.ndarray, how: SideSolve,
    stats: ss.SolveStats | None = None,
) -> SideResult:  # fmt: skip
    """Choose, for every target ``targets[i]``, a subset of its usable links ``usable[i]`` whose
    products ``coefs[i]`` sum to it (``coefs``, ``usable``: ``(N, r)``). Returns the chosen links
    in the original link order."""
    stats = stats or ss.SolveStats()
    coefs = np.asarray(coefs, np.float64)
    w = np.asarray(targets, np.float64).reshape(-1)
    packed, order, counts = _compact(coefs, np.asarray(usable, bool))
    n_rows, r = coefs.shape
    bits = np.zeros((n_rows, r), bool)
    status = np.full(n_rows, OPT_ENUM, np.uint8)
    small = np.nonzero(counts <= how.max_enum_n)[0]
    _exact_rows(packed, counts, w, small, how, stats, bits, status)
    big = np.nonzero(counts > how.max_enum_n)[0]
    _feasibility_rows(packed, counts, w, big, how, stats, bits, status)
    out = np.zeros_like(bits)
    np.put_along_axis(out, order, bits, axis=1)  # back to the original link order
    out &= usable
    sums = np.where(out, coefs, 0.0).sum(axis=1)
    errors = np.abs(w - sums)
    proved = (status == OPT_ENUM) | (status == INFEASIBLE)  # (by enumeration or the bound)
    bad = np.where(proved, INFEASIBLE, UNSOLVED)
    status = np.where(errors <= how.epsilon, status, bad).astype(np.uint8)
    return SideResult(out, sums, errors, status)


def worse_status(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise the worse of two statuses (a ReLU weight is as good as its worse side)."""
    rank = np.zeros(256, np.int64)
    for code, v in _RANK.items():
        rank[code] = v
    return np.where(rank[a] >= rank[b], a, b).astype(np.uint8)


def exact_seconds(n: int, weights: int) -> float:
    """Estimated exact-tier seconds for ``weights`` instances of ``n`` links (the measured cost
    model of :func:`search.exact_ops_per_weight`, one instance per weight)."""
    if n <= 0:
        return 0.0
    return ss.exact_ops_per_weight(min(n, DEFAULT_MAX_ENUM_N), 1) * ss.SECONDS_PER_OP * weights


def usable_links(w1: np.ndarray, side: str, out: int) -> np.ndarray:
    """``(out, in, r)`` usable flags of a side: ``all`` links (linear layer), ``positive``
    (``w1 > 0``) or ``negative`` (``w1 < 0``)."""
    t = np.asarray(w1).T[None]  # (1, in, r)
    flags = {"all": np.ones_like(t, bool), "positive": t > 0, "negative": t < 0}[side]
    return np.broadcast_to(flags, (out, *t.shape[1:]))
