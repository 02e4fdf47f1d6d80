"""Experiment 1 per network: approximate every weight of a target by a SubsetSum (Pensia et al. 2020).

Any tensor of a PyTorch-layout state dict can be approximated (linear and conv weights, biases,
any key names): its rows are the slices along the leading axis (an output neuron of a linear layer,
an output channel of a conv kernel, a single element of a bias), and per-row coefficients are one
set per row.

Tiers per weight:

1. exact: the JAX meet-in-the-middle enumeration (:mod:`lottery_jax.subsetsum.search`) while ``n`` is
   at most the layer's ceiling (``max_enum_n``, by default :func:`search.exact_ceiling`: chosen per
   layer from the measured cost of the search). The result is ``optimal-enumeration`` (the true
   optimum of the objective) or ``infeasible`` (proved: no subset is within eps; the weight keeps its
   min-error approximation);
2. feasibility (beyond the ceiling): the same exact search over a group of ``k`` of the ``n``
   coefficients (:func:`search.feasibility_bits`: ``2^k`` sums put tens within eps of a typical
   weight), then other groups for the few weights left. A subset within eps is ``feasible`` (within
   eps, its optimality over all ``n`` not proved). Weights outside ``[sum of negative coefficients,
   sum of positive ones]`` (widened by eps) are ``infeasible`` at once (proved by that bound). In
   min-count mode the group search minimises the count inside the group, and weights whose minimum
   count over all ``n`` is 0, 1 or 2 get it exactly (``optimal-enumeration``);
3. SCIP: only the weights no group settled (and, with ``prove``, the feasible ones too) become
   per-weight MIPs (:mod:`lottery_jax.subsetsum.scip`), warm-started with the best subset found.

Work and memory are estimated before anything runs (:func:`plan_approximation`); a run beyond the
machine's memory or ``max_hours`` is refused with one line naming the estimate.

``--zero-small`` (the published ``check_w_lt_eps``) sets ``|w| <= eps`` to 0 with no coefficients;
in min-error mode this is generally NOT the min-error optimum, so those weights get the status
``feasible``. In min-count mode it changes nothing (the empty subset is then the optimum).

Every chosen subset is summed again in float64 and its error checked against eps before anything is
reported; a weight that fails the check is ``infeasible`` whatever the tier said.

Files under ``out`` (a run directory, :mod:`lottery_jax.rundir`: locked while a run writes it,
``run.json`` holding the fingerprint of the arguments): ``chunks/`` (one ``.npz`` per finished
chunk, sealed with that fingerprint and a checksum: an interrupted run started again with the same
arguments resumes from its intact chunks and recomputes damaged or foreign ones; other arguments are
refused, naming the first that differs), ``ticket.npz`` (see :func:`save_ticket`),
``approximated.npz`` (the approximated weights, PyTorch layout, float32) and ``results.json``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax import rundir
from lottery_jax.errors import UserError
from lottery_jax.subsetsum import search as ss

#: Status of each weight (the ticket stores an index into this tuple). Within eps:
#: ``optimal-enumeration`` / ``optimal-scip`` (the objective's optimum, proved by that tier) and
#: ``feasible`` (within eps, optimality not proved). Not within eps: ``infeasible`` (proved: no
#: subset is within eps, by enumeration or by SCIP) and ``unsolved`` (SCIP hit its time limit
#: without a subset within eps; one may exist). Both keep their best approximation found.
STATUSES = ("optimal-enumeration", "optimal-scip", "feasible", "infeasible", "unsolved")
OPT_ENUM, OPT_SCIP, FEASIBLE, INFEASIBLE, UNSOLVED = range(5)
#: The statuses that claim ``|w - sum| <= eps``.
WITHIN_STATUSES = frozenset({"optimal-enumeration", "optimal-scip", "feasible"})
OBJECTIVES = ("min-error", "min-count")
COEFFICIENT_MODES = ("per-row", "per-weight")
#: Exit status of ``approximate``/``verify`` when some weight has no subset within eps.
EXIT_INFEASIBLE = 3
#: Exit status of ``verify`` when the ticket does not reproduce its own records.
EXIT_MISMATCH = 4


@dataclass(frozen=True)
class ApproxConfig:
    """Everything that defines a run (and its resume fingerprint)."""

    epsilon: float = 0.01
    c: float = 3.0
    rounding: str = "published"  # n = int(c * round(log2(1/eps))); "readme": round(c*log2(1/eps))
    objective: str = "min-error"
    coefficients: str = "per-row"
    zero_small: bool = False
    seed: int = 0
    coef_range: tuple[float, float] | None = None  # None: from the target, by range_mode
    range_mode: str = "auto"  # ss.coefficient_range: auto, published or symmetric
    max_enum_n: int | None = None  # None: per layer, ss.exact_ceiling(row width)
    scip_time_limit: float = 60.0
    scip_workers: int = 2
    rows_per_chunk: int | None = None
    layers: tuple[str, ...] | None = None  # glob patterns; None: every weight and bias
    feasibility_groups: int = 8
    prove: bool = False
    max_hours: float = 4.0  # budget (not part of the resume fingerprint)
    scip: bool = True  # False: weights no JAX tier settles are `unsolved` (the study's setting)
    draw: str = "published"  # "nested": coefficient i from fold_in(layer key, i) (the study)

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, int | float) and 0 < self.epsilon < 1):
            raise UserError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if not (math.isfinite(self.c) and self.c > 0):
            raise UserError(f"c must be positive, got {self.c}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"unknown objective {self.objective!r} (choose from {OBJECTIVES})")
        if self.coefficients not in COEFFICIENT_MODES:
            raise UserError(f"unknown coefficients mode {self.coefficients!r}")
        if self.rounding not in ("published", "readme"):
            raise UserError(f"unknown rounding {self.rounding!r} (published or readme)")
        if self.draw not in ("published", "nested"):
            raise UserError(f"unknown coefficient draw {self.draw!r} (published or nested)")
        if self.range_mode not in ss.RANGE_MODES:
            raise UserError(
                f"unknown range mode {self.range_mode!r} (choose from {ss.RANGE_MODES})"
            )
        if self.coef_range is not None and not self.coef_range[0] < self.coef_range[1]:
            raise UserError(f"coefficient range must have low < high, got {self.coef_range}")
        if self.max_enum_n is not None and not 1 <= self.max_enum_n <= ss.MAX_ENUM_N:
            raise UserError(f"max enumeration n must be in [1, {ss.MAX_ENUM_N}]")
        if not 1 <= self.feasibility_groups <= 64:
            raise UserError(f"feasibility groups must be in [1, 64], got {self.feasibility_groups}")
        if not (math.isfinite(self.max_hours) and self.max_hours > 0):
            raise UserError(f"max hours must be positive, got {self.max_hours}")
        if self.layers is not None and (
            not self.layers or not all(isinstance(p, str) and p for p in self.layers)
        ):
            raise UserError("layer patterns must be non-empty strings")
        if self.scip_time_limit <= 0 or self.scip_workers < 1:
            raise UserError("SCIP time limit and workers must be positive")

    @property
    def n(self) -> int:
        return ss.n_coefficients(self.c, self.epsilon, self.rounding)


def target_layers(
    target: dict[str, np.ndarray], patterns: tuple[str, ...] | list[str] | None = None
) -> list[str]:
    """The tensors to approximate, in file order: those whose name matches one of the glob
    ``patterns`` (``fnmatch``, case-sensitive; e.g. ``fc*.weight``), by default every floating
    ``*weight`` and ``*bias`` tensor. The others stay exact."""
    from fnmatch import fnmatchcase

    def floating(v) -> bool:
        return np.issubdtype(np.asarray(v).dtype, np.floating)

    if patterns:
        names = [k for k in target if any(fnmatchcase(k, p) for p in patterns)]
        if not names:
            raise UserError(
                f"layer patterns {','.join(patterns)} match none of the target's tensors "
                f"({', '.join(list(target)[:12])})"
            )
        bad = [k for k in names if not floating(target[k]) or np.ndim(target[k]) == 0]
        if bad:
            raise UserError(f"{bad[0]} is not a floating-point tensor and cannot be approximated")
    else:
        names = [
            k
            for k, v in target.items()
            if k.endswith(("weight", "bias")) and floating(v) and np.ndim(v) >= 1
        ]
    names = [k for k in names if np.size(target[k]) > 0]
    if not names:
        raise UserError("the target holds no weight or bias tensor to approximate")
    for k in names:
        if not np.all(np.isfinite(np.asarray(target[k], np.float64))):
            raise UserError(f"target {k} is not finite")
    return names


def target_fingerprint(target: dict[str, np.ndarray], layers: list[str]) -> str:
    h = hashlib.sha256()
    for k in layers:
        h.update(k.encode())
        h.update(np.ascontiguousarray(target[k], np.float32).tobytes())
    return h.hexdigest()


def layer_coefficients(
    cfg: ApproxConfig, index: int, shape: tuple[int, ...], low: float, high: float
):
    """Coefficients of layer ``index``: ``(out, n)`` per row (one set per leading-axis slice) or
    ``shape + (n,)`` per weight."""
    draw_shape = tuple(shape[:1]) if cfg.coefficients == "per-row" else tuple(shape)
    draw = ss.draw_nested_coefficients if cfg.draw == "nested" else ss.draw_coefficients
    return draw(ss.layer_key(cfg.seed, index), draw_shape, cfg.n, low, high)


def as_instances(coefs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instances ``(R, n)`` x ``(R, W)``: one per row (shared coefficients: a row is the tensor's
    leading-axis slice, flattened) or one per weight."""
    n = coefs.shape[-1]
    if coefs.shape[:-1] == weights.shape:
        return coefs.reshape(-1, n), weights.reshape(-1, 1)
    return coefs, weights.reshape(weights.shape[0], -1)


