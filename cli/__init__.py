"""``lottery-jax`` command line: one line of error, never a traceback, for bad input."""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading

import typer.main
from typer import Abort, Exit
from typer.exceptions import TyperException

from lottery_jax import download
from lottery_jax.errors import UserError

from . import approximate, compare, construct, data, prune, study, train
from .app import app, readable_help

# Each command group is its own typer.Typer(), composed here (commands merge into the top level;
# ``data`` is a named group: ``lottery-jax data fetch``).
for _group in (approximate, compare, construct, data, prune, study, train):
    app.add_typer(_group.commands)

__all__ = ["app", "main"]


def _one_line_summaries(typer_app) -> None:
    """Help text without the docstrings' hard line breaks (Typer's rich help keeps them, so they
    wrap badly): each paragraph is one line that the terminal wraps; the command list shows the
    first paragraph."""
    import inspect

    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if not doc:
            continue
        paragraphs = [" ".join(par.split()) for par in inspect.cleandoc(doc).split("\n\n")]
        info.help = "\n\n".join(paragraphs)
        if info.short_help is None:
            info.short_help = paragraphs[0]
    for group in typer_app.registered_groups:
        _one_line_summaries(group.typer_instance)


_one_line_summaries(app)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is: unwinds like Ctrl-C (locks released, the last
    commit intact), then exits 143."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM like SIGINT while a command runs (restoring the previous handler after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        _TERMINATED.set()  # (Typer turns the interrupt into Exit(130): this tells them apart)
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_TERMINATED = threading.Event()
#: No space (or quota) left: the commit in progress was abandoned, the previous one is intact.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_RESUME = "run the same command again to resume"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Returns (and exits with) the command's status."""
    _TERMINATED.clear()
    try:
        return _main(argv)
    finally:
        if _TERMINATED.is_set():  # (whatever the interrupt became on its way out)
            _TERMINATED.clear()
            print(f"error: terminated (SIGTERM); {_RESUME}", file=sys.stderr)
            sys.exit(143)


def _main(argv: list[str] | None) -> int:
    try:
        # Without standalone mode Typer returns the code of an Exit (130 for Ctrl-C) instead of
        # exiting, and raises usage errors for us to print on one line.
        with _sigterm_as_interrupt(), download.reporting(data.DownloadBar()):  # (bar: downloads)
            command = readable_help(typer.main.get_command(app))
            status = command.main(args=argv, standalone_mode=False, prog_name="lottery-jax")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exit as e:
        sys.exit(e.exit_code)  # (130 after SIGTERM: main makes it 143)
    except TyperException as e:  # usage errors: bad option value, unknown option, ...
        message = e.format_message()
        if message:  # (no arguments at all: the help was printed)
            print(f"error: {message}", file=sys.stderr)
        sys.exit(e.exit_code or 2)
    except _Terminated:
        sys.exit(143)  # (main prints the line)
    except Abort:
        if not _TERMINATED.is_set():
            print(f"error: interrupted; {_RESUME}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        status = 130
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or 'no space left on device'}{where}: the last commit is "
              f"intact; free some space and {_RESUME}", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    if status == 130 and not _TERMINATED.is_set():
        print(f"error: interrupted; {_RESUME}", file=sys.stderr)
    if isinstance(status, int) and status != 0:
        sys.exit(status)
    return 0
