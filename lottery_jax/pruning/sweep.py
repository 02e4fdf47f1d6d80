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
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.pruning import batched
from lottery_jax.pruning import ticket as tickets
from lottery_jax.results import device_summary, save_npz_atomic, write_json_atomic

VARIANTS = ("red-linear", "red-relu", "wide")
FAMILIES = ("fc2", "fc4", "lenet5")


def _parse_list(values: Sequence[str] | None, name: str, convert, kind: str) -> list:
    out = []
    for v in values or []:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(convert(part))
            except ValueError:
                raise UserError(f"{name}: {part!r} is not {kind}") from None
    return list(dict.fromkeys(out))


def parse_floats(values: Sequence[str] | None, name: str) -> list[float]:
    """``["0.5", "0.75,0.9"]`` -> [0.5, 0.75, 0.9] (repeated options and comma lists)."""
    return _parse_list(values, name, float, "a number")


def parse_ints(values: Sequence[str] | None, name: str) -> list[int]:
    """``["0", "1,2"]`` -> [0, 1, 2] (repeated options and comma lists)."""
    return _parse_list(values, name, int, "an integer")


def check_sparsities(values: Sequence[float]) -> None:
    for s in values:
        if not 0.0 <= s < 1.0:
            raise UserError(f"sparsity must lie in [0, 1) (fraction removed), got {s}")


def run_config(cfg: batched.PruneConfig, seed: int, sparsity: float, data_name: str) -> dict:
    return {**cfg.as_dict(), "seed": int(seed), "sparsity": float(sparsity), "data": data_name,
            "inputs": "normalized"}  # fmt: skip


def is_finished(path: Path, config: dict) -> bool:
    """A run is done when its results.json exists and records the same configuration."""
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return done.get("config") == config and done.get("final_test_accuracy") is not None


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
    on_chunk: Callable | None = None,
    on_epoch: Callable | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> list[dict]:
    """Train every (seed, sparsity) run of ``cfg`` that is not finished in ``out``; batched.

    Runs go ``max_members`` at a time (default: all) into one compiled program. Returns the
    results of every requested run (finished earlier or now).
    """
    cfg.validate()
    check_sparsities(sparsities)
    if not seeds or not sparsities:
        raise UserError("give at least one --seed and one --sparsity")
    members = [(int(seed), float(s)) for seed in seeds for s in sparsities]
    data_name = getattr(data, "name", "data")
    todo = []
    for seed, s in members:
        path = out / cfg.run_name(s, seed) / "results.json"
        if force or not is_finished(path, run_config(cfg, seed, s, data_name)):
            todo.append((seed, s))
    skipped = len(members) - len(todo)
    if skipped:
        log(f"{skipped} of {len(members)} runs already finished in {out}; skipping them")
    step = max_members or len(todo) or 1
    for start in range(0, len(todo), step):
        group = todo[start : start + step]
        variant = f"{cfg.model}{' --relu' if cfg.relu else ''}"
        log(f"{variant}: training {len(group)} run(s) in one program, {cfg.epochs} epoch(s)")
        _run_group(cfg, group, data, out, conv_state, mode, on_chunk, on_epoch, log)
    results = []
    for seed, s in members:
        path = out / cfg.run_name(s, seed) / "results.json"
        results.append(json.loads(path.read_text()))
    return results


def _partial_path(out: Path, names: list[str]) -> Path:
    key = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    return out / ".partial" / f"{key}.npz"


