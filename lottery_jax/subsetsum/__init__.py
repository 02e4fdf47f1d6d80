"""Experiment 1: approximating a network's weights by subset sums of random coefficients.

* :mod:`.search`: the exact, jit-compiled meet-in-the-middle search (float64, sharded);
* :mod:`.scip`: the per-weight MIP tier (PySCIPOpt), built apart from solving it;
* :mod:`.network`: approximating every weight of a network, tier by tier, with resumable chunks;
* :mod:`.ticket`: the ticket file (chosen subsets, statuses, errors) and its verifier.
"""

from .network import (
    COEFFICIENT_MODES,
    EXIT_INFEASIBLE,
    EXIT_MISMATCH,
    FEASIBLE,
    INFEASIBLE,
    OBJECTIVES,
    OPT_ENUM,
    OPT_SCIP,
    STATUSES,
    UNSOLVED,
    WITHIN_STATUSES,
    ApproxConfig,
    ApproxResult,
    LayerResult,
    approximate_network,
    approximated_state,
    as_instances,
    config_dict,
    layer_coefficients,
    not_within_epsilon,
    solve_share,
    summarize,
    target_layers,
)
from .ticket import VerifyReport, save_ticket, verify_ticket

__all__ = [
    "COEFFICIENT_MODES",
    "EXIT_INFEASIBLE",
    "EXIT_MISMATCH",
    "FEASIBLE",
    "INFEASIBLE",
    "OBJECTIVES",
    "OPT_ENUM",
    "OPT_SCIP",
    "STATUSES",
    "UNSOLVED",
    "WITHIN_STATUSES",
    "ApproxConfig",
    "ApproxResult",
    "LayerResult",
    "VerifyReport",
    "approximate_network",
    "config_dict",
    "approximated_state",
    "as_instances",
    "layer_coefficients",
    "not_within_epsilon",
    "save_ticket",
    "solve_share",
    "summarize",
    "target_layers",
    "verify_ticket",
]
