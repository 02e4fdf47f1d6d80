"""Experiment 1 per network: approximate every weight of a target by a SubsetSum (Pensia et al. 2020).

Tiers per weight:

1. the exact JAX enumeration (:mod:`lottery_jax.subsetsum.search`) for ``n <= max_enum_n``: the result is
   ``optimal-enumeration`` (the true optimum of the objective) or ``infeasible`` (proved: no subset is
   within eps; the weight keeps its min-error approximation);
2. beyond it, a JAX incumbent (exact over the first ``max_enum_n`` coefficients) and the per-weight
   MIP in SCIP (:mod:`lottery_jax.subsetsum.scip`) with a time limit: ``optimal-scip``, ``feasible``
   (within eps, optimality not proved) or ``infeasible``.

``--zero-small`` (the published ``check_w_lt_eps``) sets ``|w| <= eps`` to 0 with no coefficients;
in min-error mode this is generally NOT the min-error optimum, so those weights get the status
``feasible``. In min-count mode it changes nothing (the empty subset is then the optimum).

Every chosen subset is summed again in float64 and its error checked against eps before anything is
reported; a weight that fails the check is ``infeasible`` whatever the tier said.

Files under ``out``: ``chunks/`` (one ``.npz`` per finished chunk, written atomically, plus
``chunks/config.json``: an interrupted run started again with the same arguments resumes from its
finished chunks, other arguments are refused), ``ticket.npz`` (see :func:`save_ticket`),
``approximated.npz`` (the approximated weights, PyTorch layout, float32) and ``results.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.results import save_npz_atomic, write_json_atomic
from lottery_jax.subsetsum import search as ss

STATUSES = ("optimal-enumeration", "optimal-scip", "feasible", "infeasible")
OPT_ENUM, OPT_SCIP, FEASIBLE, INFEASIBLE = range(4)
OBJECTIVES = ("min-error", "min-count")
COEFFICIENT_MODES = ("per-row", "per-weight")
TICKET_FORMAT = "lottery-jax-ticket/1"
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
    coef_range: tuple[float, float] | None = None  # None: the target's [min(0,min w), max(0,max w)]
    max_enum_n: int = 30
    scip_time_limit: float = 60.0
    scip_workers: int = 2
    rows_per_chunk: int | None = None

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
        if self.coef_range is not None and not self.coef_range[0] < self.coef_range[1]:
            raise UserError(f"coefficient range must have low < high, got {self.coef_range}")
        if not 1 <= self.max_enum_n <= ss.MAX_ENUM_N:
            raise UserError(f"max enumeration n must be in [1, {ss.MAX_ENUM_N}]")
        if self.scip_time_limit <= 0 or self.scip_workers < 1:
            raise UserError("SCIP time limit and workers must be positive")

    @property
    def n(self) -> int:
        return ss.n_coefficients(self.c, self.epsilon, self.rounding)


def target_layers(target: dict[str, np.ndarray]) -> list[str]:
    """The weight matrices to approximate: every 2-D ``*.weight`` (out, in), in file order."""
    names = [k for k, v in target.items() if k.endswith("weight") and np.ndim(v) == 2]
    if not names:
        raise UserError("the target holds no 2-D weight matrix to approximate")
    for k in names:
        if not np.all(np.isfinite(target[k])):
            raise UserError(f"target {k} is not finite")
    return names


def target_fingerprint(target: dict[str, np.ndarray], layers: list[str]) -> str:
    h = hashlib.sha256()
    for k in layers:
        h.update(k.encode())
        h.update(np.ascontiguousarray(target[k], np.float32).tobytes())
    return h.hexdigest()


def layer_coefficients(
    cfg: ApproxConfig, index: int, shape: tuple[int, int], low: float, high: float
):
    """Coefficients of layer ``index``: ``(out, n)`` per row or ``(out, in, n)`` per weight."""
    draw_shape = shape[:1] if cfg.coefficients == "per-row" else shape
    return ss.draw_coefficients(ss.layer_key(cfg.seed, index), draw_shape, cfg.n, low, high)


def as_instances(coefs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instances ``(R, n)`` x ``(R, W)``: one per row (shared coefficients) or one per weight."""
    if coefs.ndim == 2:
        return coefs, weights
    n = coefs.shape[-1]
    return coefs.reshape(-1, n), weights.reshape(-1, 1)


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


