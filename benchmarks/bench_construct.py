"""`construct` at paper scale: the solved ticket of the paper's targets, beside edge-popup.

    python benchmarks/bench_construct.py --only uniform21 [--out runs/bench-construct]

Each case runs `lottery_jax.subsetsum.construct.construct` into its own run directory, then
re-scores the written ticket the way `lottery-jax evaluate-ticket` does, and appends the figures
(with the load average before and after) to `benchmarks/results/cpu_bench_construct.json`.
`--only normal-range` solves nothing: per R, the weights beyond the range of their links.
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
    # R = 42 (no weight beyond its links' range), 64 feasibility groups instead of 8
    "normal42-groups64": dict(target="paper", redundancy=42, feasibility_groups=64),
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


#: R values of the ``normal-range`` case (no solving: the range of each weight's links).
RANGE_RS = (5, 21, 28, 35, 42, 56)


def range_case(args) -> dict:
    """Per R, the weights of the paper's FC2 that no subset can reach with the default init:
    W beyond [sum of its negative link products, sum of its positive ones] +- eps (a bound no
    solver can beat), beside the largest |W| and the typical (median) positive sum."""
    import numpy as np

    from lottery_jax.subsetsum import construct as cs
    from lottery_jax.subsetsum import links as lk

    state, meta, source = cs.resolve_target("paper")
    form = cs.redundant_form(state, source)
    eps, points = args.epsilon, []
    for r in RANGE_RS:
        net = cs.build_random(form, cs.ConstructConfig(redundancy=r))
        point = {"redundancy": r}
        for name, layer in zip(net.names, net.layers(), strict=True):
            w = form.weights[f"{name}.weight"]
            a = lk.link_products(np.asarray(layer.weight1[...]), np.asarray(layer.weight2[...]))
            pos, neg = np.clip(a, 0, None).sum(-1), np.clip(a, None, 0).sum(-1)
            point[name] = {"out_of_range": int(((w > pos + eps) | (w < neg - eps)).sum()),
                           "weights": int(w.size), "max_abs_w": float(np.abs(w).max()),
                           "median_positive_sum": float(np.median(pos)),
                           "min_positive_sum": float(pos.min()),
                           "product_std": float(a.std())}  # fmt: skip
        points.append(point)
    return {"case": "normal-range", "settings": {"target": "paper", "init": "normal",
            "epsilon": eps, "redundancies": list(RANGE_RS)}, "points": points}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    names = ",".join([*CASES, "normal-range"])
    p.add_argument("--only", required=True, help="comma-separated case names: " + names)
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--redundancy", type=int, default=30)
    p.add_argument("--compare-epochs", type=int, default=1)
    p.add_argument("--out", default="runs/bench-construct")
    p.add_argument("--results", default="benchmarks/results/cpu_bench_construct.json")
    args = p.parse_args()
    path = Path(args.results)
    for name in args.only.split(","):
        row = range_case(args) if name == "normal-range" else run_case(name, args)
        rows = json.loads(path.read_text()) if path.exists() else []
        key = (row["case"], json.dumps(row["settings"], sort_keys=True))
        rows = [x for x in rows if (x["case"], json.dumps(x["settings"], sort_keys=True)) != key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows + [row], indent=1) + "\n")
        print(
            json.dumps(
                {
                    k: row.get(k)
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
