"""Helpers shared by the test modules (imported, not fixtures): running the CLI in-process."""

from __future__ import annotations


def _exit_status(e: SystemExit) -> int:
    """As the shell sees it: None is 0, an int itself, anything else (a message) 1."""
    return 0 if e.code is None else e.code if isinstance(e.code, int) else 1


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``lottery-jax *argv`` in-process: (exit code, stdout, stderr)."""
    from lottery_jax.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = _exit_status(e)
    out, err = capsys.readouterr()
    return code, out, err


def cli_code(args) -> int:
    """Run ``lottery-jax *args`` in-process and return only its exit code (output stays in capsys)."""
    from lottery_jax.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return _exit_status(e)


def assert_one_line_error(code: int, err: str, *needles: str, only: bool = True) -> None:
    """A non-zero exit with one ``error: ...`` line on stderr that names every needle; with
    ``only`` (the default) that line is all of stderr (no log lines before it)."""
    assert code != 0
    assert "Traceback" not in err
    if only:
        assert err.startswith("error: "), err
        assert err.count("\n") == 1 and err.endswith("\n"), err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
