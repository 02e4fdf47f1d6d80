"""The two ticket files and the one reader that tells them apart.

* A **SubsetSum ticket** (Experiment 1, written by ``approximate``): per approximated matrix the
  target weights, the chosen subsets (packed bits), each weight's status and float64 error, and how
  to regenerate the random coefficients. Format id :data:`SUBSETSUM_FORMAT`; written by
  :func:`lottery_jax.subsetsum.ticket.save_ticket`, checked by
  :func:`lottery_jax.subsetsum.ticket.verify_ticket`.
* A **supermask ticket** (Experiment 2, written by ``prune``/``sweep``): the seed that regenerates a
  network's frozen weights, its configuration and its packed masks. Format id
  :data:`SUPERMASK_FORMAT`; written and read by :mod:`lottery_jax.pruning.ticket`.

:func:`save_ticket` writes either kind from what the library returns (``lj.save_ticket``).

Both are ``.npz`` files with one ``__meta__`` entry: a JSON string whose ``format`` names the kind.
Files of the first release (format ``lottery-jax-ticket/1``, shared by both kinds; the SubsetSum
ticket kept its JSON under ``meta``, the supermask ticket under ``__meta__``) still load: the kind
is then told by which entry holds the JSON and by the array names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lottery_jax.checkpoint import read_npz
from lottery_jax.errors import UserError

SUBSETSUM_FORMAT = "lottery-jax-subsetsum-ticket/2"
SUPERMASK_FORMAT = "lottery-jax-supermask-ticket/2"
#: The first release's id, used by both kinds (still read, never written).
LEGACY_FORMAT = "lottery-jax-ticket/1"
META_KEY = "__meta__"
LEGACY_META_KEY = "meta"  # the first release's SubsetSum tickets

TicketKind = Literal["subsetsum", "supermask"]
_KIND_OF_FORMAT: dict[str, TicketKind] = {
    SUBSETSUM_FORMAT: "subsetsum",
    SUPERMASK_FORMAT: "supermask",
}


@dataclass
class Ticket:
    """An opened ticket file.

    ``kind``: ``"subsetsum"`` or ``"supermask"``; ``format``: the format id the file states
    (``lottery-jax-ticket/1`` for files of the first release); ``meta``: its JSON metadata (a
    dict; may lack keys in a damaged file, the kind's reader checks them); ``arrays``: every other
    entry of the file, by name.
    """

    kind: TicketKind
    format: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)
    path: Path | None = None

    @property
    def legacy(self) -> bool:
        """True for a file of the first release (``lottery-jax-ticket/1``)."""
        return self.format == LEGACY_FORMAT


#: Metadata JSON larger than this, or nested deeper, is refused (no reader needs more).
MAX_META_CHARS = 1 << 22
MAX_META_DEPTH = 64


def parse_json_object(raw: Any, where: str) -> dict[str, Any]:
    """The JSON object of a ``__meta__``-style entry (a 0-d string array, or a string); a
    one-line UserError naming ``where`` when it is no string, too large, not JSON, nested deeper
    than :data:`MAX_META_DEPTH` or not an object."""
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise UserError(f"{where} is not a JSON string")
        raw = str(raw)
    if not isinstance(raw, str):
        raise UserError(f"{where} is not a JSON string")
    if len(raw) > MAX_META_CHARS:
        raise UserError(f"{where} is {len(raw):,} characters of JSON (at most {MAX_META_CHARS:,})")
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise UserError(f"{where} is nested too deeply") from None
    except ValueError as e:
        raise UserError(f"{where} is corrupt ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} is not a JSON object")
    if json_depth(obj) > MAX_META_DEPTH:
        raise UserError(f"{where} is nested more than {MAX_META_DEPTH} levels deep")
    return obj


def json_depth(obj: Any) -> int:
    """How deeply lists and objects nest in ``obj`` (a scalar: 0); iterative, never recursing."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict | list):
            depth = max(depth, d)
            if d <= MAX_META_DEPTH:
                stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return depth


def _parse_meta(raw: np.ndarray, path: Path, key: str) -> dict[str, Any]:
    return parse_json_object(raw, f"ticket {path}: the {key} entry")


def load_ticket(path: str | os.PathLike) -> Ticket:
    """Open a ticket of either kind (either release) and say which it is.

    Raises :class:`~lottery_jax.errors.UserError` with one line for a missing or damaged file, or a
    file that is no ticket.
    """
    path = Path(path)
    arrays = read_npz(path, "ticket")
    if META_KEY in arrays:
        key = META_KEY
    elif LEGACY_META_KEY in arrays:
        key = LEGACY_META_KEY
    else:
        raise UserError(f"{path} is not a lottery-jax ticket (no {META_KEY} entry)")
    meta = _parse_meta(arrays.pop(key), path, key)
    fmt = meta.get("format")
    if not isinstance(fmt, str):
        raise UserError(f"{path} is not a lottery-jax ticket (format {fmt!r})"[:300])
    if fmt in _KIND_OF_FORMAT:
        kind = _KIND_OF_FORMAT[fmt]
    elif fmt == LEGACY_FORMAT:
        kind = _legacy_kind(key, meta, arrays)
        if kind is None:
            raise UserError(f"{path}: a {LEGACY_FORMAT} file of neither ticket kind")
    else:
        raise UserError(f"{path} is not a lottery-jax ticket (format {fmt!r})")
    return Ticket(kind, str(fmt), meta, arrays, path)


def _legacy_kind(key: str, meta: dict, arrays: dict[str, np.ndarray]) -> TicketKind | None:
    if key == LEGACY_META_KEY or any(k.endswith(".subsets") for k in arrays):
        return "subsetsum"
    if "shapes" in meta or any(k.startswith("mask:") for k in arrays):
        return "supermask"
    return None


def save_ticket(path: str | os.PathLike, ticket: Any) -> Path:
    """Write a ticket of either kind to ``path`` (``.npz``) and return the path.

    ``ticket``: what :func:`lottery_jax.approximate` returns (a SubsetSum ticket; ``lottery-jax
    verify`` checks it), a :class:`~lottery_jax.pruning.ticket.SupermaskTicket`
    (:func:`~lottery_jax.pruning.ticket.member_ticket`) or what :func:`lottery_jax.construct`
    returns (supermask tickets; ``lottery-jax evaluate-ticket`` reads them). Anything else: a
    one-line UserError.
    """
    from lottery_jax.pruning.ticket import SupermaskTicket
    from lottery_jax.pruning.ticket import save_ticket as save_supermask
    from lottery_jax.subsetsum.api import Approximation
    from lottery_jax.subsetsum.construct import Construction

    if isinstance(ticket, Approximation | Construction):
        return ticket.save(path)
    if isinstance(ticket, SupermaskTicket):
        return save_supermask(path, ticket)
    raise UserError(
        f"save_ticket: a {type(ticket).__name__} is no ticket (pass what approximate or construct "
        "returns, or a SupermaskTicket from member_ticket)"
    )


def open_ticket(path: str | os.PathLike, kind: TicketKind) -> Ticket:
    """:func:`load_ticket`, refusing (one line) a ticket of the other kind."""
    t = load_ticket(path)
    if t.kind != kind:
        hint = "lottery-jax verify" if t.kind == "subsetsum" else "lottery-jax evaluate-ticket"
        raise UserError(f"{t.path} is a {t.kind} ticket, not a {kind} ticket (open it with {hint})")
    return t
