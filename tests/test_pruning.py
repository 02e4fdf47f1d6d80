"""Pruned networks: shapes, counts, widths, batched training, frozen weights, tickets, export."""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_block_data as tiny_data
from flax import nnx
from helpers import assert_one_line_error, run_cli
from lottery_jax.cli import main

from lottery_jax import pruning
from lottery_jax.checkpoint import load_weights, save_weights
from lottery_jax.errors import UserError
from lottery_jax.nets import targets as models
from lottery_jax.nets.pruned import from_planes, plane_index, to_planes
from lottery_jax.nets.supermask import Score, masked, select_cut
from lottery_jax.nets.targets import Frozen

ROOT = Path(__file__).resolve().parents[1]


def mnist_dir() -> Path | None:
    env = os.environ.get("LOTTERY_JAX_DATA")
    for d in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data" / "mnist"]:
        if d.is_dir():
            return d
    return None


def jit_apply(net, x):
    """The net's forward pass, compiled (eager op-by-op dispatch of the mask is slow)."""
    graphdef, state = nnx.split(net)
    return jax.jit(lambda st, x: nnx.merge(graphdef, st)(x))(state, x)


# ----------------------------------------------------------------------------- counts and widths


@pytest.mark.parametrize(
    ("model", "total"),
    [("red-fc2", 1_991_420), ("red-fc4", 4_496_420), ("red-lenet5", 297_620)],
)
def test_redundant_parameter_counts(model, total):
    net = pruning.build_pruned(model, seed=0)
    assert pruning.param_counts(net, 0.0) == (total, total)
    assert pruning.redundant_param_count(model.split("-")[1]) == total


def test_wide_widths_from_the_formulas():
    widths = {f: pruning.wide_width(f, pruning.redundant_param_count(f)) for f in pruning.FC_SIZES}
    assert widths == {"fc2": 2508, "fc4": 1314, "lenet5": 378}
    # The formulas themselves (as published), not only their results.
    assert widths["fc2"] == round(1_991_420 / 794)
    assert widths["fc4"] == round((math.sqrt(8 * 4_496_420 + 794**2) - 794) / 4)
    assert widths["lenet5"] == round((math.sqrt(410**2 + 4 * 297_620) - 410) / 2)
    net = pruning.build_pruned("wide-fc4", seed=0)
    assert [net.fc1.weight[...].shape, net.fc2.weight[...].shape, net.fc4.weight[...].shape] == [
        (1314, 784), (1314, 1314), (10, 1314)
    ]  # fmt: skip


@pytest.mark.parametrize("s", pruning.PUBLISHED_SPARSITIES)
def test_remaining_is_counted_per_tensor(s):
    net = pruning.build_pruned("red-fc2", seed=0)
    sizes = [5 * 784, 500 * 3920, 5 * 500, 10 * 2500]
    total, remaining = pruning.param_counts(net, s)
    assert total == sum(sizes) == 1_991_420
    assert remaining == sum(n - int(n * s) for n in sizes)
    pruning.set_sparsity(net, s)
    assert int(net.fc1.pruned2[...]) == int(500 * 3920 * s)


# ----------------------------------------------------------------------------- the redundant layer


def test_redundant_layer_shapes_and_init():
    layer = pruning.RedundantLinear(784, 500, redundancy=5, rngs=nnx.Rngs(params=0))
    assert layer.weight1[...].shape == layer.scores1[...].shape == (5, 784)
    assert layer.weight2[...].shape == layer.scores2[...].shape == (500, 3920)
    w1, w2 = np.asarray(layer.weight1[...]), np.asarray(layer.weight2[...])
    assert abs(w1.var() - 2.0) < 0.15  # N(0, 2)
    assert abs(w2.var() * 784 / 2.0 - 1.0) < 0.01  # N(0, 2/in)
    s1, s2 = np.asarray(layer.scores1[...]), np.asarray(layer.scores2[...])
    assert np.abs(s1).max() <= math.sqrt(2) and np.abs(s1).max() > 1.3
    assert np.abs(s2).max() <= math.sqrt(2 / 784)
    assert isinstance(layer.weight1, Frozen) and isinstance(layer.scores2, Score)