def _chunk_path(out: Path, layer: str, i: int) -> Path:
    return out / "chunks" / f"{layer}-{i:05d}.npz"


def _load_chunk(path: Path, rows: int, width: int):
    try:
        with np.load(path) as f:
            out = {k: f[k] for k in ("masks", "errors", "tier", "seconds")}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if out["masks"].shape != (rows, width):
        return None
    return out


def _check_resume(out: Path, fingerprint: dict[str, Any]) -> None:
    path = out / "chunks" / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != fingerprint:
            raise UserError(
                f"{out} holds chunks of a run with different arguments; use another --out or delete it"
            )
    else:
        write_json_atomic(path, fingerprint)


def approximate_network(
    target: dict[str, np.ndarray],
    cfg: ApproxConfig,
    out: Path | None = None,
    *,
    on_layer: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
) -> ApproxResult:
    """Approximate every weight matrix of ``target`` (PyTorch layout) under ``cfg``.

    With ``out`` given, finished chunks go to ``out/chunks`` and are reused by a later call with the
    same arguments. ``on_layer(name, n_chunks)`` / ``on_chunk(name, rows_done)`` report progress.
    """
    layers = target_layers(target)
    n = cfg.n
    low, high = cfg.coef_range or ss.coefficient_range([target[k] for k in layers])
    fp = {
        "config": config_dict(cfg),
        "n": n,
        "low": low,
        "high": high,
        "target_sha256": target_fingerprint(target, layers),
    }
    if out is not None:
        _check_resume(Path(out), fp)
    mesh = ss.local_mesh()
    ndev = mesh.devices.size
    n_enum = min(n, cfg.max_enum_n)
    seconds = compile_seconds = scip_seconds = 0.0
    resumed = 0
    results: dict[str, LayerResult] = {}
    coefficients: dict[str, np.ndarray] = {}
    for li, name in enumerate(layers):
        w = np.asarray(target[name], np.float64)
        coefs = layer_coefficients(cfg, li, w.shape, low, high)
        coefficients[name] = coefs
        inst_c, inst_w = as_instances(coefs, w)
        R, W = inst_w.shape
        rows = cfg.rows_per_chunk or ss.default_rows_per_chunk(n_enum, W, ndev)
        rows = -(-min(rows, R) // ndev) * ndev
        n_chunks = -(-R // rows)
        if on_layer:
            on_layer(name, R)
        solvers: dict[str, ss.CompiledSolver] = {}

        def solver(kind: str, rows=rows, W=W, solvers=solvers) -> ss.CompiledSolver:
            nonlocal compile_seconds
            if kind not in solvers:
                solvers[kind] = ss.compile_solver(
                    kind, rows, W, n_enum, epsilon=cfg.epsilon, mesh=mesh
                )
                compile_seconds += solvers[kind].compile_seconds
            return solvers[kind]

        masks = np.zeros((R, W), np.int64)
        errors = np.zeros((R, W))
        tier = np.zeros((R, W), np.uint8)
        for i in range(n_chunks):
            s0, s1 = i * rows, min(R, (i + 1) * rows)
            path = _chunk_path(Path(out), name, i) if out is not None else None
            done = _load_chunk(path, s1 - s0, W) if path is not None and path.exists() else None
            if done is not None:
                resumed += 1
                seconds += float(done["seconds"])
            else:
                chunk_seconds = seconds
                c_chunk, w_chunk = ss.pad_rows(inst_c[s0:s1, :n_enum], inst_w[s0:s1], rows)
                if cfg.objective == "min-count":
                    fn = solver("min-count")
                    t0 = time.perf_counter()
                    m, e, _, feas = fn(c_chunk, w_chunk)
                    seconds += time.perf_counter() - t0
                    if not feas[: s1 - s0].all():  # keep the best approximation of the rest
                        fe = solver("min-error")  # (compiled outside the timed region)
                        t0 = time.perf_counter()
                        me, ee = fe(c_chunk, w_chunk)
                        seconds += time.perf_counter() - t0
                        m = np.where(feas, m, me)
                        e = np.where(feas, e, ee)
                else:
                    fn = solver("min-error")
                    t0 = time.perf_counter()
                    m, e = fn(c_chunk, w_chunk)
                    seconds += time.perf_counter() - t0
                k = s1 - s0
                t = np.where(e[:k] <= cfg.epsilon, OPT_ENUM, INFEASIBLE).astype(np.uint8)
                if n > n_enum:  # only an incumbent: SCIP decides below
                    t[:] = FEASIBLE
                chunk_seconds = seconds - chunk_seconds
                done = {"masks": m[:k], "errors": e[:k], "tier": t, "seconds": chunk_seconds}
                if path is not None:
                    save_npz_atomic(path, done)
            masks[s0:s1], errors[s0:s1], tier[s0:s1] = done["masks"], done["errors"], done["tier"]
            if on_chunk:
                on_chunk(name, s1)
        if n > n_enum:
            t0 = time.perf_counter()
            masks, tier = _scip_tier(cfg, inst_c, inst_w, masks, tier)
            scip_seconds += time.perf_counter() - t0
        masks = masks.reshape(w.shape)
        tier = tier.reshape(w.shape)
        if cfg.zero_small and cfg.objective == "min-error":
            small = np.abs(w) <= cfg.epsilon
            masks = np.where(small, 0, masks)
            tier = np.where(small, FEASIBLE, tier).astype(np.uint8)
        results[name] = _recheck(coefs, w, masks, tier, cfg.epsilon)
    counts = {
        s: int(sum(int((r.status == i).sum()) for r in results.values()))
        for i, s in enumerate(STATUSES)
    }
    return ApproxResult(
        cfg,
        layers,
        low,
        high,
        results,
        coefficients,
        seconds,
        compile_seconds,
        scip_seconds,
        resumed,
        counts,
    )


def _scip_tier(cfg: ApproxConfig, inst_c, inst_w, masks, tier):
    """Per-weight MIPs for n beyond enumeration, the JAX incumbent as start solution."""
    from lottery_jax.subsetsum import scip as scip_solver

    R, W = inst_w.shape
    tasks = [
        scip_solver.MipTask(
            tuple(inst_c[r].tolist()),
            float(inst_w[r, j]),
            cfg.epsilon,
            cfg.objective,
            cfg.scip_time_limit,
            0.0,
            int(masks[r, j]),
        )
        for r in range(R)
        for j in range(W)
    ]
    out = scip_solver.solve_many(tasks, cfg.scip_workers)
    masks = masks.copy()
    tier = tier.copy()
    code = {"optimal": OPT_SCIP, "feasible": FEASIBLE, "infeasible": INFEASIBLE}
    for idx, res in enumerate(out):
        r, j = divmod(idx, W)
        if res.mask is not None:
            masks[r, j] = res.mask
        tier[r, j] = code.get(res.status, FEASIBLE)
    return masks, tier


def _recheck(coefs: np.ndarray, w: np.ndarray, masks: np.ndarray, tier: np.ndarray, eps: float):
    """Float64 sums of the chosen subsets; anything not within eps becomes ``infeasible``."""
    c = coefs if coefs.ndim == 3 else coefs[:, None, :]
    approx = ss.subset_sums(c, masks)
    errors = np.abs(w - approx)
    status = np.where(errors <= eps, tier, INFEASIBLE).astype(np.uint8)
    return LayerResult(masks.astype(np.int64), errors, status, approx)


def config_dict(cfg: ApproxConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["coef_range"] = list(cfg.coef_range) if cfg.coef_range else None
    return d


def approximated_state(res: ApproxResult, target: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The target's state with every approximated matrix replaced (float32, PyTorch layout)."""
    state = {k: np.asarray(v) for k, v in target.items()}
    for k, r in res.results.items():
        state[k] = r.approx.astype(np.float32)
    return state


def summarize(res: ApproxResult) -> dict[str, Any]:
    """The counts the paper reports (Sec. 4, Experiment 1) plus ours."""
    n = res.cfg.n
    total = sum(int(r.masks.size) for r in res.results.values())
    remaining = sum(int(ss.mask_to_bits(r.masks, n).sum()) for r in res.results.values())
    max_error = max(float(r.errors.max()) for r in res.results.values())
    infeasible = res.counts.get("infeasible", 0)
    return {
        "target_params": total,
        "initial_params": n * total,
        "remaining_params": remaining,
        "relative_size": remaining / total,
        "mean_coefficients_per_weight": remaining / total,
        "max_error": max_error,
        "all_within_epsilon": bool(infeasible == 0 and max_error <= res.cfg.epsilon),
        "status_counts": dict(res.counts),
        "infeasible": infeasible,
    }
