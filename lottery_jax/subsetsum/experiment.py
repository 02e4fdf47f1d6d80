"""Experiment 1 end to end: the one library entry point of ``lottery-jax approximate``.

:func:`run_experiment` takes an :class:`ExperimentSpec` (the target, the data, the output directory
and the :class:`~lottery_jax.subsetsum.network.ApproxConfig`) and does the whole run: it shares the
chunks among processes (:func:`~lottery_jax.subsetsum.network.solve_share`), holds the run
directory, resolves the target (the paper's, a file, or one it trains first), infers the inputs,
loads the data (or records why it could not), approximates and scores
(:func:`approximate_target`), commits ``results.json``, ``ticket.npz`` and ``approximated.npz``
together, and returns an :class:`ExperimentOutcome` that carries the exit status. The command line
only parses options, draws progress and prints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax import checkpoint, rundir
from lottery_jax.nets.targets import network_for
from lottery_jax.results import device_summary
from lottery_jax.subsetsum import network as net_mod
from lottery_jax.subsetsum.ticket import save_ticket

#: Exit status when the test data cannot be had: the ticket is written, accuracies are null.
EXIT_NO_DATA = 5


@dataclass
class TargetApproximation:
    """What :func:`approximate_target` produced: the record, the files to commit, the result."""

    results: dict[str, Any]  # the results.json record
    files: dict[str, Any]  # name -> bytes or writer, for rundir.RunDir.commit
    result: net_mod.ApproxResult
    outside: dict[str, Any]  # the weights not within eps (net_mod.not_within_epsilon)


def approximate_target(
    state: dict[str, np.ndarray],
    cfg: net_mod.ApproxConfig,
    run: Any = None,
    *,
    model: str | None = None,
    source: str = "",
    inputs: str,
    data: Any = None,
    data_error: str | None = None,
    config: dict[str, Any] | None = None,
    on_layer: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    on_scip: Callable | None = None,
) -> TargetApproximation:
    """Approximate every selected tensor of ``state`` under ``cfg`` (resuming from ``run``'s
    chunks), then measure the test accuracy of the target and of its approximation on ``data``
    with the network the state describes (``model`` checks it; inferred otherwise).

    ``data`` None means accuracy is not measured (``data_error`` says why, recorded with null
    accuracies). ``config`` adds the caller's settings (target, data source...) to the record.
    """
    from lottery_jax.training import evaluate

    state = {k: np.asarray(v) for k, v in state.items()}
    model_name, target_net = network_for(state, source=source, model=model)
    res = net_mod.approximate_network(
        state, cfg, run, on_layer=on_layer, on_chunk=on_chunk, on_scip=on_scip
    )
    outside = net_mod.not_within_epsilon(res, state)
    approx_state = net_mod.approximated_state(res, state)
    target_acc = approx_acc = None
    if data is not None:
        target_acc = evaluate(target_net, data.test_images, data.test_labels)
        _, approx_net = network_for(approx_state, source="approximation", model=model_name)
        approx_acc = evaluate(approx_net, data.test_images, data.test_labels)
    full_config = {**net_mod.config_dict(cfg), "model": model_name, "inputs": inputs,
                   **(config or {})}  # fmt: skip
    exit_status = net_mod.EXIT_INFEASIBLE if outside["total"] else EXIT_NO_DATA if data_error else 0
    results = {
        "command": "approximate",
        "target_accuracy": target_acc,
        "approx_accuracy": approx_acc,
        **net_mod.record(res),
        "not_within_epsilon": outside,
        "device": device_summary(),
        "config": full_config,
        "exit_status": exit_status,
        "accuracy_not_measured": data_error,
    }
    files = {
        "approximated.npz": checkpoint.weights_bytes(
            model_name, approx_state, {"inputs": inputs, "config": full_config}
        ),
        "ticket.npz": lambda path: save_ticket(path, res, state),
        "results.json": rundir.json_bytes(results),
    }
    return TargetApproximation(results, files, res, outside)


#: The built-in target: the paper's own FC2 (``--target paper``, the default).
PAPER_TARGET = "paper"
#: ``--target train``: train a new FC2 with the published recipe first.
TRAIN_TARGET = "train"


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything one ``approximate`` run needs beside its progress callbacks.

    ``target``: ``"paper"`` (the paper's FC2, built in), ``"train"`` (train an FC2 for ``epochs``
    first, into ``out/target``) or a weight file. ``inputs`` None: the weight file's own
    preprocessing, else the paper's for the network (:data:`~lottery_jax.nets.targets.DEFAULT_INPUTS`).
    ``evaluate`` False: no test accuracy (and no data needed, unless training)."""

    cfg: net_mod.ApproxConfig
    out: Path
    target: str | Path = PAPER_TARGET
    epochs: int = 10
    inputs: str | None = None
    data_dir: Path | None = None
    dataset: str = "mnist"
    evaluate: bool = True
    command: str = "approximate"

    @property
    def target_kind(self) -> str:
        """``paper``, ``train`` or ``file``."""
        text = str(self.target)
        return text if text in (PAPER_TARGET, TRAIN_TARGET) else "file"