@pytest.mark.parametrize("relu", [False, True])
def test_redundant_layer_matches_a_loop_with_published_ordering(relu):
    """h[b, j r + k] = f(x[b, j] w1[k, j]); y[b, o] = sum_(j, k) w2[o, j r + k] h[b, j r + k]."""
    r, n_in, n_out = 3, 4, 2
    layer = pruning.RedundantLinear(n_in, n_out, redundancy=r, relu=relu, rngs=nnx.Rngs(params=1))
    layer.pruned1[...] = jnp.int32(4)
    layer.pruned2[...] = jnp.int32(7)
    x = np.asarray(jax.random.normal(jax.random.key(2), (3, n_in)))
    m1 = np.asarray(pruning.topk_mask(jnp.abs(layer.scores1[...]), 4))
    m2 = np.asarray(pruning.topk_mask(jnp.abs(layer.scores2[...]), 7))
    w1 = np.asarray(layer.weight1[...]) * m1
    w2 = np.asarray(layer.weight2[...]) * m2
    want = np.zeros((3, n_out))
    for b in range(3):
        for o in range(n_out):
            for j in range(n_in):
                for k in range(r):
                    h = x[b, j] * w1[k, j]
                    h = max(h, 0.0) if relu else h
                    want[b, o] += w2[o, j * r + k] * h
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)


