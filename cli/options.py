"""Parsing and checking command-line values: one validator for every numeric option of every command.

Typer/Click check types and integer ranges, but a float range lets ``nan`` through (every comparison
with NaN is false) and an ``int`` option accepts ``99999999999999999999`` until something downstream
overflows. :func:`check` is the single place that decides what a valid number is: finite, inside its
range, and for integers small enough for the int32/uint32 arrays they end up in. Comma lists
(``--sparsity 0.5,0.9``) are parsed here too; the library takes plain Python values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lottery_jax.errors import UserError

#: Seeds feed ``jax.random.key`` and ``nnx.Rngs``: non-negative and below 2^32.
SEED_MAX = 2**32 - 1
#: Step counters (optax's ``count``) and epoch indices are int32 on the device.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Rule:
    """A valid range: ``lo``/``hi`` (None: unbounded), each end open or closed, integers or reals."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def _num(self, x: float) -> str:
        return f"{int(x):,}" if self.integer else f"{x:g}"

    def describe(self) -> str:
        lo, hi = (None if v is None else self._num(v) for v in (self.lo, self.hi))
        kind = "an integer " if self.integer else ""
        if lo is not None and hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{kind}in {left}{lo}, {hi}{right}"
        if lo is not None:
            return f"{kind}{'>' if self.lo_open else '>='} {lo}"
        if hi is not None:
            return f"{kind}{'<' if self.hi_open else '<='} {hi}"
        return "finite"


POSITIVE = Rule(lo=0, lo_open=True)
NON_NEGATIVE = Rule(lo=0)
FRACTION_OPEN = Rule(lo=0, hi=1, lo_open=True, hi_open=True)  # epsilon
MOMENTUM = Rule(lo=0, hi=1, hi_open=True)
SPARSITY = Rule(lo=0, hi=1, hi_open=True)  # fraction removed
POSITIVE_INT = Rule(lo=1, hi=INT32_MAX, integer=True)
NON_NEGATIVE_INT = Rule(lo=0, hi=INT32_MAX, integer=True)
SEED = Rule(lo=0, hi=SEED_MAX, integer=True)


def check(option: str, value: float | int | None, rule: Rule) -> float | int | None:
    """Return ``value`` if it satisfies ``rule``; else a one-line :class:`UserError` naming
    ``option`` (``None`` passes: an option left at its "default from elsewhere")."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UserError(f"{option} must be a number, got {value}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{option} must be a finite number, got {value}")
    if rule.integer and (not isinstance(value, int) and not float(value).is_integer()):
        raise UserError(f"{option} must be an integer, got {value}")
    ok = True
    if rule.lo is not None:
        ok &= value > rule.lo if rule.lo_open else value >= rule.lo
    if rule.hi is not None:
        ok &= value < rule.hi if rule.hi_open else value <= rule.hi
    if not ok:
        raise UserError(f"{option} must be {rule.describe()}, got {value}")
    return value


def check_all(option: str, values: Sequence[float | int], rule: Rule) -> list:
    return [check(option, v, rule) for v in values]


def _parse_list(values: Sequence[str] | None, option: str, convert: Callable, kind: str) -> list:
    out = []
    for v in values or []:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(convert(part))
            except (ValueError, OverflowError):
                raise UserError(f"{option}: {part!r} is not {kind}") from None
    return list(dict.fromkeys(out))


def parse_floats(
    values: Sequence[str] | None, option: str, rule: Rule | None = None
) -> list[float]:
    """``["0.5", "0.75,0.9"]`` -> [0.5, 0.75, 0.9] (repeated options and comma lists, duplicates
    dropped), each checked against ``rule``."""
    out = _parse_list(values, option, float, "a number")
    return check_all(option, out, rule or Rule()) if out else out


def parse_ints(values: Sequence[str] | None, option: str, rule: Rule | None = None) -> list[int]:
    """``["0", "1,2"]`` -> [0, 1, 2] (repeated options and comma lists), each checked."""
    out = _parse_list(values, option, int, "an integer")
    return check_all(option, out, rule or Rule(integer=True)) if out else out


def parse_names(
    values: Sequence[str] | None, option: str, choices: Sequence[str] | None = None
) -> list[str]:
    """``["fc2", "fc4,lenet5"]`` -> ["fc2", "fc4", "lenet5"] (repeated options and comma lists,
    duplicates dropped), each one of ``choices`` when given."""
    out = _parse_list(values, option, str, "a name")
    if choices is not None:
        bad = [v for v in out if v not in choices]
        if bad:
            raise UserError(f"{option}: unknown {bad[0]!r} (choose from {', '.join(choices)})")
    return out
