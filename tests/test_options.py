"""One validator for every numeric option: NaN, infinities, ranges, overflowing integers."""

from __future__ import annotations

import math

import pytest
from helpers import assert_one_line_error, run_cli
from lottery_jax.cli.options import (
    POSITIVE,
    SEED,
    SPARSITY,
    Rule,
    check,
    parse_floats,
    parse_ints,
)

from lottery_jax.errors import UserError


def test_user_error_is_a_value_error():
    assert issubclass(UserError, ValueError)


def test_parse_lists():
    assert parse_floats(["0.5", "0.75,0.9", "0.5"], "--sparsity") == [0.5, 0.75, 0.9]
    assert parse_ints(["1,2", "3"], "--seed") == [1, 2, 3]
    with pytest.raises(UserError, match="not a number"):
        parse_floats(["x"], "--sparsity")
    with pytest.raises(UserError, match="not an integer"):
        parse_ints(["1.5"], "--seed")


@pytest.mark.parametrize(
    ("value", "rule", "match"),
    [
        (math.nan, POSITIVE, "finite"),
        (math.inf, POSITIVE, "finite"),
        (-math.inf, Rule(), "finite"),
        (0.0, POSITIVE, "> 0"),
        (1.0, SPARSITY, r"in \[0, 1\)"),
        (-3, SEED, "in"),
        (2**32, SEED, "in"),
        (99999999999999999999, SEED, "in"),
        (1.5, Rule(integer=True), "integer"),
    ],
)
def test_check_refuses(value, rule, match):
    with pytest.raises(UserError, match=match):
        check("--x", value, rule)


def test_check_passes_and_none_means_default():
    assert check("--lr", 0.1, POSITIVE) == 0.1
    assert check("--lr", None, POSITIVE) is None
    assert check("--seed", 2**32 - 1, SEED) == 2**32 - 1
    assert parse_ints(["0,4294967295"], "--seed", SEED) == [0, 4294967295]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["prune", "--lr", "nan"], "--lr"),
        (["prune", "--lr", "inf"], "--lr"),
        (["prune", "--seed", "99999999999999999999"], "--seed"),
        (["prune", "--seed", "-3"], "--seed"),
        (["prune", "--epochs", "3000000000"], "--epochs"),
        (["prune", "--redundancy", "0"], "--redundancy"),
        (["prune", "--batch-size", "0"], "--batch-size"),
        (["sweep", "--lr", "nan"], "--lr"),
        (["sweep", "--epochs", "0"], "--epochs"),
        (["sweep", "--max-members", "0"], "--max-members"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--epochs", "3000000000"], "--epochs"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--momentum", "nan"], "--momentum"),
        (["train", "--weight-decay", "-1"], "--weight-decay"),
        (["train", "--hidden", "0"], "--hidden"),
        (["train", "--seed", "-3"], "--seed"),
    ],
)
def test_cli_numeric_options_one_line_errors(argv, needle, capsys, tmp_path):
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()  # refused before any work or output


def test_oversized_network_and_batch_refused_up_front(capsys, tmp_path, tiny_idx_dir, mnist_dir):
    # hidden 1e7: ~7.9e9 parameters, refused with the estimate before anything is allocated.
    code, _, err = run_cli(
        capsys, "train", "--hidden", "10000000", "--data-dir", tiny_idx_dir, "--out", tmp_path / "a"
    )
    assert_one_line_error(code, err, "memory", "smaller width")
    # redundancy 1000 of red-fc2: 398M parameters per member; 50 epochs on the real MNIST would
    # take about a day on a CPU, three members together do not fit in memory.
    args = ["prune", "--redundancy", "1000", "--epochs", "50", "--data-dir", mnist_dir,
            "--out", tmp_path / "b"]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "h (estimate", "max hours", only=False)
    # On a CPU a red-fc2 member trains alone (pruning.grouping), so the memory refusal needs one
    # member too large by itself: redundancy 5000, about 2e9 parameters.
    big = ["prune", "--redundancy", "5000", "--epochs", "1", "--data-dir", mnist_dir,
           "--out", tmp_path / "b"]  # fmt: skip
    code, _, err = run_cli(capsys, *big, "--sparsity", "0.1,0.2,0.3", "--max-hours", "1e6")
    assert_one_line_error(code, err, "memory", "redundancy", only=False)  # (after a log line)
    assert not list((tmp_path / "b").rglob("results.json"))
    # A batch larger than the training set.
    code, _, err = run_cli(
        capsys, "train", "--batch-size", "1000000000", "--epochs", "1", "--data-dir", tiny_idx_dir,
        "--out", tmp_path / "c",
    )  # fmt: skip
    assert_one_line_error(code, err, "batch size")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["approximate", "--epsilon", "nan"], "--epsilon"),
        (["approximate", "--c", "inf"], "--c"),
        (["approximate", "--scip-time-limit", "nan"], "--scip-time-limit"),
        (["approximate", "--scip-workers", "0"], "--scip-workers"),
        (["approximate", "--max-hours", "nan"], "--max-hours"),
        (["approximate", "--range-low", "nan", "--range-high", "1"], "--range-low"),
        (["study", "--epsilon", "nan"], "--epsilon"),
    ],
)
def test_approximate_numeric_options_one_line_errors(argv, needle, capsys, tmp_path):
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_name_lists(capsys, tmp_path):
    from lottery_jax.cli.options import parse_names

    assert parse_names(["fc2, fc4", "fc2"], "--model", ("fc2", "fc4")) == ["fc2", "fc4"]
    with pytest.raises(UserError, match="--model: unknown 'fc9'"):
        parse_names(["fc9"], "--model", ("fc2", "fc4"))
    (tmp_path / "r").mkdir()
    for argv, needle in (
        (["plot", tmp_path / "r", "--model", "fc9"], "--model: unknown 'fc9'"),
        (["plot", tmp_path / "r", "--variant", "deep"], "--variant: unknown 'deep'"),
    ):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert_one_line_error(code, err, needle)
