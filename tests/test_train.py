"""Training: the SGD update by hand, the schedules, batching, frozen weights, determinism, resume."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_digits
from flax import nnx

from lottery_jax.data import Dataset, preprocess
from lottery_jax.errors import UserError
from lottery_jax.nets.targets import build_model, load_torch_state, torch_state
from lottery_jax.training import (
    Recipe,
    cross_entropy,
    epoch_indices,
    epoch_key,
    evaluate,
    fit,
    make_optimizer,
    make_step_runner,
    steps_per_epoch,
)


def _toy_dataset(n_train=256, n_test=128, inputs="normalized") -> Dataset:
    tr_x, tr_y = synthetic_digits(n_train, 1)
    te_x, te_y = synthetic_digits(n_test, 2)
    return Dataset(
        train_images=jnp.asarray(preprocess(tr_x, inputs)),
        train_labels=jnp.asarray(tr_y, jnp.int32),
        test_images=jnp.asarray(preprocess(te_x, inputs)),
        test_labels=jnp.asarray(te_y, jnp.int32),
        name="toy",
    )


def _snapshot(model) -> dict[str, np.ndarray]:
    """A copy of the weights (``fit`` donates its buffers, so keep no live references)."""
    return {k: np.array(v, copy=True) for k, v in torch_state(model).items()}


# --- one SGD step by hand ------------------------------------------------------------------------


def _numpy_grads(w1, w2, x, y, v):
    """Gradients of the masked mean cross-entropy of relu(x W1^T) W2^T (float64)."""
    z = x @ w1.T
    h = np.maximum(z, 0)
    logits = h @ w2.T
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    onehot = np.eye(10)[y]
    loss = -(np.log((p * onehot).sum(axis=1)) * v).sum() / v.sum()
    dlogits = (p - onehot) * v[:, None] / v.sum()
    dw2 = dlogits.T @ h
    dz = (dlogits @ w2) * (z > 0)
    dw1 = dz.T @ x
    return loss, dw1, dw2


def test_two_sgd_steps_against_numpy():
    """wd added to the gradient, momentum buffer without dampening, lr per epoch, masked batch."""
    lr, m, wd = 0.1, 0.9, 5e-4
    model = build_model("fc2", seed=3, hidden=3)
    s0 = _snapshot(model)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    idx = np.array([[5, 1, 7, 2], [0, 3, 6, 4]], np.int32)
    valid = np.array([[True] * 4, [True, True, True, False]])

    # Two epochs of one step each: step 0 uses lr, step 1 uses lr (1 + cos(pi/2)) / 2 = lr / 2.
    optimizer = make_optimizer(lr, epochs=2, steps_per_epoch=1, momentum=m, weight_decay=wd)
    graphdef, trainable, rest = nnx.split(model, nnx.Param, ...)
    opt_state = optimizer.init(trainable)
    run = make_step_runner(graphdef, optimizer)
    trainable, opt_state, mean_loss = run(
        trainable, opt_state, rest, jnp.asarray(images), jnp.asarray(labels),
        jnp.asarray(idx), jnp.asarray(valid), jnp.int32(0), jnp.int32(2),
    )  # fmt: skip
    nnx.update(model, trainable)
    got = torch_state(model)

    x = images.reshape(8, -1).astype(np.float64)
    w1, w2 = s0["fc1.weight"].astype(np.float64), s0["fc2.weight"].astype(np.float64)
    losses, bufs = [], None
    for step, rate in enumerate((lr, lr / 2)):
        b = idx[step]
        loss, g1, g2 = _numpy_grads(w1, w2, x[b], labels[b], valid[step].astype(np.float64))
        losses.append(loss)
        g1, g2 = g1 + wd * w1, g2 + wd * w2
        bufs = (g1, g2) if bufs is None else (m * bufs[0] + g1, m * bufs[1] + g2)
        w1, w2 = w1 - rate * bufs[0], w2 - rate * bufs[1]

    np.testing.assert_allclose(got["fc1.weight"], w1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["fc2.weight"], w2, rtol=1e-5, atol=1e-7)
    # The updates themselves (not only the weights they were added to) match.
    np.testing.assert_allclose(got["fc2.weight"] - s0["fc2.weight"], w2 - s0["fc2.weight"],
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    assert np.abs(w2 - s0["fc2.weight"]).max() > 1e-3
    assert float(mean_loss) == pytest.approx(np.mean(losses), rel=1e-5)


def test_masked_examples_do_not_count():
    model = build_model("fc2", seed=0, hidden=3)
    logits = model(jax.random.normal(jax.random.key(0), (4, 28, 28, 1)))
    labels = jnp.array([1, 2, 3, 4])
    valid = jnp.array([True, False, True, False])
    expected = cross_entropy(logits[jnp.array([0, 2])], labels[jnp.array([0, 2])])
    assert float(cross_entropy(logits, labels, valid)) == pytest.approx(float(expected), rel=1e-6)
    assert float(cross_entropy(logits, labels, jnp.zeros(4, bool))) == 0.0


# --- schedules -----------------------------------------------------------------------------------


def _lr_sequence(optimizer, steps: int) -> np.ndarray:
    """The rate of each step: with momentum 0 and no weight decay, a unit gradient moves by -lr."""
    params = {"w": jnp.zeros(())}
    state = optimizer.init(params)
    rates = []
    for _ in range(steps):
        updates, state = optimizer.update({"w": jnp.ones(())}, state, params)
        rates.append(-float(updates["w"]))
    return np.array(rates)


def test_cosine_schedule_per_epoch():
    lr, epochs, spe = 0.1, 5, 7
    opt = make_optimizer(lr, epochs, spe, momentum=0.0, weight_decay=0.0)
    rates = _lr_sequence(opt, epochs * spe).reshape(epochs, spe)
    expected = [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    for e in range(epochs):
        np.testing.assert_allclose(rates[e], expected[e], rtol=1e-6)  # constant in an epoch
    assert rates[0, 0] == pytest.approx(lr)
    assert rates[-1, -1] == pytest.approx(lr * (1 + math.cos(math.pi * 4 / 5)) / 2, rel=1e-6)
    for e in range(epochs):
        assert float(rates[e, 0]) == pytest.approx(expected[e], rel=1e-6)  # the epoch's rate


def test_cosine_schedule_per_step():
    lr, epochs, spe = 0.1, 3, 4
    opt = make_optimizer(lr, epochs, spe, momentum=0.0, weight_decay=0.0, schedule="step")
    rates = _lr_sequence(opt, epochs * spe)
    total = epochs * spe
    expected = [lr * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=1e-9)
    assert np.all(np.diff(rates) < 0)


def test_single_epoch_schedule_is_constant():
    rates = _lr_sequence(make_optimizer(0.1, 1, 10, momentum=0.0, weight_decay=0.0), 10)
    np.testing.assert_allclose(rates, 0.1, rtol=1e-6)


def test_unknown_schedule():
    with pytest.raises(UserError, match="schedule"):
        make_optimizer(0.1, 1, 10, schedule="linear")


# --- batching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch"), [(10, 4), (12, 4), (3, 64), (1, 1), (257, 64)])
def test_epoch_indices_cover_every_example_once(n, batch):
    idx, valid = epoch_indices(jax.random.key(0), n, batch)
    idx, valid = np.asarray(idx), np.asarray(valid)
    steps = steps_per_epoch(n, batch)
    assert steps == math.ceil(n / batch)
    assert idx.shape == valid.shape == (steps, batch) and idx.dtype == np.int32
    assert np.array_equal(np.sort(idx[valid]), np.arange(n))
    assert valid.sum() == n
    assert valid[:-1].all()  # only the last batch is padded
    assert valid[-1].sum() == n - (steps - 1) * batch
    assert np.all((idx >= 0) & (idx < n))  # padding indexes a real row (then masked)


def test_epoch_indices_shuffle():
    a, _ = epoch_indices(epoch_key(0, 0), 100, 10)
    b, _ = epoch_indices(epoch_key(0, 0), 100, 10)
    c, _ = epoch_indices(epoch_key(0, 1), 100, 10)
    d, _ = epoch_indices(epoch_key(1, 0), 100, 10)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert not np.array_equal(np.asarray(a).ravel(), np.arange(100))


# --- evaluation ----------------------------------------------------------------------------------


def test_evaluate_and_accuracy_agree_with_numpy():
    data = _toy_dataset(n_train=8, n_test=1003)  # not a multiple of the eval batch
    model = build_model("fc2", seed=0, hidden=16)
    pred = np.argmax(np.asarray(model(data.test_images)), axis=1)
    expected = 100.0 * np.sum(pred == np.asarray(data.test_labels)) / 1003
    assert evaluate(model, data.test_images, data.test_labels) == pytest.approx(expected, abs=1e-9)


# --- fit -----------------------------------------------------------------------------------------


def test_fit_rejects_bad_options():
    data = _toy_dataset(16, 8)
    model = build_model("fc2", seed=0, hidden=4)
    for kwargs in ({"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": -0.1}, {"epochs": -1}):
        args = {"lr": 0.1, "epochs": 1, "batch_size": 8, "seed": 0} | kwargs
        with pytest.raises(UserError, match="positive"):
            fit(model, data, Recipe(**args))


def test_fit_history_and_learning():
    data = _toy_dataset()
    model = build_model("fc2", seed=0, hidden=32)
    hist = fit(model, data, Recipe(lr=0.1, epochs=3, batch_size=64, seed=0))
    assert len(hist.test_accuracy) == len(hist.epoch_seconds) == 3
    assert len(hist.train_loss) == 3 and hist.compile_seconds > 0
    assert all(t > 0 for t in hist.epoch_seconds)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.test_accuracy[-1] >= 90.0  # the toy set is easy
    assert hist.test_accuracy[-1] == evaluate(model, data.test_images, data.test_labels)
    assert hist.opt_state is not None


def test_lenet5_fit_keeps_conv_weights_exactly():
    data = _toy_dataset(200, 32)  # 200 = 3 full batches + a partial one
    model = build_model("lenet5", seed=0)
    before = _snapshot(model)
    fit(model, data, Recipe(lr=0.01, epochs=1, batch_size=64, seed=0))
    after = torch_state(model)
    for key in ("conv1.weight", "conv2.weight"):
        np.testing.assert_array_equal(after[key], before[key])
    for key in ("fc1.weight", "fc2.weight", "fc3.weight"):
        assert not np.array_equal(after[key], before[key]), key
        assert np.all(np.isfinite(after[key]))


def test_fit_only_trains_wrt():
    """``wrt`` selects what trains: with a filter for fc2 only, fc1 stays exactly."""
    data = _toy_dataset(64, 16)
    model = build_model("fc2", seed=0, hidden=8)
    before = _snapshot(model)
    only_fc2 = nnx.All(nnx.Param, nnx.PathContains("fc2"))
    fit(model, data, Recipe(lr=0.1, epochs=1, batch_size=16, seed=0), wrt=only_fc2)
    after = torch_state(model)
    np.testing.assert_array_equal(after["fc1.weight"], before["fc1.weight"])
    assert not np.array_equal(after["fc2.weight"], before["fc2.weight"])


def test_callbacks_count_epochs_from_one():
    """``on_chunk`` and ``on_epoch`` say "epoch 1" for the first epoch, as every command prints
    (fit, and the batched trainer of prune/sweep), and a resumed fit goes on from there."""
    from lottery_jax.pruning import PruneConfig, make_batch, train_batch

    data = _toy_dataset(128, 32)
    chunks, epochs = [], []
    recipe = Recipe(lr=0.1, epochs=2, batch_size=64, seed=0)
    fit(build_model("fc2", seed=0, hidden=4), data, recipe,
        on_chunk=lambda e, *rest: chunks.append(e), on_epoch=lambda e, *rest: epochs.append(e))  # fmt: skip
    assert sorted(set(chunks)) == [1, 2] and epochs == [1, 2]
    later = []
    fit(build_model("fc2", seed=0, hidden=4), data, recipe, start_epoch=1,
        on_epoch=lambda e, *rest: later.append(e))  # fmt: skip
    assert later == [2]
    batch = make_batch(PruneConfig(model="red", sizes=(784, 4, 10), redundancy=1, epochs=1),
                       [(0, 0.5)])  # fmt: skip
    seen = []
    train_batch(batch, data, on_chunk=lambda e, *rest: seen.append(("chunk", e)),
                on_epoch=lambda e, *rest: seen.append(("epoch", e)))  # fmt: skip
    assert set(seen) == {("chunk", 1), ("epoch", 1)}


def test_fit_resume_equals_uninterrupted():
    data = _toy_dataset(200, 64)
    recipe = Recipe(lr=0.1, epochs=3, batch_size=64, seed=4)

    straight = build_model("fc2", seed=1, hidden=16)
    full = fit(straight, data, recipe)

    class Stop(Exception):
        pass

    saved = {}

    def stop_after_first(epoch, history, model, opt_state):
        saved["weights"] = _snapshot(model)
        saved["opt"] = jax.tree.map(lambda a: np.array(a, copy=True), opt_state)
        saved["epoch"] = epoch
        raise Stop

    first = build_model("fc2", seed=1, hidden=16)
    with pytest.raises(Stop):
        fit(first, data, recipe, on_epoch=stop_after_first)
    assert saved["epoch"] == 1  # (epochs count from 1, as printed: the first one is done)

    resumed = build_model("fc2", seed=99, hidden=16)  # weights come from the "checkpoint"
    load_torch_state(resumed, saved["weights"])
    opt = jax.tree.map(jnp.asarray, saved["opt"])
    rest = fit(resumed, data, recipe, start_epoch=1, opt_state=opt)
    assert rest.test_accuracy == full.test_accuracy[1:]
    for key, value in torch_state(straight).items():
        np.testing.assert_array_equal(torch_state(resumed)[key], value)


@pytest.mark.shared_data
def test_fit_on_mnist_subset_is_deterministic(mnist_normalized, capsys):
    d = mnist_normalized
    data = Dataset(
        d.train_images[:2000],
        d.train_labels[:2000],
        d.test_images[:1000],
        d.test_labels[:1000],
        "s",
    )
    results = []
    seen = []
    for seed, report in ((0, False), (0, True), (1, False)):
        model = build_model("fc2", seed=0)
        cb = {"on_chunk": lambda *a: seen.append(a)} if report else {}
        hist = fit(model, data, Recipe(lr=0.1, epochs=1, batch_size=64, seed=seed), **cb)
        results.append((torch_state(model), hist))
    (a, ha), (b, hb), (c, hc) = results
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])
    assert ha.test_accuracy == hb.test_accuracy
    assert ha.train_loss[0] == pytest.approx(hb.train_loss[0], rel=1e-6)
    assert ha.test_accuracy[0] > 70.0  # 32 steps on 2,000 images
    # The callback saw every chunk of the second fit: (epoch, steps done, steps total, mean loss).
    assert [a[:3] for a in seen] == [(1, 32, 32)] and seen[-1][3] == pytest.approx(hb.train_loss[0])


@pytest.mark.parametrize("name", ["fc2", "lenet5"])
def test_three_epochs_match_pytorch_sgd(name):
    """The recipe against torch.optim.SGD + CosineAnnealingLR (stepped per epoch), same batches.

    Three epochs of one step each (so the schedule moves every step); the last batch is partial
    (padded and masked on our side, a short batch in PyTorch).
    """
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    lr = 0.1 if name == "fc2" else 0.01
    model = build_model(name, seed=2, hidden=12 if name == "fc2" else None)
    s0 = _snapshot(model)
    rng = np.random.default_rng(1)
    images = rng.normal(0, 1, (12, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 12).astype(np.int32)
    idx = np.array([[3, 7, 1, 0, 9], [2, 4, 6, 8, 10], [11, 5, 0, 0, 0]], np.int32)
    valid = np.array([[True] * 5, [True] * 5, [True, True, False, False, False]])

    optimizer = make_optimizer(lr, epochs=3, steps_per_epoch=1)
    graphdef, trainable, rest = nnx.split(model, nnx.Param, ...)
    run = make_step_runner(graphdef, optimizer)
    trainable, _, _ = run(
        trainable, optimizer.init(trainable), rest, jnp.asarray(images), jnp.asarray(labels),
        jnp.asarray(idx), jnp.asarray(valid), jnp.int32(0), jnp.int32(3),
    )  # fmt: skip
    nnx.update(model, trainable)
    got = torch_state(model)

    w = {k: torch.tensor(v, requires_grad=not k.startswith("conv")) for k, v in s0.items()}

    def forward(x):
        if name == "fc2":
            return F.relu(x.flatten(1) @ w["fc1.weight"].T) @ w["fc2.weight"].T
        h = F.max_pool2d(F.relu(F.conv2d(x, w["conv1.weight"], padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, w["conv2.weight"])), 2).flatten(1)
        h = F.relu(F.relu(h @ w["fc1.weight"].T) @ w["fc2.weight"].T)
        return h @ w["fc3.weight"].T

    trained = [v for v in w.values() if v.requires_grad]
    opt = torch.optim.SGD(trained, lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    x_all = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y_all = torch.from_numpy(labels.astype(np.int64))
    for step in range(3):
        b = torch.from_numpy(idx[step][valid[step]].astype(np.int64))
        opt.zero_grad()
        F.cross_entropy(forward(x_all[b]), y_all[b]).backward()
        opt.step()
        sched.step()
    for key, value in w.items():
        np.testing.assert_allclose(got[key], value.detach().numpy(), rtol=1e-5, atol=1e-6)
        if key.startswith("conv"):
            np.testing.assert_array_equal(got[key], s0[key])
        else:
            assert np.abs(got[key] - s0[key]).max() > 1e-4, key


def test_benchmark_script_runs(tmp_path, tiny_idx_dir, capsys):
    """benchmarks/bench_train.py end to end on the tiny synthetic set (PyTorch side if installed)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = [
        "--quick",
        "--models",
        "fc2",
        "--data-dir",
        str(tiny_idx_dir),
        "--json",
        str(out),
    ]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"fc2"}
    for row in report["models"].values():
        assert row["jax"]["epoch_seconds"] > 0 and row["jax"]["compile_seconds"] > 0
        assert row["jax"]["steps"] == 4  # 256 images: the whole (tiny) epoch
        if "torch" in row:
            assert row["torch"]["steps"] == 4 and row["speedup"] > 0
    printed = capsys.readouterr().out
    assert "fc2" in printed and "JAX epoch" in printed


