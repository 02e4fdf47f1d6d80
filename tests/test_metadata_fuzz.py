"""Property test (issue 17): metadata of any JSON shape and type, in tickets, weight files and
results directories, is read or refused with a one-line UserError, never a traceback.

Each example rewrites one small file and runs the readers on it (hypothesis, ~120 examples per
reader, no deadline: the first example pays JAX's start-up).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lottery_jax import checkpoint, pruning, rundir
from lottery_jax import subsetsum as ap
from lottery_jax.errors import UserError
from lottery_jax.pruning import sweep

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
           | st.floats() | st.text(max_size=12))  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                         inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
#: Text that is JSON nested ``depth`` levels (or not JSON at all).
deep = (
    st.integers(1, 20000).map(lambda d: "[" * d + "]" * d)
    | st.integers(1, 20000).map(lambda d: '{"a":' * d + "1" + "}" * d)
    | st.text(max_size=20)
)


def mutations(base: dict, keys: list[str], sub: dict[str, list[str]]):
    """A metadata text made from ``base``: the whole object replaced, one key (or one key of a
    nested object) set to any JSON value or removed, or raw text that is deep or no JSON."""
    whole = json_values.map(json.dumps)
    one = st.tuples(st.sampled_from(keys), json_values | st.just(KeyError)).map(
        lambda kv: json.dumps(_set(base, *kv))
    )
    nested = [
        st.tuples(st.sampled_from(ks), json_values).map(
            lambda kv, outer=outer: json.dumps({**base, outer: _set(base[outer], *kv)})
        )
        for outer, ks in sub.items()
    ]
    return st.one_of(whole, one, *nested, deep)


def _set(d: dict, key: str, value) -> dict:
    d = dict(d)
    if value is KeyError:
        d.pop(key, None)
    else:
        d[key] = value
    return d


def assert_read_or_one_line(read, *args) -> None:
    try:
        read(*args)
    except UserError as e:
        assert "\n" not in str(e), str(e)


# --- supermask tickets --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def supermask_arrays():
    from lottery_jax.nets.pruned import build_pruned

    cfg = pruning.PruneConfig(model="wide-fc2", redundancy=1, epochs=1)
    t = pruning.make_ticket(build_pruned("wide-fc2", seed=0, redundancy=1), cfg, 0, 0.5)
    with tempfile.TemporaryDirectory() as d:
        path = pruning.save_ticket(Path(d) / "t.npz", t, {"test_accuracy": 50.0})
        with np.load(path) as f:
            return {k: f[k] for k in f.files}


def _read_supermask(path: Path) -> None:
    from lottery_jax.pruning.ticket import ticket_config

    t = pruning.load_ticket(path)
    ticket_config(t)
    saved = t["meta"].get("test_accuracy")
    assert saved is None or isinstance(saved, int | float | str | list | dict | bool)


def test_supermask_ticket_metadata(supermask_arrays):
    base = json.loads(str(supermask_arrays["__meta__"]))
    config_keys = list(base["config"]) + ["sizes", "extra"]
    texts = mutations(base, list(base) + ["extra"], {"config": config_keys})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.npz"

        @SETTINGS
        @given(texts)
        def check(text):
            np.savez(path, **{**supermask_arrays, "__meta__": np.asarray(text)})
            assert_read_or_one_line(_read_supermask, path)

        check()


# --- SubsetSum tickets ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subsetsum_arrays():
    rng = np.random.default_rng(0)
    target = {"fc1.weight": rng.normal(0, 0.05, (3, 784)).astype(np.float32),
              "fc2.weight": rng.normal(0, 0.2, (10, 3)).astype(np.float32)}  # fmt: skip
    res = ap.approximate_network(target, ap.ApproxConfig(epsilon=0.05, c=2.0))
    with tempfile.TemporaryDirectory() as d:
        path = ap.save_ticket(Path(d) / "t.npz", res, target)
        with np.load(path) as f:
            return {k: f[k] for k in f.files}


def test_subsetsum_ticket_metadata(subsetsum_arrays):
    base = json.loads(str(subsetsum_arrays["__meta__"]))
    texts = mutations(base, list(base) + ["extra"], {"shapes": list(base["shapes"])})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.npz"

        @SETTINGS
        @given(texts)
        def check(text):
            np.savez(path, **{**subsetsum_arrays, "__meta__": np.asarray(text)})
            assert_read_or_one_line(ap.verify_ticket, path)

        check()


# --- weight files ------------------------------------------------------------------------------


def _read_weights(path: Path) -> None:
    from lottery_jax.nets import targets as models

    state, meta = checkpoint.load_weights(path)
    models.network_for(state, source=str(path), model=meta.get("model"))


def test_weight_file_metadata():
    state = {"fc1.weight": np.zeros((4, 784), np.float32), "fc2.weight": np.zeros((10, 4))}
    base = {"model": "fc2", "inputs": "normalized", "seed": 0, "hidden": 4, "config": {}}
    texts = mutations(base, list(base) + ["extra"], {"config": ["epochs", "lr"]})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "w.npz"

        @SETTINGS
        @given(texts)
        def check(text):
            np.savez(path, **state, __meta__=np.asarray(text))
            assert_read_or_one_line(_read_weights, path)

        check()


# --- results directories -----------------------------------------------------------------------


def _read_results_dir(root: Path) -> None:
    run = root / "run"
    sweep.is_finished(run / "results.json", {"model": "wide-fc2"})
    sweep.collect_results(root)
    with rundir.RunDir(run, args={"model": "wide-fc2"}) as r:
        r.committed()
    rundir.committed(run)


def test_results_run_and_journal_metadata():
    base = {"config": {"model": "wide-fc2"}, "final_test_accuracy": 90.0, "files": {},
            "fingerprint": "x", "args": {"model": "wide-fc2"}, "format": rundir.RUN_FORMAT}  # fmt: skip
    texts = mutations(base, list(base), {"config": ["model"]})
    names = st.sampled_from(["results.json", rundir.RUN_NAME, rundir.JOURNAL_NAME])
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)

        @SETTINGS
        @given(names, texts)
        def check(name, text):
            run = root / "run"
            for p in run.glob("*") if run.exists() else []:
                if p.is_file():
                    p.unlink()
            run.mkdir(exist_ok=True)
            (run / name).write_text(text)
            assert_read_or_one_line(_read_results_dir, root)

        check()
