"""Target networks: shapes, parameter counts, PyTorch layout, weight files."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lottery_jax import checkpoint
from lottery_jax.errors import UserError
from lottery_jax.nets.targets import (
    FC2,
    MODEL_NAMES,
    Frozen,
    LeNet5,
    build_model,
    count_params,
    load_torch_state,
    torch_state,
)

X = jax.random.uniform(jax.random.key(7), (3, 28, 28, 1))

SHAPES = {
    "fc2": {"fc1.weight": (500, 784), "fc2.weight": (10, 500)},
    "fc4": {
        "fc1.weight": (500, 784),
        "fc2.weight": (500, 500),
        "fc3.weight": (500, 500),
        "fc4.weight": (10, 500),
    },
    "lenet5": {
        "conv1.weight": (6, 1, 5, 5),
        "conv2.weight": (16, 6, 5, 5),
        "fc1.weight": (120, 400),
        "fc2.weight": (84, 120),
        "fc3.weight": (10, 84),
    },
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_finite(name):
    model = build_model(name, seed=0)
    y = model(X)
    assert y.shape == (3, 10) and y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torch_state_keys_and_shapes(name):
    state = torch_state(build_model(name, seed=0))
    assert {k: v.shape for k, v in state.items()} == SHAPES[name]
    assert all(v.dtype == np.float32 for v in state.values())


@pytest.mark.parametrize(
    ("name", "trainable", "frozen"),
    [("fc2", 397_000, 0), ("fc4", 897_000, 0), ("lenet5", 58_920, 2_550)],
)
def test_parameter_counts(name, trainable, frozen):
    model = build_model(name, seed=0)
    assert count_params(model) == trainable
    assert count_params(model, Frozen) == frozen


def test_lenet5_conv_weights_are_frozen_variables():
    model = build_model("lenet5", seed=0)
    assert isinstance(model.conv1.weight, Frozen) and isinstance(model.conv2.weight, Frozen)
    assert isinstance(model.fc1.weight, nnx.Param)
    frozen = nnx.to_flat_state(nnx.state(model, Frozen))
    assert sorted(tuple(str(p) for p in path) for path, _ in frozen) == [
        ("conv1", "weight"),
        ("conv2", "weight"),
    ]


def test_bias_and_hidden_options():
    fc2 = build_model("fc2", seed=0, hidden=30, bias=True)
    assert count_params(fc2) == 784 * 30 + 30 * 10 + 30 + 10
    assert fc2(X).shape == (3, 10)
    fc4 = build_model("fc4", seed=0, hidden=8)
    assert count_params(fc4) == 784 * 8 + 8 * 8 * 2 + 8 * 10
    lenet = build_model("lenet5", seed=0, hidden=60, bias=True)
    assert lenet.fc1.weight[...].shape == (60, 400) and lenet.fc2.weight[...].shape == (42, 60)
    assert count_params(lenet, Frozen) == 2_550 + 6 + 16
    assert lenet(X).shape == (3, 10)


def test_bad_model_options():
    with pytest.raises(UserError, match="unknown model"):
        build_model("resnet", seed=0)
    with pytest.raises(UserError, match="hidden"):
        build_model("fc2", seed=0, hidden=0)
    with pytest.raises(UserError, match="hidden"):
        build_model("fc4", seed=0, hidden=-3)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_seeds(name):
    a, b, c = (torch_state(build_model(name, seed=s)) for s in (0, 0, 1))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])
    # Different layers get different draws too.
    assert not np.array_equal(a["fc2.weight"].ravel()[:10], a["fc1.weight"].ravel()[:10])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pytorch_default_init_bounds(name):
    for key, w in torch_state(build_model(name, seed=3)).items():
        fan_in = int(np.prod(w.shape[1:]))
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(w).max() <= bound, key
        assert np.abs(w).max() > 0.9 * bound, key  # uniform over the whole range
        assert abs(w.mean()) < 5 * bound / math.sqrt(3 * w.size), key  # 5 sigma


def test_fc2_forward_is_pytorch_layout():
    model = build_model("fc2", seed=0)
    s = torch_state(model)
    x = np.asarray(X).reshape(3, -1)
    expected = np.maximum(x @ s["fc1.weight"].T, 0) @ s["fc2.weight"].T
    np.testing.assert_allclose(np.asarray(model(X)), expected, rtol=1e-4, atol=1e-5)


def test_lenet5_matches_pytorch():
    """Same weights in a torch LeNet5 (NCHW conv, C,H,W flatten) give the same logits."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    model = build_model("lenet5", seed=0)
    s = {k: torch.from_numpy(v.copy()) for k, v in torch_state(model).items()}
    xt = torch.from_numpy(np.asarray(X).transpose(0, 3, 1, 2).copy())
    h = F.max_pool2d(F.relu(F.conv2d(xt, s["conv1.weight"], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, s["conv2.weight"])), 2).flatten(1)
    h = F.relu(h @ s["fc1.weight"].T)
    h = F.relu(h @ s["fc2.weight"].T)
    expected = (h @ s["fc3.weight"].T).numpy()
    np.testing.assert_allclose(np.asarray(model(X)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_load_torch_state_round_trip(name):
    src, dst = build_model(name, seed=0), build_model(name, seed=1)
    load_torch_state(dst, torch_state(src))
    for key, value in torch_state(src).items():
        np.testing.assert_array_equal(torch_state(dst)[key], value)
    np.testing.assert_array_equal(np.asarray(dst(X)), np.asarray(src(X)))
    # Variable kinds survive the load (LeNet5's convs stay Frozen, fc stays Param).
    assert count_params(dst) == count_params(src)
    assert count_params(dst, Frozen) == count_params(src, Frozen)


def test_load_torch_state_accepts_float64():
    src, dst = build_model("fc2", seed=0, hidden=4), build_model("fc2", seed=1, hidden=4)
    state = {k: v.astype(np.float64) for k, v in torch_state(src).items()}
    load_torch_state(dst, state)
    assert dst.fc1.weight[...].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(dst.fc1.weight[...]), torch_state(src)["fc1.weight"])


def _fc2_state():
    return torch_state(build_model("fc2", seed=0, hidden=4))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.pop("fc2.weight"), "missing fc2.weight"),
        (lambda s: s.update({"fc3.weight": np.zeros((10, 4), np.float32)}), "unexpected fc3"),
        (lambda s: s.update({"fc1.weight": np.zeros((4, 700), np.float32)}), "fc1.weight"),
        (lambda s: s.update({"fc2.weight": np.zeros((4, 10), np.float32)}), "shape"),
        (lambda s: s.update({"fc2.weight": np.zeros((10, 4), np.int32)}), "floating"),
        (lambda s: s.update({"fc2.weight": np.full((10, 4), np.nan, np.float32)}), "finite"),
    ],
)
def test_load_torch_state_rejects_bad_states(mutate, match):
    model = build_model("fc2", seed=1, hidden=4)
    before = {k: v.copy() for k, v in torch_state(model).items()}
    state = _fc2_state()
    mutate(state)
    with pytest.raises(UserError, match=match) as info:
        load_torch_state(model, state, source="w.npz")
    assert str(info.value).startswith("w.npz: ") and "\n" not in str(info.value)
    for key, value in torch_state(model).items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key])


