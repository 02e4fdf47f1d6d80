"""`construct`: pruning a random redundant network to a target by SubsetSum (issue 15)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli

from lottery_jax.errors import UserError
from lottery_jax.nets.targets import build_model, torch_state
from lottery_jax.subsetsum import construct as cs
from lottery_jax.subsetsum import links as lk
from lottery_jax.subsetsum.network import INFEASIBLE, OPT_ENUM


def _brute(coefs, w):
    best = []
    for c, t in zip(coefs, w, strict=True):
        subsets = list(itertools.product([0, 1], repeat=len(c)))
        errs = [(abs(t - float(np.dot(s, c))), sum(s)) for s in subsets]
        best.append(errs)
    return best


@pytest.mark.parametrize("objective", ["min-error", "min-count"])
def test_subsets_are_brute_force_optima(objective):
    rng = np.random.default_rng(3)
    r, eps = 6, 0.02
    coefs = rng.uniform(-1, 1, (200, r)) * rng.uniform(-1, 1, (200, r))
    w = rng.uniform(-0.4, 0.4, 200)
    res = lk.solve_side(coefs, np.ones_like(coefs, bool), w, lk.SideSolve(eps, objective))
    for i, errs in enumerate(_brute(coefs, w)):
        opt = min(e for e, _ in errs)
        assert res.errors[i] == pytest.approx(abs(w[i] - coefs[i][res.bits[i]].sum()), abs=1e-12)
        if objective == "min-error" or opt > eps:
            assert res.errors[i] <= opt + 1e-12
        else:
            assert res.bits[i].sum() == min(k for e, k in errs if e <= eps)
        assert res.status[i] == (OPT_ENUM if res.errors[i] <= eps else INFEASIBLE)


def test_positive_side_uses_only_positive_links():
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(9, 5))
    w2 = rng.normal(size=(4, 5 * 9))
    coefs = lk.link_products(w1, w2).reshape(-1, 9)
    usable = lk.usable_links(w1, "positive", 4).reshape(-1, 9)
    res = lk.solve_side(coefs, usable, rng.uniform(-1, 1, 20), lk.SideSolve(0.05))
    assert not (res.bits & ~usable).any()


def test_feasibility_tier_beyond_the_ceiling():
    rng = np.random.default_rng(1)
    coefs = rng.uniform(-1, 1, (64, 30))
    res = lk.solve_side(coefs, np.ones_like(coefs, bool), rng.uniform(-1, 1, 64),
                        lk.SideSolve(0.01, max_enum_n=12))  # fmt: skip
    assert (res.errors <= 0.01).all()
    assert set(np.unique(res.status)) <= {2}  # feasible


def test_ones_w1_repeats_approximates_subsets_bit_for_bit():
    """w1 all ones, w2 rows repeating approximate's per-row coefficients: the same subsets."""
    from lottery_jax.subsetsum.api import approximate

    rng = np.random.default_rng(5)
    target = rng.uniform(-0.3, 0.3, (6, 10))
    r = 14
    ap = approximate(target, epsilon=0.01, c=r / 7 + 1e-9, seed=4)
    coef = ap.ticket.coefficients["weight"]  # (6, r)
    assert coef.shape == (6, r)
    w1 = np.ones((r, 10))
    w2 = np.repeat(coef[:, None, :], 10, axis=1).reshape(6, 10 * r)
    lc, _ = cs.construct_layer("fc1", w1, w2, target, ("all",), lk.SideSolve(0.01))
    from lottery_jax.subsetsum import search as ss

    want = ss.mask_to_bits(ap.ticket.results["weight"].masks, r)
    assert np.array_equal(lc.mask2.reshape(6, 10, r), want)


@pytest.fixture(scope="module")
def small_target(mnist_unit):
    import lottery_jax as lj

    model = build_model("fc2", seed=0, hidden=16)
    lj.fit(model, mnist_unit, lj.Recipe(lr=0.1, epochs=1, seed=0))
    return torch_state(model)


def test_construct_ticket_evaluates_and_exports(small_target, mnist_unit, tmp_path, capsys):
    from lottery_jax.checkpoint import load_weights, save_weights

    path = save_weights(tmp_path / "t.npz", "fc2", small_target, {"inputs": "unit"})
    res = cs.construct(str(path), redundancy=16, epsilon=0.01, init="uniform", data=mnist_unit,
                       out=tmp_path / "run")  # fmt: skip
    r = res.results
    assert r["within_epsilon_fraction"] > 0.99
    assert abs(r["ticket_accuracy"] - r["target_accuracy"]) < 1.0
    assert r["max_logit_error"] < 1.0
    code, out, err = run_cli(capsys, "evaluate-ticket", tmp_path / "run" / "ticket.npz")
    assert code == 0 and "same as saved" in out, (out, err)
    code, out, err = run_cli(capsys, "export-ticket", tmp_path / "run" / "ticket.npz",
                             "--out", tmp_path / "dense.npz")  # fmt: skip
    assert code == 0, err
    dense, meta = load_weights(tmp_path / "dense.npz")
    assert meta["inputs"] == "unit"
    for name, lc in res.layers.items():
        within = lc.errors <= 0.01
        diff = np.abs(dense[f"{name}.weight"] - small_target[f"{name}.weight"])
        assert (diff[within] <= 0.01 + 1e-5).all()
    code, out, err = run_cli(
        capsys, "evaluate", "--weights", tmp_path / "dense.npz", "--out", tmp_path / "ev"
    )
    assert code == 0, err
    assert f"{r['ticket_accuracy']:.2f}" in out
    again = cs.construct(str(path), redundancy=16, epsilon=0.01, init="uniform",
                         data=mnist_unit, out=tmp_path / "run")  # fmt: skip
    assert again.resumed and again.results["ticket_accuracy"] == r["ticket_accuracy"]


