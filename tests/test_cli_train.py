"""``lottery-jax train`` / ``evaluate``: help, one-line errors, results.json, resume, accuracy facts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx_file
from helpers import assert_one_line_error
from helpers import run_cli as cli

from lottery_jax import checkpoint, training
from lottery_jax.nets.targets import build_model, torch_state

RESULT_KEYS = {
    "command",
    "config",
    "seed",
    "device",
    "test_accuracy",
    "final_test_accuracy",
    "epoch_seconds",
    "compile_seconds",
}


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    """Tests name their data explicitly; a user's LOTTERY_JAX_DATA must not leak in."""
    monkeypatch.delenv("LOTTERY_JAX_DATA", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def read_results(out_dir: Path) -> dict:
    return json.loads((out_dir / "results.json").read_text())


def tiny_train(tiny_idx_dir, out, *extra):
    return (
        "train", "--model", "fc2", "--hidden", "16", "--epochs", "2", "--data-dir", tiny_idx_dir,
        "--out", out, "--no-progress", *extra,
    )  # fmt: skip


# --- help ----------------------------------------------------------------------------------------


def _flat(text: str) -> str:
    """Help text with the box drawing removed and whitespace collapsed (immune to wrapping)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_help_lists_commands(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    assert "train" in out and "evaluate" in out


def test_train_help_shows_every_default(capsys):
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0
    text = _flat(out)
    for option, default in [
        ("--model", "fc2"),
        ("--epochs", "10"),
        ("--batch-size", "64"),
        ("--momentum", "0.9"),
        ("--weight-decay", "0.0005"),
        ("--schedule", "epoch"),
        ("--seed", "0"),
        ("--inputs", "normalized"),
        ("--dataset", "mnist"),
    ]:
        assert option in text
        assert f"[default: {default}]" in text, option
    assert "LOTTERY_JAX_DATA" in text
    # Options whose default depends on the model say so in their help.
    assert "0.1 for fc2/fc4, 0.01 for lenet5" in text  # --lr
    assert "500 for fc2/fc4, 120 for lenet5" in text  # --hidden
    assert "runs/train-..., named after the model" in text  # --out


def test_evaluate_help(capsys):
    code, out, _ = cli(capsys, "evaluate", "--help")
    assert code == 0
    text = _flat(out)
    for option in ("--weights", "--model", "--inputs", "--data-dir", "--out"):
        assert option in text
    assert "[default: the file's, else normalized]" in text  # --inputs' default
    assert "from the file's metadata" in text  # --model's default


# --- one-line errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--model", "resnet"), "--model"),
        (("--epochs", "0"), "--epochs"),
        (("--epochs", "-2"), "--epochs"),
        (("--epochs", "ten"), "--epochs"),
        (("--batch-size", "0"), "--batch-size"),
        (("--batch-size", "-64"), "--batch-size"),
        (("--lr", "0"), "--lr"),
        (("--lr", "-0.1"), "--lr"),
        (("--hidden", "0"), "hidden"),
        (("--inputs", "raw"), "--inputs"),
        (("--schedule", "linear"), "--schedule"),
        (("--no-such-option",), "no-such-option"),
        (("--seed", str(2**63)), "--seed"),  # beyond int64: OverflowError in jax.random.key
    ],
)
def test_train_bad_options(capsys, tmp_path, tiny_idx_dir, extra, needle):
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, tmp_path / "out"), *extra)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out" / "results.json").exists()


def test_train_missing_data_dir(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--data-dir", tmp_path / "nope", "--out", tmp_path / "o")
    assert_one_line_error(code, err, str(tmp_path / "nope"))


def test_train_data_dir_from_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LOTTERY_JAX_DATA", str(tmp_path / "env-data"))
    code, _, err = cli(capsys, "train", "--out", tmp_path / "o")
    assert_one_line_error(code, err, str(tmp_path / "env-data"))


@pytest.mark.parametrize("damage", ["truncate", "magic", "missing", "labels", "count", "gzip"])
def test_train_corrupt_idx_dir(capsys, tmp_path, tiny_idx_dir, damage):
    data = shutil.copytree(tiny_idx_dir, tmp_path / "data")
    victim = data / "train-images-idx3-ubyte"
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-1000])
    elif damage == "magic":
        victim.write_bytes(b"\x00\x00\x09\x03" + victim.read_bytes()[4:])
    elif damage == "missing":
        victim.unlink()
    elif damage == "labels":
        victim = data / "t10k-labels-idx1-ubyte"
        write_idx_file(victim, np.full(128, 12, np.uint8))
    elif damage == "count":
        victim = data / "train-labels-idx1-ubyte"
        write_idx_file(victim, np.zeros(100, np.uint8))
    elif damage == "gzip":
        victim.unlink()
        victim = data / "train-images-idx3-ubyte.gz"
        victim.write_bytes(b"\x1f\x8b\x08\x00garbage" * 50)
    code, _, err = cli(capsys, *tiny_train(data, tmp_path / "out"))
    assert_one_line_error(code, err, str(victim))


def _evaluate(capsys, tiny_idx_dir, tmp_path, weights, *extra):
    return cli(
        capsys, "evaluate", "--weights", weights, "--data-dir", tiny_idx_dir,
        "--out", tmp_path / "eval", *extra,
    )  # fmt: skip


def test_evaluate_missing_weight_file(capsys, tmp_path, tiny_idx_dir):
    code, _, err = _evaluate(capsys, tiny_idx_dir, tmp_path, tmp_path / "absent.npz")
    assert_one_line_error(code, err, "absent.npz")


def test_evaluate_unreadable_weight_file(capsys, tmp_path, tiny_idx_dir):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    code, _, err = _evaluate(capsys, tiny_idx_dir, tmp_path, bad, "--model", "fc2")
    assert_one_line_error(code, err, str(bad))


def test_evaluate_weight_file_of_wrong_shapes(capsys, tmp_path, tiny_idx_dir):
    path = tmp_path / "wrong.npz"
    np.savez(
        path,
        **{
            "fc1.weight": np.zeros((500, 700), np.float32),
            "fc2.weight": np.zeros((10, 500), np.float32),
        },
    )
    code, _, err = _evaluate(capsys, tiny_idx_dir, tmp_path, path, "--model", "fc2")
    assert_one_line_error(code, err, str(path), "fc1.weight", "(500, 700)")


def test_evaluate_weight_file_of_another_model(capsys, tmp_path, tiny_idx_dir):
    path = checkpoint.save_weights(
        tmp_path / "lenet.npz", "lenet5", torch_state(build_model("lenet5", seed=0))
    )
    code, _, err = _evaluate(capsys, tiny_idx_dir, tmp_path, path, "--model", "fc2")
    assert_one_line_error(code, err, str(path), "conv1.weight")


def test_evaluate_without_metadata_infers_or_needs_model(capsys, tmp_path, tiny_idx_dir):
    path = tmp_path / "plain.npz"
    np.savez(path, **torch_state(build_model("fc2", seed=0, hidden=8)))
    code, out, err = _evaluate(capsys, tiny_idx_dir, tmp_path, path)
    assert code == 0, err
    assert "(fc2, normalized inputs)" in out  # inferred from the array shapes
    odd = tmp_path / "odd.npz"
    np.savez(odd, **{"fc1.weight": np.zeros((8, 5), np.float32)})
    code, _, err = _evaluate(capsys, tiny_idx_dir, tmp_path, odd)
    assert_one_line_error(code, err, str(odd), "--model")
    # With --model it works, and the hidden width comes from the file.
    code, out, err = _evaluate(capsys, tiny_idx_dir, tmp_path, path, "--model", "fc2")
    assert code == 0, err
    assert "test accuracy" in out


def test_evaluate_missing_data(capsys, tmp_path):
    path = checkpoint.save_weights(
        tmp_path / "m.npz", "fc2", torch_state(build_model("fc2", seed=0, hidden=8))
    )
    code, _, err = _evaluate(capsys, tmp_path / "nodata", tmp_path, path)
    assert_one_line_error(code, err, str(tmp_path / "nodata"))


# --- train / evaluate on the tiny synthetic set --------------------------------------------------


def test_train_writes_results_and_weights(capsys, tmp_path, tiny_idx_dir):
    out = tmp_path / "run"
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, out))
    assert code == 0, err
    res = read_results(out)
    assert set(res) >= RESULT_KEYS
    assert res["command"] == "train" and res["seed"] == 0
    assert res["config"]["model"] == "fc2" and res["config"]["epochs"] == 2
    assert res["config"]["lr"] == 0.1 and res["config"]["batch_size"] == 64
    assert res["config"]["inputs"] == "normalized" and res["config"]["schedule"] == "epoch"
    assert {"backend", "device_kind", "jax_version"} <= set(res["device"])
    assert len(res["test_accuracy"]) == 2 and len(res["epoch_seconds"]) == 2
    assert all(0 <= a <= 100 for a in res["test_accuracy"])
    assert res["final_test_accuracy"] == res["test_accuracy"][-1]
    assert res["final_test_accuracy"] > 80.0  # the toy set is easy
    assert res["compile_seconds"] > 0 and all(t > 0 for t in res["epoch_seconds"])
    assert res["trainable_params"] == 784 * 16 + 16 * 10

    state, meta = checkpoint.load_weights(out / "model.npz")
    assert meta["model"] == "fc2" and meta["hidden"] == 16
    assert state["fc1.weight"].shape == (16, 784)
    assert (out / "resume.npz").exists()

    # evaluate reads the model from the metadata and reproduces the final accuracy exactly.
    code, stdout, err = cli(
        capsys, "evaluate", "--weights", out / "model.npz", "--data-dir", tiny_idx_dir,
        "--out", tmp_path / "eval",
    )  # fmt: skip
    assert code == 0, err
    ev = read_results(tmp_path / "eval")
    assert set(ev) >= RESULT_KEYS
    assert ev["command"] == "evaluate" and ev["config"]["model"] == "fc2"
    assert ev["test_accuracy"] == ev["final_test_accuracy"] == res["final_test_accuracy"]
    assert f"{res['final_test_accuracy']:.2f}%" in stdout


def test_train_lenet5_keeps_its_conv_init(capsys, tmp_path, tiny_idx_dir):
    out = tmp_path / "lenet"
    code, _, err = cli(
        capsys, "train", "--model", "lenet5", "--epochs", "1", "--seed", "3",
        "--data-dir", tiny_idx_dir, "--out", out, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    res = read_results(out)
    assert res["config"]["lr"] == 0.01  # LeNet5's default rate
    assert res["trainable_params"] == 58_920 and res["frozen_params"] == 2_550
    state, _ = checkpoint.load_weights(out / "model.npz")
    init = torch_state(build_model("lenet5", seed=3))
    for key in ("conv1.weight", "conv2.weight"):
        np.testing.assert_array_equal(state[key], init[key])
    assert not np.array_equal(state["fc1.weight"], init["fc1.weight"])


def _interrupting_fit(real_fit):
    def fit_interrupted_after_first_epoch(*args, on_epoch, **kwargs):
        def hook(epoch, *rest):
            on_epoch(epoch, *rest)
            raise KeyboardInterrupt  # Ctrl-C right after the checkpoint of epoch 1

        return real_fit(*args, on_epoch=hook, **kwargs)

    return fit_interrupted_after_first_epoch


def test_ctrl_c_exit_status(capsys, tmp_path, tiny_idx_dir, monkeypatch):
    """Ctrl-C during training: exit status 130 and one line saying how to resume."""
    monkeypatch.setattr(training, "fit", _interrupting_fit(training.fit))
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, tmp_path / "run"))
    assert code == 130
    assert_one_line_error(code, err, "resume")


def test_resume_equals_uninterrupted(capsys, tmp_path, tiny_idx_dir, monkeypatch):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, straight))
    assert code == 0, err

    real_fit = training.fit
    fit_interrupted_after_first_epoch = _interrupting_fit(real_fit)
    monkeypatch.setattr(training, "fit", fit_interrupted_after_first_epoch)
    cli(capsys, *tiny_train(tiny_idx_dir, broken))  # (exit status: test_ctrl_c_exit_status)
    assert read_results(broken)["epochs_done"] == 1
    monkeypatch.setattr(training, "fit", real_fit)

    # Another configuration in the same --out is refused, and touches nothing.
    for extra in (("--epochs", "3"), ("--lr", "0.05")):
        argv = list(tiny_train(tiny_idx_dir, broken))
        i = argv.index(extra[0]) if extra[0] in argv else len(argv)
        argv[i : i + 2] = extra
        code, _, err = cli(capsys, *argv)
        assert_one_line_error(code, err, str(broken), "different configuration")
    assert read_results(broken)["epochs_done"] == 1

    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, broken))
    assert code == 0, err
    assert "resuming" in err
    a, _ = checkpoint.load_weights(straight / "model.npz")
    b, _ = checkpoint.load_weights(broken / "model.npz")
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    ra, rb = read_results(straight), read_results(broken)
    assert ra["test_accuracy"] == rb["test_accuracy"] and rb["epochs_done"] == 2
    assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-6)
    assert len(rb["epoch_seconds"]) == 2

    # Running a finished run again does nothing and succeeds.
    before = (broken / "model.npz").read_bytes()
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, broken))
    assert code == 0 and "finished" in err
    assert (broken / "model.npz").read_bytes() == before


@pytest.mark.parametrize(
    "other",
    [("--model", "lenet5"), ("--bias",), ("--hidden", "8"), ("--batch-size", "32")],
    ids=["model", "bias", "hidden", "batch-size"],
)
def test_other_configuration_in_same_out(capsys, tmp_path, tiny_idx_dir, other):
    """A finished (or interrupted) run's --out reused with another network or option: the
    configuration check must come before the optimizer state is restored (which otherwise
    fails with KeyError 'leaf0003' or 'optimizer state does not fit')."""
    out = tmp_path / "run"
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, out), "--epochs", "1")
    assert code == 0, err
    argv = [*tiny_train(tiny_idx_dir, out), "--epochs", "1"]
    if other[0] == "--model":
        argv[argv.index("--hidden") : argv.index("--hidden") + 2] = []
    if other[0] == "--hidden":
        argv[argv.index("--hidden") : argv.index("--hidden") + 2] = []
    code, _, err = cli(capsys, *argv, *other)
    assert_one_line_error(code, err, str(out), "different configuration")


def test_out_is_a_file(capsys, tmp_path, tiny_idx_dir):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, target), "--epochs", "1")
    assert_one_line_error(code, err, str(target))


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_train_through_tfds_mock_data(capsys, tmp_path, dataset):
    """Without --data-dir (and LOTTERY_JAX_DATA), train reads tensorflow-datasets; here its mock."""
    tfds = pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=96):
        code, _, err = cli(
            capsys, "train", "--hidden", "8", "--epochs", "1", "--dataset", dataset,
            "--out", out, "--no-progress",
        )  # fmt: skip
    assert code == 0, err
    res = read_results(out)
    assert res["config"]["data_dir"] is None and res["config"]["dataset"] == dataset
    assert len(res["test_accuracy"]) == 1


def test_evaluate_out_is_a_file(capsys, tmp_path, tiny_idx_dir):
    weights = checkpoint.save_weights(
        tmp_path / "m.npz", "fc2", torch_state(build_model("fc2", seed=0, hidden=8))
    )
    target = tmp_path / "taken"
    target.write_text("not a directory")
    for out in (target, target / "below"):
        code, _, err = cli(
            capsys, "evaluate", "--weights", weights, "--data-dir", tiny_idx_dir, "--out", out
        )
        assert_one_line_error(code, err, str(target))


def test_interrupt_between_weights_and_resume_record(capsys, tmp_path, tiny_idx_dir, monkeypatch):
    """Ctrl-C after model.npz of epoch 2 is written but before resume.npz is: resuming must still
    give the uninterrupted weights (the resume record has to be self-contained, or written first
    together with the weights it refers to)."""
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    argv = [*tiny_train(tiny_idx_dir, straight), "--epochs", "3"]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err

    real_resume_arrays = checkpoint.resume_arrays

    def resume_arrays(opt_state, epoch, meta, weights=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_resume_arrays(opt_state, epoch, meta, weights)

    monkeypatch.setattr(checkpoint, "resume_arrays", resume_arrays)
    argv = [*tiny_train(tiny_idx_dir, broken), "--epochs", "3"]
    cli(capsys, *argv)
    monkeypatch.setattr(checkpoint, "resume_arrays", real_resume_arrays)
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    a, _ = checkpoint.load_weights(straight / "model.npz")
    b, _ = checkpoint.load_weights(broken / "model.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_console_script_end_to_end(tmp_path, tiny_idx_dir):
    script = Path(sys.executable).parent / "lottery-jax"
    if not script.exists():
        pytest.skip("the lottery-jax console script is not installed next to this Python")
    env = {k: v for k, v in os.environ.items() if k != "LOTTERY_JAX_DATA"}
    argv = [str(a) for a in tiny_train(tiny_idx_dir, tmp_path / "run")]
    argv[argv.index("2")] = "1"  # one epoch
    done = subprocess.run([script, *argv], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    res = read_results(tmp_path / "run")
    assert set(res) >= RESULT_KEYS and len(res["test_accuracy"]) == 1

    bad = subprocess.run(
        [script, "evaluate", "--weights", tmp_path / "none.npz", "--out", tmp_path / "e"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert_one_line_error(bad.returncode, bad.stderr, "none.npz")


# --- facts on the real MNIST ---------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize(("inputs", "expected"), [("unit", 97.19), ("normalized", 98.59)])
def test_paper_target_accuracy(capsys, tmp_path, mnist_dir, paper_target, inputs, expected):
    out = tmp_path / inputs
    code, stdout, err = cli(
        capsys, "evaluate", "--model", "fc2", "--weights", paper_target, "--inputs", inputs,
        "--data-dir", mnist_dir, "--out", out,
    )  # fmt: skip
    assert code == 0, err
    res = read_results(out)
    assert set(res) >= RESULT_KEYS
    assert res["command"] == "evaluate"
    assert res["config"]["inputs"] == inputs and res["config"]["model"] == "fc2"
    assert res["test_accuracy"] == expected and res["final_test_accuracy"] == expected
    assert res["test_examples"] == 10_000
    assert f"{expected:.2f}%" in stdout


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("extra", "target"),
    [
        (("--epochs", "10"), 98.0),
        # One epoch of the published per-epoch schedule is one epoch at constant lr 0.1 (91.5%
        # here); the per-step cosine gets the one-epoch figure.
        (("--epochs", "1", "--schedule", "step"), 96.5),
    ],
)
def test_fc2_reaches_published_accuracy(capsys, tmp_path, mnist_dir, extra, target):
    out = tmp_path / "fc2"
    code, _, err = cli(
        capsys, "train", "--model", "fc2", "--data-dir", mnist_dir, "--out", out,
        "--no-progress", *extra,
    )  # fmt: skip
    assert code == 0, err
    res = read_results(out)
    print(f"fc2 {' '.join(extra)}: {res['test_accuracy']}")
    assert res["final_test_accuracy"] >= target
