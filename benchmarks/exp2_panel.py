"""Experiment 2 against the published runs: run (or resume) one family's grid at one budget, then
write the run-by-run comparison and the overlaid figure.

    python benchmarks/exp2_panel.py --family fc2 --epochs 30 --processes 2
    python benchmarks/exp2_panel.py --family fc4 --epochs 1 --compare-only
    python benchmarks/exp2_panel.py --family fc2 --epochs 30 --extra-seeds 1,2 --at 0.5,0.99

1. ``lottery-jax sweep --family F --epochs E --seed S`` into ``--runs-dir`` (default
   ``benchmarks/results/runs/F_eE``): the 14 published sparsities x red-linear, red-ReLU and wide,
   and the baseline. Finished runs are skipped, so the same command resumes; ``--processes N``
   starts N sweep processes on this machine that share the grid (JAX's distributed runtime on
   127.0.0.1, each pinned to its own core when there are enough), which on a CPU runs more
   epochs per second than one process with every core.
2. ``benchmarks/results/F_eE_vs_published.csv``: one row per run (family, variant, sparsity,
   epochs, seed, remaining_params, final_test_acc, published_final_test_acc, ...), with the
   summary per variant in the ``.json`` beside it (over 0.05 <= s <= 0.975 and over all
   sparsities).
3. ``benchmarks/results/F_eE_vs_published.png``: our curves with the published records overlaid
   (hollow markers); ``..._linear.png``: the same on the published figures' linear axis.

The committed run folders (results.json, ticket.npz and their commit journal) are what a later
session resumes from; every number in the CSV is reproducible by rerunning its configuration.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lottery_jax as lj
from lottery_jax.pruning.agreement import LAST_EPOCHS, epoch_noise, expected_abs_diff

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: The sparsity window of the issue's per-variant agreement figures (chance-level points out).
WINDOW = (0.05, 0.975)


def sweep_command(args, process: int | None) -> list[str]:
    cmd = [sys.executable, "-c", "from lottery_jax.cli import main; main()", "sweep", "--family", args.family,
           "--epochs", str(args.epochs), "--seed", args.seeds, "--out", str(args.runs_dir),
           "--no-progress"]  # fmt: skip
    if args.extra_seeds:
        cmd += ["--sparsity", args.at, "--variants", args.variants, "--no-baseline"]
    if process is not None:
        cmd += ["--coordinator", f"127.0.0.1:{args.port}", "--num-processes",
                str(args.processes), "--process-id", str(process)]  # fmt: skip
    return cmd


def run_sweep(args) -> None:
    """The sweep in ``args.processes`` processes (logs beside the run folder); waits for all."""
    if args.processes == 1:
        code = subprocess.run(sweep_command(args, None)).returncode
        if code:
            raise SystemExit(f"the sweep stopped (exit code {code}); the same command resumes it")
        return
    cores = sorted(os.sched_getaffinity(0))
    procs = []
    for i in range(args.processes):
        pin = {cores[i]} if len(cores) >= args.processes else None
        log = open(args.runs_dir.with_name(f"{args.runs_dir.name}.p{i}.log"), "a")  # noqa: SIM115
        procs.append(subprocess.Popen(sweep_command(args, i), stdout=log, stderr=subprocess.STDOUT,
                                      preexec_fn=(lambda p=pin: os.sched_setaffinity(0, p))
                                      if pin else None))  # fmt: skip
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a sweep process failed (exit codes {codes}); see the logs")


def count_finished(runs_dir: Path) -> int:
    return len(list(runs_dir.glob("*/results.json"))) if runs_dir.is_dir() else 0


def write_timing(args, wall: float, load_before, trained: int) -> None:
    """The sweep's wall time (all processes, start to end: compiles, data loading and every
    evaluation included), the machine and its load, for the README's figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    from lottery_jax.rundir import write_json

    report = harness.header(
        family=args.family, epochs=args.epochs, seeds=args.seeds, processes=args.processes,
        runs_trained=trained, wall_seconds=round(wall, 1), wall_minutes=round(wall / 60, 2),
    )  # fmt: skip
    report["load_average_before"] = load_before
    report["load_average_after"] = os.getloadavg()
    try:
        write_json(args.timing_json, report)
    except (OSError, lj.UserError) as e:  # (the sweep's runs are written; only the timing is lost)
        why = getattr(e, "strerror", None) or e
        raise SystemExit(f"error: cannot write {args.timing_json}: {why}") from None


