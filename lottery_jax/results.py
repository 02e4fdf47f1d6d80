"""What every results file records beside its numbers: the machine that computed them."""

from __future__ import annotations

import os
import platform
from typing import Any

import jax


def device_summary() -> dict[str, Any]:
    """What ran the computation: backend, devices, versions (recorded in every results.json)."""
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax_version": jax.__version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }
