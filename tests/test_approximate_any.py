"""Approximating any network at any epsilon: any tensor, the tiers beyond the exact ceiling, packed
masks, the up-front plan, the Python API, LeNet5 / biases / Sequential key names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli_code as run_cli

from lottery_jax import subsetsum as ap
from lottery_jax.errors import UserError
from lottery_jax.nets import targets as models
from lottery_jax.subsetsum import network as nw
from lottery_jax.subsetsum import search as ss
from lottery_jax.subsetsum.api import approximate


def lenet_like(seed: int = 0, bias: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = {
        "conv1.weight": rng.normal(0, 0.2, (6, 1, 5, 5)),
        "conv2.weight": rng.normal(0, 0.1, (16, 6, 5, 5)),
        "fc1.weight": rng.normal(0, 0.1, (120, 400)),
        "fc2.weight": rng.normal(0, 0.1, (84, 120)),
        "fc3.weight": rng.normal(0, 0.2, (10, 84)),
    }
    if bias:
        for k in list(s):
            s[k.replace("weight", "bias")] = rng.normal(0, 0.05, s[k].shape[:1])
    return {k: v.astype(np.float32) for k, v in s.items()}


def recomputed_errors(res, target):
    out = {}
    for k, r in res.results.items():
        c = ss.broadcast_coefficients(res.coefficients[k], r.errors.shape)
        out[k] = np.abs(np.asarray(target[k], np.float64) - ss.subset_sums(c, r.masks, res.cfg.n))
    return out


def test_every_tensor_of_any_shape_per_row_is_the_leading_axis():
    target = {"conv.weight": lenet_like()["conv2.weight"], "conv.bias": np.full(16, 0.03)}
    res = ap.approximate_network(target, ap.ApproxConfig(epsilon=0.05, c=2.0))
    assert res.layers == ["conv.weight", "conv.bias"]
    assert res.coefficients["conv.weight"].shape == (16, 8)  # one set per output channel
    assert res.coefficients["conv.bias"].shape == (16, 8)  # one set per bias element
    for k, e in recomputed_errors(res, target).items():
        np.testing.assert_array_equal(e, res.results[k].errors)
        assert res.results[k].masks.shape == target[k].shape
    table = ap.summarize(res)["layers"]
    assert [t["layer"] for t in table] == res.layers
    assert table[0]["weights"] == 2400 and table[0]["shape"] == [16, 6, 5, 5]
    assert sum(sum(t["status_counts"].values()) for t in table) == 2416


def test_layers_glob_and_refusals():
    target = lenet_like(1)
    cfg = ap.ApproxConfig(epsilon=0.05, c=2.0, layers=("fc*.weight",))
    assert ap.target_layers(target, cfg.layers) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert len(ap.target_layers(target)) == 10  # default: every weight and bias
    with pytest.raises(UserError, match="match none"):
        ap.target_layers(target, ("nothing*",))
    with pytest.raises(UserError, match="not finite"):
        ap.target_layers({"a.weight": np.array([1.0, np.nan])})


def test_feasibility_tier_beyond_the_ceiling_settles_without_scip():
    rng = np.random.default_rng(3)
    target = {"fc.weight": rng.uniform(-0.4, 0.4, (6, 50))}
    # n = 27 > ceiling 22: feasibility groups of k coefficients, no SCIP needed.
    cfg = ap.ApproxConfig(epsilon=0.01, c=27 / 7, max_enum_n=22)
    assert cfg.n == 27
    res = ap.approximate_network(target, cfg)
    r = res.results["fc.weight"]
    assert res.plan.layers["fc.weight"].k == ss.feasibility_bits(0.01, res.low, res.high, 27) < 27
    assert np.all(r.status == ap.FEASIBLE) and res.scip_seconds == 0.0
    assert np.all(r.errors <= 0.01)
    np.testing.assert_array_equal(recomputed_errors(res, target)["fc.weight"], r.errors)


def test_bound_proves_infeasible_without_scip():
    target = {"w.weight": np.array([[-0.3, 0.3, 0.45], [0.4, -0.05, 0.0]])}
    cfg = ap.ApproxConfig(epsilon=0.01, c=27 / 7, max_enum_n=22, coef_range=(0.1, 0.2))
    res = ap.approximate_network(target, cfg)
    st = res.results["w.weight"].status
    assert st[0, 0] == ap.INFEASIBLE and st[1, 1] == ap.INFEASIBLE
    assert res.results["w.weight"].masks[0, 0] == 0  # best for a negative weight: the empty sum
    assert res.scip_seconds == 0.0


def test_min_count_beyond_the_ceiling_is_exact_for_small_counts():
    rng = np.random.default_rng(4)
    target = {"fc.weight": rng.uniform(-0.4, 0.4, (4, 30))}
    cfg = ap.ApproxConfig(epsilon=0.01, c=27 / 7, max_enum_n=22, objective="min-count")
    res = ap.approximate_network(target, cfg)
    r = res.results["fc.weight"]
    counts = ss.mask_to_bits(r.masks, cfg.n).sum(-1)
    assert np.all(r.errors <= 0.01)
    assert np.all(counts[r.status == ap.OPT_ENUM] <= 2) and np.any(r.status == ap.OPT_ENUM)
    # brute force over all pairs: an optimal-enumeration count of 2 has no single within eps
    c = res.coefficients["fc.weight"]
    for i, j in zip(*np.nonzero((r.status == ap.OPT_ENUM) & (counts == 2)), strict=True):
        assert np.abs(target["fc.weight"][i, j] - c[i]).min() > 0.01


def test_small_counts_match_brute_force_in_any_block_size():
    import itertools

    rng = np.random.default_rng(7)
    c = rng.uniform(-0.5, 0.5, (3, 9))
    rows = rng.integers(0, 3, 300)
    w = rng.uniform(-0.3, 0.3, 300)
    cnt, bits, err = nw._small_counts(c, rows, w, 0.01)
    cnt7, bits7, err7 = nw._small_counts(c, rows, w, 0.01, block=7)
    np.testing.assert_array_equal(cnt, cnt7)
    np.testing.assert_array_equal(bits, bits7)
    for i in range(300):
        cc = c[rows[i]]
        sums = {0: [0.0], 1: list(cc), 2: [a + b for a, b in itertools.combinations(cc, 2)]}
        want = next((k for k in (0, 1, 2) if min(abs(w[i] - s) for s in sums[k]) <= 0.01), -1)
        assert cnt[i] == want
        if want >= 0:
            assert bits[i].sum() == want
            assert err[i] == pytest.approx(min(abs(w[i] - s) for s in sums[want]), abs=1e-15)


def test_masks_beyond_64_bits_are_packed_and_verify(tmp_path):
    rng = np.random.default_rng(5)
    target = {
        "fc1.weight": rng.uniform(-0.5, 0.5, (3, 20)),
        "fc2.weight": rng.uniform(-1, 1, (2, 3)),
    }
    cfg = ap.ApproxConfig(epsilon=0.01, c=10.0)
    assert cfg.n == 70 and ss.packed_masks(cfg.n)
    res = ap.approximate_network(target, cfg)
    r = res.results["fc1.weight"]
    assert r.masks.dtype == np.uint8 and r.masks.shape == (3, 20, 9)
    assert ap.summarize(res)["all_within_epsilon"]
    np.testing.assert_array_equal(recomputed_errors(res, target)["fc1.weight"], r.errors)
    ints = ss.masks_to_ints(r.masks, 70)
    assert max(int(v) for v in ints.flat) < 2**70
    np.testing.assert_array_equal(ss.ints_to_masks(ints, 70), r.masks)
    path = ap.save_ticket(tmp_path / "t.npz", res, target)
    assert ap.verify_ticket(path).exit_code == 0


def test_plan_refuses_up_front_in_one_line():
    target = {"w.weight": np.random.default_rng(6).uniform(-0.5, 0.5, (500, 784))}
    with pytest.raises(UserError, match="GiB of memory") as e:
        ap.approximate_network(target, ap.ApproxConfig(c=1e6))
    assert "\n" not in str(e.value) and "lower c" in str(e.value)
    with pytest.raises(UserError, match="max hours") as e:
        ap.approximate_network(target, ap.ApproxConfig(epsilon=1e-3, prove=True, max_hours=1))
    assert "\n" not in str(e.value)


def test_range_modes():
    ws = [np.array([-0.4, 1.0])]
    assert ss.coefficient_range(ws, "published") == (-0.4, 1.0)
    assert ss.coefficient_range(ws, "symmetric") == (-1.0, 1.0)
    assert ss.coefficient_range(ws, "auto") == (-1.0, 1.0)  # one side under half the other
    assert ss.coefficient_range([np.array([-0.464, 0.541])], "auto") == (-0.464, 0.541)


def test_api_any_shape_and_dict_of_names():
    w = np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3, 5, 5))
    r = approximate(w, epsilon=0.01)
    assert r.report["all_within_epsilon"] and r.weights.shape == w.shape
    assert np.abs(r.weights - w).max() <= 0.01
    assert r.report["remaining_params"] == r.report["layers"][0]["remaining_params"]
    d = {"0.weight": w[:4, 0, 0].astype(np.float16), "0.bias": np.array([0.1, -0.2, 0.05, 0.0])}
    r2 = approximate(d, epsilon=0.01, seed=3)
    assert set(r2.weights) == set(d) and r2.weights["0.bias"].shape == (4,)
    assert r2.report["seed"] == 3 and r2.report["all_within_epsilon"]
    for bad, msg in [
        ({}, "no arrays"),
        (np.array(1.0), "at least one dimension"),
        (np.array([np.inf]), "NaN or infinite"),
        (np.array(["a"]), "dtype"),
    ]:
        with pytest.raises(UserError, match=msg):
            approximate(bad, epsilon=0.01)


def test_api_save_writes_a_verifiable_ticket(tmp_path):
    r = approximate({"a": np.linspace(-0.4, 0.4, 12).reshape(3, 4)}, epsilon=0.02, c=2.0)
    path = r.save(tmp_path / "ticket.npz")
    assert ap.verify_ticket(path).exit_code == 0


def test_infer_model_lenet5_biases_and_sequential_names():
    s = lenet_like(2)
    name, canon, _ = models.infer_model(s)
    assert name == "lenet5" and set(canon) == set(s)
    net = models.model_from_state(name, canon)
    assert net(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)
    rng = np.random.default_rng(0)
    seq = {
        "0.weight": rng.normal(0, 0.05, (16, 784)),
        "0.bias": rng.normal(0, 0.05, 16),
        "2.weight": rng.normal(0, 0.2, (10, 16)),
        "2.bias": rng.normal(0, 0.05, 10),
    }
    name, canon, mapping = models.infer_model(seq)
    assert name == "fc2" and mapping["fc1.bias"] == "0.bias" and mapping["fc2.weight"] == "2.weight"
    with pytest.raises(UserError, match="fit none"):
        models.infer_model({"0.weight": np.zeros((3, 4))})


def test_cli_sequential_fc2_with_biases(tmp_path):
    rng = np.random.default_rng(1)
    seq = {
        "0.weight": rng.normal(0, 0.05, (8, 784)).astype(np.float32),
        "0.bias": rng.normal(0, 0.05, 8).astype(np.float32),
        "2.weight": rng.normal(0, 0.2, (10, 8)).astype(np.float32),
        "2.bias": rng.normal(0, 0.05, 10).astype(np.float32),
    }
    path = tmp_path / "seq.npz"
    np.savez(path, **seq)
    out = tmp_path / "run"
    args = ["approximate", "--target", str(path), "--no-evaluate", "--no-progress"]
    code = run_cli([*args, "--epsilon", "0.05", "--c", "2", "--out", str(out)])
    r = json.loads((out / "results.json").read_text())
    assert code == (ap.EXIT_INFEASIBLE if r["infeasible"] else 0)
    assert r["infeasible"] < 0.05 * r["target_params"]
    assert [t["layer"] for t in r["layers"]] == list(seq)
    assert r["target_params"] == sum(v.size for v in seq.values())
    out2 = tmp_path / "run2"
    code = run_cli(
        [*args, "--c", "2", "--epsilon", "0.05", "--layers", "*.weight", "--out", str(out2)]
    )
    r2 = json.loads((out2 / "results.json").read_text())
    assert [t["layer"] for t in r2["layers"]] == ["0.weight", "2.weight"]
    assert code == (ap.EXIT_INFEASIBLE if r2["infeasible"] else 0)
    with np.load(out2 / "approximated.npz") as f:
        np.testing.assert_array_equal(f["0.bias"], seq["0.bias"])  # left exact
        assert not np.array_equal(f["0.weight"], seq["0.weight"])


@pytest.mark.slow
@pytest.mark.shared_data
def test_paper_lenet5_every_weight_within_eps(tmp_path, mnist_dir):
    from pathlib import Path

    target = Path(__file__).resolve().parents[2] / "shared/data/paper-lenet5/lenet5_e50_h500.npz"
    if not target.exists():
        pytest.skip("the paper's LeNet5 is not at hand")
    out = tmp_path / "lenet"
    args = ["approximate", "--target", str(target), "--data-dir", str(mnist_dir)]
    code = run_cli([*args, "--epsilon", "0.01", "--no-progress", "--out", str(out)])
    r = json.loads((out / "results.json").read_text())
    assert code == 0 and r["all_within_epsilon"] and r["config"]["inputs"] == "normalized"
    assert {t["layer"] for t in r["layers"]} == {
        "conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"
    }  # fmt: skip
    assert abs(r["approx_accuracy"] - 98.44) <= 0.2
    assert run_cli(["verify", str(out / "ticket.npz")]) == 0