def summaries(comparison) -> dict:
    def rows(summary):
        return [s.to_json() for s in summary]

    return {"window": list(WINDOW), "in_window": rows(comparison.summarize(5.0, *WINDOW)),
            "all_sparsities": rows(comparison.summarize(5.0))}  # fmt: skip


def seed0_window_runs(comparison, results: list[dict], k: int):
    """(run, our per-epoch curve, its published record) for every seed-0 pruned run of the window
    that has a record and at least ``k`` epochs: the points the diagnostics below read."""
    curves = {str(r.get("_path", "")): r["test_accuracy"] for r in results}
    published = lj.load_published()
    for run in comparison.runs:
        record = published.get(run.family, run.variant, run.sparsity, run.epochs)
        if record is None or run.variant == "baseline" or run.seed != 0 or run.epochs < k:
            continue
        if WINDOW[0] <= run.sparsity <= WINDOW[1]:
            yield run, curves[run.path], record


def late_epochs(comparison, results: list[dict], k: int = 10) -> dict:
    """A diagnostic beside the criterion, not a replacement for it: per variant, the mean over
    the window of |ours - published| where each side is its run's mean test accuracy over the
    last ``k`` epochs instead of the last one. Where a run's accuracy moves by several points
    from one epoch to the next, this says whether the curves agree apart from that noise."""
    diffs: dict[str, list[float]] = {}
    for run, ours, record in seed0_window_runs(comparison, results, k):
        diffs.setdefault(run.variant, []).append(
            abs(statistics.fmean(ours[-k:]) - statistics.fmean(record.test_acc_per_epoch[-k:]))
        )
    return {"rule": " ".join(late_epochs.__doc__.split()).replace("``k``", str(k)),
            "epochs_averaged": k, "window": list(WINDOW), "seed": 0,
            "mean_abs_diff": {v: statistics.fmean(d) for v, d in diffs.items()},
            "points": {v: len(d) for v, d in diffs.items()}}  # fmt: skip


def epoch_noise_floor(comparison, results: list[dict], k: int = LAST_EPOCHS) -> dict:
    """How close a final-epoch comparison can get when nothing but the epoch differs: per point
    of the window, each run's epoch-to-epoch sd over its last ``k`` epochs (ours and the
    record's; :func:`lottery_jax.pruning.agreement.epoch_noise`) and the expected |ours -
    published| of two independent final epochs with those sds; per variant, the mean of that
    floor beside the mean |ours - published| actually measured. A variant whose floor is above
    the criterion cannot be expected to meet it with single runs, however faithful. The cosine
    rate falls over those epochs (of 30 at lr 0.1: 0.025 in the first of the last 10, 0.0067 in
    the first of the last 5, 0.0003 in the last): where the noise shrinks with it, the estimate
    overstates the last epoch's noise, so it is written for the last 10 and the last 5 epochs."""
    points: dict[str, list[dict]] = {}
    for run, ours, record in seed0_window_runs(comparison, results, k):
        sd_ours, sd_theirs = epoch_noise(ours, k), epoch_noise(record.test_acc_per_epoch, k)
        points.setdefault(run.variant, []).append({
            "sparsity": run.sparsity, "epoch_sd_ours": sd_ours, "epoch_sd_published": sd_theirs,
            "expected_abs_diff": expected_abs_diff(sd_ours, sd_theirs),
            "abs_diff": abs(ours[-1] - record.final_test_acc),
        })  # fmt: skip
    variants = {v: {"points": len(pts),
                    "mean_expected_abs_diff": statistics.fmean(p["expected_abs_diff"] for p in pts),
                    "mean_abs_diff": statistics.fmean(p["abs_diff"] for p in pts), "per_point": pts}
                for v, pts in points.items()}  # fmt: skip
    rule = " ".join(epoch_noise_floor.__doc__.split()).replace("``k``", str(k))
    return {"rule": rule, "epochs": k, "window": list(WINDOW), "seed": 0, "variants": variants}


