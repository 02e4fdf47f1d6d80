"""`construct` at paper scale: the solved ticket of the paper's targets, beside edge-popup.

    python benchmarks/bench_construct.py --only uniform21 [--out runs/bench-construct]

Each case runs `lottery_jax.subsetsum.construct.construct` into its own run directory, then
re-scores the written ticket the way `lottery-jax evaluate-ticket` does, and appends the figures
(with the load average before and after) to `benchmarks/results/cpu_bench_construct.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

CASES = {
    "uniform21": dict(target="paper", redundancy=21, init="uniform"),
    "uniform21-relu42": dict(target="paper", redundancy=42, init="uniform", relu=True),
    "normal21": dict(target="paper", redundancy=21),
    "normal-r": dict(target="paper", redundancy=None),  # set by --redundancy
    "lenet5-uniform21": dict(target="paper-lenet5", redundancy=21, init="uniform"),
    "lenet5-normal21": dict(target="paper-lenet5", redundancy=21),
    "compare5": dict(target="paper", redundancy=5, compare_epochs=None),
    "compare21": dict(target="paper", redundancy=21, compare_epochs=None),
}
KEYS = ("target_accuracy", "ticket_accuracy", "within_epsilon_fraction", "within_epsilon",
        "weights", "remaining_params", "total_params", "max_error", "max_logit_error", "seconds",
        "compile_seconds", "eval_seconds", "wall_seconds", "status_counts", "edge_popup")  # fmt: skip


def run_case(name: str, args) -> dict:
    from lottery_jax.data import load_dataset
    from lottery_jax.pruning.ticket import load_ticket, net_accuracy, net_from_ticket
    from lottery_jax.subsetsum.construct import construct

    kw = dict(CASES[name])
    if kw.get("redundancy") is None:
        kw["redundancy"] = args.redundancy
    if "compare_epochs" in kw:
        kw["compare_epochs"] = args.compare_epochs
    load_before = os.getloadavg()
    out = Path(args.out) / name
    t0 = time.perf_counter()
    res = construct(epsilon=args.epsilon, out=out, **kw)
    wall = time.perf_counter() - t0
    r = res.results
    ticket = load_ticket(out / "ticket.npz")
    data = load_dataset(inputs=ticket["meta"]["inputs"])
    again = net_accuracy(net_from_ticket(ticket), data.test_images, data.test_labels)
    row = {"case": name, "settings": {**kw, "epsilon": args.epsilon}, "init": r["init"],
           "inputs": r["inputs"], **{k: r.get(k) for k in KEYS},
           "layers": [{k: t[k] for k in ("layer", "sides", "weights", "within_epsilon",
                                          "max_error", "remaining_params", "sparsity",
                                          "side_status_counts")} for t in r["layers"]],
           "not_within_shown": r["not_within_epsilon"]["weights"][:20],
           "evaluate_ticket_accuracy": again, "reproduced": again == r["ticket_accuracy"],
           "process_wall_seconds": wall, "resumed": res.resumed,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "device": r["device"]}  # fmt: skip
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", required=True, help="comma-separated case names: " + ",".join(CASES))
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--redundancy", type=int, default=30)
    p.add_argument("--compare-epochs", type=int, default=1)
    p.add_argument("--out", default="runs/bench-construct")
    p.add_argument("--results", default="benchmarks/results/cpu_bench_construct.json")
    args = p.parse_args()
    path = Path(args.results)
    for name in args.only.split(","):
        row = run_case(name, args)
        rows = json.loads(path.read_text()) if path.exists() else []
        key = (row["case"], json.dumps(row["settings"], sort_keys=True))
        rows = [x for x in rows if (x["case"], json.dumps(x["settings"], sort_keys=True)) != key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows + [row], indent=1) + "\n")
        print(
            json.dumps(
                {
                    k: row[k]
                    for k in (
                        "case",
                        "ticket_accuracy",
                        "target_accuracy",
                        "within_epsilon_fraction",
                        "seconds",
                        "compile_seconds",
                        "reproduced",
                    )
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
