"""The SubsetSum ticket (Experiment 1): writing ``ticket.npz`` and verifying one.

A ticket records, for every approximated tensor, the target weights, the chosen subsets (packed bits),
each weight's status and float64 error, and how to regenerate the coefficients (see
:func:`save_ticket`). :func:`verify_ticket` recomputes everything that can be recomputed and trusts
nothing the file says about itself.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.rundir import write_npz
from lottery_jax.subsetsum import search as ss
from lottery_jax.subsetsum.network import (
    COEFFICIENT_MODES,
    EXIT_INFEASIBLE,
    EXIT_MISMATCH,
    OBJECTIVES,
    STATUSES,
    WITHIN_STATUSES,
    ApproxResult,
    target_fingerprint,
)
from lottery_jax.tickets import META_KEY, SUBSETSUM_FORMAT, open_ticket

KEY_SCHEME = (
    "layer i: jax.random.fold_in(jax.random.key(seed), i) (threefry); "
    "low + (high - low) * jax.random.uniform(key, shape + (n,), float64); "
    "shape = (out,) per-row or (out, in) per-weight"
)
#: Recorded and recomputed errors are computed by the same float64 operations; this only absorbs
#: a different summation order on another machine.
ERROR_ATOL = 1e-12
#: ``infeasible`` claims are proved again by an independent numpy meet-in-the-middle search for n
#: up to this, within :data:`PROOF_BUDGET` half-sum lookups in all.
PROOF_MAX_N = 36
PROOF_BUDGET = 2e8


def _target_array(w: np.ndarray) -> np.ndarray:
    """The ticket's copy of a target matrix: float64 kept as it is (the run solved against it),
    anything else as float32 (the file formats' weight type)."""
    w = np.asarray(w)
    return w if w.dtype == np.float64 else w.astype(np.float32)


def save_ticket(path: Path, res: ApproxResult, target: dict[str, np.ndarray]) -> Path:
    """Write ``ticket.npz``.

    Keys: ``__meta__`` (JSON string: ``format`` = ``lottery-jax-subsetsum-ticket/2``, epsilon, c,
    n, rounding, objective, coefficients mode, zero_small, seed, low, high, range_source
    (``target`` or ``fixed``), layers, shapes, weights, target_sha256, statuses, bit_order,
    coefficients_stored, key_scheme) and per layer ``L`` (e.g. ``fc1.weight``): ``L.target``
    (out, in) the target's weights (float32, or float64 when the target was float64);
    ``L.subsets`` uint8 (out, in, ceil(n/8)): ``np.packbits(bits, axis=-1, bitorder="little")`` of
    the chosen subsets, so coefficient ``i`` is bit ``i % 8`` of byte ``i // 8``; ``L.status``
    uint8 (out, in) index into ``meta.statuses``; ``L.error`` float64 (out, in) the float64 error;
    ``L.coefficients`` float64 (out, n) per row (per-weight runs omit them: (out, in, n) would be
    large; they are regenerated exactly from the seed as described by ``meta.key_scheme``).
    """
    cfg = res.cfg
    stored = cfg.coefficients == "per-row"
    copies = {k: _target_array(target[k]) for k in res.layers}
    meta = {
        "format": SUBSETSUM_FORMAT,
        "epsilon": cfg.epsilon,
        "c": cfg.c,
        "n": cfg.n,
        "rounding": cfg.rounding,
        "objective": cfg.objective,
        "coefficients": cfg.coefficients,
        "zero_small": cfg.zero_small,
        "seed": cfg.seed,
        "low": res.low,
        "high": res.high,
        "range_source": "target" if cfg.coef_range is None else "fixed",
        "range_mode": getattr(cfg, "range_mode", "published"),  # ss.coefficient_range's mode
        "layers": list(res.layers),
        "layer_patterns": list(getattr(cfg, "layers", None) or []) or None,
        "shapes": {k: list(copies[k].shape) for k in res.layers},
        "weights": int(sum(v.size for v in copies.values())),
        "target_sha256": target_fingerprint(copies, list(res.layers)),
        "statuses": list(STATUSES),
        "bit_order": "little",
        "coefficients_stored": stored,
        "key_scheme": KEY_SCHEME,
    }
    arrays: dict[str, Any] = {META_KEY: np.asarray(json.dumps(meta))}
    for k in res.layers:
        r = res.results[k]
        bits = ss.mask_to_bits(r.masks, cfg.n)
        arrays[f"{k}.target"] = copies[k]
        arrays[f"{k}.subsets"] = ss.pack_bits(bits)
        arrays[f"{k}.status"] = np.asarray(r.status, np.uint8)
        arrays[f"{k}.error"] = np.asarray(r.errors, np.float64)
        if stored:
            arrays[f"{k}.coefficients"] = np.asarray(res.coefficients[k], np.float64)
    return write_npz(path, arrays)


# ------------------------------------------------------------------------------------ verifying


@dataclass
class VerifyReport:
    """What :func:`verify_ticket` found.

    ``mismatches``: one line per kind of disagreement, in the order found (the first names the
    first bad entry); ``bad_entries``: how many entries disagree in all. ``epsilon`` is the
    tolerance the checker demanded (``--epsilon``, or the ticket's own); ``within`` counts the
    weights within it. ``infeasible_proved``: ``infeasible`` claims confirmed by the checker's own
    exhaustive search; ``infeasible_unchecked``: those beyond its budget.
    """

    layers: list[str]
    weights: int
    within: int
    max_error: float
    remaining_params: int
    initial_params: int
    mismatches: list[str]
    status_counts: dict[str, int]
    epsilon: float
    ticket_epsilon: float | None = None
    bad_entries: int = 0
    infeasible_proved: int = 0
    infeasible_unchecked: int = 0
    format: str = SUBSETSUM_FORMAT
    not_within: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.mismatches:
            return EXIT_MISMATCH
        return 0 if self.within == self.weights else EXIT_INFEASIBLE

    @property
    def summary_line(self) -> str:
        """One line: the first mismatch and the count of bad entries (empty when none)."""
        if not self.mismatches:
            return ""
        more = f"; {self.bad_entries:,} bad entries in all" if self.bad_entries > 1 else ""
        return f"{self.mismatches[0]}{more}"


class _Found:
    """Mismatches in the order found, with how many entries each covers."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0

    def add(self, line: str, count: int = 1) -> None:
        self.lines.append(line)
        self.count += int(count)

    def where(self, name: str, bad: np.ndarray, what: str, detail) -> None:
        """Record the entries of ``name`` where ``bad`` holds; ``detail(index)`` describes the
        first one."""
        k = int(np.count_nonzero(bad))
        if k:
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            more = detail(idx)
            self.add(f"{name}[{', '.join(map(str, idx))}]: {what}{': ' + more if more else ''}", k)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


_META_CHECKS: dict[str, tuple[Any, str]] = {
    "epsilon": (lambda v: _is_real(v) and 0 < v < 1, "a number in (0, 1)"),
    "c": (lambda v: _is_real(v) and v > 0, "a positive number"),
    "n": (lambda v: _is_int(v) and 1 <= v <= 1024, "an integer in [1, 1024]"),
    "rounding": (lambda v: v in ("published", "readme"), "published or readme"),
    "objective": (lambda v: v in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
    "coefficients": (lambda v: v in COEFFICIENT_MODES, f"one of {', '.join(COEFFICIENT_MODES)}"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**63, "a non-negative integer"),
    "low": (_is_real, "a finite number"),
    "high": (_is_real, "a finite number"),
    "layers": (
        lambda v: (
            isinstance(v, list)
            and len(v) > 0
            and all(isinstance(x, str) and x for x in v)
            and len(set(v)) == len(v)
        ),
        "a non-empty list of distinct layer names",
    ),
    "statuses": (
        lambda v: (
            isinstance(v, list)
            and len(v) > 0
            and all(x in STATUSES for x in v)
            and len(set(v)) == len(v)
        ),
        f"a list of distinct statuses from {', '.join(STATUSES)}",
    ),
    "bit_order": (lambda v: v == "little", "little"),
    "coefficients_stored": (lambda v: isinstance(v, bool), "true or false"),
    "zero_small": (lambda v: isinstance(v, bool), "true or false"),
}


def _check_meta(meta: dict[str, Any], found: _Found) -> None:
    for key, (ok, want) in _META_CHECKS.items():
        if key not in meta:
            found.add(f"meta.{key}: missing")
        elif not ok(meta[key]):
            found.add(f"meta.{key}: {meta[key]!r} is not {want}")
    mode = meta.get("range_mode", "published")
    if not (isinstance(mode, str) and mode in ss.RANGE_MODES):
        found.add(f"meta.range_mode: {mode!r} is not one of {', '.join(ss.RANGE_MODES)}"[:200])
    if found.lines:
        return
    if meta["low"] > meta["high"]:
        found.add(f"meta.low: {meta['low']} above meta.high {meta['high']}")
    n = ss.n_coefficients(meta["c"], meta["epsilon"], meta["rounding"])
    if n != meta["n"]:
        found.add(
            f"meta.n: {meta['n']}, but c={meta['c']}, epsilon={meta['epsilon']} and "
            f"{meta['rounding']} rounding give n={n}"
        )
    if meta["coefficients_stored"] != (meta["coefficients"] == "per-row"):
        found.add(
            f"meta.coefficients_stored: {meta['coefficients_stored']} for {meta['coefficients']}"
            " coefficients (save_ticket stores exactly the per-row ones)"
        )


def _array(arrays, name, found: _Found, dtypes, shape) -> np.ndarray | None:
    a = arrays.get(name)
    if a is None:
        found.add(f"{name}: missing")
        return None
    if a.dtype not in dtypes:
        want = " or ".join(str(np.dtype(d)) for d in dtypes)
        found.add(f"{name}: dtype {a.dtype}, expected {want}")
        return None
    if shape is not None and a.shape != tuple(shape):
        found.add(f"{name}: shape {a.shape}, expected {tuple(shape)}")
        return None
    return a


def _all_sums(coefs: np.ndarray) -> np.ndarray:
    """All ``2^k`` subset sums of ``coefs (..., k)``, index = mask, in float64."""
    sums = np.zeros((*coefs.shape[:-1], 1))
    for i in range(coefs.shape[-1]):
        sums = np.concatenate([sums, sums + coefs[..., i : i + 1]], axis=-1)
    return sums


def _min_errors(coefs: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent exhaustive search (numpy meet in the middle): for one coefficient vector
    ``coefs (n,)`` and weights ``ws (k,)``, the smallest ``|w - sum|`` over all ``2^n`` subsets
    (up to float64 rounding of the split sums) and a mask attaining it."""
    n = coefs.shape[0]
    a = n // 2
    lo = _all_sums(coefs[:a])  # (2^a,)
    hi = _all_sums(coefs[a:])  # (2^(n-a),)
    order = np.argsort(hi, kind="stable")
    hs = hi[order]
    best_err = np.full(ws.shape, np.inf)
    best_mask = np.zeros(ws.shape, np.int64)
    step = max(1, (1 << 22) // max(1, lo.size))
    for s in range(0, ws.size, step):
        q = ws[s : s + step, None] - lo[None, :]  # (k, 2^a): what the high half must supply
        pos = np.searchsorted(hs, q)
        for p in (np.clip(pos - 1, 0, hs.size - 1), np.clip(pos, 0, hs.size - 1)):
            e = np.abs(q - hs[p])
            j = np.argmin(e, axis=1)
            ej = e[np.arange(e.shape[0]), j]
            better = ej < best_err[s : s + step]
            m = (order[p[np.arange(e.shape[0]), j]].astype(np.int64) << a) | j
            best_err[s : s + step] = np.where(better, ej, best_err[s : s + step])
            best_mask[s : s + step] = np.where(better, m, best_mask[s : s + step])
    return best_err, best_mask


#: Bytes per (weight x coefficient) that verifying a layer holds at once: the drawn coefficients
#: (float64, per weight), the unpacked subset bits and the float64 selected coefficients.
VERIFY_BYTES_PER_COEFFICIENT = 8 + 1 + 8


def verify_bytes(arrays: dict[str, np.ndarray], layers: list[str], n: int) -> int:
    """Up-front memory estimate of :func:`verify_ticket`: the largest layer's weights times
    ``n`` times :data:`VERIFY_BYTES_PER_COEFFICIENT` (layers are checked one at a time)."""
    sizes = [int(arrays[f"{k}.target"].size) for k in layers if f"{k}.target" in arrays]
    return max(sizes, default=0) * int(n) * VERIFY_BYTES_PER_COEFFICIENT


def _require_verify_memory(arrays, layers: list[str], n: int, source: str) -> None:
    """Refuse (one line) a ticket whose check would not fit in memory, before any of it runs (a
    small file can declare n = 1024 coefficients for each of many weights)."""
    from lottery_jax.resources import require_memory

    require_memory(
        verify_bytes(arrays, layers, n), f"verifying {source} (n = {n} coefficients per weight)",
        "verify it on a machine with more memory",
    )  # fmt: skip


@dataclass
class _Verification:
    """What the checks of :func:`verify_ticket` share: the ticket, the target, what they found."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    target: dict[str, np.ndarray] | None
    found: _Found
    report: VerifyReport
    eps: float
    eps_file: float
    ws: dict[str, np.ndarray] = field(default_factory=dict)  # each layer's target, float64
    budget: float = PROOF_BUDGET

    @property
    def n(self) -> int:
        return int(self.meta["n"])

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    @property
    def statuses(self) -> list[str]:
        return list(self.meta["statuses"])

    @property
    def per_row(self) -> bool:
        return self.meta["coefficients"] == "per-row"


def _check_layer_list(v: _Verification) -> None:
    """The layer list against the target's tensors to approximate; no entry of no layer."""
    meta, layers = v.meta, v.layers
    if v.target is not None:
        from lottery_jax.subsetsum.network import target_layers

        patterns = meta.get("layer_patterns") or None
        want = target_layers(v.target, patterns) if patterns else target_layers(v.target)
        if want != layers:
            v.found.add(
                f"meta.layers: {layers}, but the target's tensors to approximate are {want}"
            )
    known = {f"{k}.{s}" for k in layers for s in ("target", "subsets", "status", "error")}
    known |= {f"{k}.coefficients" for k in layers}
    extra = sorted(set(v.arrays) - known)
    if extra:
        v.found.add(f"{extra[0]}: an entry of no layer in meta.layers", len(extra))


def _check_target_copies(v: _Verification) -> None:
    """Each layer's target copy: its type, shape, finite values, and equality with ``target``."""
    shapes_meta = v.meta.get("shapes") if isinstance(v.meta.get("shapes"), dict) else None
    for k in v.layers:
        shape = shapes_meta.get(k) if shapes_meta else None
        if shape is not None and not (isinstance(shape, list) and all(_is_int(d) and d >= 0
                                                                      for d in shape)):  # fmt: skip
            v.found.add(f"meta.shapes.{k}: {shape!r} is not a list of sizes"[:200])
            continue
        wt = _array(v.arrays, f"{k}.target", v.found, (np.float32, np.float64), shape)
        if wt is None:
            continue
        if wt.ndim < 1 or wt.size == 0:
            v.found.add(f"{k}.target: shape {wt.shape} is not a non-empty tensor")
            continue
        if not np.all(np.isfinite(wt)):
            v.found.where(f"{k}.target", ~np.isfinite(wt), "not finite", lambda i: "")
            continue
        if v.target is not None and k in v.target:
            given = np.asarray(v.target[k])
            if given.shape != wt.shape:
                v.found.add(f"{k}.target: shape {wt.shape}, but the target's is {given.shape}")
                continue
            diff = given.astype(wt.dtype) != wt  # (compared in the copy's precision)
            v.found.where(f"{k}.target", diff, "differs from the given target", lambda i: "")
            v.ws[k] = np.asarray(given, np.float64)
        else:
            v.ws[k] = np.asarray(wt, np.float64)


def _check_target_totals(v: _Verification) -> None:
    """With every copy readable: the weight count, the fingerprint of the ticket's own copy, and
    the coefficient range when the run took it from the target."""
    meta, layers, found = v.meta, v.layers, v.found
    if len(v.ws) != len(layers):
        return
    total = sum(w.size for w in v.ws.values())
    if "weights" in meta and meta["weights"] != total:
        found.add(f"meta.weights: {meta['weights']}, but the target has {total} weights")
    if v.target is None and "target_sha256" in meta:
        copies = {k: v.arrays[f"{k}.target"] for k in layers}
        if target_fingerprint(copies, layers) != meta["target_sha256"]:
            found.add("meta.target_sha256: does not match the ticket's target weights")
    low, high = ss.coefficient_range(list(v.ws.values()), meta.get("range_mode", "published"))
    source = meta.get("range_source")
    if source == "target" and (low, high) != (meta["low"], meta["high"]):
        found.add(
            f"meta.low/high: [{meta['low']}, {meta['high']}], but the target gives [{low}, {high}]"
        )
    elif source not in (None, "target", "fixed"):
        found.add(f"meta.range_source: {source!r} is not target or fixed")


def _check_layers(v: _Verification) -> None:
    """Every layer: coefficients, subsets, errors and statuses recomputed and compared."""
    for li, k in enumerate(v.layers):
        if k in v.ws:
            _check_layer(v, li, k)


def _check_layer(v: _Verification, li: int, k: str) -> None:
    w, n, meta = v.ws[k], v.n, v.meta
    packed = _array(v.arrays, f"{k}.subsets", v.found, (np.uint8,), (*w.shape, (n + 7) // 8))
    status = _array(v.arrays, f"{k}.status", v.found, (np.uint8,), w.shape)
    rec_err = _array(v.arrays, f"{k}.error", v.found, (np.float64,), w.shape)
    draw_shape = w.shape[:1] if v.per_row else w.shape
    coefs = ss.draw_coefficients(
        ss.layer_key(int(meta["seed"]), li), draw_shape, n, float(meta["low"]),
        float(meta["high"]),
    )  # fmt: skip
    _check_stored_coefficients(v, k, coefs)
    if packed is None or status is None or rec_err is None:
        return
    err = _recompute_layer(v, k, w, coefs, packed, status)
    _check_records(v, k, err, status, rec_err)
    _prove_infeasible_again(v, k, w, coefs, status, err)


def _check_stored_coefficients(v: _Verification, k: str, coefs: np.ndarray) -> None:
    """Stored coefficients must be the draw of the ticket's seed."""
    if v.meta["coefficients_stored"] or f"{k}.coefficients" in v.arrays:
        stored = _array(v.arrays, f"{k}.coefficients", v.found, (np.float64,), coefs.shape)
        if stored is not None:
            bad = (stored != coefs).any(axis=-1)
            v.found.where(
                f"{k}.coefficients", bad, f"differ from the draw of seed {v.meta['seed']}",
                lambda i, s=stored, c=coefs: f"stored {s[i][0]:.17g}, drawn {c[i][0]:.17g}",
            )  # fmt: skip


def _recompute_layer(v: _Verification, k: str, w, coefs, packed, status) -> np.ndarray:
    """Every chosen subset summed again in float64: the errors, counted into the report."""
    n, report = v.n, v.report
    bits = ss.unpack_bits(packed)
    if packed.shape[-1] * 8 > n:
        pad = bits[..., n:].any(axis=-1)
        v.found.where(f"{k}.subsets", pad, f"bits set beyond n={n}", lambda i: "")
    bits = bits[..., :n]
    c3 = coefs.reshape(w.shape[0], *(1,) * (w.ndim - 1), n) if v.per_row else coefs
    err = np.abs(w - np.where(bits, c3, 0.0).sum(-1))
    report.weights += int(err.size)
    report.remaining_params += int(bits.sum())
    report.max_error = max(report.max_error, float(err.max()))
    ok = err <= v.eps
    report.within += int(ok.sum())
    for i, s in enumerate(v.statuses):
        report.status_counts[s] += int((status == i).sum())
    if len(report.not_within) < 20:
        for idx in np.argwhere(~ok)[: 20 - len(report.not_within)]:
            ix = tuple(int(x) for x in idx)
            at = ", ".join(map(str, ix))
            report.not_within.append(f"{k}[{at}] w={w[ix]:.6g} error={err[ix]:.3g}")
    return err


def _check_records(v: _Verification, k: str, err, status, rec_err) -> None:
    """The recorded errors and statuses against the recomputation."""
    statuses, eps_file = v.statuses, v.eps_file
    within_codes = [i for i, s in enumerate(statuses) if s in WITHIN_STATUSES]
    v.found.where(
        f"{k}.error", ~(np.abs(err - rec_err) <= ERROR_ATOL), "recorded error differs",
        lambda i, r=rec_err, e=err: f"recorded {r[i]:.6g}, the subset gives {e[i]:.6g}",
    )  # fmt: skip
    v.found.where(
        f"{k}.status", status >= len(statuses), "not a status index",
        lambda i, s=status: f"{int(s[i])} (the ticket lists {len(statuses)} statuses)",
    )  # fmt: skip
    claims_within = np.isin(status, within_codes)
    v.found.where(
        f"{k}", claims_within & ~(err <= eps_file), f"claims within epsilon={eps_file}",
        lambda i, s=status, e=err: f"status {statuses[s[i]]}, error {e[i]:.6g}",
    )  # fmt: skip
    claims_not = (status < len(statuses)) & ~claims_within
    v.found.where(
        f"{k}", claims_not & (err <= eps_file), f"claims no subset within epsilon={eps_file}",
        lambda i, s=status, e=err: f"status {statuses[s[i]]}, but its subset has error "
        f"{e[i]:.6g}",
    )  # fmt: skip


def _prove_infeasible_again(v: _Verification, k: str, w, coefs, status, err) -> None:
    """Every ``infeasible`` claim proved again by exhaustive search (no subset at all within
    eps) where ``n <= PROOF_MAX_N`` and the budget allows; the rest counted as unchecked."""
    n, eps_file, report = v.n, v.eps_file, v.report
    infeasible_code = {s: i for i, s in enumerate(v.statuses)}.get("infeasible", -1)
    inf = np.argwhere((status == infeasible_code) & (err > eps_file))
    if not len(inf):
        return
    if n > PROOF_MAX_N:
        report.infeasible_unchecked += len(inf)
        return
    refuted = np.zeros(w.shape, bool)
    cost = float(2 ** (n // 2)) * max(1.0, n - n // 2)
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for idx in inf:
        ix = tuple(int(x) for x in idx)
        groups.setdefault(ix[:1] if v.per_row else ix, []).append(ix)
    for key, members in groups.items():
        if v.budget < cost * len(members):
            report.infeasible_unchecked += len(members)
            continue
        v.budget -= cost * len(members)
        best, masks = _min_errors(coefs[key], np.array([w[m] for m in members]))
        for b, m, ix in zip(best, masks, members, strict=True):
            if b > eps_file + 1e-12:
                report.infeasible_proved += 1
                continue
            exact = abs(w[ix] - ss.subset_sums(coefs[key], np.array(m)))
            if exact <= eps_file:
                refuted[ix] = True
            else:  # within 1e-12 of eps: left undecided
                report.infeasible_unchecked += 1
    v.found.where(
        f"{k}", refuted, f"claims infeasible, but a subset is within epsilon={eps_file}",
        lambda i: "found by exhaustive search",
    )  # fmt: skip


#: The checks of :func:`verify_ticket`, in the order their findings are reported.
VERIFY_CHECKS = (
    ("layer list and entries", _check_layer_list),
    ("target copies", _check_target_copies),
    ("weight count, fingerprint and coefficient range", _check_target_totals),
    ("coefficients, subsets, errors and statuses", _check_layers),
)


def verify_ticket(
    path: Path, target: dict[str, np.ndarray] | None = None, *, epsilon: float | None = None
) -> VerifyReport:
    """Check a SubsetSum ticket against everything that can be recomputed.

    * n from (c, epsilon, rounding); the coefficient range from the target when the run took it
      from the target; the coefficients from (seed, range, key scheme), compared with the stored
      ones; the layer list, shapes and weight count against the target (``target`` when given,
      else the ticket's own copy, checked against its recorded fingerprint);
    * every chosen subset summed again in float64 and compared with the recorded error;
    * every status against that error: the ``optimal-*``/``feasible`` statuses claim
      ``error <= eps``, ``infeasible``/``unsolved`` claim ``error > eps``, and every ``infeasible``
      claim (no subset at all within eps) is proved again by an independent exhaustive search
      where ``n <= PROOF_MAX_N`` (within a budget; the rest are counted as unchecked).

    The checks after the metadata's are the table :data:`VERIFY_CHECKS`. ``epsilon``: the
    tolerance the checker demands (default: the ticket's); ``within`` counts the weights within
    it. Structural damage (missing or ill-typed entries, an empty layer list) is a mismatch, never
    an exception. Raises UserError only for a file that cannot be read at all, is not a ticket, or
    is a supermask ticket.
    """
    if epsilon is not None and not (_is_real(epsilon) and epsilon > 0):
        raise UserError(f"epsilon must be a positive number, got {epsilon}")
    t = open_ticket(path, "subsetsum")
    found = _Found()
    _check_meta(t.meta, found)
    eps_file = float(t.meta["epsilon"]) if _is_real(t.meta.get("epsilon")) else None
    eps = float(epsilon) if epsilon is not None else eps_file
    report = VerifyReport([], 0, 0, 0.0, 0, 0, [], {}, eps or 0.0, eps_file, format=t.format)
    if not found.lines:  # nothing below can be trusted without the metadata
        report.layers = list(t.meta["layers"])
        _require_verify_memory(t.arrays, report.layers, int(t.meta["n"]), str(path))
        report.status_counts = dict.fromkeys(STATUSES, 0)
        v = _Verification(t.meta, t.arrays, target, found, report, eps, eps_file)
        for _, check in VERIFY_CHECKS:
            check(v)
        report.initial_params = v.n * report.weights
    report.mismatches, report.bad_entries = found.lines, found.count
    return report
