"""``train`` and ``evaluate``: the paper's target networks."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from flax import nnx
from rich.console import Console

from lottery_jax import checkpoint
from lottery_jax.data import load_dataset
from lottery_jax.errors import UserError
from lottery_jax.nets import targets as models
from lottery_jax.paper import resolve_weights
from lottery_jax.results import device_summary, ensure_dir, write_json_atomic
from lottery_jax.training import DEFAULT_LR, fit, make_optimizer, steps_per_epoch
from lottery_jax.training import evaluate as evaluate_model

from .app import DataDirOpt, DatasetName, DatasetOpt, Inputs, SeedOpt, app
from .progress import EpochBar, progress_bar

console = Console(stderr=True)


class Schedule(StrEnum):
    epoch = "epoch"
    step = "step"


class ModelName(StrEnum):
    fc2 = "fc2"
    fc4 = "fc4"
    lenet5 = "lenet5"


def _check_positive(name: str, value: float | int) -> None:
    if value <= 0:
        raise UserError(f"{name} must be positive, got {value}")


def _history_results(config: dict, history: dict, compile_seconds: float) -> dict[str, Any]:
    accs = history["test_accuracy"]
    return {
        "command": "train",
        "config": config,
        "seed": config["seed"],
        "device": device_summary(),
        "epochs_done": len(accs),
        "test_accuracy": accs,
        "final_test_accuracy": accs[-1] if accs else None,
        "train_loss": history["train_loss"],
        "epoch_seconds": history["epoch_seconds"],
        "compile_seconds": compile_seconds,
        "trainable_params": config["trainable_params"],
        "frozen_params": config["frozen_params"],
    }


@app.command()
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
        Path | None, typer.Option(help="Output directory \\[default: runs/train-MODEL-seedS]")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a target network with the published recipe; writes results.json and model.npz.

    Re-running the same command with the same --out resumes after the last finished epoch.
    """
    _check_positive("--epochs", epochs)
    _check_positive("--batch-size", batch_size)
    lr = DEFAULT_LR[model.value] if lr is None else lr
    _check_positive("--lr", lr)
    out = ensure_dir(out or Path("runs") / f"train-{model.value}-seed{seed}")
    net = models.build_model(model.value, seed=seed, hidden=hidden, bias=bias)
    config = {
        "model": model.value,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "schedule": schedule.value,
        "hidden": hidden,
        "bias": bias,
        "seed": seed,
        "inputs": inputs.value,
        "data_dir": str(data_dir) if data_dir else None,
        "dataset": dataset.value,
        "trainable_params": models.count_params(net),
        "frozen_params": models.count_params(net, models.Frozen),
    }
    data = load_dataset(data_dir, dataset=dataset.value, inputs=inputs.value)

    weights_path, resume_path = out / "model.npz", out / "resume.npz"
    start_epoch, opt_state = 0, None
    past: dict[str, list] = {"test_accuracy": [], "epoch_seconds": [], "train_loss": []}
    if resume_path.exists():
        spe = steps_per_epoch(int(data.train_images.shape[0]), batch_size)
        like = make_optimizer(lr, epochs, spe, momentum, weight_decay, schedule.value).init(
            nnx.state(net, nnx.Param)
        )
        opt_state, start_epoch, meta, state = checkpoint.load_resume(resume_path, like, config)
        models.load_torch_state(net, state, source=str(resume_path))
        past = meta["history"]
        console.print(f"resuming {out} after epoch {start_epoch}/{epochs}")
    if start_epoch >= epochs:
        console.print(f"{out} is already finished: {out / 'results.json'}")
        return

    def on_epoch(epoch: int, history: dict, net_now: Any, opt_now: Any) -> None:
        # The resume record holds the weights it belongs to and is written first, atomically:
        # an interrupt anywhere leaves a consistent state to resume from exactly.
        hist = {k: past[k] + history[k] for k in past}
        state = models.torch_state(net_now)
        meta = {"config": config, "history": hist}
        checkpoint.save_resume(resume_path, opt_now, epoch + 1, meta, weights=state)
        checkpoint.save_weights(weights_path, model.value, state, config)
        write_json_atomic(
            out / "results.json", _history_results(config, hist, history["compile_seconds"])
        )

    bar = EpochBar(progress_bar(progress), epochs)

    def on_epoch_all(epoch: int, history: dict, net_now: Any, opt_now: Any) -> None:
        on_epoch(epoch, history, net_now, opt_now)
        bar.on_epoch(epoch, history)

    with bar.bar:
        fit(
            net,
            data,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            momentum=momentum,
            weight_decay=weight_decay,
            schedule=schedule.value,
            start_epoch=start_epoch,
            opt_state=opt_state,
            on_chunk=bar.on_chunk,
            on_epoch=on_epoch_all,
        )
    console.print(f"wrote {out / 'results.json'} and {weights_path}")


@app.command()
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
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/evaluate"),
) -> None:
    """Test accuracy of a weight file, or of the paper's own networks (--weights paper-fc2)."""
    weights = resolve_weights(weights)
    state, meta = checkpoint.load_weights(weights)
    name = model.value if model is not None else meta.get("model") or checkpoint.infer_model(state)
    if name is None:
        raise UserError(f"{weights}: its arrays fit none of fc2, fc4, lenet5; pass --model")
    net = models.model_from_state(name, state, source=str(weights))
    inputs = Inputs(inputs or meta.get("inputs") or Inputs.normalized)
    data = load_dataset(data_dir, dataset=dataset.value, inputs=inputs.value)
    t0 = time.perf_counter()
    acc = evaluate_model(net, data.test_images, data.test_labels)
    seconds = time.perf_counter() - t0
    config = {
        "model": name,
        "weights": str(weights),
        "inputs": inputs.value,
        "data_dir": str(data_dir) if data_dir else None,
        "dataset": dataset.value,
        "weights_meta": meta,
    }
    write_json_atomic(
        out / "results.json",
        {
            "command": "evaluate",
            "config": config,
            "seed": meta.get("seed"),
            "device": device_summary(),
            "test_accuracy": acc,
            "final_test_accuracy": acc,
            "test_examples": int(data.test_images.shape[0]),
            "epoch_seconds": [],
            "compile_seconds": seconds,
            "trainable_params": models.count_params(net),
        },
    )
    typer.echo(f"test accuracy {acc:.2f}% ({name}, {inputs.value} inputs)")
