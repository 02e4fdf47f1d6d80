"""``train`` and ``evaluate``: the paper's target networks."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from lottery_jax import checkpoint
from lottery_jax.data import load_dataset
from lottery_jax.errors import UserError
from lottery_jax.nets import targets as models
from lottery_jax.paper import resolve_weights
from lottery_jax.results import device_summary
from lottery_jax.rundir import default_run_dir, write_json
from lottery_jax.runs import TrainResult, train_config, train_target
from lottery_jax.training import evaluate as evaluate_model

from .app import DataDirOpt, DatasetName, DatasetOpt, Inputs, SeedOpt, target_parts
from .options import MOMENTUM, NON_NEGATIVE, POSITIVE, POSITIVE_INT, check
from .progress import EpochBar, console, progress_bar

#: The train command group, composed into the ``lottery-jax`` app by ``lottery_jax.cli``.
commands = typer.Typer()


class Schedule(StrEnum):
    epoch = "epoch"
    step = "step"


class ModelName(StrEnum):
    fc2 = "fc2"
    fc4 = "fc4"
    lenet5 = "lenet5"


def train_with_progress(out: Path, config: dict, data, progress: bool) -> TrainResult:
    """:func:`lottery_jax.runs.train_target` with a progress bar (shown once training starts)."""
    bar = EpochBar(progress_bar(progress), config["epochs"])

    def on_chunk(*args) -> None:
        if not bar.bar.live.is_started:
            bar.bar.start()
        bar.on_chunk(*args)

    try:
        return train_target(
            out, config, data, on_chunk=on_chunk, on_epoch=bar.on_epoch, log=console.print,
            command=" ".join(["lottery-jax", *sys.argv[1:]]),
        )  # fmt: skip
    finally:
        if bar.bar.live.is_started:
            bar.bar.stop()


@commands.command()
def train(
    model: Annotated[ModelName, typer.Option(help="Target network.")] = ModelName.fc2,
    epochs: Annotated[int, typer.Option(help="Training epochs (cosine schedule spans them).")] = 10,
    lr: Annotated[
        float | None,
        typer.Option(help="Learning rate \\[default: 0.1 for fc2/fc4, 0.01 for lenet5]"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = 64,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="Weight decay added to the gradient.")] = 5e-4,
    schedule: Annotated[
        Schedule,
        typer.Option(help="Cosine schedule stepped per epoch (published) or per step."),
    ] = Schedule.epoch,
    hidden: Annotated[
        int | None, typer.Option(help="Hidden width \\[default: 500 for fc2/fc4, 120 for lenet5]")
    ] = None,
    bias: Annotated[bool, typer.Option(help="Give every layer a bias.")] = False,
    seed: SeedOpt = 0,
    inputs: Annotated[Inputs, typer.Option(help="Input preprocessing.")] = Inputs.normalized,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory \\[default: runs/train-..., named after the model, hidden "
            "width (when given), epochs and seed, plus a digest of the other settings that "
            "differ from their defaults]"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a target network with the published recipe; writes results.json and model.npz.

    Re-running the same command with the same --out resumes after the last finished epoch.
    """
    check("--epochs", epochs, POSITIVE_INT)
    check("--batch-size", batch_size, POSITIVE_INT)
    check("--lr", lr, POSITIVE)
    check("--momentum", momentum, MOMENTUM)
    check("--weight-decay", weight_decay, NON_NEGATIVE)
    check("--hidden", hidden, POSITIVE_INT)
    config = train_config(
        model=model.value, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
        weight_decay=weight_decay, schedule=schedule.value, hidden=hidden, bias=bias, seed=seed,
        inputs=inputs.value,
        data={"data_dir": str(data_dir) if data_dir else None, "dataset": dataset.value},
    )  # fmt: skip
    out = out or default_out(config)
    res = train_with_progress(
        out,
        config,
        lambda: load_dataset(data_dir, dataset=dataset.value, inputs=inputs.value),
        progress,
    )
    if not res.already_finished:
        console.print(f"wrote {out / 'results.json'} and {res.weights}")


