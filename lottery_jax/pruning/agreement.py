"""How closely two runs of one configuration can agree at their last epoch.

A comparison of final accuracies (ours against a published record) can only be as tight as the
final epoch is repeatable. Where a pruned net's test accuracy moves by several points from one
epoch to the next, as it does at the low and the high sparsities of Experiment 2 in the published
records and in ours alike, two faithful runs differ at their last epoch by that noise even when
every setting, the seed included, is the same. These functions put a number on it, from the
runs' own curves:

- :func:`epoch_noise`: the standard deviation of one epoch's accuracy around its run's local
  level, from the successive differences of the last ``k`` epochs. For independent noise of sd
  sigma around a smooth level, ``Var(a[t+1] - a[t]) = 2 sigma**2`` and a slow trend only shifts
  the differences' mean, so ``sigma = stdev(diffs) / sqrt(2)``. It is an estimate, not a bound:
  noise that persists over several epochs makes the differences smaller (an underestimate), and
  noise that shrinks over the window, as it does where a decaying learning rate calms the masks,
  makes it overstate the last epoch's (an overestimate).
- :func:`expected_abs_diff`: for two independent normal samples of sds ``a`` and ``b``,
  ``E|X - Y| = sqrt(2 / pi) * sqrt(a**2 + b**2)``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: The number of last epochs :func:`epoch_noise` reads by default.
LAST_EPOCHS = 10


def epoch_noise(curve: Sequence[float], k: int = LAST_EPOCHS) -> float:
    """The epoch-to-epoch sd of a run's accuracy over its last ``k`` epochs (see the module)."""
    if k < 3 or len(curve) < k:
        raise ValueError(f"epoch_noise needs k >= 3 and at least k epochs (k={k}, {len(curve)})")
    tail = [float(a) for a in curve[-k:]]
    diffs = [b - a for a, b in zip(tail, tail[1:], strict=False)]
    return statistics.stdev(diffs) / math.sqrt(2)


def expected_abs_diff(sd_a: float, sd_b: float) -> float:
    """``E|X - Y|`` for independent normal X, Y with sds ``sd_a`` and ``sd_b``."""
    if sd_a < 0 or sd_b < 0:
        raise ValueError(f"standard deviations must be >= 0 (got {sd_a}, {sd_b})")
    return math.sqrt(2 / math.pi) * math.hypot(sd_a, sd_b)
