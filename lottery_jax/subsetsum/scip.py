"""The MIP tier: one weight = one MIP, solved by SCIP through pyscipopt.

The published formulation (Pensia et al. 2020, Experiment 1; the published code used Gurobi):
binary ``x in {0,1}^n``, continuous ``z``; minimize ``z`` subject to
``w - sum_i a_i x_i <= z``, ``-w + sum_i a_i x_i <= z`` and the same two with ``eps`` in place of ``z``.
The min-count variant minimizes ``sum_i x_i + z / (2 eps)`` under the same constraints: because
``z <= eps`` the error term is below 1/2, so the count comes first and the error breaks ties.

Builders return the model and its variables; :func:`solve_mip` sets the time limit and gap, hides
SCIP's output, adds the JAX incumbent as a start solution and returns a :class:`MipResult` with a
status string. :func:`solve_many` runs instances in worker processes (:class:`ScipPool`).
Library code never exits the process.

Worker processes are fresh interpreters running :mod:`lottery_jax.subsetsum.scip_worker` by path
(never a fork of the caller, never a re-import of its ``__main__``), so the pool works the same from
the CLI, a script without an ``if __name__ == "__main__":`` guard, or a notebook. They talk JSON
lines over pipes (floats round-trip exactly), ignore SIGINT (SCIP's own Ctrl-C handler is off) and
run in their own session: on Ctrl-C (or any exception) the caller kills their process groups and
reaps them before the exception goes on, so nothing outlives the run; they also die with their
parent (Linux ``PR_SET_PDEATHSIG``) and exit when their pipe closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    model.setParam("misc/catchctrlc", False)  # the caller handles Ctrl-C (SCIP would print)
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


class ScipWorkerError(RuntimeError):
    """A SCIP worker process failed (crashed, or raised while solving)."""


#: The worker script, run by path (``-P``: its folder is not put on ``sys.path``).
_WORKER = Path(__file__).resolve().with_name("scip_worker.py")


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"  # (the worker does not import JAX; should anything, no GPU)
    return env


class ScipPool:
    """``workers`` SCIP worker processes, each solving one :class:`MipTask` at a time.

    Use as a context manager. Leaving it normally closes the pipes and waits for the workers;
    leaving it by an exception (``KeyboardInterrupt`` included) kills them at once (SIGKILL to each
    worker's process group) and reaps them, so no child is left behind.
    """

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self._procs: list[subprocess.Popen] = []
        self._logs: list = []

    def __enter__(self) -> ScipPool:
        try:
            for _ in range(self.workers):
                log = tempfile.TemporaryFile()
                self._logs.append(log)
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, "-P", str(_WORKER), str(os.getpid())],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        env=_worker_env(),
                        start_new_session=True,
                        close_fds=True,
                    )
                )
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def kill(self) -> None:
        """Kill every worker (and anything it started) and reap it."""
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
        self._reap(timeout=10.0)

    def close(self) -> None:
        """Close the pipes (workers exit at end of input) and wait; kill stragglers."""
        for p in self._procs:
            with contextlib.suppress(OSError):
                p.stdin.close()
        deadline = time.monotonic() + 10.0
        for p in self._procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
        self._reap(timeout=10.0)

    def _reap(self, timeout: float) -> None:
        for p in self._procs:
            for f in (p.stdin, p.stdout):
                with contextlib.suppress(OSError):
                    f.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=timeout)
        for log in self._logs:
            log.close()
        self._procs, self._logs = [], []

    def _stderr_tail(self, i: int) -> str:
        log = self._logs[i]
        with contextlib.suppress(OSError):
            log.seek(0)
            text = log.read().decode(errors="replace").strip().splitlines()
            return text[-1] if text else ""
        return ""

    def run(
        self,
        tasks: Sequence[MipTask],
        on_result: Callable[[int, MipResult], None],
        order: Sequence[int] | None = None,
    ) -> None:
        """Solve ``tasks[i]`` for every ``i`` of ``order`` (default: all), calling
        ``on_result(i, result)`` in the calling thread as each finishes (in completion order)."""
        if not self._procs:
            raise RuntimeError("ScipPool is not started (use it as a context manager)")
        queue = deque(range(len(tasks)) if order is None else order)
        busy: dict[int, int] = {}  # worker -> task index
        sel = selectors.DefaultSelector()
        try:
            for w, p in enumerate(self._procs):
                sel.register(p.stdout, selectors.EVENT_READ, w)

            def send(w: int) -> None:
                if queue:
                    i = queue.popleft()
                    line = json.dumps({"id": i, "task": asdict(tasks[i])}) + "\n"
                    try:
                        self._procs[w].stdin.write(line.encode())
                        self._procs[w].stdin.flush()
                    except OSError:
                        raise self._died(w) from None
                    busy[w] = i

            for w in range(len(self._procs)):
                send(w)
            while busy:
                for key, _ in sel.select(timeout=1.0):
                    w = key.data
                    line = self._procs[w].stdout.readline()
                    if not line:
                        raise self._died(w)
                    msg = json.loads(line)
                    i = busy.pop(w)
                    if msg.get("id") != i:
                        raise ScipWorkerError(
                            f"SCIP worker {w} answered task {msg.get('id')}, not {i}"
                        )
                    if "error" in msg:
                        raise ScipWorkerError(f"SCIP worker failed on task {i}: {msg['error']}")
                    on_result(i, MipResult(**msg["result"]))
                    send(w)
                for w, p in enumerate(self._procs):
                    if w in busy and p.poll() is not None:
                        raise self._died(w)
        finally:
            sel.close()

    def _died(self, w: int) -> ScipWorkerError:
        p = self._procs[w]
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=2.0)
        tail = self._stderr_tail(w)
        return ScipWorkerError(
            f"SCIP worker {p.pid} exited unexpectedly (status {p.returncode})"
            + (f": {tail}" if tail else "")
        )


def solve_many(
    tasks: Sequence[MipTask],
    workers: int = 1,
    *,
    on_result: Callable[[int, MipResult], None] | None = None,
) -> list[MipResult]:
    """Solve ``tasks`` in ``workers`` worker processes (:class:`ScipPool`); results in task order.

    ``on_result(i, result)`` is called as each finishes. Ctrl-C kills the workers and raises
    ``KeyboardInterrupt`` within about a second.
    """
    results: list[MipResult | None] = [None] * len(tasks)
    if not tasks:
        return []

    def keep(i: int, r: MipResult) -> None:
        results[i] = r
        if on_result is not None:
            on_result(i, r)

    with ScipPool(min(max(1, int(workers)), len(tasks))) as pool:
        pool.run(tasks, keep)
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------ progress, resume


@dataclass
class ScipProgress:
    """Progress of the SCIP tier of one layer, for the ``on_scip`` callback.

    Reported once before the first instance is sent (``done == resumed``: the caller warns then)
    and after each finished instance. ``resumed``: instances whose results an earlier, interrupted
    run had saved.
    """

    layer: str
    done: int
    total: int
    resumed: int
    workers: int
    time_limit: float

    @property
    def worst_case_seconds(self) -> float:
        """Time left if every remaining instance ran to its time limit."""
        left = max(0, self.total - self.done)
        return -(-left // max(1, self.workers)) * self.time_limit


#: Codes of :attr:`MipResult.status` in the saved result chunks.
MIP_STATUSES = ("optimal", "feasible", "infeasible", "unknown")


@dataclass(frozen=True)
class ScipReport:
    """What the SCIP tier did for one tensor: the ``scip`` entry of ``results.json`` and of
    :func:`lottery_jax.approximate`'s report, one per tensor that sent weights to SCIP.

    ``instances``: the weights sent to SCIP (those no JAX tier settled, and with ``prove`` the
    feasible ones too); ``resumed``: of them, the results an interrupted run had saved;
    ``statuses``: SCIP's answers by :data:`MIP_STATUSES`, ``optimal`` (proved), ``feasible`` (a
    subset within eps, the time limit came before a proof), ``infeasible`` (proved: no subset
    within eps) and ``unknown`` (the time limit came with nothing within eps); every answer is then
    checked in float64, so the weights' final statuses are the report's ``status_counts``.
    ``workers``: SCIP worker processes; ``time_limit``: seconds per weight; ``seconds``: the wall
    clock of this tensor's SCIP phase (resumed results are not solved again).
    """

    instances: int
    resumed: int
    statuses: dict[str, int]
    workers: int
    time_limit: float
    seconds: float

    @classmethod
    def of(cls, progress: ScipProgress, results: Iterable[MipResult], seconds: float) -> ScipReport:
        """The report of a finished phase: its progress record and every instance's result."""
        counts = {s: 0 for s in MIP_STATUSES}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return cls(progress.total, progress.resumed, counts, progress.workers,
                   float(progress.time_limit), float(seconds))  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tasks_key(tasks: Sequence[MipTask]) -> str:
    """A short hash of everything the tasks ask (coefficients, weights, eps, objective, limits,
    start solutions): saved results are reused only for the very same tasks."""
    import hashlib

    h = hashlib.sha256()
    for t in tasks:
        h.update(json.dumps(asdict(t), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class SavedResults:
    """Finished MIP results of one layer's tasks, saved as they come in sealed chunk files
    ``<layer>.scip-<tasks key>-<k>`` through ``store`` (a :class:`~lottery_jax.rundir.RunDir`),
    and loaded again by a rerun.

    Results are written in batches: every ``every`` results or ``seconds`` seconds, and by
    :meth:`flush` (call it in a ``finally``: an interrupted run keeps everything it finished).
    A damaged or foreign chunk is dropped (deleted) and its instances are solved again.
    """

    def __init__(self, store, layer: str, tasks: Sequence[MipTask], n: int, *,
                 every: int | None = None, seconds: float = 10.0):  # fmt: skip
        self.store = store
        self.n = int(n)
        self.prefix = f"{layer}.scip-{tasks_key(tasks)}-"
        self.total = len(tasks)
        self.every = every or max(8, min(512, self.total // 50))
        self.seconds = seconds
        self._buffer: list[tuple[int, MipResult]] = []
        self._last = time.monotonic()
        self._next = 0

    def load(self) -> dict[int, MipResult]:
        """The results saved by earlier runs (index -> result)."""
        found: dict[int, MipResult] = {}
        if self.store is None:
            return found
        folder = self.store.chunk_path(self.prefix + "0").parent
        names = sorted(p.name[: -len(".npz")] for p in folder.glob(f"{self.prefix}*.npz"))
        for name in names:
            with contextlib.suppress(ValueError):
                self._next = max(self._next, int(name[len(self.prefix) :]) + 1)
            arrays = self.store.load_chunk(name)
            if arrays is None:
                continue
            try:
                found.update(self._decode(arrays))
            except (KeyError, ValueError, IndexError):
                continue
        return found

    def _decode(self, a) -> dict[int, MipResult]:
        from lottery_jax.subsetsum import search as ss

        idx, status, has = a["index"], a["status"], a["has_mask"]
        ints = ss.bits_to_ints(ss.unpack_bits(a["mask"], self.n))
        if idx.ndim != 1 or idx.size and (idx.min() < 0 or idx.max() >= self.total):
            raise ValueError("index out of range")
        out = {}
        for k, i in enumerate(idx.tolist()):
            mask = int(ints[k]) if has[k] else None
            err = float(a["error"][k])
            gap = float(a["gap"][k])
            out[int(i)] = MipResult(MIP_STATUSES[int(status[k])], mask,
                                    None if np.isnan(err) else err, float(a["seconds"][k]),
                                    None if np.isnan(gap) else gap)  # fmt: skip
        return out

    def add(self, i: int, r: MipResult) -> None:
        self._buffer.append((i, r))
        if len(self._buffer) >= self.every or time.monotonic() - self._last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.store is None or not self._buffer:
            self._buffer.clear()
            return
        from lottery_jax.subsetsum import search as ss

        buf, self._buffer = self._buffer, []
        bits = ss.ints_to_bits(np.array([r.mask or 0 for _, r in buf], dtype=object), self.n)
        arrays = {
            "index": np.array([i for i, _ in buf], np.int64),
            "status": np.array([MIP_STATUSES.index(r.status) for _, r in buf], np.uint8),
            "has_mask": np.array([r.mask is not None for _, r in buf], bool),
            "mask": ss.pack_bits(bits),
            "error": np.array([np.nan if r.error is None else r.error for _, r in buf]),
            "seconds": np.array([r.seconds for _, r in buf]),
            "gap": np.array([np.nan if r.gap is None else r.gap for _, r in buf]),
        }
        self.store.save_chunk(f"{self.prefix}{self._next:05d}", arrays)
        self._next += 1
        self._last = time.monotonic()