# Slow (about 20 s); the default run keeps test_construct_ticket_evaluates_and_exports.
@pytest.mark.slow
def test_relu_two_sided_with_signed_inputs(mnist_normalized):
    import lottery_jax as lj

    model = build_model("fc2", seed=1, hidden=8)
    lj.fit(model, mnist_normalized, lj.Recipe(lr=0.1, epochs=1, seed=0))
    state = torch_state(model)
    res = cs.construct(state, redundancy=24, epsilon=0.02, relu=True, init="uniform",
                       inputs="normalized", data=mnist_normalized)  # fmt: skip
    r = res.results
    assert r["layers"][0]["sides"] == ["positive", "negative"]
    assert r["layers"][1]["sides"] == ["positive"]
    assert r["within_epsilon_fraction"] > 0.95
    assert abs(r["ticket_accuracy"] - r["target_accuracy"]) < 10.0  # (a few weights outside eps)
    lc = res.layers["fc1"]
    for side in ("positive", "negative"):
        ok = lc.side_status[side] == OPT_ENUM
        assert np.abs(lc.sums[side] - state["fc1.weight"])[ok].max() <= 0.02


def test_one_line_errors(tmp_path, capsys):
    from lottery_jax.checkpoint import save_weights

    st = torch_state(build_model("fc2", seed=0, hidden=4, bias=True))
    p = save_weights(tmp_path / "b.npz", "fc2", st)
    code, _, err = run_cli(capsys, "construct", "--target", p, "--no-evaluate",
                           "--out", tmp_path / "o1")  # fmt: skip
    assert_one_line_error(code, err, "no redundant form")
    code, _, err = run_cli(capsys, "construct", "--redundancy", "0", "--out", tmp_path / "o2")
    assert_one_line_error(code, err, "--redundancy")
    code, _, err = run_cli(capsys, "construct", "--relu", "--redundancy", "1", "--inputs",
                           "normalized", "--no-evaluate", "--out", tmp_path / "o3")  # fmt: skip
    assert_one_line_error(code, err, "signed inputs")
    code, _, err = run_cli(capsys, "construct", "--redundancy", "21", "--max-hours", "1e-6",
                           "--no-evaluate", "--out", tmp_path / "o4")  # fmt: skip
    assert_one_line_error(code, err, "budget")
    with pytest.raises(UserError, match="init"):
        cs.ConstructConfig(redundancy=3, init="gauss")


def test_same_frozen_weights_as_prune():
    from lottery_jax.nets.pruned import build_pruned

    form = cs.redundant_form(torch_state(build_model("fc2", seed=0, hidden=6)))
    net = cs.build_random(form, cs.ConstructConfig(redundancy=3, seed=7))
    ref = build_pruned("red", seed=7, redundancy=3, sizes=(784, 6, 10))
    assert np.array_equal(np.asarray(net.fc1.weight2[...]), np.asarray(ref.fc1.weight2[...]))
    assert np.array_equal(np.asarray(net.fc2.weight1[...]), np.asarray(ref.fc2.weight1[...]))


def test_lenet5_target_fc_layers_after_its_own_conv(mnist_normalized):
    """paper-lenet5: the three fc layers solved after the target's frozen conv layers; the
    pruned random network follows the target's logits (normalized inputs, its own)."""
    from lottery_jax.nets.targets import network_for
    from lottery_jax.pruning.ticket import net_from_ticket

    res = cs.construct("paper-lenet5", redundancy=12, epsilon=0.01, init="uniform",
                       evaluate=False)  # fmt: skip
    r = res.results
    assert r["model"] == "red-lenet5" and r["inputs"] == "normalized"
    assert [t["layer"] for t in r["layers"]] == ["fc1", "fc2", "fc3"]
    assert r["within_epsilon_fraction"] > 0.99
    state, _, _ = cs.resolve_target("paper-lenet5")
    form = cs.redundant_form(state, "paper-lenet5")
    for k in ("conv1.weight", "conv2.weight"):
        assert np.array_equal(res.ticket["conv"][k], form.conv_state[k])
    _, target_net = network_for(form.state, model="lenet5")
    images = mnist_normalized.test_images[:500]
    agree = np.mean(
        np.argmax(target_net(images), -1) == np.argmax(net_from_ticket(res.ticket)(images), -1)
    )
    assert agree >= 0.99  # (at R = 12 about 0.25% of the weights are left outside eps)
