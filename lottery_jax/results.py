"""The results records: what ``results.json`` holds for a training run (:class:`TrainRecord`) and a
pruning run (:class:`PruneRecord`), and the machine that computed them (:func:`device_summary`)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, fields
from typing import Any

import jax


def device_summary() -> dict[str, Any]:
    """What ran the computation: backend, devices, versions, the ``XLA_FLAGS`` (with those
    :mod:`lottery_jax.xla_cpu` adds) (recorded in every results.json), and
    the ``--data-dir`` files used unverified (``--allow-unverified-data``), if any."""
    from lottery_jax.data import UNVERIFIED_LOADS

    devices = jax.devices()
    extra = {"unverified_data": list(UNVERIFIED_LOADS)} if UNVERIFIED_LOADS else {}
    return {
        **extra,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax_version": jax.__version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _known(cls, d: dict[str, Any]) -> dict[str, Any]:
    """The fields of record ``cls`` that ``d`` holds (other keys: derived, or from other releases)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class TrainRecord:
    """``results.json`` of a training run (``train``, ``approximate --target train``, a sweep's
    baseline): the per-epoch history so far and what ran it. ``to_json`` is the file's form (with
    ``command``, ``epochs_done`` and ``final_test_accuracy`` derived); ``from_json`` reads it back,
    files of earlier releases included (unknown keys are ignored, missing ones default)."""

    name: str
    config: dict[str, Any]
    seed: int | None
    device: dict[str, Any]
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    compile_seconds: float = 0.0
    trainable_params: int = 0
    frozen_params: int = 0

    @property
    def epochs_done(self) -> int:
        return len(self.test_accuracy)

    @property
    def final_test_accuracy(self) -> float | None:
        return self.test_accuracy[-1] if self.test_accuracy else None

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "train",
            "name": self.name,
            "config": self.config,
            "seed": self.seed,
            "device": self.device,
            "epochs_done": self.epochs_done,
            "test_accuracy": list(self.test_accuracy),
            "final_test_accuracy": self.final_test_accuracy,
            "train_loss": list(self.train_loss),
            "epoch_seconds": list(self.epoch_seconds),
            "compile_seconds": self.compile_seconds,
            "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainRecord:
        d = {"name": "", "config": {}, "seed": None, "device": {}, **_known(cls, d)}
        return cls(**d)


@dataclass(frozen=True)
class PruneRecord:
    """``results.json`` of one pruning run (a member of a batched program): its ticket's numbers,
    the per-epoch history and what ran it. ``to_json``/``from_json`` as :class:`TrainRecord`."""

    name: str
    config: dict[str, Any]
    seed: int
    sparsity: float
    total_params: int
    remaining_params: int
    test_accuracy: list[float]
    final_test_accuracy: float
    train_loss: list[float]
    epoch_seconds: list[float]
    compile_seconds: float
    eval_seconds: float
    batched_with: list[str]
    member_mode: str
    device_members: list[int] | None
    device: dict[str, Any]
    ticket: str = "ticket.npz"

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "prune",
            "name": self.name,
            "config": self.config,
            "seed": self.seed,
            "sparsity": self.sparsity,
            "total_params": self.total_params,
            "remaining_params": self.remaining_params,
            "test_accuracy": self.test_accuracy,
            "final_test_accuracy": self.final_test_accuracy,
            "train_loss": self.train_loss,
            "epoch_seconds": self.epoch_seconds,
            "compile_seconds": self.compile_seconds,
            "eval_seconds": self.eval_seconds,
            "batched_with": self.batched_with,
            "member_mode": self.member_mode,
            "device_members": self.device_members,  # members per device of the mesh
            "ticket": self.ticket,
            "device": self.device,
            "note": "epoch_seconds is the wall time of the whole batched program per epoch",
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PruneRecord:
        defaults = {"eval_seconds": 0.0, "batched_with": [], "member_mode": "unroll",
                    "device_members": None, "device": {}, "compile_seconds": 0.0,
                    "epoch_seconds": [], "train_loss": [], "test_accuracy": []}  # fmt: skip
        return cls(**{**defaults, **_known(cls, d)})
