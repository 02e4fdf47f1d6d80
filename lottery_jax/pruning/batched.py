"""Batched supermask training: several (seed, sparsity) members of one configuration trained by ONE
compiled program (unrolled on CPU, ``jax.vmap`` over stacked scores, removal counts and -- with several
seeds -- frozen weights on accelerators), using the foundation's optimizer, batching and loss.

With several local devices the members are placed on a 1-D device mesh with a ``members`` axis
(:func:`member_mesh`): the program is a ``jax.shard_map`` over that axis, so every device trains its
share of the members (unrolled or ``vmap``-ed there, as on one device) in the same compiled program.
Members never communicate, so a member's arithmetic is the same on any device: the results equal a
one-device run.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lottery_jax.errors import UserError
from lottery_jax.nets.pruned import (
    PrunedNet,
    build_pruned,
    initial_hints,
    param_counts,
    parse_model,
    planes_tree,
    pruned_param_count,
    pruned_sizes,
    redundancies,
    set_sparsity,
    unplanes_tree,
)
from lottery_jax.nets.supermask import (
    METHODS,
    PruneCount,
    Score,
    check_sparsity,
)
from lottery_jax.nets.targets import Frozen
from lottery_jax.resources import require_memory, require_time, supermask_seconds
from lottery_jax.rundir import number_label
from lottery_jax.training import (
    DEFAULT_LR,
    correct_count,
    cross_entropy,
    epoch_indices,
    epoch_key,
    make_optimizer,
    steps_per_epoch,
)

#: The published grids (the paper's Experiment 2 scripts).
PUBLISHED_EPOCHS = (30, 50, 100, 125, 150)
PUBLISHED_SPARSITIES = (
    0.0, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.98, 0.99
)  # fmt: skip


# ----------------------------------------------------------------------------- batched training


@dataclass(frozen=True)
class PruneConfig:
    """Everything that defines a pruning run except its seed and sparsity."""

    model: str
    redundancy: int = 5
    relu: bool = False
    epochs: int = 1
    lr: float | None = None
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    method: str = "auto"
    conv_from: str | None = None
    #: Layer sizes of a custom ``red``/``wide`` model (None for the paper's six models).
    sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        """Every setting is checked here, once, where the config is built (one-line errors)."""
        if self.sizes is not None:  # (a list read back from JSON becomes a tuple again)
            object.__setattr__(self, "sizes", tuple(self.sizes))
        self._check()

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return DEFAULT_LR["lenet5" if self.model.endswith("lenet5") else "fc2"]

    def _check(self) -> None:
        kind, _ = parse_model(self.model)
        sizes = pruned_sizes(self.model, int(self.redundancy), self.sizes)  # (custom: required)
        if self.sizes is not None and (sizes[0] != IMAGE_PIXELS or sizes[-1] != NUM_CLASSES):
            raise UserError(
                f"layer sizes {tuple(sizes)} must start with the {IMAGE_PIXELS} input pixels "
                f"(28x28) and end with the {NUM_CLASSES} classes"
            )
        if self.method not in METHODS:
            raise UserError(f"unknown mask method {self.method!r} ({', '.join(METHODS)})")
        if int(self.redundancy) < 1:
            raise UserError(f"redundancy must be at least 1, got {self.redundancy}")
        if not 0 <= self.epochs < 2**31:
            raise UserError(f"epochs must be in [0, 2^31), got {self.epochs}")
        lr = self.learning_rate
        if not (math.isfinite(lr) and lr > 0):  # (NaN fails every comparison: test it first)
            raise UserError(f"learning rate must be a positive finite number, got {lr}")
        if not 0 < self.batch_size < 2**31:
            raise UserError(f"batch size must be positive, got {self.batch_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise UserError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight decay must be non-negative, got {self.weight_decay}")
        if kind == "wide" and self.relu:
            raise UserError("the extra ReLU applies to the redundant nets only")

    def run_name(self, sparsity: float, seed: int) -> str:
        model = self.model
        if self.sizes is not None:
            model = f"{model}-{'x'.join(str(x) for x in self.sizes)}"
        if self.model.startswith("red"):
            variant = f"{model}-r{self.redundancy}-{'relu' if self.relu else 'linear'}"
        else:
            variant = f"{model}-r{self.redundancy}"
        return f"{variant}-e{self.epochs}-s{sparsity_label(sparsity)}-seed{seed}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr"] = self.learning_rate
        return d


def sparsity_label(sparsity: float) -> str:
    """The sparsity in a run folder's name: ``%g`` (``0.5``, ``1e-05``) when that reads back as
    the very same float, else its exact ``repr`` (``0.1234561``): distinct sparsities never share
    a folder. ``-0`` is ``0`` (:func:`lottery_jax.rundir.number_label`)."""
    return number_label(sparsity)


MEMBER_MODES = ("auto", "unroll", "vmap")
#: What the fully connected nets read and predict (28x28 images, 10 classes).
IMAGE_PIXELS = 28 * 28
NUM_CLASSES = 10


def member_mode(mode: str = "auto") -> str:
    """How the members share one compiled program.

    ``unroll``: one copy of the step per member in the same program (XLA runs independent members
    side by side; on CPU this beats ``vmap``, whose batched scatter-adds and reductions are slow).
    ``vmap``: members stacked on a leading axis (accelerators). ``auto`` picks by backend.
    """
    if mode == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    if mode not in MEMBER_MODES:
        raise UserError(f"unknown member mode {mode!r} (choose from {', '.join(MEMBER_MODES)})")
    return mode


@dataclass
class Batch:
    """The members (seed, sparsity) of one compiled program; states are kept per member."""

    config: PruneConfig
    members: list[tuple[int, float]]  # (seed, sparsity)
    graphdef: Any
    frozen: Any  # one state (all members share a seed) or a list, one per member
    frozen_shared: bool
    scores: list[Any]  # one Score state per member
    counts: list[Any]  # one PruneCount state per member
    totals: list[tuple[int, int]] = field(default_factory=list)  # (total, remaining) per member
    mode: str = "unroll"
    mesh: Mesh | None = None  # the ``members`` mesh (None: one device)

    @property
    def slots(self) -> int:
        """Member slots of the program: the members padded to a multiple of the mesh size."""
        m = len(self.members)
        if self.mesh is None:
            return m
        return -(-m // self.mesh.size) * self.mesh.size

    def device_members(self) -> list[int]:
        """How many (real) members each device of the mesh trains (one entry without a mesh)."""
        m = len(self.members)
        if self.mesh is None:
            return [m]
        per = self.slots // self.mesh.size
        return [max(0, min(per, m - i * per)) for i in range(self.mesh.size)]


#: Name of the mesh axis the members are split over.
MEMBER_AXIS = "members"


def member_mesh(members: int, devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D ``("members",)`` mesh over the local devices that train ``members`` members, or None
    when one device does it all.

    Every device gets ``ceil(members / len(devices))`` member slots (the program is the same on
    all of them); only as many devices as that needs are used, so at most ``per - 1`` slots of the
    last device are padding (a copy of member 0 whose result is dropped). ``devices`` defaults to
    this process's devices (``jax.local_devices()``: all local GPUs, or ``--xla_force_host_platform
    _device_count`` CPU devices).
    """
    devs = list(devices) if devices is not None else jax.local_devices()
    if members < 1 or not devs:
        return None
    per = -(-members // len(devs))
    used = -(-members // per)
    if used <= 1:
        return None
    return Mesh(np.array(devs[:used]), (MEMBER_AXIS,))


def _require_batch_memory(config: PruneConfig, members: int) -> None:
    """Refuse up front a group whose scores, frozen weights and optimizer state cannot fit."""
    params = pruned_param_count(config.model, int(config.redundancy), config.sizes)
    # Per parameter and member, float32: frozen weight, score, gradient, momentum, masked weight
    # and the select's temporaries; a red-fc2 run measured about 20 bytes per parameter at peak.
    needed = members * (6 * 4 * params + 3 * 4 * config.batch_size * 4096)
    require_memory(
        needed,
        f"{members} member(s) of {config.model} with r = {config.redundancy} "
        f"({params:,} parameters each)",
        "train fewer members together or use a smaller redundancy",
    )


def estimated_seconds(jobs: Sequence[tuple[PruneConfig, int]], n_train: int) -> float:
    """Rough wall time of training ``(config, members)`` jobs on ``n_train`` examples (all epochs),
    from the measured cost per parameter and step (:data:`lottery_jax.resources.SECONDS_PER_PARAM_STEP`)."""
    total = 0.0
    for cfg, members in jobs:
        params = pruned_param_count(cfg.model, int(cfg.redundancy), cfg.sizes)
        steps = cfg.epochs * steps_per_epoch(n_train, cfg.batch_size)
        total += supermask_seconds(params * members, steps)
    return total


def require_time_for(jobs: Sequence[tuple[PruneConfig, int]], n_train: int, max_hours) -> None:
    """Refuse up front (one line, with the estimate) jobs expected to exceed ``max_hours``."""
    if max_hours is None:
        return
    runs = sum(m for _, m in jobs)
    require_time(
        estimated_seconds(jobs, n_train), f"training {runs} run(s)", max_hours,
        "raise the budget, or train fewer runs, epochs or a smaller redundancy",
    )  # fmt: skip


def make_batch(
    config: PruneConfig,
    members: Sequence[tuple[int, float]],
    conv_state: dict[str, np.ndarray] | None = None,
    mode: str = "auto",
    devices: Sequence[jax.Device] | None = None,
) -> Batch:
    """Build the networks of every (seed, sparsity) member (frozen weights once per seed).

    The members are split over ``devices`` (default: all local devices, see :func:`member_mesh`).
    """
    if not members:
        raise UserError("nothing to run: no (seed, sparsity) members")
    for seed, s in members:
        if not (isinstance(seed, int) and 0 <= seed < 2**32):
            raise UserError(f"seed must be an integer in [0, 2^32), got {seed}")
        try:
            check_sparsity(s)
        except ValueError as e:
            raise UserError(str(e)) from None
    _require_batch_memory(config, len(members))
    nets = {}
    for seed, _ in members:
        if seed not in nets:
            nets[seed] = build_pruned(
                config.model, seed=seed, redundancy=config.redundancy, relu=config.relu,
                conv_state=conv_state, method=config.method, sizes=config.sizes,
            )  # fmt: skip
    frozen, scores, counts, totals = [], [], [], []
    graphdef = None
    for seed, s in members:
        net = nets[seed]
        set_sparsity(net, s)
        graphdef, fz, sc, ct = nnx.split(net, Frozen, Score, PruneCount)
        frozen.append(fz)
        scores.append(jax.tree.map(jnp.array, sc))  # a private copy per member
        counts.append(jax.tree.map(jnp.array, ct))
        totals.append(param_counts(net, s))
    shared = len(nets) == 1
    return Batch(
        config=config,
        members=list(members),
        graphdef=graphdef,
        frozen=frozen[0] if shared else frozen,
        frozen_shared=shared,
        scores=scores,
        counts=counts,
        totals=totals,
        mode=member_mode(mode),
        mesh=member_mesh(len(members), devices),
    )


def _apply(graphdef, frozen, scores, counts, x):
    return nnx.merge(graphdef, frozen, scores, counts)(x)


def _select_cuts(graphdef, frozen, scores, counts):
    """Every masked tensor's exact top-k cut of the current scores, chosen once per step (no
    gradient flows through the choice: the masks are straight-through)."""
    return jax.lax.stop_gradient(nnx.merge(graphdef, frozen, scores, counts).cuts())


def _initial_hints(graphdef, frozen, scores, counts):
    """The select hints of a member's current scores (one full select per tensor)."""
    return initial_hints(nnx.merge(graphdef, frozen, scores, counts))


def _near_cuts(graphdef, frozen, scores, counts, hints):
    """The exact cuts of the current scores from the previous step's hints, and the next hints
    (``PrunedNet.near_cuts``; no gradient flows through the choice)."""
    return jax.lax.stop_gradient(nnx.merge(graphdef, frozen, scores, counts).near_cuts(hints))


def _apply_with_cuts(graphdef, frozen, scores, counts, x, cuts):
    return nnx.merge(graphdef, frozen, scores, counts)(x, cuts)


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, m: int) -> list[Any]:
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(m)]