@dataclass
class LayerResult:
    masks: np.ndarray  # (out, in) int64
    errors: np.ndarray  # (out, in) float64, recomputed
    status: np.ndarray  # (out, in) uint8 into STATUSES
    approx: np.ndarray  # (out, in) float64


@dataclass
class ApproxResult:
    cfg: ApproxConfig
    layers: list[str]
    low: float
    high: float
    results: dict[str, LayerResult]
    coefficients: dict[str, np.ndarray]
    seconds: float
    compile_seconds: float
    scip_seconds: float
    resumed_chunks: int
    counts: dict[str, int] = field(default_factory=dict)
    plan: Any = None  # the Plan the run was estimated with
    #: What the SCIP tier did, per tensor that sent it weights (:class:`scip.ScipReport`).
    scip: dict[str, Any] = field(default_factory=dict)
    solved_chunks: int = 0  # chunks solved by this call (beside the resumed_chunks)


def _chunk_name(layer: str, i: int) -> str:
    return f"{layer}-{i:05d}"


def _load_chunk(run: rundir.RunDir, name: str, rows: int, width: int) -> dict | None:
    """A finished chunk of this run (sealed with its fingerprint, intact, of the expected shape);
    None when absent, damaged or foreign (then deleted, so it is recomputed)."""
    shape = (rows, width)
    expect = {"masks": shape, "errors": shape, "tier": shape, "seconds": ()}
    return run.load_chunk(name, expect)


def _in_run_dir(fn):
    """``out`` given as a path: hold it as a :class:`~lottery_jax.rundir.RunDir` (lock, leftovers
    removed) for the duration of the call."""

    @functools.wraps(fn)
    def wrapper(target, cfg, out=None, **kwargs):
        if out is None or isinstance(out, rundir.RunDir):
            return fn(target, cfg, out, **kwargs)
        with rundir.RunDir(out, command="approximate") as run:
            return fn(target, cfg, run, **kwargs)

    return wrapper