@dataclass(frozen=True)
class SolveHooks:
    """Progress of one solving phase: ``on_layer(name, rows)``, ``on_chunk(name, rows_done)``,
    ``on_scip(progress)`` (:class:`~lottery_jax.subsetsum.scip.ScipProgress`)."""

    on_layer: Callable[[str, int], None] | None = None
    on_chunk: Callable[[str, int], None] | None = None
    on_scip: Callable[[Any], None] | None = None


def _no_progress() -> contextlib.AbstractContextManager[SolveHooks]:
    return contextlib.nullcontext(SolveHooks())


@dataclass(frozen=True)
class ExperimentHooks:
    """What the caller draws: ``solving()`` opens a progress display around each solving phase and
    yields its :class:`SolveHooks`; ``train(out, config, data)`` trains the target
    (default :func:`lottery_jax.runs.train_target`); ``log`` gets one line per event."""

    solving: Callable[[], contextlib.AbstractContextManager[SolveHooks]] = _no_progress
    train: Callable[..., Any] | None = None
    log: Callable[[str], None] = field(default=lambda msg: None)


@dataclass(frozen=True)
class ExperimentOutcome:
    """What :func:`run_experiment` did. ``results`` is None for a secondary process of a
    multi-process run (it only solved ``solved_chunks`` chunks); ``exit_status`` is the command's:
    0, :data:`~lottery_jax.subsetsum.network.EXIT_INFEASIBLE` (some weight not within eps) or
    :data:`EXIT_NO_DATA` (accuracy not measured)."""

    out: Path
    exit_status: int
    results: dict[str, Any] | None = None
    outside: dict[str, Any] | None = None
    data_error: str | None = None
    solved_chunks: int | None = None
    process: str = ""


def run_experiment(
    spec: ExperimentSpec, procs: Any = None, hooks: ExperimentHooks = ExperimentHooks()
) -> ExperimentOutcome:
    """Run Experiment 1 as :class:`ExperimentSpec` says (see the module docstring). ``procs`` is
    this process's place among several (:class:`lottery_jax.distributed.Processes`; None: one)."""
    from lottery_jax.errors import UserError

    procs = procs or _single_process()
    if procs.count > 1 and spec.target_kind == TRAIN_TARGET:
        raise UserError("several processes approximate a given target: pass target paper or a file")
    with hold_run_dir(spec, procs, hooks.log) as run:
        state, meta, path = load_target(spec)
        inputs = spec.inputs or infer_inputs(state, meta, path)
        solved = None
        if procs.count > 1:
            with hooks.solving() as h:
                solved = net_mod.solve_share(
                    state, spec.cfg, run, share=(procs.index, procs.count),
                    on_layer=h.on_layer, on_chunk=h.on_chunk,
                )  # fmt: skip
            procs.barrier("lottery-jax approximate: every process's chunks")
            if procs.index != 0:
                return ExperimentOutcome(
                    spec.out, 0, solved_chunks=solved, process=procs.describe()
                )
        data, data_error = load_data(spec, inputs)
        if spec.target_kind == TRAIN_TARGET:
            state, path = train_first(spec, data, inputs, hooks)
        with hooks.solving() as h:
            done = approximate_target(
                state, spec.cfg, run, model=(meta or {}).get("model"), source=str(path),
                inputs=inputs, data=data if spec.evaluate else None, data_error=data_error,
                config=record_config(spec, path), on_layer=h.on_layer, on_chunk=h.on_chunk,
                on_scip=h.on_scip,
            )  # fmt: skip
        # The three files commit together (lottery_jax.rundir): a rerun never finds a mix of runs.
        run.commit(done.files)
    return ExperimentOutcome(
        spec.out, int(done.results["exit_status"]), done.results, done.outside, data_error,
        solved, procs.describe(),
    )  # fmt: skip