def _over_members(fn, mode: str, shared: tuple[bool, ...], *args) -> list[Any]:
    """Apply ``fn`` to every member: ``args[j]`` is a list (one per member) unless ``shared[j]``.

    ``unroll`` writes one call per member into the program; ``vmap`` stacks the lists, maps once
    and splits the result again (stacking happens once per compiled call, not per step, when this
    is used around a whole step loop -- see :func:`make_batched_runner`).
    """
    m = next(len(a) for a, sh in zip(args, shared, strict=True) if not sh)
    if mode == "unroll":
        outs: list[Any] = []
        for i in range(m):
            member = [a if sh else a[i] for a, sh in zip(args, shared, strict=True)]
            if outs:
                # Member i starts after member i-1 is done: one member's arrays at a time in
                # cache instead of XLA interleaving all of them.
                member, _ = jax.lax.optimization_barrier((member, outs[-1]))
            outs.append(fn(*member))
        return outs
    stacked = [a if sh else _stack(a) for a, sh in zip(args, shared, strict=True)]
    out = jax.vmap(fn, in_axes=tuple(None if sh else 0 for sh in shared))(*stacked)
    return _unstack(out, m)


def make_batched_runner(
    batch: Batch, optimizer: optax.GradientTransformation, shared_order: bool, mode: str = "auto"
):
    """Jitted ``run(scores, opt_state, frozen, counts, images, labels, idx, valid, start, stop)``.

    Runs SGD steps ``start..stop`` of one epoch for every member in ONE compiled program (a
    ``fori_loop`` whose body steps all members, unrolled or ``vmap``-ed, see :func:`member_mode`).
    ``scores``, ``opt_state`` and ``counts`` are lists (one per member), ``frozen`` is one state or
    a list; ``idx``/``valid`` are (steps, B) when all members share a data order (one seed), else
    lists of those. Returns (scores, opt_state, mean loss per member).
    """
    return _runner(batch.graphdef, len(batch.members), batch.frozen_shared, optimizer,
                   shared_order, member_mode(mode))  # fmt: skip


