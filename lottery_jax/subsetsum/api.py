"""``approximate``: SubsetSum-approximate arrays from Python (Pensia et al. 2020, Experiment 1).

    >>> import numpy as np
    >>> from lottery_jax.subsetsum.api import approximate
    >>> r = approximate(np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3, 5, 5)), epsilon=0.01)
    >>> r.report["all_within_epsilon"], r.weights.shape
    (True, (64, 3, 5, 5))

Every entry ``w`` becomes a subset sum of ``n = c log2(1/eps)`` random coefficients drawn uniformly
from ``[min(0, min w), max(0, max w)]`` over all the arrays given (one draw from ``seed``). Per-row
coefficients (the published setting) are one set per slice along the leading axis: a row of a
matrix, an output channel of a conv kernel, a single element of a 1-D array (a bias).

Compiled solvers are cached per process by shape bucket (rows and columns padded to powers of two,
then multiples of 64), so a second call with a similar shape does not compile again.

Progress comes through callbacks, as from :func:`lottery_jax.construct` (the library draws
nothing)::

    r = approximate(w, epsilon=0.01, prove=True,
                    on_layer=lambda name, rows: print(name, rows, "rows"),
                    on_chunk=lambda name, done: print(name, done, "rows done"),
                    on_scip=lambda p: print(p.layer, p.done, "/", p.total, "SCIP instances"))
    r.report["scip"]  # per array that sent weights to SCIP: instances, statuses, seconds...
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.subsetsum import network as nw

#: The name a single array gets in the ticket and the report.
SINGLE_NAME = "weight"


@dataclass
class Approximation:
    """The result of :func:`approximate`.

    ``weights``: the approximated arrays (float64 subset sums, the input's shapes, a single array or
    a dict like the input); ``report``: the ``results.json`` fields (``all_within_epsilon``,
    ``max_error``, ``remaining_params``, ``relative_size``, ``status_counts``, ``layers`` (one row
    per array), ``scip`` (per array that sent weights to SCIP, what SCIP did:
    :class:`~lottery_jax.subsetsum.scip.ScipReport` as a dict; empty when SCIP did not run),
    ``scip_seconds``, ``n``, ``epsilon``, ``c``, ``seed``, ``seconds``...); ``ticket``: the full result
    (chosen subsets, coefficients, statuses, errors per array); :meth:`save` writes the ticket file
    that ``lottery-jax verify`` checks.
    """

    weights: np.ndarray | dict[str, np.ndarray]
    report: dict[str, Any]
    ticket: nw.ApproxResult
    target: dict[str, np.ndarray] = field(repr=False)

    def save(self, path: str | Path) -> Path:
        """Write the ticket (``.npz``) to ``path``; check it with ``lottery-jax verify PATH``."""
        from lottery_jax.subsetsum.ticket import save_ticket

        return save_ticket(Path(path), self.ticket, self.target)


def _as_target(weights) -> tuple[dict[str, np.ndarray], bool]:
    single = not isinstance(weights, Mapping)
    items = {SINGLE_NAME: weights} if single else dict(weights)
    if not items:
        raise UserError("approximate: no arrays given")
    target: dict[str, np.ndarray] = {}
    for k, v in items.items():
        if not isinstance(k, str) or not k:
            raise UserError(f"approximate: array names must be non-empty strings, got {k!r}")
        try:
            a = np.asarray(v)
        except Exception as e:  # ragged lists, objects numpy cannot hold
            raise UserError(f"approximate: {k} is not an array ({e})") from None
        if a.dtype.kind not in "fiu":
            raise UserError(f"approximate: {k} has dtype {a.dtype}, not real numbers")
        if a.ndim == 0 or a.size == 0:
            raise UserError(f"approximate: {k} must have at least one dimension and one entry")
        a = a.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise UserError(f"approximate: {k} holds NaN or infinite values")
        target[k] = a
    return target, single


def approximate(
    weights: np.ndarray | Mapping[str, np.ndarray],
    *,
    epsilon: float,
    c: float = 3.0,
    seed: int = 0,
    objective: str = "min-error",
    coefficients: str = "per-row",
    rounding: str = "published",
    coef_range: tuple[float, float] | None = None,
    zero_small: bool = False,
    prove: bool = False,
    max_enum_n: int | None = None,
    max_hours: float = 4.0,
    scip_time_limit: float = 60.0,
    scip_workers: int = 1,
    on_layer: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    on_scip: Callable[[Any], None] | None = None,
) -> Approximation:
    """Approximate every entry of ``weights`` within ``epsilon`` by a subset sum of random numbers.

    ``weights``: one array of any shape, or a mapping of names to arrays (any names: conv kernels,
    biases...). ``n = int(c * round(log2(1/eps)))`` coefficients (``rounding="readme"``:
    ``round(c log2(1/eps))``); ``objective`` ``min-error`` (the paper's) or ``min-count`` (fewest
    coefficients within eps); ``coefficients`` ``per-row`` (one set per leading-axis slice) or
    ``per-weight``. Exact up to the measured ceiling, then the feasibility tier and SCIP (``prove``
    asks SCIP to prove optimality of the feasible ones). Work beyond ``max_hours`` or the machine's
    memory is refused up front (:class:`UserError`, one line).

    Progress, per array in order (a single array is named ``weight``): ``on_layer(name, rows)``
    as it starts (``rows``: its SubsetSum instances, leading-axis slices per row or single weights
    per weight); ``on_chunk(name, rows_done)`` after each solved chunk of them; ``on_scip(progress)``
    (a :class:`~lottery_jax.subsetsum.scip.ScipProgress`: ``layer``, ``done``, ``total``,
    ``resumed``, ``workers``, ``time_limit``, ``worst_case_seconds``) once before the array's
    first SCIP instance is sent and after each one finishes, only for arrays that need SCIP.
    """
    target, single = _as_target(weights)
    if not (isinstance(seed, int | np.integer) and 0 <= int(seed) < 2**63):
        raise UserError(f"approximate: seed must be an integer in [0, 2^63), got {seed!r}")
    if not isinstance(epsilon, int | float) or not math.isfinite(epsilon):
        raise UserError(f"approximate: epsilon must be a number in (0, 1), got {epsilon!r}")
    cfg = nw.ApproxConfig(
        epsilon=float(epsilon),
        c=float(c),
        rounding=rounding,
        objective=objective,
        coefficients=coefficients,
        zero_small=zero_small,
        seed=int(seed),
        coef_range=None if coef_range is None else (float(coef_range[0]), float(coef_range[1])),
        max_enum_n=max_enum_n,
        scip_time_limit=scip_time_limit,
        scip_workers=scip_workers,
        layers=tuple(glob.escape(k) for k in target),  # (names as literal patterns)
        prove=prove,
        max_hours=max_hours,
    )
    res = nw.approximate_network(target, cfg, on_layer=on_layer, on_chunk=on_chunk, on_scip=on_scip)
    report = nw.record(res)
    out = {k: res.results[k].approx.copy() for k in target}
    return Approximation(out[SINGLE_NAME] if single else out, report, res, target)