def test_fit_leaves_the_callers_arrays_alive():
    """``fit`` donates its buffers to XLA; arrays the caller took from the model (e.g. the init,
    kept for rewinding) and a passed-in ``opt_state`` must stay valid and unchanged."""
    data = _toy_dataset(64, 16)
    model = build_model("fc2", seed=0, hidden=8)
    w0 = model.fc1.weight[...]
    copy0 = np.array(w0, copy=True)
    hist = fit(model, data, Recipe(lr=0.1, epochs=1, batch_size=16, seed=0))
    assert not w0.is_deleted()
    np.testing.assert_array_equal(np.asarray(w0), copy0)
    assert not np.array_equal(np.asarray(model.fc1.weight[...]), copy0)  # it did train

    opt = hist.opt_state
    leaves = [np.array(x, copy=True) for x in jax.tree.leaves(opt)]
    fit(model, data, Recipe(lr=0.1, epochs=2, batch_size=16, seed=0), start_epoch=1,
        opt_state=opt)  # fmt: skip
    for x, before in zip(jax.tree.leaves(opt), leaves, strict=True):
        assert not x.is_deleted()
        np.testing.assert_array_equal(np.asarray(x), before)


def test_lenet5_precomputed_features_equal_the_full_model():
    """Training LeNet5's head on conv features computed once == training through the convs."""
    data = _toy_dataset(200, 64)
    results = []
    for precompute in (True, False):
        model = build_model("lenet5", seed=0)
        before = _snapshot(model)
        hist = fit(model, data, Recipe(lr=0.01, epochs=2, batch_size=64, seed=0),
                   precompute_features=precompute)  # fmt: skip
        after = torch_state(model)
        for key in ("conv1.weight", "conv2.weight"):
            np.testing.assert_array_equal(after[key], before[key])
        results.append((after, hist))
    (a, ha), (b, hb) = results
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert ha.test_accuracy == pytest.approx(hb.test_accuracy, abs=100 / 64 + 1e-9)
    assert ha.feature_seconds > 0
