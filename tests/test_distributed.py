"""Scale-out: members on a device mesh, and several processes on JAX's distributed runtime.

The mesh runs use ``--xla_force_host_platform_device_count`` (CPU devices) in a subprocess; the
multi-process runs start two processes on 127.0.0.1. Both are compared with a one-device,
one-process run of the same tiny grid: same accuracies and losses, identical ticket masks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx_dir

from lottery_jax import distributed, pruning
from lottery_jax.errors import UserError
from lottery_jax.pruning import sweep

TESTS = Path(__file__).resolve().parent


def _env(devices: int = 1) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def _python(code: str, devices: int, timeout: float = 300) -> str:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(devices), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


# ----------------------------------------------------------------------------- the plan


def test_assign_is_longest_first_and_deterministic():
    costs = [150, 150, 150, 125, 125, 125, 100, 100, 100, 50, 50, 50, 30, 30, 30]
    owners = distributed.assign(costs, 2)
    assert owners == distributed.assign(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == p) for p in range(2)]
    assert sorted(loads) == [680, 685]  # of 1365: within the smallest unit of even
    assert distributed.assign(costs, 1) == [0] * len(costs)
    assert sorted(set(distributed.assign(costs, 4))) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        distributed.assign(costs, 0)


def test_split_evenly():
    assert distributed.split_evenly(list(range(14)), 4) == [
        [0, 1, 2], [3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13]
    ]  # fmt: skip
    assert distributed.split_evenly([1, 2], 4) == [[1], [2]]


def _flat(plan):
    return sorted((j, m) for _, j, g in plan for m in g)


@pytest.mark.parametrize("processes", [1, 2, 3, 5, 16])
def test_plan_covers_every_member_once(processes):
    base = pruning.PruneConfig(model="red-fc2")
    jobs = [
        (sweep.variant_config("fc2", v, e, 5, base), [(0, s) for s in pruning.PUBLISHED_SPARSITIES])
        for e in (30, 150) for v in sweep.VARIANTS
    ]  # fmt: skip
    plan = sweep.plan_groups(jobs, 14, processes)
    want = sorted((j, m) for j, (_, ms) in enumerate(jobs) for m in ms)
    assert _flat(plan) == want
    assert {o for o, _, _ in plan} == set(range(min(processes, len(plan))))
    assert all(len(g) <= 14 for _, _, g in plan)
    assert plan == sweep.plan_groups(jobs, 14, processes)  # every process computes the same
    if processes == 16:  # 6 groups for 16 processes: each split in 3 (5, 5 and 4 members)
        assert sorted(len(g) for _, _, g in plan) == [4] * 6 + [5] * 12


def test_prune_plan_splits_members_over_processes():
    cfg = pruning.PruneConfig(model="red", sizes=(784, 8, 10))  # (small: one group by default)
    members = [(seed, s) for seed in (0, 1) for s in (0.1, 0.5, 0.9)]
    plan = sweep.plan_groups([(cfg, members)], None, 2)
    assert [(o, g) for o, _, g in plan] == [(0, members[:3]), (1, members[3:])]
    assert sweep.plan_groups([(cfg, members)], None, 1) == [(0, 0, members)]


# ----------------------------------------------------------------------------- the runtime


def test_launcher_detection(monkeypatch):
    for k in list(os.environ):
        if k.startswith(("SLURM_", "OMPI_")):
            monkeypatch.delenv(k)
    assert distributed.launcher() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")  # an sbatch script itself: not a multi-task launch
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert distributed.launcher() is None
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")  # inside `srun -n 4`
    assert distributed.launcher() == "slurm"
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert distributed.launcher() is None
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert distributed.launcher() == "openmpi"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("127.0.0.1:1234", 2, None), "together"),
        ((None, 2, 0), "together"),
        (("127.0.0.1", 2, 0), "HOST:PORT"),
        (("host:99999", 2, 0), "HOST:PORT"),
        (("127.0.0.1:1234", 2, 2), r"--process-id must lie in \[0, 2\)"),
        (("127.0.0.1:1234", 0, 0), "at least 1"),
    ],
)
def test_initialize_rejects_bad_settings(args, match):
    with pytest.raises(UserError, match=match):
        distributed.initialize(*args)


def test_one_process_needs_no_runtime():
    assert distributed.initialize(None, 1, 0) == distributed.Processes(0, 1)
    assert distributed.initialize(detect=False) == distributed.Processes(0, 1)
    distributed.Processes().barrier("alone")  # returns at once


def test_cli_rejects_half_the_options(tmp_path, capsys):
    from lottery_jax.cli import main

    with pytest.raises(SystemExit) as e:
        main(["prune", "--epochs", "0", "--out", str(tmp_path), "--num-processes", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--coordinator HOST:PORT" in err[0]


# ----------------------------------------------------------------------------- device mesh


MESH_RUN = """
import json, hashlib, jax, numpy as np
from conftest import tiny_block_data
from lottery_jax import pruning
data = tiny_block_data({n_train}, 40)
cfg = pruning.PruneConfig(model="{model}", redundancy=1, epochs={epochs}, batch_size=32)
members = {members}
res = {{}}
for name, devs in (("mesh", jax.devices()), ("one", jax.devices()[:1])):
    b = pruning.make_batch(cfg, members, devices=devs)
    h = pruning.train_batch(b, data, chunk=2)
    leaves = [np.asarray(x) for t in b.scores for x in jax.tree.leaves(t)]
    res[name] = {{"acc": h["test_accuracy"], "loss": h["train_loss"],
                 "per_device": h["device_members"], "mode": b.mode,
                 "scores": hashlib.sha256(b"".join(x.tobytes() for x in leaves)).hexdigest(),
                 "accuracy_after": pruning.batch_accuracy(b, data.test_images, data.test_labels)}}