def _single_process() -> Any:
    from lottery_jax.distributed import Processes

    return Processes()


@contextlib.contextmanager
def hold_run_dir(spec: ExperimentSpec, procs: Any, log: Callable[[str], None]) -> Iterator[Any]:
    """Check, lock and hold ``spec.out`` for the run (process 0), or attach to it without its
    lock (the other processes write only their own sealed chunks); then wait for every process."""
    run = rundir.RunDir(spec.out, command=spec.command, log=log)
    run = run.open() if procs.index == 0 else run.attach()
    try:
        procs.barrier("lottery-jax approximate: run directory open")
        yield run
    finally:
        run.close()


def load_target(spec: ExperimentSpec) -> tuple[dict[str, np.ndarray] | None, dict, Path | None]:
    """The target's state, metadata and file (``(None, {}, None)`` when it is to be trained)."""
    from lottery_jax.paper import resolve_weights

    if spec.target_kind == TRAIN_TARGET:
        return None, {}, None
    path = resolve_weights("paper-fc2" if spec.target_kind == PAPER_TARGET else spec.target)
    state, meta = checkpoint.load_weights(path)
    return {k: np.asarray(v) for k, v in state.items()}, meta or {}, path


def infer_inputs(state: dict[str, np.ndarray] | None, meta: dict, path: Path | None) -> str:
    """The weight file's own preprocessing, else the paper's for its network (FC2 when trained)."""
    from lottery_jax.nets.targets import DEFAULT_INPUTS, infer_model

    guess = infer_model(state, source=str(path))[0] if state else "fc2"
    return meta.get("inputs") or DEFAULT_INPUTS[guess]


def load_data(spec: ExperimentSpec, inputs: str) -> tuple[Any, str | None]:
    """The dataset when accuracy is measured or a target is trained, else None. Without data the
    run still solves (the error is returned, recorded and turned into :data:`EXIT_NO_DATA`), unless
    a target must be trained."""
    from lottery_jax.data import load_dataset
    from lottery_jax.download import DownloadError

    if not (spec.evaluate or spec.target_kind == TRAIN_TARGET):
        return None, None
    try:
        return load_dataset(spec.data_dir, dataset=spec.dataset, inputs=inputs), None
    except DownloadError as e:  # solve anyway; say so at the end and exit EXIT_NO_DATA
        if spec.target_kind == TRAIN_TARGET:
            raise
        return None, str(e)


def train_first(
    spec: ExperimentSpec, data: Any, inputs: str, hooks: ExperimentHooks
) -> tuple[dict[str, np.ndarray], Path]:
    """Train FC2 with the published recipe into the run directory ``out/target`` (or resume it,
    or reuse it when finished), as ``lottery-jax train`` does: its weights and weight file."""
    from lottery_jax.runs import train_config, train_target

    data_info = {"data_dir": str(spec.data_dir) if spec.data_dir else None,
                 "dataset": spec.dataset}  # fmt: skip
    config = train_config(
        model="fc2", epochs=spec.epochs, seed=spec.cfg.seed, inputs=inputs, data=data_info
    )
    train = hooks.train or (lambda out, cfg, d: train_target(out, cfg, d, log=hooks.log))
    res = train(spec.out / "target", config, data)
    return res.state, res.weights


def record_config(spec: ExperimentSpec, path: Path | None) -> dict[str, Any]:
    """The run's own settings beside the ApproxConfig in ``results.json``'s config."""
    return {
        "target": "paper-fc2" if spec.target_kind == PAPER_TARGET else str(path),
        "data_dir": str(spec.data_dir) if spec.data_dir else None,
        "dataset": spec.dataset,
        "epochs": spec.epochs if spec.target_kind == TRAIN_TARGET else None,
    }