@functools.lru_cache(maxsize=16)
def _cached_runner(graphdef, m, frozen_shared, opt_args: tuple, shared_order: bool, mode: str):
    """One runner per structure and recipe, so repeated groups reuse the compiled program."""
    return _runner(graphdef, m, frozen_shared, make_optimizer(*opt_args), shared_order, mode)


def _runner(graphdef, m, frozen_shared, optimizer, shared_order, mode):
    return jax.jit(_run_fn(graphdef, m, frozen_shared, optimizer, shared_order, mode),
                   donate_argnums=(0, 1))  # fmt: skip


def member_step_fn(graphdef, optimizer):
    """One member's SGD step ``(scores, (opt_state, hints), frozen, counts, idx, valid, i, images,
    labels) -> (scores, (opt_state, hints), loss)``: the masks of the current scores (exact, from
    the previous step's select hints), the straight-through gradient, the optimizer update."""

    def member_step(scores, state, frozen, counts, idx, valid, i, images, labels):
        # (``state``: the optimizer state and the select hints, carried together by the loop.)
        opt_state, hints = state
        bi, vi = idx[i], valid[i]
        cuts, hints = _near_cuts(graphdef, frozen, scores, counts, hints)

        def loss_fn(sc):
            logits = _apply_with_cuts(graphdef, frozen, sc, counts, images[bi], cuts)
            return cross_entropy(logits, labels[bi], vi)

        loss, grads = jax.value_and_grad(loss_fn)(scores)
        updates, opt_state = optimizer.update(grads, opt_state, scores)
        return optax.apply_updates(scores, updates), (opt_state, hints), loss

    return member_step