def test_collapse_gradient_matches_autodiff_of_the_plain_sum():
    w1 = jax.random.normal(jax.random.key(0), (5, 7))
    w2 = jax.random.normal(jax.random.key(1), (3, 35))
    g = jax.random.normal(jax.random.key(2), (3, 7))

    def plain(a, b):
        return jnp.sum(b.reshape(3, 7, 5) * a.T[None], axis=-1)

    np.testing.assert_allclose(pruning.collapse(w1, w2), plain(w1, w2), rtol=1e-6, atol=1e-6)
    ga = jax.grad(lambda a, b: jnp.sum(pruning.collapse(a, b) * g), argnums=(0, 1))(w1, w2)
    gb = jax.grad(lambda a, b: jnp.sum(plain(a, b) * g), argnums=(0, 1))(w1, w2)
    for a, b in zip(ga, gb, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _expanded_layer(layer, x):
    """The published redundant layer, expanded: h[b, j r + k] = f(x[b, j] w1m[k, j]), y = h w2m^T
    (masks by the straight-through ``masked`` of the full top-k, as before the collapse)."""
    w1 = masked(layer.weight1[...], layer.scores1[...], layer.pruned1[...])
    w2 = masked(layer.weight2[...], layer.scores2[...], layer.pruned2[...])
    h = x[:, :, None] * w1.T[None]
    h = jax.nn.relu(h) if layer.relu else h
    return h.reshape(x.shape[0], -1) @ w2.T


#: Float tolerance of the collapsed layer against the expanded one (float32 sums in another order).
COLLAPSE_RTOL, COLLAPSE_ATOL = 2e-5, 1e-6


@pytest.mark.parametrize(("relu", "nonneg"), [(False, False), (True, False), (True, True)])
def test_collapsed_layer_and_score_gradients_equal_the_expanded_layer(relu, nonneg):
    """relu(x w) = x+ max(w, 0) + x- min(w, 0): forward and d/d scores equal the expanded layer."""
    r, n_in, n_out = 3, 9, 5
    layer = pruning.RedundantLinear(n_in, n_out, redundancy=r, relu=relu, rngs=nnx.Rngs(params=4))
    layer.pruned1[...] = jnp.int32(8)
    layer.pruned2[...] = jnp.int32(60)
    x = jax.random.normal(jax.random.key(5), (6, n_in))
    x = jax.nn.relu(x) if nonneg else x
    c = jax.random.normal(jax.random.key(6), (6, n_out))
    graphdef, scores, rest = nnx.split(layer, Score, ...)

    def loss(sc, fn):
        return jnp.sum(fn(nnx.merge(graphdef, sc, rest), x) * c)

    def collapsed(net, x):
        return net(x, nonneg=nonneg)

    for fn in (collapsed, _expanded_layer):
        assert np.isfinite(float(loss(scores, fn)))
    np.testing.assert_allclose(collapsed(layer, x), _expanded_layer(layer, x),
                               rtol=COLLAPSE_RTOL, atol=COLLAPSE_ATOL)  # fmt: skip
    got = jax.grad(loss)(scores, collapsed)
    want = jax.grad(loss)(scores, _expanded_layer)
    for key in ("scores1", "scores2"):
        a, b = np.asarray(got[key][...]), np.asarray(want[key][...])
        assert np.abs(b).max() > 0.1  # (gradients of substance, pruned entries included)
        np.testing.assert_allclose(a, b, rtol=COLLAPSE_RTOL, atol=COLLAPSE_ATOL * np.abs(b).max())


def test_planes_layout_roundtrip_and_published_tie_index():
    a = jnp.arange(4 * 15, dtype=jnp.float32).reshape(4, 15)  # out 4, in 5, r 3
    p = to_planes(a, 3)
    assert p.shape == (3, 4, 5) and float(p[2, 1, 4]) == float(a[1, 4 * 3 + 2])
    np.testing.assert_array_equal(from_planes(p), a)
    np.testing.assert_array_equal(from_planes(plane_index(p.shape)),
                                  np.arange(60).reshape(4, 15))  # fmt: skip
    # Ties are broken by the published index whatever the layout: the same cut, the same mask.
    tied = jnp.round(jax.random.normal(jax.random.key(0), (4, 15)) * 2) / 2
    for k in (0, 7, 30, 59):
        cut = select_cut(tied, k)
        pc = select_cut(to_planes(tied, 3), k, order="planes")
        assert [int(v) for v in cut] == [int(v) for v in pc]


def test_lenet5_features_match_the_foundation_lenet5():
    base = models.build_model("lenet5", seed=3)
    conv = {k: v for k, v in models.torch_state(base).items() if k.startswith("conv")}
    net = pruning.build_pruned("red-lenet5", seed=0, conv_state=conv)
    x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    g1, s1 = nnx.split(net)
    g2, s2 = nnx.split(base)
    feats = jax.jit(lambda a, b, x: (nnx.merge(g1, a).features(x), nnx.merge(g2, b).features(x)))
    mine, theirs = feats(s1, s2, x)
    np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_conv_checkpoint_of_the_wrong_shape_is_a_user_error(tmp_path):
    fc2 = models.build_model("fc2", seed=0)
    save_weights(tmp_path / "fc2.npz", "fc2", models.torch_state(fc2))
    with pytest.raises(UserError, match="conv1.weight"):
        pruning.load_conv_checkpoint(tmp_path / "fc2.npz")
    bad = models.torch_state(models.build_model("lenet5", seed=0))
    bad["conv2.weight"] = np.zeros((16, 6, 3, 3), np.float32)
    save_weights(tmp_path / "bad.npz", "lenet5", bad)
    with pytest.raises(UserError, match=r"conv2.weight has shape \(16, 6, 3, 3\)"):
        pruning.load_conv_checkpoint(tmp_path / "bad.npz")


# ----------------------------------------------------------------------------- batched training


def _frozen_arrays(batch):
    fz = batch.frozen if batch.frozen_shared else batch.frozen[0]
    return [np.array(x) for x in jax.tree.leaves(fz)]


@pytest.fixture(scope="module")
def trained_batch():
    cfg = pruning.PruneConfig(model="red-fc2", epochs=2, lr=0.1)
    batch = pruning.make_batch(cfg, [(0, 0.5), (0, 0.9)])
    before = _frozen_arrays(batch)
    scores_before = [np.array(x) for x in jax.tree.leaves(batch.scores[0])]
    data = tiny_data()
    history = pruning.train_batch(batch, data)
    return batch, data, history, before, scores_before


def test_frozen_weights_unchanged_and_scores_trained(trained_batch):
    batch, _, history, before, scores_before = trained_batch
    for a, b in zip(before, _frozen_arrays(batch), strict=True):
        np.testing.assert_array_equal(a, b)
    after = [np.array(x) for x in jax.tree.leaves(batch.scores[0])]
    assert any(not np.array_equal(a, b) for a, b in zip(scores_before, after, strict=True))
    assert len(history["test_accuracy"]) == 2 and len(history["test_accuracy"][0]) == 2
    assert len(history["epoch_seconds"]) == 2 and history["compile_seconds"] > 0
    # Counts are fixed: exact sparsity after training.
    for i, s in enumerate((0.5, 0.9)):
        net = pruning.member_net(batch, i)
        masks = pruning.ticket_masks(net)
        for key, m in masks.items():
            assert m.size - m.sum() == int(s * m.size), key


def test_batched_members_equal_single_runs_bit_for_bit(trained_batch):
    """A member's result does not depend on its group (so the grouping rule changes only speed)."""
    batch, data, history, _, _ = trained_batch
    cfg = batch.config
    single = pruning.make_batch(cfg, [(0, 0.9)])
    alone = pruning.train_batch(single, data)
    for a, b in zip(
        jax.tree.leaves(batch.scores[1]), jax.tree.leaves(single.scores[0]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert alone["train_loss"][0] == history["train_loss"][1]
    assert alone["test_accuracy"][0] == history["test_accuracy"][1]


def test_cpu_group_sizes_by_family():
    from lottery_jax.pruning import grouping, sweep

    fc2, lenet = pruning.PruneConfig(model="red-fc2"), pruning.PruneConfig(model="red-lenet5")
    assert grouping.group_size(fc2, 14, "cpu") == 1  # 24 MB a member: alone
    assert grouping.group_size(pruning.PruneConfig(model="wide-fc4"), 14, "cpu") == 1
    assert grouping.group_size(lenet, 14, "cpu") == 14  # 3.6 MB a member: the whole grid
    assert grouping.group_size(lenet, 40, "cpu") == grouping.CPU_GROUP_BYTES // (
        grouping.member_bytes(lenet)
    )
    assert grouping.group_size(fc2, 14, "gpu") == 14 and grouping.group_size(fc2, 0, "cpu") == 1
    members = [(0, s) for s in pruning.PUBLISHED_SPARSITIES]
    plan = sweep.plan_groups([(fc2, members)], None, 1)
    expect = grouping.group_size(fc2, len(members))
    assert {len(g) for _, _, g in plan} == {expect} and sum(len(g) for *_, g in plan) == 14
    assert len(sweep.plan_groups([(fc2, members)], 7, 1)) == 2  # an explicit size wins


@pytest.mark.slow
def test_vmap_mode_matches_unroll_mode():
    """The accelerator path (vmap over members) trains exactly like the CPU path (unroll)."""
    cfg = pruning.PruneConfig(model="red-lenet5", epochs=1)
    data = tiny_data(64, 20)
    outs = []
    for mode in ("unroll", "vmap"):
        batch = pruning.make_batch(cfg, [(0, 0.25), (1, 0.75)], mode=mode)
        assert not batch.frozen_shared
        h = pruning.train_batch(batch, data)
        outs.append((batch, h))
    for i in range(2):
        for a, b in zip(
            jax.tree.leaves(outs[0][0].scores[i]), jax.tree.leaves(outs[1][0].scores[i]),
            strict=True,
        ):  # fmt: skip
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_seeds_give_different_frozen_weights():
    cfg = pruning.PruneConfig(model="wide-lenet5", epochs=0)
    batch = pruning.make_batch(cfg, [(0, 0.5), (1, 0.5)])
    a = jax.tree.leaves(batch.frozen[0])
    b = jax.tree.leaves(batch.frozen[1])
    assert not np.array_equal(np.asarray(a[-1]), np.asarray(b[-1]))


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="unknown model"):
        pruning.PruneConfig(model="red-fc3")
    with pytest.raises(UserError, match="redundancy"):
        pruning.PruneConfig(model="red-fc2", redundancy=0)
    with pytest.raises(UserError, match="sparsity"):
        pruning.make_batch(pruning.PruneConfig(model="red-fc2"), [(0, 1.0)])
    with pytest.raises(UserError, match="sparsity"):
        pruning.make_batch(pruning.PruneConfig(model="red-fc2"), [(0, -0.01)])


# ----------------------------------------------------------------------------- tickets and export


def test_ticket_roundtrip_reproduces_accuracy_exactly(trained_batch, tmp_path):
    batch, data, _, _, _ = trained_batch
    net = pruning.member_net(batch, 1)
    ticket = pruning.make_ticket(net, batch.config, 0, 0.9)
    acc = pruning.net_accuracy(pruning.net_from_ticket(ticket), data.test_images, data.test_labels)
    path = pruning.save_ticket(tmp_path / "ticket.npz", ticket)
    loaded = pruning.load_ticket(path)
    for k, m in ticket["masks"].items():
        np.testing.assert_array_equal(loaded["masks"][k], m)
    again = pruning.net_from_ticket(loaded)
    assert pruning.net_accuracy(again, data.test_images, data.test_labels) == acc
    x = data.test_images[:8]
    np.testing.assert_array_equal(np.asarray(jit_apply(again, x)), np.asarray(jit_apply(net, x)))
    # Packed: one bit per entry.
    with np.load(path) as f:
        assert f["mask:fc1.weight2"].nbytes == 500 * 3920 // 8


def test_export_collapses_into_a_dense_net_evaluate_accepts(trained_batch, tmp_path):
    batch, data, _, _, _ = trained_batch
    net = pruning.member_net(batch, 0)
    path = pruning.export_dense(net, tmp_path / "dense.npz")
    state, meta = load_weights(path)
    assert meta["model"] == "fc2" and state["fc1.weight"].shape == (500, 784)
    dense = models.build_model("fc2", seed=0, hidden=500)
    models.load_torch_state(dense, state)
    x = data.test_images[:16]
    np.testing.assert_allclose(
        np.asarray(jit_apply(dense, x)), np.asarray(jit_apply(net, x)), rtol=1e-4, atol=1e-4
    )


def test_export_of_relu_net_is_refused():
    net = pruning.build_pruned("red-fc2", seed=0, relu=True)
    with pytest.raises(UserError, match="ReLU"):
        pruning.dense_state(net)


def test_wide_export_is_the_masked_weight(tmp_path):
    net = pruning.build_pruned("wide-lenet5", seed=0)
    pruning.set_sparsity(net, 0.75)
    _, state = pruning.dense_state(net)
    w = np.asarray(net.fc1.weight[...])
    got = state["fc1.weight"]
    assert got.shape == (378, 400)
    assert (got == 0).sum() >= int(0.75 * got.size)
    kept = got != 0
    np.testing.assert_array_equal(got[kept], w[kept])


# ----------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model", "red-fc9"], "'red-fc9' is not one of 'red-fc2'"),
        (["--sparsity", "1.0"], "sparsity"),
        (["--sparsity", "0.5,-0.1"], "sparsity"),
        (["--sparsity", "abc"], "not a number"),
        (["--redundancy", "0"], "redundancy"),
        (["--model", "wide-fc2", "--relu"], "redundant"),
    ],
)
def test_prune_bad_input_one_line_error(args, match, capsys, tmp_path):
    code, _, err = run_cli(capsys, "prune", *args, "--out", tmp_path, "--epochs", "0")
    assert code == 2
    assert_one_line_error(code, err, match)