# --- weight files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_weight_file_round_trip(tmp_path, name):
    model = build_model(name, seed=5)
    path = checkpoint.save_weights(tmp_path / "m.npz", name, torch_state(model), {"seed": 5})
    assert path == tmp_path / "m.npz" and not list(tmp_path.glob(".*tmp"))
    state, meta = checkpoint.load_weights(path)
    assert meta == {"model": name, "seed": 5}
    other = build_model(name, seed=6)
    load_torch_state(other, state)
    np.testing.assert_array_equal(np.asarray(other(X)), np.asarray(model(X)))


def test_weight_file_in_pytorch_layout_without_meta(tmp_path):
    state = _fc2_state()
    np.savez(tmp_path / "plain.npz", **state)
    loaded, meta = checkpoint.load_weights(tmp_path / "plain.npz")
    assert meta == {}
    assert set(loaded) == set(state)


def test_bad_weight_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load_weights(tmp_path / "absent.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(UserError, match="garbage.npz"):
        checkpoint.load_weights(garbage)
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(UserError, match="no arrays"):
        checkpoint.load_weights(tmp_path / "empty.npz")
    np.savez(tmp_path / "meta.npz", w=np.zeros(2), __meta__=np.asarray("{not json"))
    with pytest.raises(UserError, match="meta"):
        checkpoint.load_weights(tmp_path / "meta.npz")
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load_weights(tmp_path)  # a directory


def test_truncated_weight_file_is_a_clean_error(tmp_path):
    """A cut-off .npz (starts like a zip) must not leak its file handle (ResourceWarning)."""
    path = checkpoint.save_weights(tmp_path / "cut.npz", "fc2", _fc2_state())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="cut.npz"):
        checkpoint.load_weights(path)
    import gc

    gc.collect()  # an unclosed file would warn here (warnings are errors)