def _run_fn(graphdef, m, frozen_shared, optimizer, shared_order, mode):
    """The (not yet compiled) program of :func:`make_batched_runner` for ``m`` members (lists)."""

    member_step = member_step_fn(graphdef, optimizer)

    # Which of member_step's arguments every member shares (scores, opt state, frozen, counts,
    # idx, valid, i, images, labels).
    shared = (False, False, frozen_shared, False, shared_order, shared_order, True, True, True)

    def run(scores, opt_state, frozen, counts, images, labels, idx, valid, start, stop):
        # The loop works on the redundant layers' compute layout (planes), converted once per call.
        reds = redundancies(scores[0])
        scores, opt_state, frozen = planes_tree((scores, opt_state, frozen), reds)
        fzs = [frozen] * m if frozen_shared else frozen
        hints = [
            _initial_hints(graphdef, f, s, c) for f, s, c in zip(fzs, scores, counts, strict=True)
        ]
        state = list(zip(opt_state, hints, strict=True))
        sc, state, losses = _loop(scores, state, frozen, counts, images, labels, idx, valid,
                                  start, stop)  # fmt: skip
        sc, os_ = unplanes_tree((sc, [o for o, _ in state]))
        return sc, os_, losses / jnp.maximum(stop - start, 1)

    def _loop(scores, opt_state, frozen, counts, images, labels, idx, valid, start, stop):
        if mode == "vmap":  # stack once per call; the loop runs on stacked arrays
            step = jax.vmap(member_step, in_axes=tuple(None if sh else 0 for sh in shared))
            stk = lambda a, sh: a if sh else _stack(a)  # noqa: E731
            fz, ix, va = (
                stk(frozen, frozen_shared),
                stk(idx, shared_order),
                stk(valid, shared_order),
            )

            def body(i, carry):
                sc, os_, ls = carry
                sc, os_, loss = step(sc, os_, fz, _stack(counts), ix, va, i, images, labels)
                return sc, os_, ls + loss

            sc, os_, ls = jax.lax.fori_loop(
                start, stop, body, (_stack(scores), _stack(opt_state), jnp.zeros((m,)))
            )
            sc, os_ = _unstack(sc, m), _unstack(os_, m)
            losses = ls
        else:

            def body(i, carry):
                sc, os_, ls = carry
                out = _over_members(
                    member_step, "unroll", shared, sc, os_, frozen, counts, idx, valid, i, images,
                    labels,
                )  # fmt: skip
                return [o[0] for o in out], [o[1] for o in out], ls + jnp.stack([o[2] for o in out])

            sc, os_, losses = jax.lax.fori_loop(
                start, stop, body, (scores, opt_state, jnp.zeros((m,)))
            )
        return sc, os_, losses

    return run