print(json.dumps(res))
"""


def _mesh_vs_one(devices, model, members, epochs, n_train):
    out = _python(MESH_RUN.format(model=model, members=members, epochs=epochs, n_train=n_train),
                  devices=devices)  # fmt: skip
    res = json.loads(out.strip().splitlines()[-1])
    mesh, one = res["mesh"], res["one"]
    assert one["per_device"] == [len(members)] and mesh["mode"] == "unroll"
    for key in ("acc", "loss", "scores", "accuracy_after"):
        assert mesh[key] == one[key], key
    assert mesh["loss"][0] != mesh["loss"][-1]  # the members really differ
    return mesh["per_device"]


# Slow (about 20 s); the default run keeps test_mesh_run_resumes_exactly (unrolled members on 2 devices).
@pytest.mark.slow
def test_members_on_a_device_mesh_equal_one_device():
    """3 members over 2 CPU devices (2 + 1, one padded slot) give bit-identical scores, losses
    and accuracies to the same members on one device (unrolled, as on CPU)."""
    members = [(0, 0.1), (0, 0.5), (0, 0.9)]
    assert _mesh_vs_one(2, "wide-fc2", members, 1, 64) == [2, 1]


def test_accelerator_path_vmap_and_sort_masks_on_a_mesh():
    """The GPU defaults (members vmap-ed, masks by one stable sort) on a 2-device mesh: each
    device's 2 members equal, bit for bit, a one-device vmap of the same 2 members."""
    out = _python(
        """
        import json, jax, numpy as np
        from conftest import tiny_block_data
        from lottery_jax import pruning
        data = tiny_block_data(64, 40)
        cfg = pruning.PruneConfig(model="wide-fc2", redundancy=1, epochs=1, batch_size=32,
                                  method="sort")
        members = [(0, 0.1), (1, 0.5), (0, 0.9), (1, 0.25)]
        def run(ms, devs):
            b = pruning.make_batch(cfg, ms, mode="vmap", devices=devs)
            h = pruning.train_batch(b, data, chunk=2)
            return h, [np.asarray(x) for t in b.scores for x in jax.tree.leaves(t)]
        hm, sm = run(members, jax.devices())
        h1, s1 = run(members[:2], jax.devices()[:1])
        h2, s2 = run(members[2:], jax.devices()[:1])
        print(json.dumps({
            "per_device": hm["device_members"],
            "loss": hm["train_loss"] == h1["train_loss"] + h2["train_loss"],
            "acc": hm["test_accuracy"] == h1["test_accuracy"] + h2["test_accuracy"],
            "scores": all((a == b).all() for a, b in zip(sm, s1 + s2, strict=True)),
        }))
        """,
        devices=2,
    )
    res = json.loads(out.strip().splitlines()[-1])
    assert res == {"per_device": [2, 2], "loss": True, "acc": True, "scores": True}