def test_prune_conv_checkpoint_wrong_shape_cli(capsys, tmp_path):
    save_weights(tmp_path / "fc2.npz", "fc2", models.torch_state(models.build_model("fc2", seed=0)))
    code, _, err = run_cli(
        capsys, "prune", "--model", "red-lenet5", "--conv-from", tmp_path / "fc2.npz", "--out",
        tmp_path / "o", "--epochs", "0",
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(code, err, "conv1.weight")


@pytest.mark.shared_data
@pytest.mark.skipif(mnist_dir() is None, reason="MNIST IDX files not found")
def test_prune_epochs_zero_cli_counts_and_evaluates(tmp_path, capsys):
    code = main(["prune", "--model", "red-fc2", "--epochs", "0", "--sparsity", "0.99",
                 "--data-dir", str(mnist_dir()), "--out", str(tmp_path), "--no-progress"])  # fmt: skip
    assert code == 0
    import json

    r = json.loads((tmp_path / "red-fc2-r5-linear-e0-s0.99-seed0" / "results.json").read_text())
    assert r["total_params"] == 1_991_420
    sizes = [5 * 784, 500 * 3920, 5 * 500, 10 * 2500]
    assert r["remaining_params"] == sum(n - int(n * 0.99) for n in sizes)
    assert r["test_accuracy"] == [] and 0 <= r["final_test_accuracy"] <= 100
    assert r["device"]["backend"] == jax.default_backend()
    # evaluate-ticket reproduces it.
    main(["evaluate-ticket", str(tmp_path / r["name"] / "ticket.npz"),
          "--data-dir", str(mnist_dir())])  # fmt: skip
    assert "same as saved" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(mnist_dir() is None, reason="MNIST IDX files not found")
def test_redundant_fc2_one_epoch_quality(tmp_path):
    """Quality bar: redundant FC2 (linear, r = 5, s = 0.5) >= 85% after one epoch."""
    from lottery_jax.data import load_dataset

    data = load_dataset(mnist_dir())
    cfg = pruning.PruneConfig(model="red-fc2", epochs=1)
    batch = pruning.make_batch(cfg, [(0, 0.5)])
    history = pruning.train_batch(batch, data)
    assert history["test_accuracy"][0][-1] >= 85.0


# ----------------------------------------------------------------------------- threshold reuse


def _near_equals_full_over_a_run(model: str, relu: bool, data, steps: int) -> int:
    """Train ``steps`` steps (threshold reuse carried step to step, as the runner does) and
    compare, before every step, each tensor's removed set with the full select's. Returns how
    many (step, tensor) masks were compared; fails at the first difference."""
    from lottery_jax.nets.pruned import initial_hints, planes_tree, redundancies
    from lottery_jax.nets.supermask import removed_by_cut, score_keys
    from lottery_jax.pruning import batched
    from lottery_jax.training import epoch_indices, make_optimizer

    cfg = pruning.PruneConfig(model=model, relu=relu, epochs=1)
    batch = pruning.make_batch(cfg, [(0, 0.5)])
    graphdef, counts = batch.graphdef, batch.counts[0]
    opt = make_optimizer(cfg.learning_rate, 1, steps)
    reds = redundancies(batch.scores[0])
    scores, opt_state, frozen = planes_tree(
        (batch.scores[0], opt.init(batch.scores[0]), batch.frozen), reds
    )
    step = batched.member_step_fn(graphdef, opt)
    n = int(data.train_images.shape[0])
    idx, valid = epoch_indices(jax.random.key(0), n, cfg.batch_size)

    @jax.jit
    def check_and_step(scores, state, i):
        net = nnx.merge(graphdef, frozen, scores, counts)
        near, _ = net.near_cuts(state[1])
        same = []
        for layer, cn, cf in zip(net.layers(), near, net.cuts(), strict=True):
            for (sc, _, order), a, b in zip(layer.select_inputs(), cn, cf, strict=True):
                keys = score_keys(sc)
                same.append(jnp.all(removed_by_cut(keys, *a, order)
                                    == removed_by_cut(keys, *b, order)))  # fmt: skip
        out = step(scores, state, frozen, counts, idx, valid, i, data.train_images,
                   data.train_labels)  # fmt: skip
        return jnp.stack(same), out

    state = (opt_state, initial_hints(nnx.merge(graphdef, frozen, scores, counts)))
    compared = 0
    for i in range(steps):
        same, (scores, state, _) = check_and_step(scores, state, jnp.int32(i % idx.shape[0]))
        same = np.asarray(same)
        assert same.all(), f"step {i}: near select differs from the full select ({same})"
        compared += same.size
    return compared


@pytest.mark.parametrize(("model", "relu"), [("red-fc2", False), ("wide-fc2", False)])
def test_near_select_equals_full_select_every_step_of_a_short_run(model, relu):
    assert _near_equals_full_over_a_run(model, relu, tiny_data(640, 10), 12) == 12 * (
        4 if model.startswith("red") else 2
    )


@pytest.mark.slow
@pytest.mark.skipif(mnist_dir() is None, reason="MNIST IDX files not found")
@pytest.mark.parametrize(("model", "relu"), [("red-fc2", False), ("red-fc2", True)])
def test_near_select_equals_full_select_every_step_of_200_mnist_steps(model, relu):
    from lottery_jax.data import load_dataset

    data = load_dataset(mnist_dir(), inputs="normalized")
    assert _near_equals_full_over_a_run(model, relu, data, 200) == 200 * 4
