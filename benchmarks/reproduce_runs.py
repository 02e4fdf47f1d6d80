"""Check that rerun pruning runs reproduce committed ones bit for bit, and time the reruns.

    python benchmarks/reproduce_runs.py RERUN_DIR benchmarks/results/runs/fc2_e30 --json out.json

For every finished run folder of RERUN_DIR (a ``results.json``) the folder of the same name under
the committed directory must hold the same per-epoch test accuracies, train losses, final accuracy
and remaining parameters, and its ``ticket.npz`` (where one was committed) the same arrays (every mask, every conv weight;
``__meta__`` aside, which holds the run's own timings). Reports, per run, whether it matched and
its seconds per epoch, and the epochs rerun; exits 1 if any run differs or is missing there.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

FIELDS = ("test_accuracy", "train_loss", "final_test_accuracy", "remaining_params")


def ticket_status(mine: Path, committed: Path) -> str:
    """``same``, ``different``, ``not committed`` (only results.json was committed) or
    ``unreadable`` (either file is not a readable npz)."""
    if not committed.exists():
        return "not committed" if mine.exists() else "same"
    if not mine.exists():
        return "different"
    try:
        with np.load(mine) as za, np.load(committed) as zb:
            keys = set(za.files) - {"__meta__"}
            same = keys == set(zb.files) - {"__meta__"} and all(
                np.array_equal(za[k], zb[k]) for k in keys
            )
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return "unreadable"
    return "same" if same else "different"


def read_record(path: Path) -> dict | None:
    """A results.json as a dict, or None if it cannot be read or is not a JSON object."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def compare(rerun: Path, committed: Path) -> dict:
    runs = []
    for folder in sorted(p.parent for p in rerun.glob("*/results.json")):
        theirs_path = committed / folder.name / "results.json"
        if not theirs_path.exists():
            runs.append({"run": folder.name, "identical": False, "why": "not committed"})
            continue
        mine, theirs = read_record(folder / "results.json"), read_record(theirs_path)
        if mine is None or theirs is None:
            runs.append({"run": folder.name, "identical": False, "why": "unreadable results.json"})
            continue
        fields = [f for f in FIELDS if mine.get(f) != theirs.get(f)]
        ticket = ticket_status(folder / "ticket.npz", committed / folder.name / "ticket.npz")
        seconds = [x for x in mine.get("epoch_seconds") or [] if isinstance(x, (int, float))]
        runs.append({
            "run": folder.name, "identical": not fields and ticket in ("same", "not committed"),
            "why": ", ".join(fields + ([] if ticket == "same" else [f"ticket.npz {ticket}"])),
            "ticket": ticket,
            "epochs": len(mine.get("test_accuracy", [])),
            "seconds_per_epoch": round(sum(seconds) / max(len(seconds), 1), 2),
            "compile_seconds": mine.get("compile_seconds"),
            "finished_unix": round((folder / "results.json").stat().st_mtime, 1),
        })  # fmt: skip
    return {
        "rerun_dir": str(rerun), "committed_dir": str(committed), "runs": runs,
        "finished": len(runs), "identical": sum(r["identical"] for r in runs),
        "epochs": sum(r.get("epochs", 0) for r in runs),
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rerun", type=Path)
    p.add_argument("committed", type=Path)
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--started", type=float, metavar="UNIX",
                   help="when the reruns started (Unix time): adds the wall time to the last finish")  # fmt: skip
    args = p.parse_args()
    for d in (args.rerun, args.committed):
        if not d.is_dir():
            print(f"error: {d} is not a directory", file=sys.stderr)
            return 2
    report = compare(args.rerun, args.committed)
    if args.started is not None and report["runs"]:
        last = max(r.get("finished_unix", 0) for r in report["runs"])
        report["wall_minutes_to_last_finish"] = round((last - args.started) / 60, 1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    report["machine"] = harness.header()
    for r in report["runs"]:
        print(f"{'same' if r['identical'] else 'DIFFERENT'}  {r['run']}  {r['why']}")
    print(f"{report['identical']} of {report['finished']} finished runs identical "
          f"({report['epochs']} epochs)")  # fmt: skip
    if args.json:
        from lottery_jax.errors import UserError
        from lottery_jax.rundir import write_json

        try:
            write_json(args.json, report)
        except (OSError, UserError) as e:
            print(f"error: cannot write {args.json}: {getattr(e, 'strerror', None) or e}",
                  file=sys.stderr)  # fmt: skip
            return 2
    return 0 if report["identical"] == report["finished"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
