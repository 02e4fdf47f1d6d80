"""Ticket files: both kinds, both releases, and `verify` against tampered SubsetSum tickets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_code as run_cli

from lottery_jax import subsetsum as ap
from lottery_jax import tickets
from lottery_jax.checkpoint import save_weights
from lottery_jax.errors import UserError
from lottery_jax.subsetsum import search as ss

# eps 0.05, c 2 -> n = 8: tiny and fast, still with a few infeasible weights.
SMALL = dict(epsilon=0.05, c=2.0, max_enum_n=30)


def small_target(seed: int = 0, hidden: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.normal(0, 0.05, (hidden, 784)).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.2, (10, hidden)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An honest per-row and per-weight ticket of the same target."""
    d = tmp_path_factory.mktemp("tickets")
    target = small_target()
    out = {}
    for mode in ("per-row", "per-weight"):
        res = ap.approximate_network(target, ap.ApproxConfig(**SMALL, coefficients=mode, seed=3))
        out[mode] = (ap.save_ticket(d / f"{mode}.npz", res, target), res)
    return target, out


def read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("__meta__"))), arrays


def write(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, __meta__=np.asarray(json.dumps(meta)), **arrays)
    return path


def within_index(arrays, layer="fc1.weight", k=0):
    """The k-th weight of ``layer`` whose status claims within eps."""
    st = arrays[f"{layer}.status"]
    return tuple(int(x) for x in np.argwhere(st == ap.OPT_ENUM)[k])


def test_honest_tickets_verify(made):
    target, out = made
    for path, res in out.values():
        rep = ap.verify_ticket(path)
        assert rep.mismatches == [] and rep.bad_entries == 0
        s = ap.summarize(res)
        assert rep.weights == s["target_params"] and rep.remaining_params == s["remaining_params"]
        assert rep.infeasible_proved == s["status_counts"]["infeasible"] > 0
        assert rep.exit_code == ap.EXIT_INFEASIBLE
        assert ap.verify_ticket(path, target).mismatches == []
        assert tickets.load_ticket(path).kind == "subsetsum"


# Each tamper takes (meta, arrays) of the per-row ticket and returns them changed, and names
# the text the one-line report must contain.
def _eps(meta, arrays):
    meta["epsilon"] = 0.5
    return "meta.n"


def _coefs(meta, arrays):
    arrays["fc2.weight.coefficients"] = np.random.default_rng(1).uniform(-1, 1, (10, 8))
    return "fc2.weight.coefficients[0]"


def _c(meta, arrays):
    meta["c"] = 3.0
    return "meta.n"


def _seed(meta, arrays):
    meta["seed"] = 4
    return "coefficients"


def _status_value(meta, arrays):
    i, j = within_index(arrays)
    arrays["fc1.weight.status"][i, j] = ap.INFEASIBLE
    return f"fc1.weight[{i}, {j}]: claims no subset within epsilon"


def _status_names(meta, arrays):
    meta["statuses"] = ["infeasible", "optimal-scip", "feasible", "optimal-enumeration", "unsolved"]
    return "claims"


def _layers_empty(meta, arrays):
    meta["layers"] = []
    return "meta.layers"


def _layer_dropped(meta, arrays):
    meta["layers"] = ["fc1.weight"]
    return "fc2.weight"


def _n_missing(meta, arrays):
    del meta["n"]
    return "meta.n: missing"


def _n_string(meta, arrays):
    meta["n"] = "8"
    return "meta.n"


def _bit_flip(meta, arrays):
    i, j = within_index(arrays)
    arrays["fc1.weight.subsets"][i, j, 0] ^= np.uint8(1 << 3)
    return f"fc1.weight.error[{i}, {j}]"


def _error_record(meta, arrays):
    arrays["fc2.weight.error"] = arrays["fc2.weight.error"] * 0.5
    return "fc2.weight.error"


def _subsets_dtype(meta, arrays):
    arrays["fc1.weight.subsets"] = arrays["fc1.weight.subsets"].astype(np.int64)
    return "fc1.weight.subsets: dtype int64"


def _status_shape(meta, arrays):
    arrays["fc1.weight.status"] = arrays["fc1.weight.status"][:, :10]
    return "fc1.weight.status: shape"


def _target_changed(meta, arrays):
    arrays["fc2.weight.target"] = arrays["fc2.weight.target"] + np.float32(0.01)
    return "meta.target_sha256"


def _fake_infeasible(meta, arrays):
    # A weight within eps made "infeasible": its subset becomes the empty one (error |w| > eps),
    # the error record and the status agree; only the checker's own exhaustive search sees that
    # a subset within eps exists.
    w = arrays["fc1.weight.target"].astype(np.float64)
    st = arrays["fc1.weight.status"]
    i, j = (int(x) for x in np.argwhere((st == ap.OPT_ENUM) & (np.abs(w) > 0.06))[0])
    arrays["fc1.weight.subsets"][i, j] = 0
    arrays["fc1.weight.error"][i, j] = abs(w[i, j])
    st[i, j] = ap.INFEASIBLE
    return f"fc1.weight[{i}, {j}]: claims infeasible"