def linear_figure(stem: Path) -> Path:
    """The same figure on the published figures' linear axis (the README shows it beside them)."""
    return stem.with_name(f"{stem.name}_linear.png")


def write_outputs(args) -> None:
    from lottery_jax.pruning.sweep import collect_results
    from lottery_jax.rundir import write_json

    stem = RESULTS / f"{args.family}_e{args.epochs}_vs_published"
    comparison = lj.compare_published(args.runs_dir, families=[args.family], epochs=[args.epochs])
    comparison.write_runs_csv(stem.with_suffix(".csv"))
    results = collect_results(args.runs_dir)
    report = {"runs_dir": os.path.relpath(args.runs_dir, ROOT), "family": args.family,
              "epochs": args.epochs, "runs": len(comparison.runs), **summaries(comparison)}  # fmt: skip
    if args.epochs >= LAST_EPOCHS:  # (the diagnostics read the last 10 epochs)
        report["diagnostic_late_epochs"] = late_epochs(comparison, results, LAST_EPOCHS)
        report["diagnostic_epoch_noise_floor"] = epoch_noise_floor(comparison, results)
        report["diagnostic_epoch_noise_floor_last5"] = epoch_noise_floor(comparison, results, 5)
    write_json(stem.with_suffix(".json"), report)
    for path, xscale in ((stem.with_suffix(".png"), "log"), (linear_figure(stem), "linear")):
        lj.plot_results(results, path, published=True, families=[args.family],
                        epochs=[args.epochs], xscale=xscale)  # fmt: skip
    for s in comparison.summarize(5.0, *WINDOW):
        d = "-" if s.mean_abs_diff is None else f"{s.mean_abs_diff:.2f}"
        print(f"{s.family} {s.variant} e{s.epochs}: {s.matched} points in "
              f"{WINDOW[0]}..{WINDOW[1]}, mean |ours - published| {d}")  # fmt: skip
    for key, k in (
        ("diagnostic_epoch_noise_floor", LAST_EPOCHS),
        ("diagnostic_epoch_noise_floor_last5", 5),
    ):
        for v, floor in report.get(key, {}).get("variants", {}).items():
            print(
                f"{v}: expected |final - final| from the last {k} epochs' noise alone "
                f"{floor['mean_expected_abs_diff']:.2f} (measured {floor['mean_abs_diff']:.2f})"
            )
    print(f"wrote {stem}.csv, .json and .png, and {linear_figure(stem).name}")


def write_seed_outputs(args) -> None:
    """The panel's points with every seed run so far below ``benchmarks/results/runs`` (the
    panel's seed 0 and the extra seeds; the figure and the table read the same runs):
    ``F_eE_seeds_vs_published.csv`` (mean, std and count over seeds per point, the record, the
    difference), its ``.json`` and ``-runs.csv``, and the mean +- std figure ``.png``."""
    from lottery_jax.pruning.sweep import collect_results
    from lottery_jax.rundir import write_json

    stem = RESULTS / f"{args.family}_e{args.epochs}_seeds_vs_published"
    every_run = args.panel_dir.parent  # the panel's and the extra seeds' folders both
    comparison = lj.compare_published(every_run, families=[args.family], epochs=[args.epochs])
    for path in comparison.write(stem.with_suffix(".csv")):
        print(f"wrote {path}")
    results = collect_results(every_run)
    lj.plot_results(results, stem.with_suffix(".png"), published=True, families=[args.family],
                    epochs=[args.epochs])  # fmt: skip
    noise = seed_noise(comparison)
    write_json(stem.with_name(f"{stem.name}_noise.json"), noise)
    for v in noise["variants"]:
        for pt in v["points"]:
            print(f"{v['variant']} s={pt['sparsity']:g}: {pt['mean']:.2f} (sd {pt['sd']:.2f}) over "
                  f"{pt['count']} seeds; published {pt['published']:.2f}; seed 0 "
                  f"{pt['seed0_diff']:+.2f}, mean {pt['mean_diff']:+.2f}, expected |run - run| "
                  f"{pt['expected_abs_diff']:.2f}")  # fmt: skip