def default_out(config: dict) -> Path:
    """``runs/train-MODEL[-hHIDDEN]-eEPOCHS-seedS`` and, when the other settings of ``config``
    (:func:`lottery_jax.runs.train_config`, the run's fingerprint: --data-dir too) differ from
    their defaults, a digest of them."""
    model, hidden, epochs, seed = (config[k] for k in ("model", "hidden", "epochs", "seed"))
    base = train_config(model=model, epochs=epochs, hidden=hidden, seed=seed,
                        data={"data_dir": None, "dataset": "mnist"})  # fmt: skip
    parts = ["train", model, *([f"h{hidden}"] if hidden is not None else []), f"e{epochs}"]
    return default_run_dir([*parts, f"seed{seed}"], config, base)


def _infer(state: dict, weights: Path) -> str:
    """The network a bare weight file (no metadata) describes (:func:`models.infer_model`)."""
    try:
        return models.infer_model(state, source=str(weights))[0]
    except UserError:
        raise UserError(
            f"{weights}: its arrays fit none of fc2, fc4, lenet5; pass --model"
        ) from None


@commands.command()
def evaluate(
    weights: Annotated[
        Path,
        typer.Option(
            help="Weight file (.npz, PyTorch layout: fc1.weight is (out, in)), or a network built "
            "in: paper-fc2 (the paper's Experiment 1 target), paper-lenet5 (its trained LeNet5)."
        ),
    ],
    model: Annotated[
        ModelName | None,
        typer.Option(help="Network \\[default: from the file's metadata, else its array shapes]"),
    ] = None,
    inputs: Annotated[
        Inputs | None,
        typer.Option(help="Input preprocessing \\[default: the file's, else normalized]"),
    ] = None,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory \\[default: runs/evaluate-NAME (a built-in network's name, "
            "a file's stem), plus a digest of the file's bytes and of the options given]"
        ),
    ] = None,
) -> None:
    """Test accuracy of a weight file, or of the paper's own networks (--weights paper-fc2)."""
    label, settings = target_parts(weights)
    settings |= {"model": model, "inputs": inputs, "dataset": dataset.value}
    out = out or default_run_dir(["evaluate", label], settings, {"model": None, "inputs": None,
                                                                  "dataset": "mnist"})  # fmt: skip
    weights = resolve_weights(weights)
    state, meta = checkpoint.load_weights(weights)
    name = model.value if model is not None else meta.get("model") or _infer(state, weights)
    net = models.model_from_state(name, state, source=str(weights))
    inputs = Inputs(inputs or meta.get("inputs") or Inputs.normalized)
    data = load_dataset(data_dir, dataset=dataset.value, inputs=inputs.value)
    t0 = time.perf_counter()
    acc = evaluate_model(net, data.test_images, data.test_labels)
    config = {"model": name, "weights": str(weights), "inputs": inputs.value,
              "data_dir": str(data_dir) if data_dir else None, "dataset": dataset.value,
              "weights_meta": meta}  # fmt: skip
    path = _write_evaluation(out, config, meta, net, acc, int(data.test_images.shape[0]),
                             time.perf_counter() - t0)  # fmt: skip
    typer.echo(f"test accuracy {acc:.2f}% ({name}, {inputs.value} inputs); wrote {path}")


def _write_evaluation(out: Path, config: dict, meta: dict, net, acc: float, examples: int,
                      seconds: float) -> Path:  # fmt: skip
    """``OUT/results.json`` of an evaluation (returns its path)."""
    return write_json(
        out / "results.json",
        {
            "command": "evaluate",
            "config": config,
            "seed": meta.get("seed"),
            "device": device_summary(),
            "test_accuracy": acc,
            "final_test_accuracy": acc,
            "test_examples": examples,
            "epoch_seconds": [],
            "compile_seconds": seconds,
            "trainable_params": models.count_params(net),
        },
    )