def test_mesh_run_resumes_exactly():
    """A mesh run stopped after epoch 1 (its per-epoch state saved as per-member lists) and
    resumed equals the uninterrupted run."""
    out = _python(
        """
        import jax, numpy as np
        from conftest import tiny_block_data
        from lottery_jax import pruning
        data = tiny_block_data(64, 40)
        cfg = pruning.PruneConfig(model="wide-fc2", redundancy=1, epochs=2, batch_size=32)
        members = [(0, 0.1), (0, 0.5), (0, 0.9)]
        saved = {}
        def checkpoint(done, state, hist):
            if done == 1:
                keep = ("test_accuracy", "train_loss", "epoch_seconds")
                saved["s"] = (done, jax.tree.map(np.asarray, state),
                              {k: [list(x) if isinstance(x, list) else x for x in hist[k]]
                               for k in keep})
        b = pruning.make_batch(cfg, members)
        h = pruning.train_batch(b, data, checkpoint=checkpoint)
        b2 = pruning.make_batch(cfg, members)
        resume = lambda like: (1, jax.tree.map(jax.numpy.asarray, saved["s"][1]), saved["s"][2])
        h2 = pruning.train_batch(b2, data, resume=resume)
        same = all((np.asarray(x) == np.asarray(y)).all()
                   for x, y in zip(jax.tree.leaves(b.scores), jax.tree.leaves(b2.scores)))
        print(h["device_members"], h["train_loss"] == h2["train_loss"],
              h["test_accuracy"] == h2["test_accuracy"], same)
        """,
        devices=2,
    )
    assert out.strip().splitlines()[-1] == "[2, 1] True True True"


@pytest.mark.slow
def test_members_on_a_four_device_mesh_equal_one_device():
    """5 members over 4 CPU devices (2, 2, 1) with two seeds (per-member frozen weights and data
    orders split over the mesh), two epochs."""
    members = [(0, 0.1), (1, 0.5), (0, 0.9), (1, 0.25), (0, 0.75)]
    assert _mesh_vs_one(4, "red-fc2", members, 2, 96) == [2, 2, 1]


def test_member_mesh_uses_the_fewest_devices_for_the_load():
    out = _python(
        """
        import jax
        from lottery_jax.pruning.batched import member_mesh
        sizes = {m: (lambda x: 1 if x is None else x.size)(member_mesh(m)) for m in range(1, 10)}
        print(sizes)
        """,
        devices=4,
    )
    assert out.strip().splitlines()[-1] == "{1: 1, 2: 2, 3: 3, 4: 4, 5: 3, 6: 3, 7: 4, 8: 4, 9: 3}"


# ----------------------------------------------------------------------------- whole sweeps


SWEEP = ["sweep", "--family", "fc2", "--no-baseline", "--epochs", "1", "--sparsity", "0.5,0.9",
         "--variants", "red-linear,wide", "--redundancy", "1", "--no-progress"]  # fmt: skip