def seed_noise(comparison) -> dict:
    """How far one run may fall from another run of the same configuration by its seed alone,
    per point with more than one seed: for two independent runs X, Y of spread sd,
    E|X - Y| = 2 sd / sqrt(pi) (normal approximation), which is what a seed-0 run against the
    published seed-1 record can differ by when nothing else differs. sd is the sample standard
    deviation (ddof 1) over our seeds."""
    variants: dict[str, list[dict]] = {}
    for row in comparison.rows:
        if row.count < 2 or row.published is None or row.variant == "baseline":
            continue
        sd = statistics.stdev(row.accs)
        seed0 = dict(zip(row.seeds, row.accs, strict=True)).get(0)
        variants.setdefault(row.variant, []).append({
            "sparsity": row.sparsity, "seeds": list(row.seeds), "final_test_accs": list(row.accs),
            "count": row.count, "mean": row.mean, "sd": sd, "published": row.published_acc,
            "seed0_diff": None if seed0 is None else seed0 - row.published_acc,
            "mean_diff": row.mean - row.published_acc,
            "expected_abs_diff": 2 * sd / math.sqrt(math.pi),
            "in_window": WINDOW[0] <= row.sparsity <= WINDOW[1],
        })  # fmt: skip
    rule = " ".join(seed_noise.__doc__.split())
    return {"rule": rule, "window": list(WINDOW),
            "variants": [{"variant": v, "points": pts} for v, pts in variants.items()]}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="fc2", choices=("fc2", "fc4", "lenet5"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument(
        "--runs-dir", type=Path, help="run folders (default benchmarks/results/runs/F_eE)"
    )
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--port", type=int, default=47611)
    p.add_argument("--compare-only", action="store_true", help="skip the sweep")
    p.add_argument("--timing-json", type=Path, metavar="FILE",
                   help="write the sweep's wall time, the machine and its load here")  # fmt: skip
    p.add_argument("--extra-seeds", metavar="SEEDS",
                   help="more seeds at some points (with --at and --variants), run into "
                        "runs/F_eE_seeds; writes F_eE_seeds_vs_published.*")  # fmt: skip
    p.add_argument(
        "--at",
        metavar="SPARSITIES",
        default="0.1,0.5,0.9,0.99",
        help="the sparsities of --extra-seeds (default 0.1,0.5,0.9,0.99)",
    )
    p.add_argument(
        "--variants",
        default="red-linear,red-relu,wide",
        help="the variants of --extra-seeds (default all three)",
    )
    args = p.parse_args()
    args.panel_dir = (RESULTS / "runs" / f"{args.family}_e{args.epochs}").resolve()
    default_dir = args.panel_dir.with_name(f"{args.panel_dir.name}_seeds") if args.extra_seeds \
        else args.panel_dir  # fmt: skip
    args.runs_dir = (args.runs_dir or default_dir).resolve()
    if args.extra_seeds:
        args.seeds = args.extra_seeds
        if args.runs_dir.parent != args.panel_dir.parent:  # (write_seed_outputs reads only there)
            p.error(
                f"--extra-seeds runs go in a folder of {args.panel_dir.parent}, not {args.runs_dir}"
            )
    if not args.compare_only:
        finished = count_finished(args.runs_dir)
        load, t0 = os.getloadavg(), time.perf_counter()
        run_sweep(args)
        wall = time.perf_counter() - t0
        print(f"sweep done in {wall / 60:.1f} min")
        if args.timing_json:
            write_timing(args, wall, load, count_finished(args.runs_dir) - finished)
    (write_seed_outputs if args.extra_seeds else write_outputs)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