#: Temporary tier code of a weight no JAX tier settled yet (never reported).
_UNSETTLED = 255


@dataclass(frozen=True)
class LayerPlan:
    """How one tensor is solved: the exact tier (``k == n``) or feasibility groups of ``k``."""

    name: str
    shape: tuple[int, ...]
    rows: int
    width: int
    exact: bool
    k: int
    ceiling: int
    jax_seconds: float
    expected_unsettled: float


@dataclass(frozen=True)
class Plan:
    """The up-front estimate of a run (see :func:`plan_approximation`)."""

    layers: dict[str, LayerPlan]
    memory_bytes: int
    jax_seconds: float
    scip_weights: float
    scip_seconds: float

    @property
    def seconds(self) -> float:
        return self.jax_seconds + self.scip_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "memory_gib": self.memory_bytes / 2**30,
            "jax_seconds": self.jax_seconds,
            "scip_weights": self.scip_weights,
            "scip_seconds": self.scip_seconds,
            "layers": {
                k: {"exact": p.exact, "k": p.k, "ceiling": p.ceiling}
                for k, p in self.layers.items()
            },
        }


def plan_approximation(
    target: dict[str, np.ndarray],
    layers: list[str],
    cfg: ApproxConfig,
    low: float,
    high: float,
    *,
    check: bool = True,
) -> Plan:
    """Estimate memory and work before any heavy work, and (``check``) refuse with one line.

    Memory: the coefficients (per row or per weight), the per-weight results (mask, error, status,
    approximation) and one solver chunk. Work: the exact or feasibility tier from the measured cost
    model (:func:`search.exact_ops_per_weight`, CPU), and the SCIP tier as the expected number of
    weights left to it (:func:`search.expected_unsettled`) times its time limit over its workers.
    """
    import jax

    n = cfg.n
    mask_bytes = 8 if not ss.packed_masks(n) else (n + 7) // 8
    memory = memory_base = 0
    plans: dict[str, LayerPlan] = {}
    cpu = jax.default_backend() == "cpu"
    for name in layers:
        lp, base, peak = _plan_layer(target, name, cfg, low, high, cpu, mask_bytes)
        memory_base += base
        memory = max(memory, memory_base, peak + memory_base)
        plans[name] = lp
    jax_s = sum(p.jax_seconds for p in plans.values())
    scip_w = sum(p.expected_unsettled for p in plans.values())
    scip_s = scip_w * cfg.scip_time_limit / max(1, cfg.scip_workers)
    plan = Plan(plans, int(memory), jax_s, scip_w, scip_s)
    if check:
        _check_plan(plan, target, layers, cfg)
    return plan


