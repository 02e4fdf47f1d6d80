"""``prune``, ``sweep``, ``plot``, ``evaluate-ticket``, ``export-ticket``: Experiment 2."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from lottery_jax import checkpoint, pruning
from lottery_jax.data import load_dataset
from lottery_jax.errors import UserError
from lottery_jax.nets.pruned import PRUNE_MODELS
from lottery_jax.nets.supermask import METHODS
from lottery_jax.pruning import sweep
from lottery_jax.pruning.batched import MEMBER_MODES
from lottery_jax.results import device_summary
from lottery_jax.rundir import default_run_dir, prepare_dir, write_json

from .app import (
    CoordinatorOpt,
    DataDirOpt,
    DatasetName,
    DatasetOpt,
    DistributedOpt,
    NumProcessesOpt,
    ProcessIdOpt,
    start_processes,
)
from .options import (
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    SPARSITY,
    check,
    parse_floats,
    parse_ints,
    parse_names,
)
from .progress import console, progress_bar

SparsityOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sparsity",
        help="Fraction of weights REMOVED per tensor, in [0, 1); repeat or comma-separate for "
        "several runs trained together \\[default: 0.5]",
    ),
]
SeedsOpt = Annotated[
    list[str] | None,
    typer.Option("--seed", help="Seed(s) of the random weights and scores \\[default: 0]"),
]
RedundancyOpt = Annotated[int, typer.Option(help="Redundancy r of the redundant layers.")]
LrOpt = Annotated[
    float | None, typer.Option(help="Learning rate \\[default: 0.1 fc nets, 0.01 LeNet5]")
]
# Choices listed in --help, kept in step with the library's names.
PruneModel = StrEnum("PruneModel", {m.replace("-", "_"): m for m in PRUNE_MODELS})
Family = StrEnum("Family", {f: f for f in sweep.FAMILIES})
MaskMethod = StrEnum("MaskMethod", {m: m for m in METHODS})
Aggregate = StrEnum("Aggregate", {a: a for a in ("mean", "best")})
Members = StrEnum("Members", {m: m for m in MEMBER_MODES})
MaskOpt = Annotated[
    MaskMethod, typer.Option(help="Exact top-k selection (auto picks by device and tensor size).")
]
MembersOpt = Annotated[
    Members, typer.Option(help="Batched runs: auto, unroll (CPU) or vmap (accelerators).")
]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar.")]
MaxHoursOpt = Annotated[
    float,
    typer.Option(help="Refuse up front work estimated to take longer than this many hours."),
]

#: The prune command group, composed into the ``lottery-jax`` app by ``lottery_jax.cli``.
commands = typer.Typer()


class _Bar:
    """Rich progress for batched runs (steps of each epoch; accuracies after each epoch)."""

    def __init__(self, enabled: bool, epochs: int):
        self.progress = progress_bar(enabled)
        self.epochs = epochs
        self.enabled = enabled
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_chunk(self, epoch, done, total, loss):
        if self.task is None or done <= 100 and epoch != getattr(self, "_epoch", None):
            self._epoch = epoch
            self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=total,
                                               info="")  # fmt: skip
        mean = float(sum(loss) / len(loss))
        self.progress.update(self.task, completed=done, info=f"mean loss {mean:.4f}")

    def on_epoch(self, epoch, accs, seconds):
        best = max(accs)
        if not self.enabled:  # one line per epoch for logs
            console.print(f"epoch {epoch}/{self.epochs}: test accuracy "
                          f"{', '.join(f'{a:.2f}' for a in accs)}% ({seconds:.1f}s)")  # fmt: skip
        if self.task is not None:
            self.progress.update(
                self.task, info=f"test {min(accs):.2f}..{best:.2f}%  {seconds:.1f}s"
            )
        self.task = None
        self._epoch = None


def _conv_source(conv_from: Path | None) -> Path | None:
    """``--conv-from paper`` names the paper's trained LeNet5 (built in: ``paper-lenet5``)."""
    if conv_from is not None and str(conv_from) in ("paper", "paper-lenet5"):
        return Path("paper-lenet5")
    return conv_from


def _load_conv(conv_from: Path | None, model: str):
    if conv_from is None:
        return None
    if not model.endswith("lenet5"):
        raise UserError("--conv-from applies to the LeNet5 variants only")
    return pruning.load_conv_checkpoint(conv_from)