# ----------------------------------------------------------------------------- device mesh


def _specs(frozen_shared: bool, shared_order: bool):
    mem, rep = PartitionSpec(MEMBER_AXIS), PartitionSpec()
    return mem, rep, (rep if frozen_shared else mem), (rep if shared_order else mem)


@functools.lru_cache(maxsize=16)
def _cached_mesh_runner(graphdef, slots, frozen_shared, opt_args, shared_order, mode, mesh):
    """:func:`_run_fn` under ``jax.shard_map`` over the ``members`` axis: the member states are
    stacked (``slots`` on the leading axis, split over the mesh); each device unstacks its block
    once per call, runs its members' loop exactly as a one-device program would, and restacks."""
    per = slots // mesh.size
    inner = _run_fn(graphdef, per, frozen_shared, make_optimizer(*opt_args), shared_order, mode)

    def local(scores, opt_state, frozen, counts, images, labels, idx, valid, start, stop):
        def un(tree, shared=False):
            return tree if shared else _unstack(tree, per)

        sc, os_, loss = inner(
            un(scores), un(opt_state), un(frozen, frozen_shared), un(counts), images, labels,
            un(idx, shared_order), un(valid, shared_order), start, stop,
        )  # fmt: skip
        return _stack(sc), _stack(os_), loss

    mem, rep, fz, order = _specs(frozen_shared, shared_order)
    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(mem, mem, fz, mem, rep, rep, order, order, rep, rep),
        out_specs=(mem, mem, mem), check_vma=False,
    )  # fmt: skip
    return jax.jit(fn, donate_argnums=(0, 1))


