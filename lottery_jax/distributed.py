"""Several processes (hosts) on one grid, with JAX's own distributed runtime.

:func:`initialize` starts ``jax.distributed`` from explicit settings (``--coordinator HOST:PORT
--num-processes N --process-id I``) or, when a cluster launcher started several tasks (``srun``,
``mpirun``) or when asked to, lets JAX detect them itself (SLURM, Open MPI, TPU pods). It must run
before anything else touches JAX.

The work is then split without a scheduler of our own: every process computes the same plan from
the full grid (never from what is finished, which may change while the processes start) and takes
its deterministic share (:func:`assign`); each trains its share on its local devices (the members
of a group on a ``members`` device mesh, :mod:`lottery_jax.pruning.batched`) and writes only its
own runs. The processes meet only at the end (:meth:`Processes.barrier`). The run-directory layer
(:mod:`lottery_jax.rundir`, a lock per run) keeps two processes from ever writing one run, and a
rerun with any number of processes resumes whatever is unfinished.

Training members never exchange data, so a global device mesh spanning hosts would add nothing but
cross-host synchronisation per step: the share of each process is a set of whole groups (split
into parts only when there are fewer groups than processes), trained on a mesh of its local devices.
"""

from __future__ import annotations

import heapq
import itertools
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from lottery_jax.errors import UserError


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of a run: ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def owns(self, owner: int) -> bool:
        return owner == self.index

    def barrier(self, name: str) -> None:
        """Wait until every process reaches the barrier ``name`` (nothing to wait for alone).

        Through the runtime's coordination service (no device collective: nothing to compile,
        and on CPU no Gloo start-up lines on stdout); ``sync_global_devices`` where that is
        not available.
        """
        if self.count <= 1:
            return
        # Every process passes the same barriers in the same order: the count makes each id
        # unique, so a library caller may pass the same name again.
        name = f"{name} #{next(_BARRIERS)}"
        client = _client()
        if client is not None:
            client.wait_at_barrier(name, BARRIER_TIMEOUT_MS)
            return
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

    def describe(self) -> str:
        return f"process {self.index} of {self.count}"


#: How long a process waits at a barrier for the others (they may have hours of work left).
BARRIER_TIMEOUT_MS = 2**31 - 1  # ~24 days
_BARRIERS = itertools.count()


def _client():
    """The distributed runtime's client (a JAX internal), or None."""
    try:
        from jax._src import distributed as _dist

        client = _dist.global_state.client
    except (ImportError, AttributeError):
        return None
    return client if hasattr(client, "wait_at_barrier") else None


def current() -> Processes:
    """This process's index and the process count from JAX (1 process without the runtime)."""
    import jax

    return Processes(int(jax.process_index()), int(jax.process_count()))


def launcher() -> str | None:
    """The cluster launcher that started several tasks of this command, if any.

    ``srun`` (SLURM, ``SLURM_STEP_NUM_TASKS`` > 1) or ``mpirun`` (Open MPI,
    ``OMPI_COMM_WORLD_SIZE`` > 1). A plain ``sbatch`` script step or an interactive shell inside an
    allocation is not a multi-task launch: it runs alone.
    """
    env = os.environ

    def more_than_one(name: str) -> bool:
        try:
            return int(env.get(name, "1")) > 1
        except ValueError:
            return False

    if more_than_one("SLURM_STEP_NUM_TASKS") and "SLURM_PROCID" in env:
        return "slurm"
    if more_than_one("OMPI_COMM_WORLD_SIZE"):
        return "openmpi"
    return None


def _already_initialized() -> bool:
    try:
        from jax._src import distributed as _dist

        return _dist.global_state.client is not None
    except (ImportError, AttributeError):  # a JAX without this internal: assume not
        return False


def parse_coordinator(value: str) -> str:
    """``HOST:PORT`` with a port in 1..65535 (IPv6 hosts in brackets: ``[::1]:1234``)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--coordinator must be HOST:PORT (e.g. node01:12345), got {value!r}")
    return value


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    detect: bool | None = None,
    timeout: int = 300,
) -> Processes:
    """Start JAX's distributed runtime when this command is one of several processes.

    * ``coordinator``/``num_processes``/``process_id`` given: exactly those (all three needed,
      except that one process needs none), each process with all its local devices;
    * else ``detect`` True: ``jax.distributed.initialize()`` detects the cluster itself (SLURM,
      Open MPI, TPU pods); None (default): only when :func:`launcher` sees several tasks; False:
      never.

    Returns this process's place. A runtime that cannot start (unreachable coordinator, port in
    use, timeout) is a UserError naming the settings.
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit):
        if num_processes is not None and num_processes < 1:
            raise UserError(f"--num-processes must be at least 1, got {num_processes}")
        if num_processes == 1 and process_id in (None, 0) and coordinator is None:
            return Processes()
        if any(v is None for v in explicit):
            raise UserError(
                "a multi-process run needs --coordinator HOST:PORT, --num-processes N and "
                "--process-id I together (or none of them under a cluster launcher)"
            )
        parse_coordinator(coordinator)
        if not 0 <= process_id < num_processes:
            raise UserError(
                f"--process-id must lie in [0, {num_processes}) for {num_processes} processes, "
                f"got {process_id}"
            )
        # Detection off: under SLURM it would otherwise give each process one GPU; the named
        # processes use all their local devices.
        kwargs = {"coordinator_address": coordinator, "num_processes": num_processes,
                  "process_id": process_id, "cluster_detection_method": "deactivate"}  # fmt: skip
        what = f"coordinator {coordinator}, process {process_id} of {num_processes}"
    elif detect or (detect is None and launcher() is not None):
        kwargs, what = {}, f"detected from the {launcher() or 'cluster'} environment"
    else:
        return Processes()
    import jax

    if not _already_initialized():
        try:
            jax.distributed.initialize(**kwargs, initialization_timeout=int(timeout))
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot start JAX's distributed runtime ({what}): {first}") from None
        restore_signal_handlers()
    return current()


def restore_signal_handlers() -> None:
    """Give SIGTERM back to Python's handler after ``jax.distributed.initialize``.

    JAX's preemption notifier installs its own C handler for SIGTERM, which logs the signal and
    lets training go on, so a multi-process run ignored ``kill`` and a scheduler's preemption
    notice. Re-installing the Python-level handler (the CLI's: stop within seconds, resumable)
    restores the documented behaviour; JAX's preemption sync points are not used here."""
    if threading.current_thread() is not threading.main_thread():
        return  # (signal handlers can only be set from the main thread)
    handler = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL if handler is None else handler)


def assign(costs: Sequence[float], count: int) -> list[int]:
    """The owner process of each unit of work: longest first, each to the least loaded process.

    Deterministic (ties go to the lower unit index and the lower process index), so every process
    computes the same plan. With ``count`` = 1 everything belongs to process 0.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    owners = [0] * len(costs)
    if count == 1:
        return owners
    loads = [(0.0, p) for p in range(count)]
    heapq.heapify(loads)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, p = heapq.heappop(loads)
        owners[i] = p
        heapq.heappush(loads, (load + float(costs[i]), p))
    return owners


def split_evenly(items: Sequence, parts: int) -> list[list]:
    """``items`` in ``parts`` contiguous pieces whose sizes differ by at most one (empty pieces
    dropped)."""
    n = len(items)
    bounds = [n * i // parts for i in range(parts + 1)]
    return [list(items[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
