"""One training epoch of FC2 and LeNet5: lottery_jax (compiled JAX loop) vs. the PyTorch loop.

Both sides use the published recipe on MNIST with normalized inputs: SGD(lr, momentum 0.9, weight
decay 5e-4 added to the gradient), batch 64, cosine schedule stepped per epoch (constant within the
one epoch timed), no biases, LeNet5's conv weights frozen. The PyTorch side is the published style of
loop: a ``DataLoader(TensorDataset(...), batch_size=64, shuffle=True)`` over in-memory tensors. It
runs only when torch is importable (``pip install torch==2.13.0`` gives a CPU build).

JAX epoch time excludes compilation, which is reported separately; neither side gets a warm-up.

    python benchmarks/bench_train.py                    # both models, one full epoch each
    python benchmarks/bench_train.py --quick            # first 200 batches, scaled to an epoch
    python benchmarks/bench_train.py --models fc2 --json bench.json
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from lottery_jax.data import Dataset
from lottery_jax.nets.targets import build_model, count_params
from lottery_jax.training import DEFAULT_LR, Recipe, fit, steps_per_epoch

BATCH = 64
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
QUICK_STEPS = 200
MODELS = ("fc2", "lenet5")


def bench_jax(
    name: str, data: Dataset, *, steps: int | None, seed: int, precompute: bool = True
) -> dict:
    """One epoch with ``lottery_jax.training.fit`` (on the first ``steps`` batches if given).

    LeNet5's frozen conv features are computed once per run by default (``feature_seconds``, which
    counts toward the epoch: ``epoch_seconds`` = training loop + features; compile excluded).
    """
    n_full = int(data.train_images.shape[0])
    full_steps = steps_per_epoch(n_full, BATCH)
    if steps is not None and steps < full_steps:
        n = steps * BATCH
        data = data._replace(train_images=data.train_images[:n], train_labels=data.train_labels[:n])
    run_steps = steps_per_epoch(int(data.train_images.shape[0]), BATCH)
    model = build_model(name, seed=seed)
    recipe = Recipe(lr=DEFAULT_LR[name], epochs=1, batch_size=BATCH, seed=seed)
    hist = fit(model, data, recipe, precompute_features=precompute)
    measured = hist.epoch_seconds[0]
    features = hist.feature_seconds
    loop = measured * full_steps / run_steps
    return {
        "epoch_seconds": loop + features,
        "loop_seconds": loop,
        "feature_seconds": features,
        "precompute_features": precompute,
        "measured_seconds": measured,
        "steps": run_steps,
        "compile_seconds": hist.compile_seconds,
        "test_accuracy": hist.test_accuracy[0],
        "trainable_params": count_params(model),
    }


def torch_model(name: str):
    from torch import nn

    if name == "fc2":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 500, bias=False),
            nn.ReLU(),
            nn.Linear(500, 10, bias=False),
        )
    if name == "lenet5":
        net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2, bias=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, bias=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120, bias=False),
            nn.ReLU(),
            nn.Linear(120, 84, bias=False),
            nn.ReLU(),
            nn.Linear(84, 10, bias=False),
        )
        for layer in (net[0], net[3]):  # conv weights stay at their random init
            layer.weight.requires_grad_(False)
        return net
    raise ValueError(name)


def bench_torch(name: str, data: Dataset, *, steps: int | None, seed: int) -> dict:
    """The published PyTorch loop for one epoch (the first ``steps`` batches if given)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    to_nchw = lambda x: torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy())  # noqa: E731
    train_x, test_x = to_nchw(data.train_images), to_nchw(data.test_images)
    train_y = torch.from_numpy(np.asarray(data.train_labels).astype(np.int64))
    test_y = torch.from_numpy(np.asarray(data.test_labels).astype(np.int64))
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=BATCH, shuffle=True)

    # Same device as JAX where PyTorch can reach it (a GPU machine): batches move there one by one,
    # as in the published loop.
    device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    net = torch_model(name).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=DEFAULT_LR[name], momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1)

    net.train()
    done = 0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        done += 1
        if steps is not None and done >= steps:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    measured = time.perf_counter() - t0
    sched.step()

    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, test_x.shape[0], 1000):
            pred = net(test_x[i : i + 1000].to(device)).argmax(dim=1).cpu()
            correct += int((pred == test_y[i : i + 1000]).sum())
    return {
        "epoch_seconds": measured * len(loader) / done,
        "measured_seconds": measured,
        "steps": done,
        "test_accuracy": 100.0 * correct / test_x.shape[0],
        "threads": torch.get_num_threads(),
        "torch_device": device,
        "torch_version": torch.__version__,
    }


