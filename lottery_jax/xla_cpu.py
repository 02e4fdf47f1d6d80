"""XLA CPU compiler flags that ``import lottery_jax`` adds to ``XLA_FLAGS`` before JAX starts.

Measured on 2 Intel Xeon cores (``benchmarks/bench_prune.py``, the same steps with and without):
a red-FC2 step is about 20% faster (7.9 -> 6.2 ms), the ReLU variant 11% and wide-FC2 13%, the
plain FC2 target step unchanged, and the losses the same to the last bit (on 2 AMD EPYC cores the
difference was within that machine's run-to-run noise):

* ``xla_cpu_prefer_vector_width=512``: XLA's default is 256-bit vectors even where the CPU has
  AVX-512; the score tensors' elementwise loops (masks, collapse, momentum) run twice as wide;
* ``xla_cpu_copy_insertion_use_region_analysis=true``: a finer analysis of which buffers a while
  loop may update in place, so the training loop no longer copies the score tensors every step.

Only flags the user has not set are added (theirs win), only while no JAX backend has started
(later, XLA would not read them), and only for the jaxlib releases they were measured with: XLA
aborts the process on a flag it does not know. What was added is in :data:`ADDED`, and the
``XLA_FLAGS`` a run saw is recorded with its results (:func:`lottery_jax.results.device_summary`).
"""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version

#: The flags and their values.
CPU_FLAGS = {
    "xla_cpu_prefer_vector_width": "512",
    "xla_cpu_copy_insertion_use_region_analysis": "true",
}

#: jaxlib releases [first, last] (major, minor) the flags were measured with.
TESTED_JAXLIB = ((0, 10), (0, 10))

#: The flags :func:`add_cpu_flags` added to ``XLA_FLAGS`` in this process.
ADDED: dict[str, str] = {}


def _jaxlib_release() -> tuple[int, int] | None:
    try:
        m = re.match(r"(\d+)\.(\d+)", version("jaxlib"))
    except PackageNotFoundError:
        return None
    return (int(m.group(1)), int(m.group(2))) if m else None


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def add_cpu_flags(environ=os.environ) -> dict[str, str]:
    """Add the :data:`CPU_FLAGS` the user has not set to ``environ["XLA_FLAGS"]`` (see the module
    docstring for when nothing is added); returns what was added."""
    release = _jaxlib_release()
    if release is None or not TESTED_JAXLIB[0] <= release <= TESTED_JAXLIB[1]:
        return {}
    if _backend_started():
        return {}
    current = environ.get("XLA_FLAGS", "")
    new = {k: v for k, v in CPU_FLAGS.items() if f"--{k}=" not in current}
    if new:
        extra = " ".join(f"--{k}={v}" for k, v in new.items())
        environ["XLA_FLAGS"] = f"{current} {extra}".strip()
        ADDED.update(new)
    return new