def _resumer(path: Path, meta: dict, log: Callable[[str], None]):
    """Load the per-epoch checkpoint of an interrupted group if it fits (else start over)."""

    def resume(like):
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                saved = json.loads(str(f["__meta__"]))
                leaves = [f[f"leaf{i:05d}"] for i in range(len(jax.tree.leaves(like)))]
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if saved.get("meta") != meta:
            return None
        like_leaves, treedef = jax.tree.flatten(like)
        if any(a.shape != np.shape(b) for a, b in zip(leaves, like_leaves, strict=True)):
            return None
        log(f"resuming after epoch {saved['epochs_done']} from {path}")
        state = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
        return saved["epochs_done"], state, saved["history"]

    def checkpoint(epochs_done, state, history):
        if epochs_done >= meta["config"]["epochs"]:
            return
        arrays = {f"leaf{i:05d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))}
        hist = {k: history[k] for k in ("test_accuracy", "train_loss", "epoch_seconds")}
        arrays["__meta__"] = np.asarray(
            json.dumps({"meta": meta, "epochs_done": epochs_done, "history": hist})
        )
        save_npz_atomic(path, arrays)

    return resume, checkpoint


def _run_group(cfg, group, data, out, conv_state, mode, on_chunk, on_epoch, log) -> None:
    batch = batched.make_batch(cfg, group, conv_state=conv_state, mode=mode)
    names = [cfg.run_name(s, seed) for seed, s in group]
    partial = _partial_path(out, names)
    meta = {"names": names, "config": cfg.as_dict(), "data": data.name}
    resume, checkpoint = _resumer(partial, meta, log)
    history = batched.train_batch(
        batch, data, on_chunk=on_chunk, on_epoch=on_epoch, resume=resume, checkpoint=checkpoint
    )
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
        tickets.save_ticket(run_dir / "ticket.npz", ticket, {"test_accuracy": final})
        write_json_atomic(
            run_dir / "results.json",
            {
                "command": "prune",
                "name": names[i],
                "config": run_config(cfg, seed, s, data.name),
                "seed": seed,
                "sparsity": s,
                "total_params": total,
                "remaining_params": remaining,
                "test_accuracy": history["test_accuracy"][i],
                "final_test_accuracy": final,
                "train_loss": history["train_loss"][i],
                "epoch_seconds": history["epoch_seconds"],
                "compile_seconds": history["compile_seconds"],
                "eval_seconds": eval_seconds,
                "batched_with": names,
                "member_mode": batch.mode,
                "ticket": "ticket.npz",
                "device": device,
                "note": "epoch_seconds is the wall time of the whole batched program per epoch",
            },
        )
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
    family: str, epochs: int, seed: int, data: Any, out: Path, *, progress: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> Path:  # fmt: skip
    """Train (or reuse) the baseline ``family`` net for ``epochs`` epochs; returns its weights.

    Writes ``OUT/baseline-<family>-e<E>-seed<S>/{results.json, model.npz}`` like ``train``.
    """
    from flax import nnx

    from lottery_jax import checkpoint
    from lottery_jax.nets import targets as models
    from lottery_jax.training import fit

    run_dir = out / f"baseline-{family}-e{epochs}-seed{seed}"
    weights = run_dir / "model.npz"
    lr = 0.01 if family == "lenet5" else 0.1
    config = {"model": family, "epochs": epochs, "lr": lr, "batch_size": 64, "seed": seed,
              "inputs": "normalized", "data": data.name}  # fmt: skip
    if weights.is_file() and is_finished(run_dir / "results.json", config):
        log(f"baseline {family} ({epochs} epochs) already trained in {run_dir}")
        return weights
    log(f"baseline {family}: training {epochs} epoch(s)")
    net = models.build_model(family, seed=seed)
    history = fit(net, data, wrt=nnx.Param, lr=lr, epochs=epochs, seed=seed)
    checkpoint.save_weights(weights, family, models.torch_state(net), config)
    accs = history["test_accuracy"]
    write_json_atomic(
        run_dir / "results.json",
        {
            "command": "train",
            "name": run_dir.name,
            "config": config,
            "seed": seed,
            "total_params": models.count_params(net),
            "remaining_params": models.count_params(net),
            "test_accuracy": accs,
            "final_test_accuracy": accs[-1],
            "epoch_seconds": history["epoch_seconds"],
            "compile_seconds": history["compile_seconds"],
            "device": device_summary(),
        },
    )
    return weights


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
    max_members: int | None = 14,
    mode: str = "auto",
    progress: bool = True,
    on_chunk: Callable | None = None,
    on_epoch: Callable | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, int]:
    """The published grid (or a sub-grid) for one model family; finished runs are skipped.

    LeNet5 variants take their frozen conv weights from ``conv_from`` or, without it, from the
    baseline trained here for the same epoch budget (so all LeNet5 nets share conv features).
    """
    if family not in FAMILIES:
        raise UserError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)})")
    if not epochs or any(e <= 0 for e in epochs):
        raise UserError(f"epochs must be positive, got {list(epochs)}")
    check_sparsities(sparsities)
    if redundancy < 1:
        raise UserError(f"redundancy must be at least 1, got {redundancy}")
    for v in variants:
        variant_config(family, v, 1, redundancy, base)  # validates the name
    counts = {"runs": 0}
    fixed_conv = tickets.load_conv_checkpoint(conv_from) if conv_from else None
    for e in epochs:
        for seed in seeds:
            conv_state = fixed_conv
            if baseline or (family == "lenet5" and fixed_conv is None):
                w = train_baseline(family, e, seed, data, out, progress=progress, log=log)
                if family == "lenet5" and fixed_conv is None:
                    conv_state = tickets.load_conv_checkpoint(w)
            for v in variants:
                cfg = variant_config(family, v, e, redundancy, base)
                if conv_state is not None and family == "lenet5":
                    cfg = replace(cfg, conv_from=str(conv_from) if conv_from else "baseline")
                res = run_prune(
                    cfg, [seed], sparsities, data, out, conv_state=conv_state,
                    max_members=max_members, mode=mode, on_chunk=on_chunk, on_epoch=on_epoch,
                    log=log,
                )  # fmt: skip
                counts["runs"] += len(res)
    return counts


def collect_results(results_dir: Path) -> list[dict]:
    """Every readable ``results.json`` below ``results_dir`` (prune runs and baselines)."""
    if not results_dir.is_dir():
        raise UserError(f"results directory {results_dir} does not exist")
    out = []
    for path in sorted(results_dir.rglob("results.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if r.get("final_test_accuracy") is None:
            continue
        r["_path"] = str(path)
        out.append(r)
    return out