def best_of(repeat: int, bench, *args, **kwargs) -> dict:
    """The run with the fastest epoch out of ``repeat`` (all epoch times kept as ``all_epoch_seconds``)."""
    runs = [bench(*args, **kwargs) for _ in range(max(1, repeat))]
    best = dict(min(runs, key=lambda r: r["epoch_seconds"]))
    best["all_epoch_seconds"] = [r["epoch_seconds"] for r in runs]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: fc2,lenet5")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"time the first {QUICK_STEPS} batches only and scale to a full epoch (LeNet5 conv "
        "features then cover those batches and the test set only)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time each side N times and report the fastest epoch (for a busy machine)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop")
    parser.add_argument(
        "--no-precompute",
        action="store_true",
        help="run LeNet5's frozen convs every step instead of once per run",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch.set_num_threads (default: all cores; on a busy machine 1 can be much faster)",
    )
    args = parser.parse_args(argv)

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        parser.error(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from fc2,lenet5")
    steps = QUICK_STEPS if args.quick else None

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: timing the JAX side only", file=sys.stderr)
        else:
            torch.set_num_threads(args.torch_threads)

    data = harness.load_data(args.data_dir, "normalized")
    jax.block_until_ready(data.train_images)
    full = int(data.train_images.shape[0]) == 60_000  # quality bands hold for the real MNIST
    report = harness.header(quick=args.quick, repeat=args.repeat, batch_size=BATCH, models={})
    if torch is not None:
        print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    if args.quick:
        print(f"quick: first {QUICK_STEPS} batches, scaled to an epoch")
    for name in names:
        row = {
            "jax": best_of(
                args.repeat,
                bench_jax,
                name,
                data,
                steps=steps,
                seed=args.seed,
                precompute=not args.no_precompute,
            )
        }
        if torch is not None:
            row["torch"] = best_of(
                args.repeat, bench_torch, name, data, steps=steps, seed=args.seed
            )
            row["speedup"] = row["torch"]["epoch_seconds"] / row["jax"]["epoch_seconds"]
        report["models"][name] = row
        j = row["jax"]
        line = (
            f"{name:7s} JAX epoch {j['epoch_seconds']:7.3f} s ("
            + (
                f"loop {j['loop_seconds']:.3f} s + conv features {j['feature_seconds']:.2f} s once "
                "per run; "
                if j["feature_seconds"] > 1e-3
                else ""
            )
            + f"compile {j['compile_seconds']:.2f} s, test {j['test_accuracy']:.2f}%)"
        )
        if "torch" in row:
            t = row["torch"]
            line += (
                f" | PyTorch epoch {t['epoch_seconds']:7.3f} s (test {t['test_accuracy']:.2f}%)"
                f" | PyTorch/JAX {row['speedup']:.2f}x"
            )
        print(line, flush=True)
        if not math.isfinite(j["epoch_seconds"]):
            return 1
        if full:  # one epoch of the published recipe (200 batches with --quick)
            low = 85.0 if args.quick else 90.0
            harness.check_band(report, f"{name} JAX test accuracy", j["test_accuracy"], low, 100.0)
            if "torch" in row:
                gap = abs(j["test_accuracy"] - row["torch"]["test_accuracy"])
                harness.check_band(report, f"{name} |JAX - PyTorch| accuracy", gap, 0.0, 3.0)
    return harness.finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
