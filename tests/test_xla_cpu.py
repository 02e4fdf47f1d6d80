"""The XLA CPU flags ``import lottery_jax`` adds: only missing ones, never over the user's, only
before a backend starts and only for the jaxlib releases they were measured with; recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lottery_jax import xla_cpu
from lottery_jax.results import device_summary


@pytest.fixture
def fresh(monkeypatch):
    """As before JAX starts (this test process has started it), on a measured jaxlib."""
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: False)
    monkeypatch.setattr(xla_cpu, "_jaxlib_release", lambda: xla_cpu.TESTED_JAXLIB[0])
    monkeypatch.setattr(xla_cpu, "ADDED", {})


def test_adds_every_missing_flag_once(fresh):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    added = xla_cpu.add_cpu_flags(env)
    assert added == xla_cpu.CPU_FLAGS
    flags = env["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=2"
    assert sorted(flags[1:]) == sorted(f"--{k}={v}" for k, v in xla_cpu.CPU_FLAGS.items())
    assert xla_cpu.add_cpu_flags(env) == {}  # a second import adds nothing
    assert len(env["XLA_FLAGS"].split()) == 1 + len(xla_cpu.CPU_FLAGS)


def test_the_users_value_wins(fresh):
    env = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    added = xla_cpu.add_cpu_flags(env)
    assert "xla_cpu_prefer_vector_width" not in added
    assert env["XLA_FLAGS"].split()[0] == "--xla_cpu_prefer_vector_width=256"
    assert "--xla_cpu_prefer_vector_width=512" not in env["XLA_FLAGS"]


def test_nothing_on_an_unmeasured_jaxlib_or_after_the_backend_started(fresh, monkeypatch):
    env: dict[str, str] = {}
    monkeypatch.setattr(xla_cpu, "_jaxlib_release", lambda: (99, 0))  # XLA aborts on unknown flags
    assert xla_cpu.add_cpu_flags(env) == {} and env == {}
    monkeypatch.setattr(xla_cpu, "_jaxlib_release", lambda: xla_cpu.TESTED_JAXLIB[0])
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: True)
    assert xla_cpu.add_cpu_flags(env) == {} and env == {}


def test_a_fresh_process_gets_the_flags_and_records_them():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = (
        "import lottery_jax, os, json; from lottery_jax.results import device_summary; "
        "print(json.dumps([os.environ.get('XLA_FLAGS', ''), device_summary()['xla_flags']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    seen, recorded = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == recorded
    release = xla_cpu._jaxlib_release()
    if release and xla_cpu.TESTED_JAXLIB[0] <= release <= xla_cpu.TESTED_JAXLIB[1]:
        assert all(f"--{k}={v}" in seen for k, v in xla_cpu.CPU_FLAGS.items())


def test_device_summary_records_the_flags_this_process_saw():
    assert device_summary()["xla_flags"] == os.environ.get("XLA_FLAGS", "")