@commands.command()
def prune(
    model: Annotated[
        PruneModel, typer.Option(help="Redundant (red-) or wide network to prune.")
    ] = PruneModel.red_fc2,
    redundancy: RedundancyOpt = 5,
    sparsity: SparsityOpt = None,
    relu: Annotated[bool, typer.Option(help="The extra ReLU inside the redundant layers.")] = False,
    epochs: Annotated[int, typer.Option(help="Epochs (0: build, count and evaluate only).")] = 30,
    lr: LrOpt = None,
    seed: SeedsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = 64,
    conv_from: Annotated[
        Path | None,
        typer.Option(
            help="Frozen conv weights of the LeNet5 variants: paper (the paper's trained LeNet5, "
            "as in the published runs) or a LeNet5 weight file (from `train`). Without it they "
            "are random."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Results directory, one folder per run (named after the model, redundancy, "
            "epochs, sparsity and seed) \\[default: runs/prune, plus a digest of the other "
            "settings (lr, batch size, conv weights, data) when they differ from their defaults]"
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run runs that are already finished.")] = False,
    mask_method: MaskOpt = MaskMethod.auto,
    members: MembersOpt = Members.auto,
    max_hours: MaxHoursOpt = 24.0,
    progress: ProgressOpt = True,
    coordinator: CoordinatorOpt = None,
    num_processes: NumProcessesOpt = None,
    process_id: ProcessIdOpt = None,
    distributed: DistributedOpt = None,
) -> None:
    """Prune a random network (train only its supermask scores); several sparsities and seeds
    train together in one compiled program. Writes OUT/<run>/results.json and ticket.npz."""
    model, mask_method, members = model.value, mask_method.value, members.value
    conv_from = _conv_source(conv_from)
    if conv_from is None and model.endswith("lenet5"):
        console.print(
            f"warning: {model} without --conv-from has random conv layers (the published runs "
            "use the paper's trained LeNet5: --conv-from paper)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    pruning.parse_model(model)
    sparsities = parse_floats(sparsity, "--sparsity", SPARSITY) or [0.5]
    seeds = parse_ints(seed, "--seed", SEED) or [0]
    check("--redundancy", redundancy, POSITIVE_INT)
    check("--max-hours", max_hours, POSITIVE)
    check("--epochs", epochs, NON_NEGATIVE_INT)
    check("--lr", lr, POSITIVE)
    check("--batch-size", batch_size, POSITIVE_INT)
    procs = start_processes(coordinator, num_processes, process_id, distributed)
    pruning.member_mode(members)
    cfg = pruning.PruneConfig(
        model=model, redundancy=redundancy, relu=relu, epochs=epochs, lr=lr,
        batch_size=batch_size, method=mask_method,
        conv_from=str(conv_from) if conv_from else None,
    )  # fmt: skip
    out = out or default_out(cfg, dataset.value)
    prepare_dir(out)  # (a bad --out is an error before any work)
    conv_state = _load_conv(conv_from, model)
    data = load_dataset(data_dir, dataset=dataset.value, inputs="normalized")
    with _Bar(progress, epochs) as bar:
        results = sweep.run_prune(
            cfg, seeds, sparsities, data, out, conv_state=conv_state, force=force,
            mode=members, processes=procs, max_hours=max_hours, on_chunk=bar.on_chunk,
            on_epoch=bar.on_epoch, log=console.print,
        )  # fmt: skip
    if procs.index == 0:  # (process 0 reports every run)
        _report_runs(results, out)


def default_out(cfg: pruning.PruneConfig, dataset: str) -> Path:
    """``runs/prune`` and, when the settings a run folder's name leaves out (lr, batch size, mask
    method, conv weights, dataset) differ from their defaults, a digest of them: a run of other
    settings never replaces one of the defaults' (or another's) in its folder."""
    named = ("model", "redundancy", "relu", "epochs", "sizes")
    base = pruning.PruneConfig(**{k: getattr(cfg, k) for k in named})
    return default_run_dir(["prune"], {**cfg.as_dict(), "dataset": dataset},
                           {**base.as_dict(), "dataset": "mnist"})  # fmt: skip


def _report_runs(results: list[dict], out: Path) -> None:
    """One line per run (accuracy, parameters kept) and where they are."""
    for r in results:
        typer.echo(
            f"{r['name']}: {r['final_test_accuracy']:.2f}% test, "
            f"{r['remaining_params']:,} of {r['total_params']:,} parameters"
        )
    typer.echo(f"each run's results.json and ticket.npz are in its folder in {out}; draw them "
               f"with `lottery-jax plot {out}`")  # fmt: skip


@commands.command(name="sweep")
def sweep_cmd(
    family: Annotated[Family, typer.Option(help="Model family.")] = Family.fc2,
    epochs: Annotated[
        list[str] | None, typer.Option(help="Epoch budgets \\[default: 30,50,100,125,150]")
    ] = None,
    sparsity: Annotated[
        list[str] | None, typer.Option(help="Sparsities \\[default: the published 14]")
    ] = None,
    variants: Annotated[
        list[str] | None,
        typer.Option(help="red-linear, red-relu, wide \\[default: all three]"),
    ] = None,
    redundancy: RedundancyOpt = 5,
    seed: SeedsOpt = None,
    baseline: Annotated[bool, typer.Option(help="Also train the baseline net.")] = True,
    conv_from: Annotated[
        Path | None,
        typer.Option(
            help="LeNet5 conv weights: paper (the paper's trained LeNet5, as in the published "
            "runs), baseline (the baseline trained in this sweep) or a weight file \\[default: "
            "paper for lenet5]"
        ),
    ] = None,
    lr: LrOpt = None,
    max_members: Annotated[
        int | None,
        typer.Option(
            help="Runs per compiled program [default: by family and backend, "
            "lottery_jax.pruning.grouping]."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("runs/sweep"),
    mask_method: MaskOpt = MaskMethod.auto,
    members: MembersOpt = Members.auto,
    max_hours: MaxHoursOpt = 24.0,
    progress: ProgressOpt = True,
    coordinator: CoordinatorOpt = None,
    num_processes: NumProcessesOpt = None,
    process_id: ProcessIdOpt = None,
    distributed: DistributedOpt = None,
) -> None:
    """Run the published grid (or a sub-grid) for one family; finished runs are skipped, so the
    same command resumes after an interruption."""
    family, mask_method, members = family.value, mask_method.value, members.value
    if conv_from is None and family == "lenet5":
        conv_from = Path("paper-lenet5")  # as the published scripts: the paper's trained LeNet5
    elif conv_from is not None and str(conv_from) == "baseline":
        conv_from = None  # (the library takes the convs of the baseline it trains)
    else:
        conv_from = _conv_source(conv_from)
    eps = parse_ints(epochs, "--epochs", POSITIVE_INT) or list(pruning.PUBLISHED_EPOCHS)
    sps = parse_floats(sparsity, "--sparsity", SPARSITY) or list(pruning.PUBLISHED_SPARSITIES)
    vs = parse_names(variants, "--variants") or list(sweep.VARIANTS)
    seeds = parse_ints(seed, "--seed", SEED) or [0]
    check("--max-members", max_members, POSITIVE_INT)
    check("--max-hours", max_hours, POSITIVE)
    check("--redundancy", redundancy, POSITIVE_INT)
    check("--lr", lr, POSITIVE)
    if conv_from is not None and family != "lenet5":
        raise UserError("--conv-from applies to the lenet5 family only")
    procs = start_processes(coordinator, num_processes, process_id, distributed)
    pruning.member_mode(members)
    base = pruning.PruneConfig(model=f"red-{family}", lr=lr, method=mask_method)
    prepare_dir(out)  # (a bad --out is an error before any work)
    data = load_dataset(data_dir, dataset=dataset.value, inputs="normalized")
    with _Bar(progress, max(eps)) as bar:
        counts = sweep.run_sweep(
            family, epochs=eps, sparsities=sps, variants=vs, seeds=seeds, data=data, out=out,
            base=base, redundancy=redundancy, baseline=baseline, conv_from=conv_from,
            max_members=max_members, mode=members, processes=procs, max_hours=max_hours,
            on_chunk=bar.on_chunk, on_epoch=bar.on_epoch, log=console.print,
        )  # fmt: skip
    if procs.count > 1:
        console.print(f"{procs.describe()}: trained {counts['trained']} run(s)")
    if procs.index == 0:
        typer.echo(
            f"{counts['runs']} pruning runs and {counts['baselines']} baseline(s) in {out}; "
            f"draw them with `lottery-jax plot {out}`"
        )


@commands.command()
def plot(
    results_dir: Annotated[Path, typer.Argument(help="Directory holding results.json files.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the figures \\[default: RESULTS_DIR]")
    ] = None,
    title: Annotated[str, typer.Option(help="Figure title.")] = "",
    epochs: Annotated[
        list[str] | None, typer.Option(help="Only these epoch budgets (repeat or comma-separate).")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Only these families: fc2, fc4, lenet5.")
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(help="Only these curves: red-linear, red-relu, wide, baseline."),
    ] = None,
    labels: Annotated[bool, typer.Option(help="Label the points' sparsities (top axis).")] = True,
    published: Annotated[
        bool, typer.Option(help="Overlay the published runs (hollow markers, same colours).")
    ] = False,
    aggregate: Annotated[
        Aggregate,
        typer.Option(
            help="mean: mean ± std over seeds per budget; best: per sparsity the best "
            "over the budgets present (the published figures' rule)."
        ),
    ] = Aggregate.mean,
    xscale: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="log: remaining parameters on a log axis; linear: as the published figures "
            "draw them.",
        ),
    ] = "log",
) -> None:
    """Final test accuracy vs remaining parameters per family: PNG and PDF in a directory, or
    one file by its extension (--out fig.pdf)."""
    from lottery_jax.plotting import PLOT_VARIANTS, plot_results

    results = sweep.collect_results(results_dir)
    paths = plot_results(
        results, out or results_dir, title=title,
        epochs=parse_ints(epochs, "--epochs", POSITIVE_INT) or None,
        families=parse_names(model, "--model", sweep.FAMILIES) or None,
        variants=parse_names(variant, "--variant", PLOT_VARIANTS) or None,
        label_sparsity=labels, published=published, aggregate=aggregate.value,
        xscale=xscale,
    )  # fmt: skip
    for path in paths:
        typer.echo(f"wrote {path}")


@commands.command(name="evaluate-ticket")
def evaluate_ticket(
    ticket: Annotated[Path, typer.Argument(help="ticket.npz written by prune/sweep.")],
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    out: Annotated[Path | None, typer.Option(help="Write results.json here.")] = None,
) -> None:
    """Rebuild a pruned network from its ticket (seed + masks) and measure its test accuracy on
    the inputs the ticket records (construct's: its target's; prune's: normalized)."""
    t = pruning.load_ticket(ticket)
    net = pruning.net_from_ticket(t)
    inputs = t.meta.get("inputs") or "normalized"  # (prune's tickets: normalized)
    data = load_dataset(data_dir, dataset=dataset.value, inputs=inputs)
    acc = pruning.net_accuracy(net, data.test_images, data.test_labels)
    saved = saved_accuracy(t.meta)
    wrote = ""
    if out is not None:
        path = write_json(
            out / "results.json",
            {"command": "evaluate-ticket", "ticket": str(ticket), "config": t.config,
             "seed": t.seed, "sparsity": t.sparsity, "inputs": inputs, "final_test_accuracy": acc,
             "saved_test_accuracy": saved, "device": device_summary()},
        )  # fmt: skip
        wrote = f"; wrote {path}"
    same = "" if saved is None else " (same as saved)" if saved == acc else f" (saved {saved:.2f}%)"
    typer.echo(f"test accuracy {acc:.2f}%{same}{wrote}")


def saved_accuracy(meta: dict) -> float | None:
    """The test accuracy a ticket's metadata records, when it is a finite number (a hand-made or
    hostile ticket may hold anything there: then None, and nothing is compared)."""
    saved = meta.get("test_accuracy")
    if isinstance(saved, bool) or not isinstance(saved, int | float) or not math.isfinite(saved):
        return None
    return float(saved)


@commands.command(name="export-ticket")
def export_ticket(
    ticket: Annotated[Path, typer.Argument(help="ticket.npz written by prune/sweep.")],
    out: Annotated[Path, typer.Option(help="Dense weight file to write (.npz).")],
) -> None:
    """Write the ticket's effective dense network (a linear redundant layer collapses into one
    (out, in) matrix) as a PyTorch-layout weight file for `lottery-jax evaluate --weights`."""
    t = pruning.load_ticket(ticket)
    net = pruning.net_from_ticket(t)
    path = pruning.export_dense(
        net, out, {"ticket": str(ticket), "seed": t.seed, "sparsity": t.sparsity,
                   "pruned_model": t.config["model"], "inputs": t.meta.get("inputs") or "normalized"},
    )  # fmt: skip
    state, meta = checkpoint.load_weights(path)
    typer.echo(
        f"wrote {path}: the dense {meta.get('model')} network (hidden width "
        f"{state['fc1.weight'].shape[0]}) of the {t.config['model']} ticket {ticket}, seed "
        f"{t.seed}, sparsity {t.sparsity:g}; score it with `lottery-jax evaluate --weights {path}`"
    )
