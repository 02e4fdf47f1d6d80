"""Running pruning experiments into a results directory: one batched program per group of runs.

This is the shell around :mod:`lottery_jax.pruning.batched`: it decides which runs are still missing (a run
is finished when its ``results.json`` exists with the same configuration), trains the missing ones
together, and writes one ``results.json`` and one ``ticket.npz`` per run. A group in training saves
its scores and optimizer state after every epoch (``OUT/.partial/``), so running the same command
again after an interruption resumes at the last finished epoch, exactly.

Layout of a results directory::

    OUT/<run-name>/results.json   # e.g. red-fc2-r5-linear-e30-s0.5-seed0
    OUT/<run-name>/ticket.npz     # seed + config + packed masks (lottery_jax.pruning.ticket.save_ticket)
    OUT/baseline-<family>-e<E>-seed<S>/results.json, model.npz   # trained baselines (sweep)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax import distributed, rundir
from lottery_jax.errors import UserError
from lottery_jax.nets.supermask import check_sparsity
from lottery_jax.pruning import batched, grouping
from lottery_jax.pruning import ticket as tickets
from lottery_jax.results import PruneRecord, device_summary

VARIANTS = ("red-linear", "red-relu", "wide")
FAMILIES = ("fc2", "fc4", "lenet5")


def check_sparsities(values: Sequence[float]) -> None:
    """Every sparsity in [0, 1) (fraction removed): :func:`lottery_jax.nets.supermask.check_sparsity`."""
    for s in values:
        try:
            check_sparsity(s)
        except ValueError as e:
            raise UserError(str(e)) from None


def run_config(cfg: batched.PruneConfig, seed: int, sparsity: float, data_name: str) -> dict:
    return {**cfg.as_dict(), "seed": int(seed), "sparsity": float(sparsity), "data": data_name,
            "inputs": "normalized"}  # fmt: skip


def finished_config(path: Path) -> dict | None:
    """The configuration of the finished run whose ``results.json`` is ``path``, or None: a run
    is finished when its last commit verifies (every file the journal names is present with its
    recorded sha256: :func:`lottery_jax.rundir.verified_files`) and it holds the ticket and the
    results with a final accuracy."""
    files = rundir.verified_files(path.parent)
    if files is None or not {"ticket.npz", path.name} <= files:
        return None
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(done, dict) or done.get("final_test_accuracy") is None:
        return None
    config = done.get("config")
    return config if isinstance(config, dict) else None


def is_finished(path: Path, config: dict) -> bool:
    """The run at ``path`` (its ``results.json``) is finished with exactly ``config``."""
    return finished_config(path) == config


def refuse_other_settings(cfg: batched.PruneConfig, members, out: Path, data_name: str) -> None:
    """A finished run is never overwritten by a run of other settings (lr, batch size, dataset,
    conv weights...: the run's folder name does not carry them): one line, up front, naming what
    differs. Every process checks the same files, so all of them refuse together."""
    for seed, s in members:
        path = out / cfg.run_name(s, seed) / "results.json"
        done, config = finished_config(path), run_config(cfg, seed, s, data_name)
        if done is None or done == config:
            continue
        keys = sorted(k for k in {*done, *config} if done.get(k) != config.get(k))
        what = ", ".join(f"{k} {done.get(k)!r} there, {config.get(k)!r} now" for k in keys[:3])
        raise UserError(f"{path.parent} holds a finished run with other settings ({what}); "
                        "give another --out, or --force to replace it")  # fmt: skip


def _check_run_names(cfg: batched.PruneConfig, members: Sequence[tuple[int, float]]) -> None:
    """Two runs never share a folder (names are exact, so only equal runs could; refused)."""
    seen: dict[str, tuple[int, float]] = {}
    for seed, s in members:
        name = cfg.run_name(s, seed)
        if name in seen and seen[name] != (seed, s):
            raise UserError(f"runs {seen[name]} and {(seed, s)} would share the folder {name}")
        seen[name] = (seed, s)


@dataclass(frozen=True)
class GroupTraining:
    """What every group of a prune or sweep call shares: the data, the results directory, how
    members share a program (``mode``), the progress callbacks and the log. (One record instead
    of the same arguments handed through :func:`_train_missing`, :func:`_run_group` and
    :func:`_train_group`.) ``log_runs``: log each run's accuracy as it is committed (a sweep's
    only report of them; :func:`run_prune` returns the records to its caller instead)."""

    data: Any
    out: Path
    mode: str = "auto"
    on_chunk: Callable | None = None
    on_epoch: Callable | None = None
    log: Callable[[str], None] = lambda msg: None
    log_runs: bool = True


def run_prune(
    cfg: batched.PruneConfig,
    seeds: Sequence[int],
    sparsities: Sequence[float],
    data: Any,
    out: Path,
    *,
    conv_state: dict[str, np.ndarray] | None = None,
    force: bool = False,
    max_members: int | None = None,
    mode: str = "auto",
    processes: distributed.Processes | None = None,
    max_hours: float | None = None,
    on_chunk: Callable | None = None,
    on_epoch: Callable | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> list[dict]:
    """Train every (seed, sparsity) run of ``cfg`` that is not finished in ``out``; batched.

    Runs go ``max_members`` at a time (default: all) into one compiled program, its members split
    over the local devices. With several processes (``processes``, default: as JAX's runtime
    says) each trains its share of the groups (:func:`plan_groups`) and writes only those runs.
    Returns the results of every requested run (finished earlier or now; with several processes
    after all of them are done, so ``out`` must be on a filesystem they share).
    """
    check_sparsities(sparsities)
    if not seeds or not sparsities:
        raise UserError("nothing to run: give at least one seed and one sparsity")
    rundir.prepare_dir(out, "results directory")
    procs = processes or distributed.current()
    members = [(int(seed), float(s) + 0.0) for seed in seeds for s in sparsities]  # (-0: 0)
    _check_run_names(cfg, members)
    if not force:
        refuse_other_settings(cfg, members, out, getattr(data, "name", "data"))
    batched.require_time_for([(cfg, len(members))], int(data.train_images.shape[0]), max_hours)
    where = GroupTraining(data, out, mode, on_chunk, on_epoch, log, log_runs=False)
    for owner, _, group in plan_groups([(cfg, members)], max_members, procs.count):
        if procs.owns(owner):
            _train_missing(cfg, group, where, conv_state, force)
    procs.barrier("lottery-jax prune: all groups done")
    results = []
    for seed, s in members:
        path = out / cfg.run_name(s, seed) / "results.json"
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not an object")
            results.append(record)
        except (OSError, ValueError, RecursionError):
            raise UserError(
                f"{path} is missing after every process finished: with several processes the "
                "output directory must be one that all of them share"
            ) from None
    return results


def plan_groups(
    jobs: Sequence[tuple[batched.PruneConfig, Sequence[tuple[int, float]]]],
    max_members: int | None,
    processes: int = 1,
) -> list[tuple[int, int, list[tuple[int, float]]]]:
    """The groups of a grid and the process that trains each: ``(owner, job index, members)``.

    ``jobs`` are (configuration, its (seed, sparsity) members). Each job's members go
    ``max_members`` at a time (default: by :func:`grouping.group_size`) into groups; with fewer
    groups than processes each group is split into as many even parts as it takes to give every process work. Owners are
    assigned by :func:`lottery_jax.distributed.assign` on the cost ``epochs x members``. The plan
    depends only on the grid, never on which runs are finished, so every process computes the
    same one and a rerun (with any process count) covers whatever is left.
    """
    units: list[tuple[int, list]] = []
    for j, (_, members) in enumerate(jobs):
        members = list(members)
        step = max_members or grouping.group_size(jobs[j][0], len(members))
        units += [(j, members[i : i + step]) for i in range(0, len(members), step)]
    if processes > 1 and 0 < len(units) < processes:
        parts = -(-processes // len(units))
        units = [(j, part) for j, g in units for part in distributed.split_evenly(g, parts)]
    costs = [max(jobs[j][0].epochs, 1) * len(g) for j, g in units]
    owners = distributed.assign(costs, processes)
    return [(o, j, g) for o, (j, g) in zip(owners, units, strict=True)]


def _train_missing(cfg, group, where: GroupTraining, conv_state, force: bool) -> int:
    """Train the members of ``group`` that are not finished in ``where.out``; returns how many."""
    out, log = where.out, where.log
    data_name = getattr(where.data, "name", "data")
    todo = [
        (seed, s) for seed, s in group
        if force or not is_finished(out / cfg.run_name(s, seed) / "results.json",
                                    run_config(cfg, seed, s, data_name))
    ]  # fmt: skip
    skipped = len(group) - len(todo)
    if skipped:
        log(f"{skipped} of {len(group)} runs already finished in {out}; skipping them")
    if todo:
        variant = f"{cfg.model}{' --relu' if cfg.relu else ''}"
        log(f"{variant}: training {len(todo)} run(s) in one program, {cfg.epochs} epoch(s)")
        _run_group(cfg, todo, where, conv_state)
    return len(todo)


def _partial_path(out: Path, names: list[str]) -> Path:
    key = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    return out / ".partial" / f"{key}.npz"


def _resumer(path: Path, meta: dict, log: Callable[[str], None]):
    """Load the per-epoch checkpoint of an interrupted group if it fits (else start over).

    The partial file is sealed (:func:`lottery_jax.rundir.write_sealed`) with the fingerprint of
    ``meta``: a damaged, truncated or foreign one is detected, deleted and the group starts over.
    """
    seal = rundir.fingerprint(meta)

    def resume(like):
        arrays = rundir.read_sealed(path, seal, log=log)
        if arrays is None:
            return None
        try:
            saved = json.loads(str(arrays.pop("__meta__")))
        except (KeyError, ValueError):
            return None
        state = rundir.unpack_tree(arrays, like)
        if saved.get("meta") != meta or state is None:
            return None
        log(f"resuming after epoch {saved['epochs_done']} from {path}")
        return saved["epochs_done"], state, saved["history"]

    def checkpoint(epochs_done, state, history):
        if epochs_done >= meta["config"]["epochs"]:
            return
        arrays = rundir.pack_tree(state)
        hist = {k: history[k] for k in ("test_accuracy", "train_loss", "epoch_seconds")}
        arrays["__meta__"] = np.asarray(
            json.dumps({"meta": meta, "epochs_done": epochs_done, "history": hist})
        )
        rundir.write_sealed(path, arrays, seal)

    return resume, checkpoint


def _run_group(cfg, group, where: GroupTraining, conv_state) -> None:
    """Train one group while holding the lock of each of its runs (lottery_jax.rundir.claim):
    another process writing one of them is refused with one line naming the holder."""
    names = [cfg.run_name(s, seed) for seed, s in group]
    with rundir.claim(where.out, names, log=where.log):
        partial = _partial_path(where.out, names)
        rundir.clean_leftovers(partial.parent, names=[partial.name], recursive=False)
        _train_group(cfg, group, where, conv_state)


def _train_group(cfg, group, where: GroupTraining, conv_state) -> None:
    data, out, log = where.data, where.out, where.log
    batch = batched.make_batch(cfg, group, conv_state=conv_state, mode=where.mode)
    names = [cfg.run_name(s, seed) for seed, s in group]
    partial = _partial_path(out, names)
    meta = {"names": names, "config": cfg.as_dict(), "data": data.name}
    resume, checkpoint = _resumer(partial, meta, log)
    history = batched.train_batch(
        batch, data, on_chunk=where.on_chunk, on_epoch=where.on_epoch, resume=resume,
        checkpoint=checkpoint,
    )  # fmt: skip
    device = device_summary()
    for i, (seed, s) in enumerate(group):
        net = batched.member_net(batch, i)
        ticket = tickets.make_ticket(net, cfg, seed, s)
        # The final accuracy is measured on the net rebuilt from the ticket: reloading the saved
        # ticket later reproduces it exactly.
        t0 = time.perf_counter()
        final = tickets.net_accuracy(
            tickets.net_from_ticket(ticket), data.test_images, data.test_labels
        )
        eval_seconds = time.perf_counter() - t0
        total, remaining = batch.totals[i]
        run_dir = out / names[i]
        record = PruneRecord(
            name=names[i], config=run_config(cfg, seed, s, data.name), seed=seed, sparsity=s,
            total_params=total, remaining_params=remaining,
            test_accuracy=history["test_accuracy"][i], final_test_accuracy=final,
            train_loss=history["train_loss"][i], epoch_seconds=history["epoch_seconds"],
            compile_seconds=history["compile_seconds"], eval_seconds=eval_seconds,
            batched_with=names, member_mode=batch.mode,
            device_members=history.get("device_members"), device=device,
        )  # fmt: skip

        def write_ticket(path, ticket=ticket, final=final):
            tickets.save_ticket(path, ticket, {"test_accuracy": final})

        # The ticket and its results.json commit together (lottery_jax.rundir.commit).
        rundir.commit(run_dir, {"ticket.npz": write_ticket,
                                "results.json": rundir.json_bytes(record.to_json())})  # fmt: skip
        if where.log_runs:
            log(f"{names[i]}: {final:.2f}% with {remaining:,} of {total:,} parameters")
    partial.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- sweeps


def variant_config(
    family: str, variant: str, epochs: int, redundancy: int, base: batched.PruneConfig
) -> batched.PruneConfig:
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    model = f"{'wide' if variant == 'wide' else 'red'}-{family}"
    return replace(base, model=model, relu=variant == "red-relu", epochs=epochs,
                   redundancy=redundancy)  # fmt: skip


def train_baseline(
    family: str, epochs: int, seed: int, data: Any, out: Path, *,
    on_chunk: Callable | None = None, log: Callable[[str], None] = lambda msg: None,
) -> Path:  # fmt: skip
    """Train (or reuse) the baseline ``family`` net for ``epochs`` epochs; returns its weights.

    ``OUT/baseline-<family>-e<E>-seed<S>/`` is a training run directory like ``train``'s
    (:func:`lottery_jax.runs.train_target`: resumable, committed per epoch). Another process
    training the same baseline is waited for, then its result is reused.
    """
    from lottery_jax.runs import train_config, train_target

    run_dir = out / f"baseline-{family}-e{epochs}-seed{seed}"
    config = train_config(model=family, epochs=epochs, seed=seed, inputs="normalized",
                          data={"data": data.name})  # fmt: skip

    def chunk(epoch, done, total, loss):  # (the batched runs report one loss per member)
        if on_chunk is not None:
            on_chunk(epoch, done, total, [loss])

    res = train_target(run_dir, config, data, on_chunk=chunk, log=log, wait=True,
                       command="sweep baseline")  # fmt: skip
    if res.already_finished:
        log(f"baseline {family} ({epochs} epochs) already trained in {run_dir}")
    return res.weights


def run_sweep(
    family: str,
    *,
    epochs: Sequence[int],
    sparsities: Sequence[float],
    variants: Sequence[str],
    seeds: Sequence[int],
    data: Any,
    out: Path,
    base: batched.PruneConfig,
    redundancy: int = 5,
    baseline: bool = True,
    conv_from: Path | None = None,
    max_members: int | None = None,
    mode: str = "auto",
    processes: distributed.Processes | None = None,
    max_hours: float | None = None,
    on_chunk: Callable | None = None,
    on_epoch: Callable | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, int]:
    """The published grid (or a sub-grid) for one model family; finished runs are skipped.

    LeNet5 variants take their frozen conv weights from ``conv_from`` or, without it, from the
    baseline trained here for the same epoch budget (so all LeNet5 nets share conv features).

    With several processes (``processes``, default: as JAX's runtime says) the baselines and the
    groups of (epochs, seed, variant) runs are shared out by :func:`plan_groups`; a process that
    needs a LeNet5 baseline it does not own waits for it (its run lock) or trains it first. Returns
    ``runs`` (all requested) and ``trained`` (trained by this process now).
    """
    if family not in FAMILIES:
        raise UserError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)})")
    if not epochs or any(e <= 0 for e in epochs):
        raise UserError(f"epochs must be positive, got {list(epochs)}")
    check_sparsities(sparsities)
    sparsities = list(dict.fromkeys(float(s) + 0.0 for s in sparsities))  # (-0 is 0)
    if redundancy < 1:
        raise UserError(f"redundancy must be at least 1, got {redundancy}")
    for v in variants:
        variant_config(family, v, 1, redundancy, base)  # validates the name
    n_train = int(data.train_images.shape[0])
    batched.require_time_for(
        [(variant_config(family, v, e, redundancy, base), len(seeds) * len(sparsities))
         for e in epochs for v in variants], n_train, max_hours,
    )  # fmt: skip
    rundir.prepare_dir(out, "results directory")
    procs = processes or distributed.current()
    fixed_conv = tickets.load_conv_checkpoint(conv_from) if conv_from else None
    conv_baseline = family == "lenet5" and fixed_conv is None
    pairs = [(e, seed) for e in epochs for seed in seeds]
    weights: dict[tuple[int, int], Path] = {}
    if baseline or conv_baseline:
        owners = distributed.assign([e for e, _ in pairs], procs.count)
        for (e, seed), owner in zip(pairs, owners, strict=True):
            if procs.owns(owner):
                weights[e, seed] = train_baseline(family, e, seed, data, out, on_chunk=on_chunk,
                                                  log=log)  # fmt: skip
    convs: dict[tuple[int, int], Any] = {}

    def conv_state(e: int, seed: int):
        if not conv_baseline:
            return fixed_conv
        if (e, seed) not in convs:
            if (e, seed) not in weights:  # another process's: wait for it (or train it first)
                weights[e, seed] = train_baseline(family, e, seed, data, out, on_chunk=on_chunk,
                                                  log=log)  # fmt: skip
            convs[e, seed] = tickets.load_conv_checkpoint(weights[e, seed])
        return convs[e, seed]

    jobs, keys = [], []
    for e, seed in pairs:
        for v in variants:
            cfg = variant_config(family, v, e, redundancy, base)
            if family == "lenet5" and (fixed_conv is not None or conv_baseline):
                cfg = replace(cfg, conv_from=str(conv_from) if conv_from else "baseline")
            jobs.append((cfg, [(seed, s) for s in sparsities]))
            _check_run_names(cfg, jobs[-1][1])
            refuse_other_settings(cfg, jobs[-1][1], out, getattr(data, "name", "data"))
            keys.append((e, seed))
    trained = 0
    where = GroupTraining(data, out, mode, on_chunk, on_epoch, log)
    for owner, j, group in plan_groups(jobs, max_members, procs.count):
        if procs.owns(owner):
            trained += _train_missing(jobs[j][0], group, where, conv_state(*keys[j]), False)
    procs.barrier("lottery-jax sweep: all groups done")
    baselines = len(pairs) if (baseline or conv_baseline) else 0
    return {"runs": sum(len(m) for _, m in jobs), "trained": trained, "baselines": baselines}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def collect_results(results_dir: Path) -> list[dict]:
    """Every readable ``results.json`` below ``results_dir`` (prune runs and baselines)."""
    if not results_dir.is_dir():
        raise UserError(f"results directory {results_dir} does not exist")
    out = []
    for path in sorted(results_dir.rglob("results.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(r, dict) or not _is_number(r.get("final_test_accuracy")):
            continue
        if not isinstance(r.get("config", {}), dict):  # (the readers of results take it apart)
            continue
        r["_path"] = str(path)
        out.append(r)
    return out