def test_every_single_byte_corruption_is_a_clean_error(tmp_path):
    """Flip each 11th byte of a weight file: it loads (harmless byte) or gives a UserError.

    Damaged compressed members raise zlib.error, a damaged .npy header tokenize.TokenError, a
    damaged zip flag NotImplementedError: none may escape as a traceback.
    """
    path = checkpoint.save_weights(tmp_path / "m.npz", "fc2", _fc2_state())
    good = path.read_bytes()
    for i in range(0, len(good), 11):
        data = bytearray(good)
        data[i] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            checkpoint.load_weights(path)
        except UserError as e:
            assert "m.npz" in str(e) and "\n" not in str(e)


def test_weight_file_meta_is_json(tmp_path):
    path = checkpoint.save_weights(tmp_path / "m.npz", "fc2", _fc2_state(), {"lr": 0.1})
    with np.load(path) as f:
        assert json.loads(str(f["__meta__"])) == {"model": "fc2", "lr": 0.1}
        assert f["fc1.weight"].shape == (4, 784)


def test_resume_file_round_trip(tmp_path):
    import optax

    from lottery_jax.rundir import write_npz

    params = nnx.state(build_model("fc2", seed=0, hidden=4), nnx.Param)
    opt = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
    state = opt.init(params)
    state = jax.tree.map(lambda x: x + 1, state)
    weights = {"fc1.weight": np.arange(6.0).reshape(2, 3)}
    path = tmp_path / "r.npz"
    write_npz(path, checkpoint.resume_arrays(state, 3, {"config": {"a": 1}}, weights))

    def load_resume(like, config=None):  # (as runs.train_target reads it back)
        return checkpoint.parse_resume(checkpoint.read_npz(path, "resume file"), like, config,
                                       source=path)  # fmt: skip

    loaded, epoch, meta, w = load_resume(opt.init(params))
    assert epoch == 3 and meta == {"config": {"a": 1}}
    assert w.keys() == weights.keys()
    np.testing.assert_array_equal(w["fc1.weight"], weights["fc1.weight"])
    with pytest.raises(UserError, match="different configuration"):
        load_resume(opt.init(params), {"a": 2})
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.dtype == b.dtype
    assert jax.tree.structure(loaded) == jax.tree.structure(state)
    bigger = nnx.state(build_model("fc2", seed=0, hidden=5), nnx.Param)
    with pytest.raises(UserError, match="optimizer state"):
        load_resume(opt.init(bigger))


# --- the paper's target ---------------------------------------------------------------------------


@pytest.mark.shared_data
def test_paper_target_loads(paper_target):
    state, meta = checkpoint.load_weights(paper_target)
    assert meta["model"] == "fc2" and meta["inputs"] == "unit"
    assert {k: v.shape for k, v in state.items()} == SHAPES["fc2"]
    assert all(v.dtype == np.float32 for v in state.values())
    lo = min(float(v.min()) for v in state.values())
    hi = max(float(v.max()) for v in state.values())
    assert lo == pytest.approx(-0.46423155, abs=1e-7)
    assert hi == pytest.approx(0.54070216, abs=1e-7)
    model = build_model("fc2", seed=0)
    load_torch_state(model, state, source=str(paper_target))
    for key, value in torch_state(model).items():
        np.testing.assert_array_equal(value, state[key])


def test_model_classes_are_exported():
    assert isinstance(build_model("fc2", seed=0), FC2)
    assert isinstance(build_model("lenet5", seed=0), LeNet5)
