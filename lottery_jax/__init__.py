"""lottery-jax: *Optimal Lottery Tickets via SubsetSum* (Pensia et al., NeurIPS 2020) in JAX/Flax NNX.

The Python API (the ``lottery-jax`` command line is a thin shell around the same functions):

Experiment 1, SubsetSum approximation
    :func:`approximate` approximates one array of any shape, or a mapping of names to arrays, by
    subset sums of ``n = c log2(1/eps)`` random coefficients per row (the leading axis) or per
    weight; it returns the approximated arrays, a report (the ``results.json`` fields, ``scip``:
    what the SCIP tier did) and a ticket, reporting progress through ``on_layer``/``on_chunk``/
    ``on_scip`` callbacks.

Experiment 2, pruning random networks
    :func:`build_pruned` builds a redundant (``red-fc2`` ... or ``red`` with any ``sizes``) or wide
    network; :class:`PruneConfig`, :func:`make_batch` and :func:`train_batch` train the supermasks of
    several (seed, sparsity) members in one compiled program, reporting through callbacks;
    :func:`member_net` / :func:`member_ticket` give a trained member as a network / a ticket,
    :func:`net_from_ticket` rebuilds the network from a ticket.
    :func:`load_published` gives the paper's own 3,077 run records (built in);
    :func:`compare_published` holds a results directory against them (a typed ``Comparison``
    with ``write``/``to_json``); :func:`plot_results` draws the figure (``published=True``
    overlays the records, ``aggregate="best"`` takes the published figures' rule).

Targets and data
    :func:`build_model` (FC2, FC4, LeNet5), :func:`fit` (the published recipe, callbacks),
    :func:`evaluate` (test accuracy), :func:`load_dataset` (MNIST-like IDX files, cached downloads),
    :func:`load_weights` / :func:`save_weights` (``.npz`` in PyTorch layout); tickets:
    :func:`save_ticket` (either kind: an :func:`approximate` or :func:`construct` result, a
    :class:`SupermaskTicket`), :func:`load_ticket` (either kind of file: says which),
    :func:`load_supermask_ticket` (a :class:`SupermaskTicket`), :func:`verify_ticket` (SubsetSum).

Every random draw comes from an explicit seed; library functions draw nothing on the terminal and
raise :class:`UserError` (a ``ValueError``) with a one-line message for bad input.

Example::

    import numpy as np
    import lottery_jax as lj

    w = np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3, 5, 5))
    r = lj.approximate(w, epsilon=0.01, seed=0)
    assert r.report["all_within_epsilon"]
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from lottery_jax.xla_cpu import add_cpu_flags as _add_cpu_flags

try:
    __version__ = version("lottery-jax")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

# Before JAX starts its CPU backend: the XLA CPU flags measured faster (lottery_jax.xla_cpu; the
# only global state ``import lottery_jax`` changes, and only flags the user has not set).
_add_cpu_flags()

# name -> (module, attribute): imported on first use, so ``import lottery_jax`` stays light.
_API = {
    "UserError": ("lottery_jax.errors", "UserError"),
    # Experiment 1
    "approximate": ("lottery_jax.subsetsum.api", "approximate"),
    "approximate_network": ("lottery_jax.subsetsum.network", "approximate_network"),
    "ApproxConfig": ("lottery_jax.subsetsum.network", "ApproxConfig"),
    "verify_ticket": ("lottery_jax.subsetsum.ticket", "verify_ticket"),
    "construct": ("lottery_jax.subsetsum.construct", "construct"),
    # Experiment 2
    "PruneConfig": ("lottery_jax.pruning.batched", "PruneConfig"),
    "build_pruned": ("lottery_jax.nets.pruned", "build_pruned"),
    "make_batch": ("lottery_jax.pruning.batched", "make_batch"),
    "train_batch": ("lottery_jax.pruning.batched", "train_batch"),
    "member_net": ("lottery_jax.pruning.batched", "member_net"),
    "member_ticket": ("lottery_jax.pruning.ticket", "member_ticket"),
    "net_from_ticket": ("lottery_jax.pruning.ticket", "net_from_ticket"),
    "SupermaskTicket": ("lottery_jax.pruning.ticket", "SupermaskTicket"),
    "load_published": ("lottery_jax.pruning.published", "load_published"),
    "compare_published": ("lottery_jax.pruning.published", "compare"),
    "plot_results": ("lottery_jax.plotting", "plot_results"),
    # targets, data, files
    "build_model": ("lottery_jax.nets.targets", "build_model"),
    "fit": ("lottery_jax.training", "fit"),
    "Recipe": ("lottery_jax.training", "Recipe"),
    "evaluate": ("lottery_jax.training", "evaluate"),
    "load_dataset": ("lottery_jax.data", "load_dataset"),
    "load_weights": ("lottery_jax.checkpoint", "load_weights"),
    "save_weights": ("lottery_jax.checkpoint", "save_weights"),
    "load_ticket": ("lottery_jax.tickets", "load_ticket"),
    "save_ticket": ("lottery_jax.tickets", "save_ticket"),
    "load_supermask_ticket": ("lottery_jax.pruning.ticket", "load_ticket"),
}

__all__ = [
    "__version__",
    "UserError",
    "approximate",
    "approximate_network",
    "ApproxConfig",
    "verify_ticket",
    "construct",
    "PruneConfig",
    "build_pruned",
    "make_batch",
    "train_batch",
    "member_net",
    "member_ticket",
    "net_from_ticket",
    "SupermaskTicket",
    "load_published",
    "compare_published",
    "plot_results",
    "build_model",
    "fit",
    "Recipe",
    "evaluate",
    "load_dataset",
    "load_weights",
    "save_weights",
    "load_ticket",
    "save_ticket",
    "load_supermask_ticket",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lottery_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from lottery_jax.checkpoint import load_weights, save_weights
    from lottery_jax.data import load_dataset
    from lottery_jax.errors import UserError
    from lottery_jax.nets.pruned import build_pruned
    from lottery_jax.nets.targets import build_model
    from lottery_jax.plotting import plot_results
    from lottery_jax.pruning.batched import PruneConfig, make_batch, member_net, train_batch
    from lottery_jax.pruning.published import compare as compare_published
    from lottery_jax.pruning.published import load_published
    from lottery_jax.pruning.ticket import SupermaskTicket, member_ticket, net_from_ticket
    from lottery_jax.pruning.ticket import load_ticket as load_supermask_ticket
    from lottery_jax.subsetsum.api import approximate
    from lottery_jax.subsetsum.construct import construct
    from lottery_jax.subsetsum.network import ApproxConfig, approximate_network
    from lottery_jax.subsetsum.ticket import verify_ticket
    from lottery_jax.tickets import load_ticket, save_ticket
    from lottery_jax.training import Recipe, evaluate, fit
