"""``data fetch`` and ``data info``: the datasets the tool downloads, verifies and caches itself.

Also the progress bar every command shows while a dataset downloads: :class:`DownloadBar` receives
the library's :class:`lottery_jax.download.DownloadEvent` s (``main`` installs it for every command).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lottery_jax import download

from .app import DatasetName
from .progress import console

commands = typer.Typer(
    name="data",
    help="Download datasets ahead of time and show where they are and whether they verify.",
    no_args_is_help=True,
)


class DownloadBar:
    """Draws :class:`~lottery_jax.download.DownloadEvent` s: one bar per file while it downloads,
    one line per mirror that failed. The bar starts with the first download and stops at the end
    of the fetch, so nothing is drawn when the data is already cached."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def _bar(self) -> Progress:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=not self.enabled,
            )
            self.progress.start()
        return self.progress

    def __call__(self, event: download.DownloadEvent) -> None:
        key = f"{event.dataset}/{event.file}"
        if event.kind == "start":
            bar = self._bar()
            if key in self.tasks:  # (a retry from the next mirror)
                bar.reset(self.tasks[key], total=event.total)
            else:
                self.tasks[key] = bar.add_task(key, total=event.total)
        elif event.kind == "progress" and key in self.tasks:
            self._bar().update(self.tasks[key], completed=event.done, total=event.total)
        elif event.kind == "done" and key in self.tasks:
            self._bar().update(self.tasks[key], completed=event.done, total=event.done)
        elif event.kind == "failed":
            console.print(f"[yellow]{event.url}[/]: {event.message}", highlight=False)
        elif event.kind == "end" and self.progress is not None:
            self.progress.stop()
            self.progress, self.tasks = None, {}


def _names(dataset: DatasetName | None) -> list[str]:
    return [dataset.value] if dataset is not None else list(download.DATASETS)


@commands.command()
def fetch(
    dataset: Annotated[
        DatasetName | None,
        typer.Option("--dataset", help="Dataset to fetch \\[default: every built-in one]"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Delete the cached copy first and download it again.")
    ] = False,
) -> None:
    """Download datasets into the cache (LOTTERY_JAX_CACHE) and verify their checksums."""
    for name in _names(dataset):
        if force:
            download.remove_dataset(name)
        directory = download.fetch_dataset(name)
        typer.echo(f"{name}: verified in {directory}")


@commands.command()
def info(
    dataset: Annotated[
        DatasetName | None,
        typer.Option("--dataset", help="Dataset to show \\[default: every built-in one]"),
    ] = None,
) -> None:
    """Where each dataset's files are (or would be) and whether they verify; no download."""
    from lottery_jax.data import tfds_source

    typer.echo(f"cache: {download.cache_root()} (set {download.ENV_CACHE} to move it)")
    data_env = os.environ.get("LOTTERY_JAX_DATA")
    if data_env:
        typer.echo(f"LOTTERY_JAX_DATA={data_env}: commands read that directory, not these")
    mirror_env = os.environ.get(download.ENV_MIRROR)
    if mirror_env:
        typer.echo(f"{download.ENV_MIRROR}={mirror_env}: replaces the built-in mirrors")
    missing = False
    for name in _names(dataset):
        spec = download.dataset_spec(name)
        statuses = download.dataset_status(name)
        ok = sum(st.verified for st in statuses)
        missing |= ok < len(statuses)
        typer.echo(f"{name}: {download.dataset_dir(name)} ({ok} of {len(statuses)} files verified)")
        for st in statuses:
            typer.echo(f"  {st.stem:<25} {'verified' if st.verified else st.reason}")
        checks = (
            "decompressed files" if spec.files[0].hash_of == "raw" else ".gz files as published"
        )
        typer.echo(f"  checked by: sha256 of the {checks}")
        typer.echo(f"  mirrors: {' '.join(download.mirrors_for(spec))}")
        typer.echo(f"  licence: {spec.licence}")
        if tfds_source(name, "test", None) is not None:
            typer.echo(
                "  a tensorflow-datasets copy is prepared: commands read it before the cache"
            )
    if missing:
        typer.echo("fetch what is missing with `lottery-jax data fetch` (or pass --data-dir DIR)")