def _plan_layer(target, name, cfg, low, high, cpu: bool, mask_bytes: int):
    """One tensor's plan, the memory it keeps to the end (coefficients and per-weight results)
    and the peak of one solver chunk."""
    n = cfg.n
    shape = tuple(int(d) for d in np.shape(target[name]))
    size = int(np.prod(shape))
    rows, width = (shape[0], size // shape[0]) if cfg.coefficients == "per-row" else (size, 1)
    if len(shape) == 1:
        rows, width = size, 1
    ncoef = rows * n if cfg.coefficients == "per-row" else size * n
    base = 8 * ncoef + size * (mask_bytes + 8 + 8 + 8 + 1)
    ceiling = cfg.max_enum_n if cfg.max_enum_n is not None else ss.exact_ceiling(width)
    exact = n <= ceiling
    k = n if exact else ss.feasibility_bits(cfg.epsilon, low, high, n)
    ops = ss.exact_ops_per_weight(k, width) * size
    ka = ss.default_a_bits(k, ss.bucket(width, 1))  # one chunk's searches (>= 1 row)
    chunk = max(ss.bucket(width, 1) * 2**ka, 2 ** (k - ka + 1))
    peak = 64 * 2**20 + 48 * max(chunk, ss.default_queries())
    seconds = ops * ss.SECONDS_PER_OP if cpu else 0.0
    unsettled = 0.0
    if not exact:
        w = np.asarray(target[name], np.float64)
        inside = w[(w >= n * min(low, 0.0)) & (w <= n * max(high, 0.0))]
        unsettled = ss.expected_unsettled(inside, cfg.epsilon, low, high, k, cfg.feasibility_groups)
        if cfg.prove:
            unsettled = float(size)
        if not cfg.scip:
            unsettled = 0.0
    lp = LayerPlan(name, shape, rows, width, exact, k, ceiling, seconds, unsettled)
    return lp, base, peak


def _check_plan(plan: Plan, target, layers, cfg: ApproxConfig) -> None:
    """Refuse with one line a plan beyond the machine's memory or ``cfg.max_hours``."""
    from lottery_jax.resources import require_memory

    n = cfg.n
    weights = sum(int(np.size(target[k])) for k in layers)
    require_memory(
        plan.memory_bytes,
        f"approximating {weights:,} weights with n={n} coefficients each",
        "lower c or raise epsilon",
    )
    if plan.seconds > cfg.max_hours * 3600:
        what = (
            f"about {plan.scip_weights:,.0f} weights for SCIP at up to {cfg.scip_time_limit:g} s "
            "each"
            if plan.scip_seconds > plan.jax_seconds
            else "the JAX tiers"
        )
        raise UserError(
            f"estimated {plan.seconds / 3600:,.1f} h ({what}, n={n}), over the budget of "
            f"{cfg.max_hours:g} h (max hours); raise it, lower the SCIP time limit or raise "
            "epsilon"
        )


def _lift(local: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """Masks over the coefficients ``cols`` (int64, ``len(cols) <= 34``) as masks over all ``n``."""
    k = len(cols)
    if not ss.packed_masks(n) and np.array_equal(cols, np.arange(k)):
        return np.asarray(local, np.int64)
    out = []
    flat = np.asarray(local).reshape(-1)
    step = max(1, 2**22 // max(n, 1))
    for s0 in range(0, flat.size, step):
        bits = np.zeros((min(step, flat.size - s0), n), bool)
        bits[:, cols] = ss.mask_to_bits(flat[s0 : s0 + step], k)
        out.append(ss.bits_to_mask(bits))
    tail = out[0].shape[1:] if out else ((n + 7) // 8,) if ss.packed_masks(n) else ()
    return (np.concatenate(out) if out else np.zeros((0, *tail), out_dtype(n))).reshape(
        *np.shape(local), *tail
    )


def out_dtype(n: int):
    return np.uint8 if ss.packed_masks(n) else np.int64


def _small_counts(
    inst_c: np.ndarray, rows: np.ndarray, w: np.ndarray, eps: float, block: int | None = None
):
    """Exact min-count over all ``n`` coefficients where it is 0, 1 or 2 (ties by the error).

    Weight ``i`` has the coefficients ``inst_c[rows[i]]`` and the value ``w[i]``. Returns
    ``(count, bits, error)`` with ``count = -1`` where the minimum count is larger than 2. Worked
    in blocks of weights, so memory stays bounded at any n.
    """
    K, n = len(rows), inst_c.shape[1]
    count = np.full(K, -1)
    bits = np.zeros((K, n), bool)
    err = np.abs(w).astype(np.float64)
    count[err <= eps] = 0
    iu, ju = np.triu_indices(n, 1)
    block = block or max(1, 2**22 // max(1, len(iu) + n))
    for s0 in range(0, K, block):
        sl = slice(s0, min(K, s0 + block))
        c, ws, todo = inst_c[rows[sl]], w[sl], count[sl] < 0
        e1 = np.abs(ws[:, None] - c)
        i1 = np.argmin(e1, axis=1)
        b1 = e1[np.arange(len(ws)), i1]
        one = todo & (b1 <= eps)
        idx = np.nonzero(one)[0] + s0
        count[idx], err[idx] = 1, b1[one]
        bits[idx, i1[one]] = True
        todo = todo & ~one
        if n >= 2 and todo.any():
            left = np.nonzero(todo)[0]
            e2 = np.abs(ws[left, None] - (c[left][:, iu] + c[left][:, ju]))
            p = np.argmin(e2, axis=1)
            b2 = e2[np.arange(len(left)), p]
            two = b2 <= eps
            idx = left[two] + s0
            count[idx], err[idx] = 2, b2[two]
            bits[idx, iu[p[two]]] = True
            bits[idx, ju[p[two]]] = True
    return count, bits, err


@dataclass(frozen=True)
class RunSetup:
    """What every process of a run agrees on before solving: the tensors, the coefficient range,
    the plan and the fingerprint a resumed run must match."""

    layers: list[str]
    low: float
    high: float
    plan: Plan
    fingerprint: dict[str, Any]


def setup_run(
    target: dict[str, np.ndarray], cfg: ApproxConfig, out: rundir.RunDir | None, plan: Plan | None
) -> RunSetup:
    """Plan the run (refused beyond the machine or ``cfg.max_hours``) and, with ``out``, record its
    fingerprint there or refuse a directory holding another run."""
    layers = target_layers(target, cfg.layers)
    low, high = cfg.coef_range or ss.coefficient_range([target[k] for k in layers], cfg.range_mode)
    plan = plan or plan_approximation(target, layers, cfg, low, high)
    fp = {
        "config": fingerprint_config(cfg),
        "n": cfg.n,
        "low": low,
        "high": high,
        "target_sha256": target_fingerprint(target, layers),
    }
    if out is not None:
        out.require(fp)
    return RunSetup(layers, low, high, plan, fp)


@dataclass(frozen=True)
class LayerWork:
    """One tensor as SubsetSum instances ``inst_c (R, n)`` x ``inst_w (R, W)``, cut into chunks of
    ``rows`` instances, solved over the coefficient columns ``cols`` (all ``n`` in the exact tier,
    a group of ``k`` in the feasibility tier)."""

    name: str
    w: np.ndarray  # the tensor, float64
    coefs: np.ndarray
    inst_c: np.ndarray
    inst_w: np.ndarray
    plan: LayerPlan
    cols: np.ndarray
    rows: int
    n_chunks: int

    def bounds(self, i: int) -> tuple[int, int]:
        """Instances ``[s0, s1)`` of chunk ``i``."""
        return i * self.rows, min(self.inst_w.shape[0], (i + 1) * self.rows)


def layer_work(
    target: dict[str, np.ndarray], cfg: ApproxConfig, setup: RunSetup, index: int, ndev: int
) -> LayerWork:
    """Draw layer ``index``'s coefficients and cut its instances into chunks (a multiple of the
    ``ndev`` devices)."""
    name = setup.layers[index]
    lp = setup.plan.layers[name]
    w = np.asarray(target[name], np.float64)
    coefs = layer_coefficients(cfg, index, w.shape, setup.low, setup.high)
    inst_c, inst_w = as_instances(coefs, w)
    R, W = inst_w.shape
    cols = ss.group_columns(cfg.n, lp.k, 0, cfg.seed)
    rows = cfg.rows_per_chunk or ss.default_rows_per_chunk(lp.k, ss.bucket(W, 1), ndev)
    rows = -(-min(rows, ss.bucket(R)) // ndev) * ndev
    return LayerWork(name, w, coefs, inst_c, inst_w, lp, cols, rows, -(-R // rows))


@dataclass
class Solver:
    """The devices of one call and its running totals (solve time, chunks resumed and solved)."""

    mesh: Any
    stats: ss.SolveStats
    resumed: int = 0
    solved: int = 0

    @classmethod
    def local(cls) -> Solver:
        return cls(ss.local_mesh(), ss.SolveStats())

    @property
    def ndev(self) -> int:
        return int(self.mesh.devices.size)


def solve_chunk(cfg: ApproxConfig, work: LayerWork, i: int, solver: Solver) -> dict[str, Any]:
    """Chunk ``i`` of ``work`` through the JAX tier: masks over ``work.cols``, errors and the tier
    code of each weight (``optimal-enumeration``/``infeasible`` when exact; ``feasible`` or not
    settled yet in a feasibility group)."""
    eps, mesh, stats = cfg.epsilon, solver.mesh, solver.stats
    s0, s1 = work.bounds(i)
    before = stats.seconds
    c_chunk, w_chunk = work.inst_c[s0:s1][:, work.cols], work.inst_w[s0:s1]
    if cfg.objective == "min-count":
        m, e, _, feas = ss.solve(
            "min-count", c_chunk, w_chunk, epsilon=eps, rows_per_chunk=work.rows,
            mesh=mesh, stats=stats,
        )  # fmt: skip
        if not feas.all():  # keep the best approximation of the rest
            me, ee = ss.solve(
                "min-error", c_chunk, w_chunk, rows_per_chunk=work.rows, mesh=mesh, stats=stats,
            )  # fmt: skip
            m = np.where(feas, m, me)
            e = np.where(feas, e, ee)
    else:
        m, e = ss.solve(
            "min-error", c_chunk, w_chunk, rows_per_chunk=work.rows, mesh=mesh, stats=stats
        )
    if work.plan.exact:
        t = np.where(e <= eps, OPT_ENUM, INFEASIBLE).astype(np.uint8)
    else:  # a subset of the coefficients: within eps is feasible, the rest unsettled
        t = np.where(e <= eps, FEASIBLE, _UNSETTLED).astype(np.uint8)
    return {"masks": m, "errors": e, "tier": t, "seconds": stats.seconds - before}


def chunk_result(
    cfg: ApproxConfig, work: LayerWork, i: int, out: rundir.RunDir | None, solver: Solver
) -> dict[str, Any]:
    """Chunk ``i``: resumed from ``out`` when a sealed copy of this run is there, else solved (and
    sealed into ``out``)."""
    s0, s1 = work.bounds(i)
    name = _chunk_name(work.name, i)
    done = _load_chunk(out, name, s1 - s0, work.inst_w.shape[1]) if out is not None else None
    if done is not None:
        solver.resumed += 1
        solver.stats.seconds += float(done["seconds"])
        return done
    done = solve_chunk(cfg, work, i, solver)
    if out is not None:
        out.save_chunk(name, done)
    solver.solved += 1
    return done


def solve_chunks(
    cfg: ApproxConfig,
    work: LayerWork,
    out: rundir.RunDir | None,
    solver: Solver,
    chunks: Iterable[int],
    on_chunk: Callable[[str, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``chunks`` of one layer (resumed or solved): masks over ``work.cols``, errors, tiers,
    each ``(R, W)`` (zeros where a chunk was not among ``chunks``)."""
    R, W = work.inst_w.shape
    local = np.zeros((R, W), np.int64)
    errors = np.zeros((R, W))
    tier = np.zeros((R, W), np.uint8)
    for i in chunks:
        s0, s1 = work.bounds(i)
        done = chunk_result(cfg, work, i, out, solver)
        local[s0:s1], errors[s0:s1], tier[s0:s1] = done["masks"], done["errors"], done["tier"]
        if on_chunk:
            on_chunk(work.name, s1)
    return local, errors, tier


def settle_layer(
    cfg: ApproxConfig,
    work: LayerWork,
    chunks: tuple[np.ndarray, np.ndarray, np.ndarray],
    solver: Solver,
    out: rundir.RunDir | None = None,
    on_scip: Callable[[Any], None] | None = None,
) -> tuple[LayerResult, Any]:
    """A layer's chunks to its result: masks over all ``n`` coefficients, the weights the first
    group left settled (:func:`_settle`, beyond the exact ceiling), ``--zero-small`` applied,
    and every subset summed again in float64 (:func:`_recheck`). Returns the result and what
    SCIP did (a :class:`scip.ScipReport`; None when no weight went to SCIP)."""
    n, eps, w = cfg.n, cfg.epsilon, work.w
    local, errors, tier = chunks
    masks = _lift(local, work.cols, n)
    del local
    scip_report = None
    if not work.plan.exact:
        masks, tier, scip_report = _settle(
            cfg, work.inst_c, work.inst_w, masks, errors, tier, work.plan.k, solver.mesh,
            solver.stats, store=out, layer=work.name, on_scip=on_scip,
        )  # fmt: skip
    masks = masks.reshape(*w.shape, *masks.shape[2:])
    tier = tier.reshape(w.shape)
    if cfg.zero_small and cfg.objective == "min-error":
        small = np.abs(w) <= eps
        masks = np.where(small.reshape(*w.shape, *([1] * (masks.ndim - w.ndim))), 0, masks)
        tier = np.where(small, FEASIBLE, tier).astype(np.uint8)
    return _recheck(work.coefs, w, masks, tier, eps, n), scip_report


@_in_run_dir
def solve_share(
    target: dict[str, np.ndarray],
    cfg: ApproxConfig,
    out: Path | rundir.RunDir | None = None,
    *,
    share: tuple[int, int],
    on_layer: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    plan: Plan | None = None,
) -> int:
    """One process's share of a run that ``count`` processes split (``share=(index, count)``):
    chunk ``i`` of every layer goes to process ``i % count``. Solves (or finds) this process's
    chunks into ``out`` and returns how many it solved. Afterwards (a barrier) one process calls
    :func:`approximate_network` on the same directory, which resumes every chunk, settles the rest
    (SCIP) and returns the result."""
    if out is None:
        raise ValueError("sharing the chunks among processes needs a run directory")
    index, count = share
    setup = setup_run(target, cfg, out, plan)
    solver = Solver.local()
    for li, name in enumerate(setup.layers):
        work = layer_work(target, cfg, setup, li, solver.ndev)
        if on_layer:
            on_layer(name, work.inst_w.shape[0])
        mine = [i for i in range(work.n_chunks) if i % count == index]
        solve_chunks(cfg, work, out, solver, mine, on_chunk)
    return solver.solved


@_in_run_dir
def approximate_network(
    target: dict[str, np.ndarray],
    cfg: ApproxConfig,
    out: Path | rundir.RunDir | None = None,
    *,
    on_layer: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    plan: Plan | None = None,
    on_scip: Callable[[Any], None] | None = None,
) -> ApproxResult:
    """Approximate every selected tensor of ``target`` (PyTorch layout) under ``cfg``.

    The steps: plan (:func:`setup_run`: refused beyond the machine or ``cfg.max_hours``), per
    layer solve its chunks (:func:`solve_chunks`), settle what the first group left and recheck in
    float64 (:func:`settle_layer`), then report (:class:`ApproxResult`). With ``out`` given,
    finished chunks go to ``out/chunks`` and are reused by a later call with the same arguments.
    ``on_layer(name, rows)`` / ``on_chunk(name, rows_done)`` report progress.
    """
    setup = setup_run(target, cfg, out, plan)
    solver = Solver.local()
    results: dict[str, LayerResult] = {}
    coefficients: dict[str, np.ndarray] = {}
    scip: dict[str, Any] = {}
    for li, name in enumerate(setup.layers):
        work = layer_work(target, cfg, setup, li, solver.ndev)
        coefficients[name] = work.coefs
        if on_layer:
            on_layer(name, work.inst_w.shape[0])
        chunks = solve_chunks(cfg, work, out, solver, range(work.n_chunks), on_chunk)
        results[name], scip_report = settle_layer(cfg, work, chunks, solver, out, on_scip)
        if scip_report is not None:
            scip[name] = scip_report
    counts = {
        s: int(sum(int((r.status == i).sum()) for r in results.values()))
        for i, s in enumerate(STATUSES)
    }
    return ApproxResult(
        cfg, setup.layers, setup.low, setup.high, results, coefficients, solver.stats.seconds,
        solver.stats.compile_seconds, sum(r.seconds for r in scip.values()), solver.resumed,
        counts, setup.plan, scip, solver.solved,
    )  # fmt: skip


def _settle(cfg, inst_c, inst_w, masks, errors, tier, k, mesh, stats, **scip_kw):
    """Beyond the exact ceiling: the bound proof, the other feasibility groups, small counts
    (min-count) and SCIP for what is left. Arrays are ``(R, W)`` (masks ``(R, W[, bytes])``)."""
    masks, errors, tier = masks.copy(), errors.copy(), tier.copy()
    _prove_by_bound(inst_c, inst_w, masks, errors, tier, cfg.epsilon)
    _other_groups(cfg, inst_c, inst_w, masks, errors, tier, k, mesh, stats)
    if cfg.objective == "min-count":
        _exact_small_counts(inst_c, inst_w, masks, errors, tier, cfg.epsilon, stats)
    scip_report = _scip_rest(cfg, inst_c, inst_w, masks, tier, **scip_kw)
    return masks, tier, scip_report


def _prove_by_bound(inst_c, inst_w, masks, errors, tier, eps) -> None:
    """Proved infeasible by the bound: w beyond the sum of the negative (positive) coefficients
    (widened by eps); such a weight keeps the sum of all coefficients of its sign."""
    neg = np.minimum(inst_c, 0.0).sum(1)[:, None]
    pos = np.maximum(inst_c, 0.0).sum(1)[:, None]
    below = (tier == _UNSETTLED) & (inst_w < neg - eps)
    above = (tier == _UNSETTLED) & (inst_w > pos + eps)
    for sel, sign in ((below, -1), (above, 1)):
        r, j = np.nonzero(sel)
        if r.size:
            bits = (inst_c[r] * sign) > 0
            masks[r, j] = ss.bits_to_mask(bits)
            errors[r, j] = np.abs(inst_w[r, j] - np.where(bits, inst_c[r], 0.0).sum(1))
            tier[r, j] = INFEASIBLE


def _other_groups(cfg, inst_c, inst_w, masks, errors, tier, k, mesh, stats) -> None:
    """Groups ``1..feasibility_groups-1`` of ``k`` coefficients for the weights still unsettled:
    a better error is kept, one within eps makes the weight ``feasible``."""
    n, eps = cfg.n, cfg.epsilon
    for g in range(1, cfg.feasibility_groups):
        r, j = np.nonzero(tier == _UNSETTLED)
        if not r.size:
            break
        cols = ss.group_columns(n, k, g, cfg.seed)
        m, e = ss.solve(
            "min-error", inst_c[r][:, cols], inst_w[r, j][:, None], mesh=mesh, stats=stats
        )
        m, e = m[:, 0], e[:, 0]
        better = e < errors[r, j]
        masks[r[better], j[better]] = _lift(m[better], cols, n)
        errors[r[better], j[better]] = e[better]
        tier[r[e <= eps], j[e <= eps]] = FEASIBLE


def _exact_small_counts(inst_c, inst_w, masks, errors, tier, eps, stats) -> None:
    """min-count: weights whose minimum count over all ``n`` is 0, 1 or 2 get it exactly."""
    r, j = np.nonzero(tier != INFEASIBLE)
    t0 = time.perf_counter()
    cnt, bits, err = _small_counts(inst_c, r, inst_w[r, j], eps)
    stats.seconds += time.perf_counter() - t0
    ok = cnt >= 0
    masks[r[ok], j[ok]] = ss.bits_to_mask(bits[ok])
    errors[r[ok], j[ok]] = err[ok]
    tier[r[ok], j[ok]] = OPT_ENUM


def _scip_rest(cfg, inst_c, inst_w, masks, tier, **scip_kw):
    """SCIP for the weights no group settled (and, with ``prove``, the feasible ones), within the
    budget of ``max_hours``; without the MIP tier they stay ``unsolved``. Returns what SCIP did
    (a :class:`scip.ScipReport`), None when no weight went to it."""
    n = cfg.n
    todo = (tier == _UNSETTLED) | ((tier == FEASIBLE) if cfg.prove else False)
    r, j = np.nonzero(todo)
    if not r.size:
        return None
    if not cfg.scip:  # no MIP tier: what no group settled stays unsolved
        tier[r, j] = np.where(tier[r, j] == _UNSETTLED, UNSOLVED, tier[r, j])
        return None
    budget = cfg.max_hours * 3600
    need = r.size * cfg.scip_time_limit / max(1, cfg.scip_workers)
    if need > budget:
        raise UserError(
            f"{r.size:,} weights need the SCIP tier: up to {need / 3600:,.1f} h at "
            f"a SCIP time limit of {cfg.scip_time_limit:g} s with {cfg.scip_workers} workers, "
            f"over the budget of {cfg.max_hours:g} h (max hours); raise it or lower the SCIP "
            "time limit"
        )
    start = ss.masks_to_ints(masks[r, j], n)
    t_in = np.where(tier[r, j] == _UNSETTLED, FEASIBLE, tier[r, j]).astype(np.uint8)
    m_out, t_out, report = _scip_tier(
        cfg, inst_c[r], inst_w[r, j][:, None], start[:, None], t_in[:, None], **scip_kw
    )
    masks[r, j] = ss.ints_to_masks(np.asarray(m_out)[:, 0], n)
    tier[r, j] = np.asarray(t_out)[:, 0]
    return report


def _scip_tier(
    cfg: ApproxConfig,
    inst_c,
    inst_w,
    masks,
    tier,
    *,
    store: Any = None,
    layer: str = "scip",
    on_scip: Callable[[Any], None] | None = None,
):
    """Per-weight MIPs (:mod:`lottery_jax.subsetsum.scip`), each warm-started with its incumbent.

    ``inst_c (R, n)``, ``inst_w (R, W)``; ``masks (R, W)`` the incumbents (int64, or Python ints in
    an object array for any n); ``tier`` is not read (every weight given is solved). Returns
    ``(masks, tier, report)``, the report a :class:`scip.ScipReport`. Statuses, each checked in float64 here: ``optimal-scip`` / ``feasible`` for
    a subset within eps (SCIP's, or the incumbent when SCIP found none), ``infeasible`` when SCIP
    proved that no subset is within eps, ``unsolved`` when it ran out of time with nothing within
    eps (the incumbent is kept).

    ``store`` (a :class:`~lottery_jax.rundir.RunDir`, optional) keeps the
    finished results in sealed chunks as they come, so an interrupted run (Ctrl-C kills the workers
    within about a second) resumes with them. ``on_scip(scip.ScipProgress)`` is called before the
    first instance is sent and after each one.
    """
    from lottery_jax.subsetsum import scip as scip_solver

    t0 = time.perf_counter()
    R, W = inst_w.shape
    n = inst_c.shape[1]
    eps = cfg.epsilon
    pairs = [(r, j) for r in range(R) for j in range(W)]
    tasks = [
        scip_solver.MipTask(
            tuple(inst_c[r].tolist()),
            float(inst_w[r, j]),
            eps,
            cfg.objective,
            cfg.scip_time_limit,
            0.0,
            int(masks[r, j]),
        )
        for r, j in pairs
    ]
    saved = scip_solver.SavedResults(store, layer, tasks, n)
    results = saved.load()
    todo = [i for i in range(len(tasks)) if i not in results]
    workers = max(1, min(cfg.scip_workers, len(todo)))
    progress = scip_solver.ScipProgress(
        layer, len(results), len(tasks), len(results), workers, cfg.scip_time_limit
    )
    if on_scip:
        on_scip(progress)
    if todo:

        def finished(i: int, res) -> None:
            results[i] = res
            saved.add(i, res)
            progress.done += 1
            if on_scip:
                on_scip(progress)

        try:
            with scip_solver.ScipPool(workers) as pool:
                pool.run(tasks, finished, todo)
        finally:
            saved.flush()  # (also on Ctrl-C: what finished is kept)
    masks, tier = _scip_statuses(cfg, inst_c, inst_w, masks, tier, tasks, results)
    report = scip_solver.ScipReport.of(progress, results.values(), time.perf_counter() - t0)
    return masks, tier, report


def _scip_statuses(cfg, inst_c, inst_w, masks, tier, tasks, results):
    """SCIP's answers, each checked in float64: its subset when within eps (``optimal-scip`` or
    ``feasible``), else the incumbent when that is within eps, else ``infeasible`` (proved by
    SCIP) or ``unsolved``. Returns ``(masks, tier)``."""
    R, W = inst_w.shape
    n, eps = inst_c.shape[1], cfg.epsilon
    masks = masks.copy()
    tier = np.array(tier, np.uint8, copy=True)

    def error(r: int, mask: int, w: float) -> float:
        bits = ss.ints_to_bits(np.array(mask, dtype=object), n)
        return abs(w - float(np.where(bits, inst_c[r], 0.0).sum()))

    for i, (r, j) in enumerate((r, j) for r in range(R) for j in range(W)):
        res, w = results[i], float(inst_w[r, j])
        start_ok = error(r, tasks[i].start_mask, w) <= eps
        if res.mask is not None and error(r, res.mask, w) <= eps:
            masks[r, j] = res.mask
            tier[r, j] = OPT_SCIP if res.status == "optimal" else FEASIBLE
        elif start_ok:  # (SCIP found nothing better within eps in float64: keep the incumbent)
            tier[r, j] = FEASIBLE
        elif res.status == "infeasible":
            tier[r, j] = INFEASIBLE
        else:
            tier[r, j] = UNSOLVED
    return masks, tier


def _recheck(
    coefs: np.ndarray, w: np.ndarray, masks: np.ndarray, tier: np.ndarray, eps: float, n: int
):
    """Float64 sums of the chosen subsets; anything not within eps is ``infeasible`` (or stays
    ``unsolved``). Summed in row blocks so memory stays bounded at any n."""
    c = ss.broadcast_coefficients(coefs, w.shape)
    approx = np.empty(w.shape, np.float64)
    rows = max(1, 2**23 // max(1, n * max(1, int(np.prod(w.shape[1:])))))
    for s0 in range(0, w.shape[0], rows):
        approx[s0 : s0 + rows] = ss.subset_sums(c[s0 : s0 + rows], masks[s0 : s0 + rows], n)
    errors = np.abs(w - approx)
    bad = np.where(tier == UNSOLVED, UNSOLVED, INFEASIBLE)
    status = np.where(errors <= eps, tier, bad).astype(np.uint8)
    if np.any(status == _UNSETTLED):  # (cannot happen: every tier settles or hands to SCIP)
        raise AssertionError("a weight was left without a status")
    return LayerResult(masks, errors, status, approx)


def config_dict(cfg: ApproxConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["coef_range"] = list(cfg.coef_range) if cfg.coef_range else None
    return d


def fingerprint_config(cfg: ApproxConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that define a run's results (its resume fingerprint): all but the
    budget (``max_hours``) and the worker count (``scip_workers``)."""
    return {k: v for k, v in config_dict(cfg).items() if k not in ("max_hours", "scip_workers")}


def approximated_state(res: ApproxResult, target: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The target's state with every approximated tensor replaced (float32, PyTorch layout)."""
    state = {k: np.asarray(v) for k, v in target.items()}
    for k, r in res.results.items():
        state[k] = r.approx.astype(np.float32)
    return state


def layer_table(res: ApproxResult) -> list[dict[str, Any]]:
    """One row per approximated tensor: weights, remaining coefficients, relative size, max error,
    status counts, and the tier that ran (exact, or feasibility groups of k coefficients)."""
    n = res.cfg.n
    plan = getattr(res, "plan", None)
    rows = []
    for k in res.layers:
        r = res.results[k]
        size = int(r.errors.size)
        remaining = int(ss.mask_to_bits(r.masks, n).sum()) if size else 0
        lp = plan.layers.get(k) if plan is not None else None
        rows.append(
            {
                "layer": k,
                "shape": list(r.errors.shape),
                "weights": size,
                "remaining_params": remaining,
                "relative_size": remaining / size if size else 0.0,
                "max_error": float(r.errors.max()) if size else 0.0,
                "status_counts": {s: int((r.status == i).sum()) for i, s in enumerate(STATUSES)},
                "tier": None if lp is None else ("exact" if lp.exact else f"feasibility k={lp.k}"),
            }
        )
    return rows


def summarize(res: ApproxResult) -> dict[str, Any]:
    """The counts the paper reports (Sec. 4, Experiment 1) plus ours, and the per-layer table."""
    n = res.cfg.n
    table = layer_table(res)
    total = sum(t["weights"] for t in table)
    remaining = sum(t["remaining_params"] for t in table)
    max_error = max(t["max_error"] for t in table)
    infeasible = res.counts.get("infeasible", 0)
    not_within = infeasible + res.counts.get("unsolved", 0)
    plan = getattr(res, "plan", None)
    return {
        "target_params": total,
        "initial_params": n * total,
        "remaining_params": remaining,
        "relative_size": remaining / total,
        "max_error": max_error,
        "all_within_epsilon": bool(not_within == 0 and max_error <= res.cfg.epsilon),
        "status_counts": dict(res.counts),
        "infeasible": infeasible,
        "unsolved": res.counts.get("unsolved", 0),
        "layers": table,
        "plan": None if plan is None else plan.as_dict(),
    }


#: How many weights outside eps :func:`not_within_epsilon` lists by default.
NOT_WITHIN_SHOWN = 100


def not_within_epsilon(
    res: ApproxResult, target: dict[str, np.ndarray], limit: int = NOT_WITHIN_SHOWN
) -> dict[str, Any]:
    """The weights left outside eps (``infeasible`` and ``unsolved``), for the summary and
    ``results.json``: ``{"total": N, "shown": k, "weights": [{"layer", "index", "w", "error",
    "status"}, ...]}``, the first ``limit`` in layer and index order (N counts them all)."""
    bad_codes = [STATUSES.index("infeasible"), STATUSES.index("unsolved")]
    total, rows = 0, []
    for k in res.layers:
        r = res.results[k]
        bad = np.isin(r.status, bad_codes)
        total += int(bad.sum())
        if len(rows) < limit:
            w = np.asarray(target[k], np.float64)
            for idx in np.argwhere(bad)[: limit - len(rows)]:
                ix = tuple(int(i) for i in idx)
                rows.append({"layer": k, "index": list(ix), "w": float(w[ix]),
                             "error": float(r.errors[ix]), "status": STATUSES[r.status[ix]]})  # fmt: skip
    return {"total": total, "shown": len(rows), "weights": rows}


def record(res: ApproxResult) -> dict[str, Any]:
    """The results record of a run: :func:`summarize` plus timings and the settings that made it
    (the fields ``results.json`` and the Python API's ``report`` share)."""
    cfg = res.cfg
    return {
        **summarize(res),
        "seconds": res.seconds,
        "compile_seconds": res.compile_seconds,
        "scip_seconds": res.scip_seconds,
        "scip": {k: v.as_dict() for k, v in res.scip.items()},
        "resumed_chunks": res.resumed_chunks,
        "solved_chunks": res.solved_chunks,
        "n": cfg.n,
        "epsilon": cfg.epsilon,
        "c": cfg.c,
        "objective": cfg.objective,
        "coefficients": cfg.coefficients,
        "zero_small": cfg.zero_small,
        "coefficient_range": [res.low, res.high],
        "seed": cfg.seed,
        "config": config_dict(cfg),
    }