CLI = "import sys; from lottery_jax.cli import main; main(sys.argv[1:])"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sweep(out: Path, data: Path, devices: int = 1, processes: int = 1, command=None):
    """Run the tiny sweep (or ``command``) with ``processes`` processes of ``devices`` CPU
    devices; returns each process's (stdout, stderr)."""
    port = _free_port()
    procs = []
    for i in range(processes):
        extra = [] if processes == 1 else [
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
            "--process-id", str(i),
        ]  # fmt: skip
        cmd = [sys.executable, "-c", CLI, *(command or SWEEP), "--data-dir", str(data), "--out",
               str(out)]  # fmt: skip
        procs.append(subprocess.Popen(cmd + extra, env=_env(devices), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    logs = []
    try:
        for p in procs:
            outs, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
            logs.append(err if command is None else (outs, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return logs


def _runs(out: Path) -> dict[str, dict]:
    runs = {}
    for path in sorted(out.glob("*/results.json")):
        r = json.loads(path.read_text())
        masks = pruning.load_ticket(path.parent / "ticket.npz")["masks"]
        runs[path.parent.name] = {
            **{
                k: r[k]
                for k in (
                    "config",
                    "test_accuracy",
                    "train_loss",
                    "final_test_accuracy",
                    "remaining_params",
                    "total_params",
                )
            },  # fmt: skip
            "masks": {k: np.packbits(v).tobytes().hex() for k, v in sorted(masks.items())},
        }
    return runs


@pytest.fixture(scope="module")
def sweep_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale-out")
    data = write_idx_dir(root / "idx", n_train=256, n_test=128)
    _sweep(root / "one", data)
    return root, data, _runs(root / "one")


@pytest.mark.slow
def test_sweep_on_a_four_device_mesh_equals_one_device(sweep_dirs):
    root, data, one = sweep_dirs
    _sweep(root / "mesh", data, devices=4)
    assert len(one) == 4 and _runs(root / "mesh") == one
    for name in one:  # each group of 2 members: one per device
        r = json.loads((root / "mesh" / name / "results.json").read_text())
        assert r["device_members"] == [1, 1]
        r = json.loads((root / "one" / name / "results.json").read_text())
        assert r["device_members"] == [2]


@pytest.mark.slow
def test_sweep_in_two_processes_equals_one_process(sweep_dirs):
    root, data, one = sweep_dirs
    logs = _sweep(root / "two", data, processes=2)
    assert _runs(root / "two") == one
    # Each process trained one of the two groups, and wrote only those runs.
    assert "trained 2 run(s)" in logs[0] and "trained 2 run(s)" in logs[1]
    assert ("red-fc2: training" in logs[0]) != ("red-fc2: training" in logs[1])
    assert ("wide-fc2: training" in logs[0]) != ("wide-fc2: training" in logs[1])
    # A rerun (any process count) finds everything finished.
    logs = _sweep(root / "two", data, processes=2)
    assert all("trained 0 run(s)" in log for log in logs)


@pytest.mark.slow
def test_prune_in_two_processes_splits_the_members(sweep_dirs):
    """One group of 2 members for 2 processes: each trains one; process 0 reports both."""
    root, data, _ = sweep_dirs
    cmd = ["prune", "--model", "wide-fc2", "--redundancy", "1", "--sparsity", "0.5,0.9",
           "--epochs", "1", "--no-progress"]  # fmt: skip
    _sweep(root / "prune-one", data, command=cmd)
    (out0, err0), (out1, err1) = _sweep(root / "prune-two", data, processes=2, command=cmd)
    assert _runs(root / "prune-two") == _runs(root / "prune-one")
    assert "training 1 run(s)" in err0 and "training 1 run(s)" in err1
    assert out0.count("% test") == 2 and out1 == ""


# ----------------------------------------------------------------------------- approximate


def _small_target(hidden: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc1.weight": rng.normal(0, 0.05, (hidden, 784)).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.05, (10, hidden)).astype(np.float32),
    }


def _ticket_arrays(path: Path) -> dict[str, str]:
    with np.load(path) as f:
        return {k: f[k].tobytes().hex() for k in f.files if k != "__meta__"}


def test_approximate_chunks_shared_among_processes_equal_one_process(tmp_path):
    """Each of 2 'processes' solves its own chunks (solve_share) into one run directory; the
    assembling call then resumes every chunk and gives exactly a one-process run."""
    from lottery_jax import rundir
    from lottery_jax import subsetsum as ap

    target = _small_target()
    cfg = ap.ApproxConfig(epsilon=0.05, c=2.0, rows_per_chunk=2)
    one = ap.approximate_network(target, cfg)
    with rundir.RunDir(tmp_path / "run", command="test") as run:
        solved = [ap.solve_share(target, cfg, run, share=(i, 2)) for i in (0, 1)]
        # fc1: 6 rows in chunks 0..2 (process 0: 0, 2); fc2: 10 rows in chunks 0..4 (0, 2, 4).
        assert solved == [2 + 3, 1 + 2]
        res = ap.approximate_network(target, cfg, run)
    assert res.resumed_chunks == sum(solved)
    for k in one.results:
        np.testing.assert_array_equal(res.results[k].masks, one.results[k].masks)
        np.testing.assert_array_equal(res.results[k].status, one.results[k].status)
    with pytest.raises(ValueError, match="run directory"):
        ap.solve_share(target, cfg, share=(0, 2))


@pytest.mark.slow
def test_approximate_in_two_processes_equals_one_process(tmp_path):
    from lottery_jax.checkpoint import save_weights

    path = save_weights(tmp_path / "target.npz", "fc2", _small_target())
    cmd = ["approximate", "--target", str(path), "--epsilon", "0.05", "--c", "3",
           "--rows-per-chunk", "2", "--no-evaluate", "--no-progress"]  # fmt: skip
    _sweep(tmp_path / "one", tmp_path, command=cmd)
    logs = _sweep(tmp_path / "two", tmp_path, processes=2, command=cmd)
    assert "process 0 of 2: solved 5 chunk(s)" in logs[0][1]
    assert "process 1 of 2: solved 3 chunk(s)" in logs[1][1]
    assert _ticket_arrays(tmp_path / "two" / "ticket.npz") == _ticket_arrays(
        tmp_path / "one" / "ticket.npz"
    )
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["resumed_chunks"] == 8 and two["all_within_epsilon"] is not None


# ----------------------------------------------------------------------------- stopping


@pytest.mark.slow
def test_sigterm_stops_a_two_process_sweep_within_seconds(tmp_path):
    """JAX's preemption notifier takes SIGTERM over when the distributed runtime starts (it logs
    and training goes on); the processes must still stop within seconds, resumable."""
    import signal
    import time

    data = write_idx_dir(tmp_path / "idx", n_train=256, n_test=128)
    port = _free_port()
    cmd = ["sweep", "--family", "fc2", "--no-baseline", "--epochs", "500", "--sparsity", "0.5",
           "--variants", "red-linear,wide", "--redundancy", "1", "--no-progress",
           "--data-dir", str(data), "--out", str(tmp_path / "out")]  # fmt: skip
    procs, logs = [], []
    for i in range(2):
        logs.append(tmp_path / f"p{i}.log")
        extra = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id",
                 str(i)]  # fmt: skip
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-c", CLI, *cmd, *extra], env=_env(),
                                          stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not all("epoch 2/500" in p.read_text() for p in logs):
            assert time.monotonic() < deadline, [p.read_text()[-2000:] for p in logs]
            assert all(p.poll() is None for p in procs), [p.read_text()[-2000:] for p in logs]
            time.sleep(0.2)
        t0 = time.monotonic()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = [p.read_text() for p in logs]
    assert codes == [143, 143], texts
    assert waited < 20, waited
    assert all("terminated (SIGTERM)" in t and "resume" in t for t in texts), texts
