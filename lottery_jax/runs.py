"""Training a target network into a run directory: the one "train a target and save it" path.

``lottery-jax train``, ``approximate`` (when it trains its own target first) and ``sweep`` (its
baselines) all call :func:`train_target`. The run directory (:mod:`lottery_jax.rundir`) holds::

    model.npz      # the weights of the last finished epoch (PyTorch layout, __meta__ = config)
    results.json   # the history so far (test accuracy per epoch, losses, timings, device)
    resume.npz     # optimizer state + weights of that epoch (exact resume)
    run.json       # the configuration and its fingerprint

The three files are committed together after every epoch, so a run interrupted anywhere (Ctrl-C,
SIGKILL, power) is found again at one finished epoch: the rerun resumes after it, exactly, or
reports the run finished. Another configuration in the same directory is refused, naming the first
setting that differs; a second process writing it is refused, naming the holder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax import checkpoint, rundir
from lottery_jax.data import Dataset
from lottery_jax.errors import UserError
from lottery_jax.results import TrainRecord, device_summary

HISTORY_KEYS = ("test_accuracy", "train_loss", "epoch_seconds")  # training.HISTORY_SERIES


@dataclass
class TrainResult:
    """What :func:`train_target` leaves: the run directory, its weight file and record."""

    path: Path
    weights: Path
    state: dict[str, np.ndarray]  # the final weights, PyTorch layout
    results: TrainRecord  # results.json
    start_epoch: int  # epochs finished before this call (0: a fresh run)
    already_finished: bool  # nothing was trained: the directory held the finished run


def train_config(
    *,
    model: str,
    epochs: int,
    lr: float | None = None,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "epoch",
    hidden: int | None = None,
    bias: bool = False,
    seed: int = 0,
    inputs: str = "normalized",
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings that define a training run (its fingerprint), defaults filled in.

    ``data`` names the data (``{"data_dir": ..., "dataset": ...}`` or ``{"data": name}``)."""
    from lottery_jax.training import DEFAULT_LR

    if model not in DEFAULT_LR:
        raise UserError(f"unknown model {model!r} (choose from {', '.join(DEFAULT_LR)})")
    return {
        "model": model,
        "epochs": int(epochs),
        "lr": DEFAULT_LR[model] if lr is None else float(lr),
        "batch_size": int(batch_size),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "schedule": schedule,
        "hidden": hidden,
        "bias": bool(bias),
        "seed": int(seed),
        "inputs": inputs,
        **dict(data or {}),
    }


def _results(path: Path, config: dict, history: dict, compile_seconds: float, net) -> TrainRecord:
    from lottery_jax.nets import targets as models

    return TrainRecord(
        name=path.name, config=config, seed=config["seed"], device=device_summary(),
        test_accuracy=history["test_accuracy"], train_loss=history["train_loss"],
        epoch_seconds=history["epoch_seconds"], compile_seconds=compile_seconds,
        trainable_params=models.count_params(net),
        frozen_params=models.count_params(net, models.Frozen),
    )  # fmt: skip


def train_target(
    out: str | os.PathLike,
    config: Mapping[str, Any],
    data: Dataset | Callable[[], Dataset],
    *,
    on_chunk: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = lambda msg: None,
    wait: bool | float = False,
    command: str = "",
) -> TrainResult:
    """Train (or resume, or find finished) the target network ``config`` (:func:`train_config`)
    in the run directory ``out``.

    ``data`` is the dataset or a function that loads it (called only when there is training to
    do). ``on_chunk`` goes to :func:`lottery_jax.training.fit` (progress within an epoch);
    ``on_epoch(epoch, results)`` runs after each committed epoch (``epoch`` counts from 1, as in
    :func:`lottery_jax.training.fit`; ``results``: the
    :class:`~lottery_jax.results.TrainRecord` just committed as results.json);
    ``log`` gets one line per event (resuming, finished, recovered). ``wait``: what to do when
    another process holds ``out`` (False: refuse; True: wait for it; seconds: wait that long).
    A resumed run reproduces the uninterrupted one exactly (same weights, same accuracies).
    """
    from lottery_jax import training
    from lottery_jax.nets import targets as models

    config = dict(config)
    recipe = recipe_of(config)
    net = models.build_model(config["model"], seed=config["seed"], hidden=config["hidden"],
                             bias=config["bias"])  # fmt: skip
    path = Path(out)
    with rundir.RunDir(path, command=command or "train", args=config, wait=wait, log=log) as run:
        state = run.committed()
        start, past = _committed_progress(path, state)
        if start >= recipe.epochs:
            return _finished(path, start, log)
        dataset = data() if callable(data) else data
        opt_state = None if state is None else _resume(path, net, recipe, dataset, start, log)
        commit = _EpochCommitter(run, path, config, past, on_epoch)
        training.fit(
            net, dataset, recipe, start_epoch=start, opt_state=opt_state, on_chunk=on_chunk,
            on_epoch=commit,
        )  # fmt: skip
        return TrainResult(path, path / "model.npz", commit.weights, commit.results, start, False)


