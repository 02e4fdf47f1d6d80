"""Up-front resource estimates: refuse work that cannot fit in memory before any of it starts.

Every command estimates the bytes its arrays will take and compares them with what the device has
(host RAM on the CPU backend, ``bytes_limit`` of the first accelerator otherwise). Work that does not
fit is refused with one line giving the estimate, the limit and what would make it fit, instead of
an XLA out-of-memory traceback (or the machine swapping) minutes later.
"""

from __future__ import annotations

import os

import jax

from lottery_jax.errors import UserError

#: Fraction of the device's memory a run may plan to use (XLA, Python and the OS need the rest).
USABLE_FRACTION = 0.8


def device_memory_bytes() -> int:
    """Memory of the device the arrays live on: host RAM on CPU, the accelerator's limit otherwise."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"])
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * 2**30


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def require_memory(needed: float, what: str, hint: str = "", *, limit: int | None = None) -> None:
    """Raise a one-line :class:`UserError` if ``needed`` bytes exceed the usable device memory."""
    total = device_memory_bytes() if limit is None else limit
    usable = USABLE_FRACTION * total
    if needed > usable:
        tail = f"; {hint}" if hint else ""
        raise UserError(
            f"{what} needs about {_human(needed)} of memory, more than the {_human(usable)} "
            f"usable here ({USABLE_FRACTION:.0%} of {_human(total)}){tail}"
        )


def training_bytes(params: int, batch_size: int, widths: int, data_bytes: int, members: int = 1):
    """Bytes to train ``members`` copies of a network of ``params`` float32 parameters.

    Per parameter: the value, its gradient, the momentum trace and the update (plus, for a supermask,
    the frozen weight and the mask temporaries: counted by the caller in ``params``); per example of
    a batch: the activations of ``widths`` units, kept for the backward pass. ``data_bytes``: the
    dataset held on the device once.
    """
    per_member = 4 * (4 * params + 3 * batch_size * (widths + 784))
    return members * per_member + data_bytes


#: Seconds per (masked parameter x training step) of a supermask step, measured: red-fc2 (r = 5,
#: 2.0M parameters) takes about 10 ms a step on a 2-core CPU shared at load 4-5 (threshold reuse,
#: planes layout: benchmarks/results/cpu_bench_prune.json) and 1.0 ms on an H200.
SECONDS_PER_PARAM_STEP = {"cpu": 5e-9, "gpu": 5e-10, "tpu": 5e-10}


def require_time(seconds: float, what: str, max_hours: float, hint: str) -> None:
    """Raise a one-line :class:`UserError` if the estimated ``seconds`` exceed ``max_hours``."""
    if seconds > 3600.0 * max_hours:
        raise UserError(
            f"{what} would take about {seconds / 3600:.3g} h (estimate on this "
            f"{jax.default_backend().upper()}), more than the budget of {max_hours:g} h "
            f"(max hours); {hint}"
        )


def supermask_seconds(params: int, steps: int) -> float:
    """Estimated wall time of ``steps`` supermask steps over ``params`` masked parameters."""
    per = SECONDS_PER_PARAM_STEP.get(jax.default_backend(), SECONDS_PER_PARAM_STEP["cpu"])
    return per * params * steps