TAMPERS = [
    _eps, _coefs, _c, _seed, _status_value, _status_names, _layers_empty, _layer_dropped,
    _n_missing, _n_string, _bit_flip, _error_record, _subsets_dtype, _status_shape,
    _target_changed, _fake_infeasible,
]  # fmt: skip


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda f: f.__name__.strip("_"))
def test_verify_refuses_a_tampered_ticket(made, tmp_path, capsys, tamper):
    _, out = made
    meta, arrays = read(out["per-row"][0])
    expect = tamper(meta, arrays)
    bad = write(tmp_path / "bad.npz", meta, arrays)
    rep = ap.verify_ticket(bad)
    assert rep.exit_code == ap.EXIT_MISMATCH and rep.bad_entries >= 1
    assert expect in rep.mismatches[0], rep.mismatches
    capsys.readouterr()
    assert run_cli(["verify", str(bad)]) == ap.EXIT_MISMATCH
    cap = capsys.readouterr()
    lines = (cap.out + cap.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mismatch: ") and expect in lines[0]


def test_verify_per_weight_seed_and_counts(made, tmp_path):
    _, out = made
    meta, arrays = read(out["per-weight"][0])
    assert "fc1.weight.coefficients" not in arrays  # regenerated from the seed
    meta["seed"] = 4
    rep = ap.verify_ticket(write(tmp_path / "seed.npz", meta, arrays))
    assert rep.exit_code == ap.EXIT_MISMATCH and "recorded error differs" in rep.mismatches[0]
    assert rep.bad_entries > 100  # nearly every weight
    assert "bad entries in all" in rep.summary_line


def test_verify_against_another_target_and_demanded_epsilon(made, tmp_path, capsys):
    target, out = made
    path = out["per-row"][0]
    other = {k: v.copy() for k, v in target.items()}
    other["fc1.weight"][1, 2] += 0.3
    rep = ap.verify_ticket(path, other)
    assert rep.exit_code == ap.EXIT_MISMATCH and "fc1.weight.target[1, 2]" in rep.mismatches[0]
    fewer = {"fc1.weight": target["fc1.weight"]}
    assert "meta.layers" in ap.verify_ticket(path, fewer).mismatches[0]
    # --epsilon: a stricter demand is no mismatch, but fewer weights pass it (exit 3).
    strict = ap.verify_ticket(path, epsilon=0.001)
    assert strict.mismatches == [] and strict.within < ap.verify_ticket(path).within
    assert strict.exit_code == ap.EXIT_INFEASIBLE
    tpath = save_weights(tmp_path / "t.npz", "fc2", target)
    capsys.readouterr()
    assert run_cli(["verify", str(path), "--target", str(tpath), "--epsilon", "1.0"]) == 0
    assert run_cli(["verify", str(path), "--epsilon", "-1"]) == 2


def test_verify_float64_target(tmp_path):
    # A float64 target (the Python API) is kept in float64 in the ticket, so its errors reproduce.
    target = {k: v.astype(np.float64) for k, v in small_target(5).items()}
    res = ap.approximate_network(target, ap.ApproxConfig(**SMALL))
    path = ap.save_ticket(tmp_path / "t.npz", res, target)
    assert ap.verify_ticket(path).mismatches == []
    assert ap.verify_ticket(path, target).mismatches == []


# ------------------------------------------------------------------------- formats, old and new


def save_subsetsum_v1(path: Path, res, target) -> Path:
    """A SubsetSum ticket exactly as the first release wrote it (JSON under ``meta``)."""
    cfg = res.cfg
    stored = cfg.coefficients == "per-row"
    meta = {
        "format": "lottery-jax-ticket/1", "epsilon": cfg.epsilon, "c": cfg.c, "n": cfg.n,
        "rounding": cfg.rounding, "objective": cfg.objective, "coefficients": cfg.coefficients,
        "zero_small": cfg.zero_small, "seed": cfg.seed, "low": res.low, "high": res.high,
        "layers": res.layers,
        "statuses": ["optimal-enumeration", "optimal-scip", "feasible", "infeasible"],
        "bit_order": "little", "coefficients_stored": stored,
        "key_scheme": "layer i: jax.random.fold_in(jax.random.key(seed), i) (threefry); "
        "low + (high - low) * jax.random.uniform(key, shape + (n,), float64); "
        "shape = (out,) per-row or (out, in) per-weight",
    }  # fmt: skip
    arrays = {"meta": np.asarray(json.dumps(meta))}
    for k, r in res.results.items():
        bits = ss.mask_to_bits(r.masks, cfg.n)
        arrays[f"{k}.target"] = np.asarray(target[k], np.float32)
        arrays[f"{k}.subsets"] = np.packbits(bits, axis=-1, bitorder="little")
        arrays[f"{k}.status"] = r.status
        arrays[f"{k}.error"] = r.errors
        if stored:
            arrays[f"{k}.coefficients"] = res.coefficients[k]
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize("mode", ["per-row", "per-weight"])
def test_first_release_subsetsum_ticket_loads_and_verifies(made, tmp_path, capsys, mode):
    target, out = made
    path = save_subsetsum_v1(tmp_path / "v1.npz", out[mode][1], target)
    t = tickets.load_ticket(path)
    assert (t.kind, t.format, t.legacy) == ("subsetsum", "lottery-jax-ticket/1", True)
    assert "fc1.weight.subsets" in t.arrays and t.meta["n"] == 8
    rep = ap.verify_ticket(path)
    assert rep.mismatches == [] and rep.exit_code == ap.EXIT_INFEASIBLE
    assert rep.status_counts == ap.verify_ticket(out[mode][0]).status_counts
    assert run_cli(["verify", str(path)]) == ap.EXIT_INFEASIBLE
    # ... and a tampered old ticket is still caught.
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["epsilon"] = 0.5
    np.savez(tmp_path / "bad.npz", meta=np.asarray(json.dumps(meta)), **arrays)
    assert ap.verify_ticket(tmp_path / "bad.npz").exit_code == ap.EXIT_MISMATCH


def test_new_subsetsum_format(made):
    _, out = made
    meta, arrays = read(out["per-row"][0])
    assert meta["format"] == tickets.SUBSETSUM_FORMAT == "lottery-jax-subsetsum-ticket/2"
    assert "meta" not in arrays
    assert meta["statuses"] == list(ap.STATUSES) and meta["weights"] == 4 * 784 + 40


@pytest.fixture(scope="module")
def supermask():
    from lottery_jax import pruning
    from lottery_jax.nets.pruned import build_pruned

    cfg = pruning.PruneConfig(model="red-fc2", redundancy=2)
    net = build_pruned("red-fc2", seed=2, redundancy=2)
    return pruning.make_ticket(net, cfg, 2, 0.5)


def save_supermask_v1(path: Path, ticket) -> Path:
    """A supermask ticket exactly as the first release wrote it."""
    meta = {
        "format": "lottery-jax-ticket/1",
        "config": ticket.config,
        "seed": ticket.seed,
        "sparsity": ticket.sparsity,
        "shapes": {k: list(v.shape) for k, v in ticket.masks.items()},
    }
    arrays = {f"mask:{k}": np.packbits(v.ravel()) for k, v in ticket.masks.items()}
    for k, v in (ticket.conv or {}).items():
        arrays[f"conv:{k}"] = np.asarray(v, np.float32)
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize("release", ["v1", "v2"])
def test_supermask_ticket_round_trip(supermask, tmp_path, release):
    from lottery_jax import pruning

    if release == "v1":
        path = save_supermask_v1(tmp_path / "t.npz", supermask)
    else:
        path = pruning.save_ticket(tmp_path / "t.npz", supermask)
    t = tickets.load_ticket(path)
    assert t.kind == "supermask" and t.legacy == (release == "v1")
    assert t.format == ("lottery-jax-ticket/1" if release == "v1" else tickets.SUPERMASK_FORMAT)
    loaded = pruning.load_ticket(path)
    assert loaded["seed"] == 2 and loaded["sparsity"] == 0.5
    for k, m in supermask.masks.items():
        np.testing.assert_array_equal(loaded.masks[k], m)
    net = pruning.net_from_ticket(loaded)
    for k, m in pruning.ticket_masks(net).items():
        np.testing.assert_array_equal(m, supermask.masks[k])


def test_each_reader_refuses_the_other_kind(made, supermask, tmp_path, capsys):
    from lottery_jax import pruning

    sub = made[1]["per-row"][0]
    sup = pruning.save_ticket(tmp_path / "s.npz", supermask)
    with pytest.raises(UserError, match="is a subsetsum ticket"):
        pruning.load_ticket(sub)
    with pytest.raises(UserError, match="is a supermask ticket"):
        ap.verify_ticket(sup)
    capsys.readouterr()
    assert run_cli(["verify", str(sup)]) == 2
    assert run_cli(["evaluate-ticket", str(sub)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error:") for e in err)
    junk = tmp_path / "junk.npz"
    np.savez(junk, x=np.zeros(3))
    with pytest.raises(UserError, match="not a lottery-jax ticket"):
        tickets.load_ticket(junk)
    np.savez(junk, __meta__=np.asarray(json.dumps({"format": "lottery-jax-ticket/1"})))
    with pytest.raises(UserError, match="neither ticket kind"):
        tickets.load_ticket(junk)