def recipe_of(config: Mapping[str, Any]):
    """The :class:`lottery_jax.training.Recipe` of a :func:`train_config` record."""
    from lottery_jax.training import Recipe

    epochs = config["epochs"]
    if not isinstance(epochs, int) or epochs <= 0:
        raise UserError(f"epochs must be positive, got {epochs}")
    return Recipe(
        lr=config["lr"], epochs=epochs, batch_size=config["batch_size"], seed=config["seed"],
        momentum=config["momentum"], weight_decay=config["weight_decay"],
        schedule=config["schedule"],
    )  # fmt: skip


def _committed_progress(path: Path, state: Any) -> tuple[int, dict[str, list]]:
    """Epochs done and the history so far, from the journal's state (None: a fresh run). The
    journal's files are verified, but its state is its word: wrong types are one line."""
    if state is None:
        return 0, {k: [] for k in HISTORY_KEYS}
    try:
        return int(state["epochs_done"]), {k: list(state["history"][k]) for k in HISTORY_KEYS}
    except (KeyError, TypeError, ValueError, OverflowError):
        raise UserError(f"{path}/{rundir.JOURNAL_NAME}: malformed state; delete the "
                        "directory to restart") from None  # fmt: skip


def _finished(path: Path, start: int, log: Callable[[str], None]) -> TrainResult:
    """The run directory holds the finished run: its weights and record, nothing trained."""
    log(f"{path} is already finished: {path / 'results.json'}")
    weights, _ = checkpoint.load_weights(path / "model.npz")
    results = TrainRecord.from_json(json.loads((path / "results.json").read_text()))
    return TrainResult(path, path / "model.npz", weights, results, start, True)


def _resume(path: Path, net, recipe, dataset: Dataset, start: int, log) -> Any:
    """Load the optimizer state and weights of the last committed epoch into ``net``."""
    from flax import nnx

    from lottery_jax.nets import targets as models
    from lottery_jax.training import steps_per_epoch

    resume_arrays = checkpoint.read_npz(path / "resume.npz", "resume file")
    spe = steps_per_epoch(int(dataset.train_images.shape[0]), recipe.batch_size)
    like = recipe.optimizer(spe).init(nnx.state(net, nnx.Param))
    opt_state, _, _, weights = checkpoint.parse_resume(
        resume_arrays, like, source=path / "resume.npz"
    )
    models.load_torch_state(net, weights, source=str(path / "resume.npz"))
    log(f"resuming {path} after epoch {start}/{recipe.epochs}")
    return opt_state


class _EpochCommitter:
    """``fit``'s ``on_epoch``: commit weights, resume state and results.json together."""

    def __init__(self, run, path: Path, config: dict, past: dict, on_epoch) -> None:
        self.run, self.path, self.config, self.past, self.on_epoch = (
            run,
            path,
            config,
            past,
            on_epoch,
        )
        self.weights: dict[str, np.ndarray] = {}
        self.results: TrainRecord | None = None

    def __call__(self, epoch: int, history: Any, net_now: Any, opt_now: Any) -> None:
        from lottery_jax.nets import targets as models

        config = self.config
        hist = {k: self.past[k] + list(getattr(history, k)) for k in HISTORY_KEYS}
        weights = models.torch_state(net_now)
        res = _results(self.path, config, hist, history.compile_seconds, net_now)
        self.run.commit(
            {
                "resume.npz": rundir.npz_bytes(
                    checkpoint.resume_arrays(opt_now, epoch, {"config": config}, weights)
                ),
                "model.npz": checkpoint.weights_bytes(config["model"], weights, config),
                "results.json": rundir.json_bytes(res.to_json()),
            },
            state={"epochs_done": epoch, "history": hist},
        )
        self.weights, self.results = weights, res
        if self.on_epoch is not None:
            self.on_epoch(epoch, res)