@functools.lru_cache(maxsize=16)
def _cached_mesh_correct(graphdef, slots, frozen_shared, batch_size, mode, mesh):
    """Correct test predictions of every member slot, each device counting for its own members."""
    per = slots // mesh.size

    def local(frozen, scores, counts, images, labels):
        def one(fz, sc, ct):
            return correct_count(
                lambda x: _apply(graphdef, fz, sc, ct, x), images, labels, batch_size
            )

        fz = frozen if frozen_shared else _unstack(frozen, per)
        return jnp.stack(
            _over_members(
                one,
                mode,
                (frozen_shared, False, False),
                fz,
                _unstack(scores, per),
                _unstack(counts, per),
            )  # fmt: skip
        )

    mem, rep, fz, _ = _specs(frozen_shared, True)
    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(fz, mem, mem, rep, rep), out_specs=mem, check_vma=False
    )
    return jax.jit(fn)


def _to_slots(trees: list[Any], slots: int, mesh: Mesh) -> Any:
    """Stack one tree per member (padded with copies of member 0 to ``slots``), split over the
    mesh's ``members`` axis."""
    padded = list(trees) + [trees[0]] * (slots - len(trees))
    sharding = NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))
    return jax.device_put(_stack(padded), sharding)


def _replicated(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def _from_slots(stacked: Any, m: int) -> list[Any]:
    """The first ``m`` member slots as one tree per member (the padding is dropped)."""
    return _unstack(stacked, m)


@jax.jit(static_argnames=("graphdef", "frozen_shared", "batch_size", "mode"))
def batched_correct(graphdef, frozen, scores, counts, images, labels, frozen_shared, batch_size,
                    mode):  # fmt: skip
    def one(fz, sc, ct):
        return correct_count(lambda x: _apply(graphdef, fz, sc, ct, x), images, labels, batch_size)

    return jnp.stack(
        _over_members(one, mode, (frozen_shared, False, False), frozen, scores, counts)
    )


@functools.lru_cache(maxsize=16)
def _cached_correct(graphdef, frozen_shared, batch_size, mode):
    """:func:`batched_correct` with its static arguments bound (one device)."""

    def correct(frozen, scores, counts, images, labels):
        return batched_correct(graphdef, frozen, scores, counts, images, labels, frozen_shared,
                                batch_size, mode)  # fmt: skip

    return jax.jit(correct)


def batch_accuracy(batch: Batch, images: jax.Array, labels: jax.Array, batch_size: int = 1000):
    """Test accuracy (percent) of every member: an exact count over ``images``."""
    correct = batched_correct(
        batch.graphdef, batch.frozen, batch.scores, batch.counts, images, labels,
        batch.frozen_shared, batch_size, batch.mode,
    )  # fmt: skip
    return [100.0 * int(c) / int(images.shape[0]) for c in np.asarray(correct)]


def _data_key(seed: int, epoch: int) -> jax.Array:
    # A stream apart from the weights and scores (nnx.Rngs(params=seed)).
    return epoch_key(seed + 0x5EED, epoch)


def member_order(batch: Batch, epoch: int, n: int) -> tuple[Any, Any, bool]:
    """Each member's data order is seeded by its own seed (so a batched run equals its single
    runs); one (idx, valid) pair when all members share a seed, else lists."""
    seeds = sorted({s for s, _ in batch.members})
    bs = batch.config.batch_size
    if len(seeds) == 1:
        idx, valid = epoch_indices(_data_key(seeds[0], epoch), n, bs)
        return idx, valid, True
    per_seed = {s: epoch_indices(_data_key(s, epoch), n, bs) for s in seeds}
    idx = [per_seed[s][0] for s, _ in batch.members]
    valid = [per_seed[s][1] for s, _ in batch.members]
    return idx, valid, False


def train_batch(
    batch: Batch,
    data,
    *,
    chunk: int = 100,
    on_chunk: Callable[[int, int, int, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, list[float], float], None] | None = None,
    resume: Callable[[Any], tuple[int, Any, dict] | None] | None = None,
    checkpoint: Callable[[int, Any, dict], None] | None = None,
) -> dict[str, Any]:
    """Train every member of ``batch`` for ``batch.config.epochs`` epochs (scores only, in place).

    Returns ``test_accuracy`` (per member, per epoch), ``epoch_seconds`` (wall time of each batched
    epoch, compile excluded), ``compile_seconds``, ``train_loss`` (per member, per epoch).
    ``on_chunk(epoch, done_steps, total_steps, loss)`` and ``on_epoch(epoch, accs, seconds)`` report
    progress; they do no computation; ``epoch`` counts from 1, as printed ("epoch 1/30"). ``checkpoint(epochs_done, state, history)`` is called after
    every epoch with ``state = (scores, opt_state)``; ``resume(like_state)`` may return such a
    saved ``(epochs_done, state, history)`` to continue from (each epoch's data order depends only
    on the seed and the epoch, so a resumed run equals an uninterrupted one).
    """
    cfg = batch.config
    m = len(batch.members)
    history: dict[str, Any] = {
        "test_accuracy": [[] for _ in range(m)],
        "train_loss": [[] for _ in range(m)],
        "epoch_seconds": [],
        "compile_seconds": 0.0,
    }
    if cfg.epochs == 0:
        return history
    n = int(data.train_images.shape[0])
    spe = steps_per_epoch(n, cfg.batch_size)
    first, opt_state = _start(batch, spe, resume, history)
    idx, valid, shared = member_order(batch, 0, n)
    opt_args = (cfg.learning_rate, cfg.epochs, spe, cfg.momentum, cfg.weight_decay)
    mesh, slots = batch.mesh, batch.slots

    def put(trees, shared_tree=False):  # per-member lists -> the program's layout
        if mesh is None:
            return trees
        return _replicated(trees, mesh) if shared_tree else _to_slots(trees, slots, mesh)

    def get(placed):  # the program's layout -> per-member lists
        return placed if mesh is None else _from_slots(placed, m)

    runner, correct = _batch_programs(batch, opt_args, shared)
    frozen, counts = put(batch.frozen, batch.frozen_shared), put(batch.counts)
    images, labels = put(data.train_images, True), put(data.train_labels, True)
    test_images, test_labels = put(data.test_images, True), put(data.test_labels, True)
    scores, opt_state = put(batch.scores), put(opt_state)
    t0 = time.perf_counter()
    args = (scores, opt_state, frozen, counts, images, labels, put(idx, shared),
            put(valid, shared))  # fmt: skip
    compiled = runner.lower(*args, jnp.int32(0), jnp.int32(1)).compile()
    correct = correct.lower(frozen, scores, counts, test_images, test_labels).compile()
    history["compile_seconds"] = time.perf_counter() - t0
    for epoch in range(first, cfg.epochs):
        idx, valid, _ = member_order(batch, epoch, n)
        idx, valid = put(idx, shared), put(valid, shared)
        jax.block_until_ready((idx, valid))
        t0 = time.perf_counter()
        scores, opt_state, loss_total = _batch_epoch(
            compiled, (scores, opt_state, frozen, counts, images, labels, idx, valid), m,
            epoch + 1, spe, chunk, on_chunk,
        )  # fmt: skip
        jax.block_until_ready(scores)
        seconds = time.perf_counter() - t0
        if mesh is None:
            batch.scores = scores
        correct_counts = np.asarray(correct(frozen, scores, counts, test_images, test_labels))
        accs = [100.0 * int(c) / int(data.test_images.shape[0]) for c in correct_counts[:m]]
        _record_epoch(history, accs, loss_total / spe, seconds)
        if checkpoint is not None:
            checkpoint(epoch + 1, (get(scores), get(opt_state)), history)
        if on_epoch is not None:
            on_epoch(epoch + 1, accs, seconds)
    if mesh is not None:  # back to one uncommitted copy per member (usable on any one device)
        batch.scores = [jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), t) for t in get(scores)]
    history["device_members"] = batch.device_members()
    return history


