"""The one harness every benchmark script uses: options, device summary, data, quality bands, JSON.

* :func:`parser` gives every script the same ``--json FILE``, ``--data-dir`` and ``--seed``.
* :func:`header` records and prints what ran the benchmark (backend, device, jax, CPU count, load):
  figures from a loaded machine say so.
* :func:`load_data` reads the real dataset or stops with a one-line error: a benchmark never falls
  back to synthetic data silently (a timing on other data would be a wrong number).
* :func:`check_band` puts a quality check beside each timing (accuracy, error): a fast wrong result
  fails the benchmark instead of looking like a speed-up.
* :func:`finish` writes the report (``--json``) and returns the exit status (1 if a check failed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from lottery_jax.errors import UserError
from lottery_jax.results import device_summary


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", type=Path, help="also write the report to this JSON file")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ["LOTTERY_JAX_DATA"])
        if os.environ.get("LOTTERY_JAX_DATA")
        else None,
        help="MNIST IDX directory (default: LOTTERY_JAX_DATA, else the verified download cache)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    return p


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(**extra: Any) -> dict[str, Any]:
    """The report's head: device summary, CPU, load average, plus ``extra``; printed as one line."""
    dev = device_summary()
    report = {
        "device": dev,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        **extra,
        "checks": [],
    }
    print(
        f"device: {dev['backend']} ({dev['device_kind']} x{dev['device_count']}), "
        f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}, jax {dev['jax_version']}",
        flush=True,
    )
    return report


def load_data(data_dir: Path | None, inputs: str):
    """The real dataset on the device, or a one-line error and exit 2 (no synthetic fallback)."""
    from lottery_jax.data import load_dataset

    try:
        return load_dataset(data_dir, inputs=inputs)
    except UserError as e:
        print(f"error: {e} (benchmarks run on the real data only)", file=sys.stderr)
        raise SystemExit(2) from None


def check_band(report: dict, what: str, value: float, lo: float, hi: float) -> bool:
    """Record (and print when it fails) whether ``value`` lies in [lo, hi]."""
    ok = lo <= value <= hi
    report["checks"].append({"what": what, "value": value, "band": [lo, hi], "ok": ok})
    if not ok:
        print(f"QUALITY CHECK FAILED: {what} = {value} outside [{lo}, {hi}]", flush=True)
    return ok


def finish(report: dict, json_path: Path | None) -> int:
    """Write ``report`` to ``json_path`` (if given); 1 if any quality check failed, else 0."""
    report["load_average_after"] = os.getloadavg()
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {json_path}")
    return 0 if all(c["ok"] for c in report["checks"]) else 1
