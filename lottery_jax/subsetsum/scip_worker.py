"""A SCIP worker process: ``python -P .../lottery_jax/subsetsum/scip_worker.py PARENT_PID`` (or
``python -m lottery_jax.subsetsum.scip_worker PARENT_PID``).

Reads one JSON task per line on stdin (the fields of :class:`~lottery_jax.subsetsum.scip.MipTask`
under ``task``, with an ``id``), answers one JSON line per task (``id`` and the fields of
:class:`~lottery_jax.subsetsum.scip.MipResult` under ``result``, or ``error``) and exits at end of
input. Started by :class:`~lottery_jax.subsetsum.scip.ScipPool`; not meant to be run by hand.

It ignores SIGINT (the parent decides what Ctrl-C means and kills its workers), dies with its
parent (Linux), and points file descriptor 1 at /dev/null so that nothing SCIP prints can mix with
the answers (they go to a private duplicate of the original stdout). Run by path it loads only
``scip.py`` (numpy and pyscipopt), not the ``lottery_jax`` package and JAX: it starts in a
fraction of the time and memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _scip_module():
    """``lottery_jax.subsetsum.scip``: imported as usual inside the package, else loaded from the
    file beside this one without importing the package (and JAX)."""
    if __package__:
        from lottery_jax.subsetsum import scip

        return scip
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("scip.py")
    spec = importlib.util.spec_from_file_location("_lottery_jax_scip", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(argv[0]) if argv else 0)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdout = sys.stderr

    from dataclasses import asdict

    scip = _scip_module()
    MipTask, solve_task = scip.MipTask, scip.solve_task
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        try:
            task = msg["task"]
            task["coefs"] = tuple(task["coefs"])
            answer = {"id": msg["id"], "result": asdict(solve_task(MipTask(**task)))}
        except Exception as e:  # reported to the parent, which raises it there
            answer = {"id": msg.get("id"), "error": f"{type(e).__name__}: {e}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
