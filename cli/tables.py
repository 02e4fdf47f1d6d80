"""The command line's tables: one builder, so that every table reads at 80 columns, nothing cut.

A table is as wide as its widest cells; long headers break onto a second line where they hold a
``\\n`` (``"max\\nerror"``), so a header is never wider than its values. Where a terminal is still
too narrow, a cell folds onto the next line instead of ending in an ellipsis: every digit stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.table import Table


def table(title: str, columns: Sequence[str], left: Iterable[str] = ()) -> Table:
    """A results table: ``columns`` right-aligned (numbers) except those named in ``left``."""
    left = set(left)
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right", overflow="fold")
    return t


def key_value_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    """Two columns: what, and its value (right-aligned)."""
    t = table(title, ["", "value"], left=[""])
    for key, value in rows:
        t.add_row(key, value)
    return t


#: Short names of the SubsetSum statuses in table headers.
SHORT_STATUS = {"optimal-enumeration": "opt-enum", "optimal-scip": "opt-scip",
                "infeasible": "infeas"}  # fmt: skip


def status_table(rows: Sequence[Mapping[str, Any]]) -> Table | None:
    """Each layer's weights per status (``rows``: ``layer`` and ``status_counts``), one column per
    status that occurs (:data:`SHORT_STATUS` names); None when only one status occurs (the
    summary's counts then say it all)."""
    present = [s for s in (rows[0]["status_counts"] if rows else {})
               if any(r["status_counts"].get(s) for r in rows)]  # fmt: skip
    if len(present) < 2:
        return None
    names = [SHORT_STATUS.get(s, s) for s in present]
    t = table("statuses per layer", ["layer", *names], left=["layer"])
    for r in rows:
        t.add_row(r["layer"], *(f"{r['status_counts'].get(s, 0):,}" for s in present))
    return t
