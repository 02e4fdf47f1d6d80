"""Experiment 1 end to end on one target: approximate it, score both networks, assemble the record.

The command line (``lottery-jax approximate``) only resolves its options, loads the target and the
data, draws progress and prints; :func:`approximate_target` does the rest and returns what the run
directory commits together (``results.json``, ``ticket.npz``, ``approximated.npz``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lottery_jax import checkpoint, rundir
from lottery_jax.nets.targets import network_for
from lottery_jax.results import device_summary
from lottery_jax.subsetsum import network as net_mod
from lottery_jax.subsetsum.ticket import save_ticket

#: Exit status when the test data cannot be had: the ticket is written, accuracies are null.
EXIT_NO_DATA = 5


@dataclass
class TargetApproximation:
    """What :func:`approximate_target` produced: the record, the files to commit, the result."""

    results: dict[str, Any]  # the results.json record
    files: dict[str, Any]  # name -> bytes or writer, for rundir.RunDir.commit
    result: net_mod.ApproxResult
    outside: dict[str, Any]  # the weights not within eps (net_mod.not_within_epsilon)

    @property
    def exit_status(self) -> int:
        return int(self.results["exit_status"])


def approximate_target(
    state: dict[str, np.ndarray],
    cfg: net_mod.ApproxConfig,
    run: Any = None,
    *,
    model: str | None = None,
    source: str = "",
    inputs: str,
    data: Any = None,
    data_error: str | None = None,
    config: dict[str, Any] | None = None,
    on_layer: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    on_scip: Callable | None = None,
) -> TargetApproximation:
    """Approximate every selected tensor of ``state`` under ``cfg`` (resuming from ``run``'s
    chunks), then measure the test accuracy of the target and of its approximation on ``data``
    with the network the state describes (``model`` checks it; inferred otherwise).

    ``data`` None means accuracy is not measured (``data_error`` says why, recorded with null
    accuracies). ``config`` adds the caller's settings (target, data source...) to the record.
    """
    from lottery_jax.training import evaluate

    state = {k: np.asarray(v) for k, v in state.items()}
    model_name, target_net = network_for(state, source=source, model=model)
    scip: dict[str, Any] = {}  # per layer sent to SCIP: instances, resumed from chunks

    def scip_progress(p) -> None:
        scip.setdefault(p.layer, {"instances": p.total, "resumed": p.resumed})
        if on_scip is not None:
            on_scip(p)

    res = net_mod.approximate_network(
        state, cfg, run, on_layer=on_layer, on_chunk=on_chunk, on_scip=scip_progress
    )
    outside = net_mod.not_within_epsilon(res, state)
    approx_state = net_mod.approximated_state(res, state)
    target_acc = approx_acc = None
    if data is not None:
        target_acc = evaluate(target_net, data.test_images, data.test_labels)
        _, approx_net = network_for(approx_state, source="approximation", model=model_name)
        approx_acc = evaluate(approx_net, data.test_images, data.test_labels)
    full_config = {**net_mod.config_dict(cfg), "model": model_name, "inputs": inputs,
                   **(config or {})}  # fmt: skip
    exit_status = net_mod.EXIT_INFEASIBLE if outside["total"] else EXIT_NO_DATA if data_error else 0
    results = {
        "command": "approximate",
        "target_accuracy": target_acc,
        "approx_accuracy": approx_acc,
        **net_mod.record(res),
        "scip": scip,
        "not_within_epsilon": outside,
        "device": device_summary(),
        "config": full_config,
        "exit_status": exit_status,
        "accuracy_not_measured": data_error,
    }
    files = {
        "approximated.npz": checkpoint.weights_bytes(
            model_name, approx_state, {"inputs": inputs, "config": full_config}
        ),
        "ticket.npz": lambda path: save_ticket(path, res, state),
        "results.json": rundir.json_bytes(results),
    }
    return TargetApproximation(results, files, res, outside)
