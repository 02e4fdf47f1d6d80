"""A tour of the Python API: approximate a matrix (Experiment 1), train a small supermask
(Experiment 2) and reload both tickets.

    python examples/api_tour.py [OUT_DIR]

The two tickets are written to ``OUT_DIR`` (created if needed) and kept; without it they go to a
temporary folder that is removed at the end. Either way the tour prints where it writes.
MNIST comes from ``LOTTERY_JAX_DATA`` (a directory with the four IDX files) or is downloaded once
into the cache (``lottery-jax data info`` says where). Takes about a minute on a laptop CPU.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import lottery_jax as lj


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    print(f"writing the tickets to {out}")

    # --- Experiment 1: every entry of a conv kernel as a subset sum of n = 21 random numbers -----
    kernel = np.random.default_rng(0).uniform(-0.5, 0.5, (16, 6, 5, 5))
    approx = lj.approximate(kernel, epsilon=0.01, c=3.0, seed=0)
    report = approx.report
    print(
        f"approximate: {report['target_params']:,} weights, all within eps: "
        f"{report['all_within_epsilon']}, max error {report['max_error']:.2e}, "
        f"{report['remaining_params']:,} coefficients kept ({report['relative_size']:.2f}x)"
    )
    assert np.max(np.abs(approx.weights - kernel)) <= 0.01
    subsetsum_ticket = lj.save_ticket(out / "kernel-ticket.npz", approx)

    # --- Experiment 2: a redundant 784-64-10 network (r = 3), only its supermask trained ----------
    data = lj.load_dataset(inputs="normalized")
    small = data._replace(
        train_images=data.train_images[:6000], train_labels=data.train_labels[:6000]
    )
    config = lj.PruneConfig(model="red", sizes=(784, 64, 10), redundancy=3, epochs=2)
    batch = lj.make_batch(config, [(0, 0.5), (0, 0.9)])  # two sparsities, one compiled program
    history = lj.train_batch(
        batch, small, on_epoch=lambda e, accs, s: print(f"epoch {e}: {accs} ({s:.1f}s)")
    )
    for (seed, sparsity), accs in zip(batch.members, history["test_accuracy"], strict=True):
        print(f"supermask: seed {seed}, sparsity {sparsity}: {accs[-1]:.2f}% test accuracy")

    supermask_ticket = lj.save_ticket(out / "supermask-ticket.npz", lj.member_ticket(batch, 0))

    # --- Reload both tickets: load_ticket says which kind each file is ------------------------
    for p in (subsetsum_ticket, supermask_ticket):
        t = lj.load_ticket(p)
        print(f"{p}: a {t.kind} ticket ({t.format})")
    assert lj.verify_ticket(subsetsum_ticket).exit_code == 0  # every subset sum recomputed
    rebuilt = lj.net_from_ticket(lj.load_supermask_ticket(supermask_ticket))
    acc = lj.evaluate(rebuilt, data.test_images, data.test_labels)
    print(f"rebuilt from its ticket: {acc:.2f}% (trained: {history['test_accuracy'][0][-1]:.2f}%)")
    assert acc == history["test_accuracy"][0][-1]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="lj-tour-") as tmp:
            main(Path(tmp))
            print(f"removing {tmp} (pass an OUT_DIR to keep the tickets)")