def _start(batch: Batch, spe: int, resume, history: dict[str, Any]) -> tuple[int, list[Any]]:
    """The first epoch to run and each member's optimizer state: fresh, or what ``resume``
    returns (then ``batch.scores`` and the history so far are restored too)."""
    cfg = batch.config
    optimizer = make_optimizer(cfg.learning_rate, cfg.epochs, spe, cfg.momentum, cfg.weight_decay)
    opt_state = [optimizer.init(sc) for sc in batch.scores]
    saved = resume((batch.scores, opt_state)) if resume is not None else None
    if saved is None:
        return 0, opt_state
    first, (batch.scores, opt_state), past = saved
    history.update({k: past[k] for k in ("test_accuracy", "train_loss", "epoch_seconds")})
    return first, opt_state


def _record_epoch(history: dict[str, Any], accs: list[float], losses, seconds: float) -> None:
    history["epoch_seconds"].append(seconds)
    for i, (acc, loss) in enumerate(zip(accs, losses, strict=False)):
        history["test_accuracy"][i].append(acc)
        history["train_loss"][i].append(float(loss))


def _batch_programs(batch: Batch, opt_args: tuple, shared: bool):
    """The (cached) step runner and accuracy program of ``batch``: on one device, or over its
    members mesh."""
    m, mesh = len(batch.members), batch.mesh
    if mesh is None:
        runner = _cached_runner(batch.graphdef, m, batch.frozen_shared, opt_args, shared,
                                batch.mode)  # fmt: skip
        correct = _cached_correct(batch.graphdef, batch.frozen_shared, 1000, batch.mode)
    else:
        runner = _cached_mesh_runner(batch.graphdef, batch.slots, batch.frozen_shared, opt_args,
                                     shared, batch.mode, mesh)  # fmt: skip
        correct = _cached_mesh_correct(batch.graphdef, batch.slots, batch.frozen_shared, 1000,
                                       batch.mode, mesh)  # fmt: skip
    return runner, correct


def _batch_epoch(compiled, state, m: int, epoch: int, spe: int, chunk: int, on_chunk):
    """One epoch of every member in ``chunk``-step compiled calls: the new scores and optimizer
    state, and each member's summed loss."""
    scores, opt_state, frozen, counts, images, labels, idx, valid = state
    loss_total = np.zeros(m)
    for start in range(0, spe, chunk):
        stop = min(start + chunk, spe)
        scores, opt_state, loss = compiled(
            scores, opt_state, frozen, counts, images, labels, idx, valid, jnp.int32(start),
            jnp.int32(stop),
        )  # fmt: skip
        loss_total += np.asarray(loss)[:m] * (stop - start)
        if on_chunk is not None:
            on_chunk(epoch, stop, spe, loss_total / stop)
    return scores, opt_state, loss_total


def member_net(batch: Batch, i: int) -> PrunedNet:
    """Member ``i`` of a batch as a standalone network (its frozen weights, scores and counts)."""
    frozen = batch.frozen if batch.frozen_shared else batch.frozen[i]
    return nnx.merge(batch.graphdef, frozen, batch.scores[i], batch.counts[i])
