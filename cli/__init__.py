"""``lottery-jax`` command line: one line of error, never a traceback, for bad input."""

from __future__ import annotations

import sys

from typer import Abort, Exit
from typer.exceptions import TyperException

from lottery_jax import download
from lottery_jax.errors import UserError

# Importing a command module registers its commands on ``app``.
from . import approximate as _approximate  # noqa: E402,F401
from . import construct as _construct  # noqa: E402,F401
from . import data as _data  # noqa: E402,F401
from . import prune as _prune  # noqa: E402,F401
from . import study as _study  # noqa: E402,F401
from . import train as _train  # noqa: E402,F401,I001
from .app import app

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


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Returns (and exits with) the command's status."""
    try:
        # Without standalone mode Typer returns the code of an Exit (130 for Ctrl-C) instead of
        # exiting, and raises usage errors for us to print on one line.
        with download.reporting(_data.DownloadBar()):  # a bar whenever a dataset downloads
            status = app(args=argv, standalone_mode=False, prog_name="lottery-jax")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exit as e:
        sys.exit(e.exit_code)
    except TyperException as e:  # usage errors: bad option value, unknown option, ...
        message = e.format_message()
        if message:  # (no arguments at all: the help was printed)
            print(f"error: {message}", file=sys.stderr)
        sys.exit(e.exit_code or 2)
    except Abort:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        status = 130
    if status == 130:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
    if isinstance(status, int) and status != 0:
        sys.exit(status)
    return 0
