"""The MIP tier: one weight = one MIP, solved by SCIP through pyscipopt.

The published formulation (Pensia et al. 2020, Experiment 1; the published code used Gurobi):
binary ``x in {0,1}^n``, continuous ``z``; minimize ``z`` subject to
``w - sum_i a_i x_i <= z``, ``-w + sum_i a_i x_i <= z`` and the same two with ``eps`` in place of ``z``.
The min-count variant minimizes ``sum_i x_i + z / (2 eps)`` under the same constraints: because
``z <= eps`` the error term is below 1/2, so the count comes first and the error breaks ties.

Builders return the model and its variables; :func:`solve_mip` sets the time limit and gap, hides
SCIP's output, adds the JAX incumbent as a start solution and returns a :class:`MipResult` with a
status string. :func:`solve_many` runs instances in parallel worker processes (spawn context).
Library code never exits the process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from pyscipopt import Model, quicksum

#: SCIP's default feasibility tolerance (1e-6) is coarser than the optimal errors (~1e-6 .. 1e-8);
#: we tighten it so that SCIP's optimum is comparable to the exact enumeration.
FEASTOL = 1e-9


@dataclass(frozen=True)
class MipResult:
    """Outcome of one MIP.

    ``status``: ``optimal`` (proved, within the gap), ``feasible`` (a solution within eps, not proved
    optimal: time limit), ``infeasible`` (proved: no subset within eps), ``unknown`` (time limit
    without a solution). ``mask`` is the chosen subset (bit ``i`` = coefficient ``i``; ``None``
    without a solution) and ``error`` its float64 error ``|w - sum|``.
    """

    status: str
    mask: int | None
    error: float | None
    seconds: float
    gap: float | None = None


def build_min_error_mip(coefs: Sequence[float], w: float, epsilon: float):
    """The published MIP. Returns ``(model, x, z)``."""
    model = Model("subsetsum-min-error")
    n = len(coefs)
    x = [model.addVar(vtype="B", name=f"x{i}") for i in range(n)]
    z = model.addVar(vtype="C", lb=0.0, ub=None, name="z")
    s = quicksum(float(a) * xi for a, xi in zip(coefs, x, strict=True))
    model.addCons(float(w) - s <= z)
    model.addCons(-float(w) + s <= z)
    model.addCons(float(w) - s <= float(epsilon))
    model.addCons(-float(w) + s <= float(epsilon))
    model.setObjective(z, "minimize")
    return model, x, z


def build_min_count_mip(coefs: Sequence[float], w: float, epsilon: float):
    """Fewest coefficients within eps, ties by error. Returns ``(model, x, z)``."""
    model, x, z = build_min_error_mip(coefs, w, epsilon)
    model.setObjective(quicksum(x) + z / (2.0 * float(epsilon)), "minimize")
    return model, x, z


def solve_mip(
    model: Model,
    x: list,
    z,
    *,
    coefs: Sequence[float],
    w: float,
    time_limit: float = 60.0,
    gap: float = 0.0,
    start_mask: int | None = None,
    threads: int = 1,
) -> MipResult:
    """Solve a built MIP: time limit, relative gap, no output, optional start solution."""
    model.hideOutput(True)
    model.setParam("limits/time", float(time_limit))
    model.setParam("limits/gap", float(gap))
    model.setParam("numerics/feastol", FEASTOL)
    model.setParam("parallel/maxnthreads", int(threads))
    coefs = np.asarray(coefs, np.float64)
    if start_mask is not None:
        bits = [(int(start_mask) >> i) & 1 for i in range(len(x))]
        err = abs(float(w) - float(np.sum(coefs[np.array(bits, bool)])))
        sol = model.createSol()
        for xi, b in zip(x, bits, strict=True):
            model.setSolVal(sol, xi, float(b))
        model.setSolVal(sol, z, err)
        model.addSol(sol, free=True)  # rejected silently when it violates eps
    t0 = time.perf_counter()
    model.optimize()
    seconds = time.perf_counter() - t0
    status = model.getStatus()
    mask = error = None
    if model.getNSols() > 0:
        best = model.getBestSol()
        bits = np.array([model.getSolVal(best, xi) > 0.5 for xi in x])
        mask = int(sum(1 << i for i, b in enumerate(bits) if b))
        error = abs(float(w) - float(np.sum(coefs[bits])))
    if status == "optimal" or (status == "gaplimit" and gap == 0.0):
        out = "optimal" if mask is not None else "unknown"
    elif status == "infeasible":
        out = "infeasible"
    else:  # timelimit, gaplimit with gap > 0, userinterrupt, ...
        out = "feasible" if mask is not None else "unknown"
    g = model.getGap() if mask is not None else None
    return MipResult(out, mask, error, seconds, g)


@dataclass(frozen=True)
class MipTask:
    """One instance for a worker process (picklable)."""

    coefs: tuple[float, ...]
    w: float
    epsilon: float
    objective: str = "min-error"
    time_limit: float = 60.0
    gap: float = 0.0
    start_mask: int | None = None


def solve_task(task: MipTask) -> MipResult:
    """Build and solve one task (the worker entry point)."""
    build = build_min_count_mip if task.objective == "min-count" else build_min_error_mip
    model, x, z = build(task.coefs, task.w, task.epsilon)
    try:
        return solve_mip(
            model,
            x,
            z,
            coefs=task.coefs,
            w=task.w,
            time_limit=task.time_limit,
            gap=task.gap,
            start_mask=task.start_mask,
        )
    finally:
        model.freeProb()


def solve_many(tasks: Sequence[MipTask], workers: int = 1) -> list[MipResult]:
    """Solve ``tasks`` in order; ``workers > 1`` uses that many spawned processes."""
    if workers <= 1 or len(tasks) <= 1:
        return [solve_task(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(solve_task, tasks, chunksize=max(1, len(tasks) // (4 * workers))))
