"""The SubsetSum ticket (Experiment 1): writing ``ticket.npz`` and verifying one.

A ticket records, for every approximated tensor, the target weights, the chosen subsets (packed bits),
each weight's status and float64 error, and how to regenerate the coefficients (see
:func:`save_ticket`). :func:`verify_ticket` recomputes everything that can be recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax.checkpoint import read_npz
from lottery_jax.errors import UserError
from lottery_jax.results import save_npz_atomic
from lottery_jax.subsetsum import search as ss
from lottery_jax.subsetsum.network import (
    EXIT_INFEASIBLE,
    EXIT_MISMATCH,
    STATUSES,
    TICKET_FORMAT,
    ApproxResult,
)


def save_ticket(path: Path, res: ApproxResult, target: dict[str, np.ndarray]) -> Path:
    """Write ``ticket.npz``.

    Keys: ``meta`` (JSON string: format, epsilon, c, n, rounding, objective, coefficients mode,
    seed, low, high, layers, statuses, bit_order, coefficients_stored, key_scheme) and per layer
    ``L`` (e.g. ``fc1.weight``): ``L.target`` float32 (out, in) the target's weights;
    ``L.subsets`` uint8 (out, in, ceil(n/8)): ``np.packbits(bits, axis=-1, bitorder="little")`` of
    the chosen subsets, so coefficient ``i`` is bit ``i % 8`` of byte ``i // 8``; ``L.status`` uint8
    (out, in) index into ``meta.statuses``; ``L.error`` float64 (out, in) the float64 error;
    ``L.coefficients`` float64 (out, n) per row (per-weight runs omit them: (out, in, n) would be
    large; they are regenerated exactly from the seed as described by ``meta.key_scheme``).
    """
    cfg = res.cfg
    stored = cfg.coefficients == "per-row"
    meta = {
        "format": TICKET_FORMAT,
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
        "layers": res.layers,
        "statuses": list(STATUSES),
        "bit_order": "little",
        "coefficients_stored": stored,
        "key_scheme": "layer i: jax.random.fold_in(jax.random.key(seed), i) (threefry); "
        "low + (high - low) * jax.random.uniform(key, shape + (n,), float64); "
        "shape = (out,) per-row or (out, in) per-weight",
    }
    arrays: dict[str, Any] = {"meta": np.asarray(json.dumps(meta))}
    for k, r in res.results.items():
        bits = ss.mask_to_bits(r.masks, cfg.n)
        arrays[f"{k}.target"] = np.asarray(target[k], np.float32)
        arrays[f"{k}.subsets"] = np.packbits(bits, axis=-1, bitorder="little")
        arrays[f"{k}.status"] = r.status
        arrays[f"{k}.error"] = r.errors
        if stored:
            arrays[f"{k}.coefficients"] = res.coefficients[k]
    return save_npz_atomic(path, arrays)


@dataclass
class VerifyReport:
    layers: list[str]
    weights: int
    within: int
    max_error: float
    remaining_params: int
    initial_params: int
    mismatches: list[str]
    status_counts: dict[str, int]
    epsilon: float

    @property
    def exit_code(self) -> int:
        if self.mismatches:
            return EXIT_MISMATCH
        return 0 if self.within == self.weights else EXIT_INFEASIBLE


def verify_ticket(path: Path, target: dict[str, np.ndarray] | None = None) -> VerifyReport:
    """Recompute every approximation of a ticket in float64 and check it against the target (the
    ticket's copy, or ``target`` when given) and eps; compare with the ticket's own records."""
    path = Path(path)
    arrays = read_npz(path, "ticket")
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError) as e:
        raise UserError(f"cannot read ticket {path}: {e}") from None
    if meta.get("format") != TICKET_FORMAT:
        raise UserError(f"{path} is not a {TICKET_FORMAT} ticket")
    n, eps = int(meta["n"]), float(meta["epsilon"])
    mismatches: list[str] = []
    weights = within = remaining = 0
    max_error = 0.0
    counts = dict.fromkeys(meta["statuses"], 0)
    for li, k in enumerate(meta["layers"]):
        try:
            packed = arrays[f"{k}.subsets"]
            w_ticket = arrays[f"{k}.target"]
            status = arrays[f"{k}.status"]
            rec_err = arrays[f"{k}.error"]
        except KeyError as e:
            raise UserError(f"ticket {path} lacks {e}") from None
        w = np.asarray(w_ticket if target is None else target.get(k), np.float64)
        if target is not None and (k not in target or w.shape != w_ticket.shape):
            raise UserError(f"target {k} does not match the ticket's shape {w_ticket.shape}")
        bits = np.unpackbits(packed, axis=-1, count=n, bitorder="little").astype(bool)
        if meta["coefficients_stored"]:
            coefs = arrays[f"{k}.coefficients"][:, None, :]
        else:
            shape = w.shape[:1] if meta["coefficients"] == "per-row" else w.shape
            key = ss.layer_key(int(meta["seed"]), li)
            coefs = ss.draw_coefficients(key, shape, n, float(meta["low"]), float(meta["high"]))
            if coefs.ndim == 2:
                coefs = coefs[:, None, :]
        approx = np.where(bits, coefs, 0.0).sum(-1)
        err = np.abs(w - approx)
        ok = err <= eps
        weights += int(err.size)
        within += int(ok.sum())
        remaining += int(bits.sum())
        max_error = max(max_error, float(err.max()))
        for i, s in enumerate(meta["statuses"]):
            counts[s] += int((status == i).sum())
        if not np.allclose(err, rec_err, rtol=0, atol=1e-12):
            mismatches.append(f"{k}: recorded errors differ from the recomputed ones")
        claims = status != STATUSES.index("infeasible")
        if np.any(claims & ~ok):
            mismatches.append(
                f"{k}: {int((claims & ~ok).sum())} weights claimed within eps are not"
            )
    return VerifyReport(
        list(meta["layers"]),
        weights,
        within,
        max_error,
        remaining,
        n * weights,
        mismatches,
        counts,
        eps,
    )
