"""The one progress-bar builder of the command line (the library reports through callbacks)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: Status lines and progress bars go to stderr; results tables to stdout.
console = Console(stderr=True)


class _Info(ProgressColumn):
    """A task's ``info`` field (loss, accuracy...), empty for tasks added without one."""

    def render(self, task) -> Text:
        return Text(str(task.fields.get("info", "")))


def progress_bar(enabled: bool = True, *, elapsed: bool = False) -> Progress:
    """The command line's progress bar: description, bar, done/total, the task's ``info`` field
    (``bar.add_task(desc, total=n, info="...")``, optional), time elapsed (with ``elapsed``) and
    time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Info(),
        *((TimeElapsedColumn(),) if elapsed else ()),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


class EpochBar:
    """Callbacks for :func:`lottery_jax.training.fit`: one bar per epoch, loss and test accuracy
    (``epoch`` counts from 1, as the library reports it)."""

    def __init__(self, bar: Progress, epochs: int):
        self.bar, self.epochs, self.task = bar, epochs, None

    def on_chunk(self, epoch: int, done: int, total: int, loss: float) -> None:
        if self.task is None:
            self.task = self.bar.add_task(f"epoch {epoch}/{self.epochs}", total=total, info="")
        self.bar.update(self.task, completed=done, info=f"loss {loss:.4f}")

    def on_epoch(self, epoch: int, history) -> None:
        """``history``: the record so far (a TrainRecord, or anything with these two series)."""
        if self.task is not None:
            loss, acc = history.train_loss[-1], history.test_accuracy[-1]
            self.bar.update(self.task, info=f"loss {loss:.4f}  test {acc:.2f}%")
        self.task = None
