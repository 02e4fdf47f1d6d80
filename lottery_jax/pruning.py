"""Experiment 2: pruning random networks with supermasks (no weight training, only masks).

Networks (REFERENCE.md, Experiment 2):

* redundant layer ("our structure"), in -> out with redundancy r: frozen ``weight1`` (r, in) ~ N(0, 2)
  and ``weight2`` (out, in r) ~ N(0, 2/in) (variances), scores uniform on (-sqrt 2, sqrt 2) and
  (-sqrt(2/in), sqrt(2/in)); each input x_j is multiplied by its r masked ``weight1`` values,
  optionally passed through a ReLU, and the in r values (ordered j r + k) go through the masked
  ``weight2``. Without the ReLU the layer is linear and collapses exactly into one (out, in) matrix
  ``W[o, j] = sum_k weight2[o, j r + k] weight1[k, j]``, which is how it is computed here (the same
  function, far fewer flops than expanding the in r hidden values for every example).
* redundant FC2 / FC4 / LeNet5: redundant layers joined by ReLUs (LeNet5: frozen conv features first);
* wide FC2 / FC4 / LeNet5: ordinary masked linear layers (frozen Kaiming-normal weights, Kaiming-uniform
  scores) with the parameter-matched widths of :func:`wide_width`.

Training is pure and batched: several members (sparsity, seed) are stacked and trained by ONE compiled
program (``jax.vmap`` over stacked scores, removal counts and -- with several seeds -- frozen
weights), using the foundation's optimizer, batching and loss.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lottery_jax.checkpoint import read_npz, save_weights
from lottery_jax.errors import UserError
from lottery_jax.models import Frozen, FrozenConv, flatten, max_pool2
from lottery_jax.results import save_npz_atomic
from lottery_jax.supermask import PruneCount, Score, check_sparsity, masked, num_pruned, topk_mask
from lottery_jax.train import (
    _correct_count,
    cross_entropy,
    epoch_indices,
    epoch_key,
    make_optimizer,
    steps_per_epoch,
)

PRUNE_MODELS = ("red-fc2", "red-fc4", "red-lenet5", "wide-fc2", "wide-fc4", "wide-lenet5")
#: Published grids (REFERENCE.md).
PUBLISHED_EPOCHS = (30, 50, 100, 125, 150)
PUBLISHED_SPARSITIES = (
    0.0, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.98, 0.99
)  # fmt: skip
FC_SIZES = {"fc2": (784, 500, 10), "fc4": (784, 500, 500, 500, 10), "lenet5": (400, 120, 84, 10)}
TICKET_FORMAT = "lottery-jax-ticket/1"


# ----------------------------------------------------------------------------- layers


@jax.custom_vjp
def collapse(w1: jax.Array, w2: jax.Array) -> jax.Array:
    """W[o, j] = sum_k w2[o, j r + k] w1[k, j]: a linear redundant layer as one (out, in) matrix.

    w1 is (r, in), w2 is (out, in r). Written with strided slices and a hand-written backward pass
    because XLA's CPU code for the generic reduction over the short minor axis is slow.
    """
    r = w1.shape[0]
    w = w2.reshape(w2.shape[0], -1, r)
    return sum(w[:, :, k] * w1[k][None, :] for k in range(r))


def _collapse_fwd(w1, w2):
    return collapse(w1, w2), (w1, w2)


def _collapse_bwd(res, g):
    w1, w2 = res
    r = w1.shape[0]
    w = w2.reshape(w2.shape[0], -1, r)
    d1 = jnp.stack([jnp.sum(g * w[:, :, k], axis=0) for k in range(r)])
    d2 = (g[:, :, None] * w1.T[None]).reshape(w2.shape)
    return d1, d2


collapse.defvjp(_collapse_fwd, _collapse_bwd)


class MaskedLinear(nnx.Module):
    """Linear layer with frozen Kaiming-normal weight (out, in) and a supermask (wide nets)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, method="auto"):
        shape = (out_features, in_features)
        std = math.sqrt(2.0 / in_features)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Frozen(std * jax.random.normal(rngs.params(), shape, jnp.float32))
        self.scores = Score(jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound))
        self.pruned = PruneCount(jnp.int32(0))
        self.method = method

    def masked_tensors(self):
        return (("weight", "scores", "pruned"),)

    def dense_weight(self) -> jax.Array:
        """The effective (out, in) weight: frozen weight times its mask."""
        return masked(self.weight[...], self.scores[...], self.pruned[...], self.method)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.dense_weight().T


class RedundantLinear(nnx.Module):
    """The redundant layer: every weight replaced by r random links (optionally through a ReLU)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        redundancy: int,
        relu: bool = False,
        rngs: nnx.Rngs,
        method: str = "auto",
    ):
        r = int(redundancy)
        if r < 1:
            raise UserError(f"redundancy must be at least 1, got {redundancy}")
        s1 = math.sqrt(2.0)
        s2 = math.sqrt(2.0 / in_features)
        k1, k2, k3, k4 = (rngs.params() for _ in range(4))
        self.weight1 = Frozen(s1 * jax.random.normal(k1, (r, in_features), jnp.float32))
        self.weight2 = Frozen(s2 * jax.random.normal(k2, (out_features, in_features * r)))
        self.scores1 = Score(jax.random.uniform(k3, (r, in_features), jnp.float32, -s1, s1))
        self.scores2 = Score(
            jax.random.uniform(k4, (out_features, in_features * r), jnp.float32, -s2, s2)
        )
        self.pruned1 = PruneCount(jnp.int32(0))
        self.pruned2 = PruneCount(jnp.int32(0))
        self.redundancy = r
        self.relu = bool(relu)
        self.method = method

    def masked_tensors(self):
        return (("weight1", "scores1", "pruned1"), ("weight2", "scores2", "pruned2"))

    def _masked(self) -> tuple[jax.Array, jax.Array]:
        w1 = masked(self.weight1[...], self.scores1[...], self.pruned1[...], self.method)
        w2 = masked(self.weight2[...], self.scores2[...], self.pruned2[...], self.method)
        return w1, w2

    def dense_weight(self) -> jax.Array:
        """The (out, in) matrix of the linear layer: W[o, j] = sum_k w2[o, j r + k] w1[k, j]."""
        if self.relu:
            raise UserError("a redundant layer with the extra ReLU has no equivalent dense matrix")
        w1, w2 = self._masked()
        return collapse(w1, w2)

    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.relu:
            return x @ self.dense_weight().T
        w1, w2 = self._masked()
        h = jax.nn.relu(x[:, :, None] * w1.T[None])  # (B, in, r): index j r + k after reshape
        return h.reshape(x.shape[0], -1) @ w2.T


# ----------------------------------------------------------------------------- networks


def wide_width(family: str, total: int) -> int:
    """Hidden width of the wide net whose fc parameter count matches ``total`` (REFERENCE.md)."""
    if family == "fc2":  # 784 h + 10 h = P
        return round(total / (784 + 10))
    if family == "fc4":  # 784 h + 2 h^2 + 10 h = P
        return round((math.sqrt(8 * total + 794**2) - 794) / 4)
    if family == "lenet5":  # 400 h + h^2 + 10 h = P
        return round((math.sqrt(410**2 + 4 * total) - 410) / 2)
    raise UserError(f"unknown model family {family!r}")


def redundant_param_count(family: str, redundancy: int = 5) -> int:
    """Fully connected parameters of the redundant net: sum over layers of r in + out in r."""
    sizes = FC_SIZES[family]
    return sum(
        redundancy * a + b * a * redundancy for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    )


def wide_sizes(family: str, redundancy: int = 5) -> tuple[int, ...]:
    h = wide_width(family, redundant_param_count(family, redundancy))
    return {"fc2": (784, h, 10), "fc4": (784, h, h, h, 10), "lenet5": (400, h, h, 10)}[family]


class PrunedNet(nnx.Module):
    """Masked layers ``fc1..fcL`` joined by ReLUs, after frozen LeNet5 conv features if ``conv``."""

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        redundancy: int | None,
        relu: bool = False,
        conv: bool = False,
        rngs: nnx.Rngs,
        method: str = "auto",
    ):
        if conv:
            self.conv1 = FrozenConv(1, 6, 5, padding=2, rngs=rngs)
            self.conv2 = FrozenConv(6, 16, 5, rngs=rngs)
        self.conv = conv
        self.names = tuple(f"fc{i + 1}" for i in range(len(sizes) - 1))
        for name, a, b in zip(self.names, sizes[:-1], sizes[1:], strict=True):
            if redundancy is None:
                layer = MaskedLinear(a, b, rngs=rngs, method=method)
            else:
                layer = RedundantLinear(
                    a, b, redundancy=redundancy, relu=relu, rngs=rngs, method=method
                )
            setattr(self, name, layer)

    def layers(self) -> list[nnx.Module]:
        return [getattr(self, n) for n in self.names]

    def features(self, x: jax.Array) -> jax.Array:
        if not self.conv:
            return flatten(x)
        x = max_pool2(jax.nn.relu(self.conv1(x)))
        x = max_pool2(jax.nn.relu(self.conv2(x)))
        return flatten(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.features(x)
        layers = self.layers()
        for layer in layers[:-1]:
            h = jax.nn.relu(layer(h))
        return layers[-1](h)


def parse_model(name: str) -> tuple[str, str]:
    """``red-fc2`` -> ("red", "fc2")."""
    if name not in PRUNE_MODELS:
        raise UserError(f"unknown model {name!r} (choose from {', '.join(PRUNE_MODELS)})")
    kind, family = name.split("-", 1)
    return kind, family


def conv_state_from(state: dict[str, np.ndarray], source: str = "") -> dict[str, np.ndarray]:
    """The frozen conv weights of a trained LeNet5 checkpoint (shape-checked, UserError if wrong)."""
    where = f"{source}: " if source else ""
    expect = {"conv1.weight": (6, 1, 5, 5), "conv2.weight": (16, 6, 5, 5)}
    out = {}
    for key, shape in expect.items():
        if key not in state:
            raise UserError(f"{where}no {key}: not a LeNet5 checkpoint")
        value = np.asarray(state[key])
        if value.shape != shape:
            raise UserError(f"{where}{key} has shape {value.shape}, LeNet5 needs {shape}")
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise UserError(f"{where}{key} is not a finite floating-point array")
        out[key] = value.astype(np.float32)
    for key in ("conv1.bias", "conv2.bias"):
        if key in state:
            raise UserError(f"{where}{key}: conv biases are not supported by the pruned LeNet5")
    return out


def build_pruned(
    name: str,
    *,
    seed: int,
    redundancy: int = 5,
    relu: bool = False,
    conv_state: dict[str, np.ndarray] | None = None,
    method: str = "auto",
) -> PrunedNet:
    """Build a pruned network whose frozen weights and initial scores are drawn from ``seed``.

    ``conv_state`` (``conv1.weight``, ``conv2.weight``) replaces the random conv weights of the
    LeNet5 variants, so that they share the baseline's conv features.
    """
    kind, family = parse_model(name)
    if int(redundancy) < 1:
        raise UserError(f"redundancy must be at least 1, got {redundancy}")
    rngs = nnx.Rngs(params=seed)
    conv = family == "lenet5"
    if kind == "red":
        net = PrunedNet(
            FC_SIZES[family], redundancy=redundancy, relu=relu, conv=conv, rngs=rngs, method=method
        )
    else:
        net = PrunedNet(wide_sizes(family, redundancy), redundancy=None, conv=conv, rngs=rngs,
                        method=method)  # fmt: skip
    if conv and conv_state is not None:
        conv_state = conv_state_from(conv_state)
        net.conv1.weight[...] = jnp.asarray(conv_state["conv1.weight"])
        net.conv2.weight[...] = jnp.asarray(conv_state["conv2.weight"])
    return net


def masked_entries(net: PrunedNet) -> list[tuple[str, nnx.Module, str, str, str]]:
    """(path prefix, layer, weight attr, score attr, count attr) for every masked tensor."""
    out = []
    for lname, layer in zip(net.names, net.layers(), strict=True):
        for w, s, c in layer.masked_tensors():
            out.append((lname, layer, w, s, c))
    return out


def set_sparsity(net: PrunedNet, sparsity: float) -> None:
    """Remove ``int(sparsity * size)`` entries from every masked tensor (REFERENCE.md)."""
    try:
        s = check_sparsity(sparsity)
    except ValueError as e:
        raise UserError(str(e)) from None
    for _, layer, _, sname, cname in masked_entries(net):
        size = getattr(layer, sname)[...].size
        getattr(layer, cname)[...] = jnp.int32(num_pruned(s, size))


def param_counts(net: PrunedNet, sparsity: float) -> tuple[int, int]:
    """(total, remaining) fully connected parameters; remaining = total - int(total s) per tensor."""
    total = remaining = 0
    for _, layer, _, sname, _ in masked_entries(net):
        size = int(getattr(layer, sname)[...].size)
        total += size
        remaining += size - num_pruned(sparsity, size)
    return total, remaining


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

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 0.01 if self.model.endswith("lenet5") else 0.1

    def validate(self) -> None:
        kind, _ = parse_model(self.model)
        if int(self.redundancy) < 1:
            raise UserError(f"redundancy must be at least 1, got {self.redundancy}")
        if self.epochs < 0:
            raise UserError(f"epochs must be non-negative, got {self.epochs}")
        if self.learning_rate <= 0:
            raise UserError(f"learning rate must be positive, got {self.learning_rate}")
        if self.batch_size <= 0:
            raise UserError(f"batch size must be positive, got {self.batch_size}")
        if kind == "wide" and self.relu:
            raise UserError("--relu applies to the redundant nets only")

    def run_name(self, sparsity: float, seed: int) -> str:
        if self.model.startswith("red-"):
            variant = f"{self.model}-r{self.redundancy}-{'relu' if self.relu else 'linear'}"
        else:
            variant = f"{self.model}-r{self.redundancy}"
        return f"{variant}-e{self.epochs}-s{sparsity:g}-seed{seed}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr"] = self.learning_rate
        return d


MEMBER_MODES = ("auto", "unroll", "vmap")
SEQUENTIAL_MEMBERS = True


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
    conv_state: dict[str, np.ndarray] | None = None
    totals: list[tuple[int, int]] = field(default_factory=list)  # (total, remaining) per member
    mode: str = "unroll"


def make_batch(
    config: PruneConfig,
    members: Sequence[tuple[int, float]],
    conv_state: dict[str, np.ndarray] | None = None,
    mode: str = "auto",
) -> Batch:
    """Build the networks of every (seed, sparsity) member (frozen weights once per seed)."""
    config.validate()
    if not members:
        raise UserError("nothing to run: no (seed, sparsity) members")
    for _, s in members:
        try:
            check_sparsity(s)
        except ValueError as e:
            raise UserError(str(e)) from None
    nets = {}
    for seed, _ in members:
        if seed not in nets:
            nets[seed] = build_pruned(
                config.model, seed=seed, redundancy=config.redundancy, relu=config.relu,
                conv_state=conv_state, method=config.method,
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
        conv_state=conv_state,
        totals=totals,
        mode=member_mode(mode),
    )


def _apply(graphdef, frozen, scores, counts, x):
    return nnx.merge(graphdef, frozen, scores, counts)(x)


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
            if outs and SEQUENTIAL_MEMBERS:
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
    def member_step(scores, opt_state, frozen, counts, idx, valid, i, images, labels):
        bi, vi = idx[i], valid[i]

        def loss_fn(sc):
            return cross_entropy(_apply(graphdef, frozen, sc, counts, images[bi]), labels[bi], vi)

        loss, grads = jax.value_and_grad(loss_fn)(scores)
        updates, opt_state = optimizer.update(grads, opt_state, scores)
        return optax.apply_updates(scores, updates), opt_state, loss

    shared = (
        False,
        False,
        frozen_shared,
        False,
        shared_order,
        shared_order,
        True,
        True,
        True,
    )

    def run(scores, opt_state, frozen, counts, images, labels, idx, valid, start, stop):
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
        return sc, os_, losses / jnp.maximum(stop - start, 1)

    return jax.jit(run, donate_argnums=(0, 1))


@jax.jit(static_argnames=("graphdef", "frozen_shared", "batch_size", "mode"))
def _batched_correct(graphdef, frozen, scores, counts, images, labels, frozen_shared, batch_size,
                     mode):  # fmt: skip
    def one(fz, sc, ct):
        return _correct_count(lambda x: _apply(graphdef, fz, sc, ct, x), images, labels, batch_size)

    return jnp.stack(
        _over_members(one, mode, (frozen_shared, False, False), frozen, scores, counts)
    )


def batch_accuracy(batch: Batch, images: jax.Array, labels: jax.Array, batch_size: int = 1000):
    """Test accuracy (percent) of every member: an exact count over ``images``."""
    correct = _batched_correct(
        batch.graphdef, batch.frozen, batch.scores, batch.counts, images, labels,
        batch.frozen_shared, batch_size, batch.mode,
    )  # fmt: skip
    return [100.0 * int(c) / int(images.shape[0]) for c in np.asarray(correct)]


def _data_key(seed: int, epoch: int) -> jax.Array:
    # A stream apart from the weights and scores (nnx.Rngs(params=seed)).
    return epoch_key(seed + 0x5EED, epoch)


def _member_order(batch: Batch, epoch: int, n: int) -> tuple[Any, Any, bool]:
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
    progress; they do no computation. ``checkpoint(epochs_done, state, history)`` is called after
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
    optimizer = make_optimizer(cfg.learning_rate, cfg.epochs, spe, cfg.momentum, cfg.weight_decay)
    opt_state = [optimizer.init(sc) for sc in batch.scores]
    first = 0
    saved = resume((batch.scores, opt_state)) if resume is not None else None
    if saved is not None:
        first, (batch.scores, opt_state), past = saved
        history.update({k: past[k] for k in ("test_accuracy", "train_loss", "epoch_seconds")})
    idx, valid, shared = _member_order(batch, 0, n)
    opt_args = (cfg.learning_rate, cfg.epochs, spe, cfg.momentum, cfg.weight_decay)
    runner = _cached_runner(batch.graphdef, m, batch.frozen_shared, opt_args, shared, batch.mode)
    t0 = time.perf_counter()
    args = (batch.scores, opt_state, batch.frozen, batch.counts, data.train_images,
            data.train_labels, idx, valid)  # fmt: skip
    compiled = runner.lower(*args, jnp.int32(0), jnp.int32(1)).compile()
    _batched_correct.lower(
        batch.graphdef, batch.frozen, batch.scores, batch.counts, data.test_images,
        data.test_labels, batch.frozen_shared, 1000, batch.mode,
    ).compile()  # fmt: skip
    history["compile_seconds"] = time.perf_counter() - t0
    scores = batch.scores
    for epoch in range(first, cfg.epochs):
        idx, valid, _ = _member_order(batch, epoch, n)
        jax.block_until_ready(idx)
        t0 = time.perf_counter()
        loss_total = np.zeros(m)
        for start in range(0, spe, chunk):
            stop = min(start + chunk, spe)
            scores, opt_state, loss = compiled(
                scores, opt_state, batch.frozen, batch.counts, data.train_images,
                data.train_labels, idx, valid, jnp.int32(start), jnp.int32(stop),
            )  # fmt: skip
            loss_total += np.asarray(loss) * (stop - start)
            if on_chunk is not None:
                on_chunk(epoch, stop, spe, loss_total / stop)
        jax.block_until_ready(scores)
        seconds = time.perf_counter() - t0
        batch.scores = scores
        accs = batch_accuracy(batch, data.test_images, data.test_labels)
        history["epoch_seconds"].append(seconds)
        for i in range(m):
            history["test_accuracy"][i].append(accs[i])
            history["train_loss"][i].append(float(loss_total[i] / spe))
        if checkpoint is not None:
            checkpoint(epoch + 1, (scores, opt_state), history)
        if on_epoch is not None:
            on_epoch(epoch, accs, seconds)
    return history


def member_net(batch: Batch, i: int) -> PrunedNet:
    """Member ``i`` of a batch as a standalone network (its frozen weights, scores and counts)."""
    frozen = batch.frozen if batch.frozen_shared else batch.frozen[i]
    return nnx.merge(batch.graphdef, frozen, batch.scores[i], batch.counts[i])


# ----------------------------------------------------------------------------- tickets


@jax.jit(static_argnames=("method",))
def _masks(scores: list[jax.Array], counts: list[jax.Array], method: str) -> list[jax.Array]:
    return [topk_mask(jnp.abs(sc), k, method) > 0 for sc, k in zip(scores, counts, strict=True)]


def ticket_masks(net: PrunedNet) -> dict[str, np.ndarray]:
    """The 0/1 masks (bool arrays) of every masked tensor, keyed ``fc1.weight2`` etc."""
    entries = masked_entries(net)
    masks = _masks(
        [getattr(layer, s)[...] for _, layer, _, s, _ in entries],
        [getattr(layer, c)[...] for _, layer, _, _, c in entries],
        entries[0][1].method,
    )
    return {f"{ln}.{w}": np.asarray(m) for (ln, _, w, _, _), m in zip(entries, masks, strict=True)}


def make_ticket(net: PrunedNet, config: PruneConfig, seed: int, sparsity: float) -> dict[str, Any]:
    """A ticket: the seed that regenerates the frozen weights, the config, and the masks."""
    return {
        "config": config.as_dict(),
        "seed": int(seed),
        "sparsity": float(sparsity),
        "masks": ticket_masks(net),
        "conv": {k: np.asarray(getattr(net, k.split(".")[0]).weight[...])
                 for k in ("conv1.weight", "conv2.weight")} if net.conv else None,
    }  # fmt: skip


def save_ticket(path: str | Path, ticket: dict[str, Any], extra: dict | None = None) -> Path:
    """``.npz``: ``__meta__`` JSON, ``mask:<tensor>`` = ``np.packbits`` of the flat mask, shapes in
    the metadata, and ``conv:<key>`` = the frozen conv weights of LeNet5 variants."""
    meta = {
        "format": TICKET_FORMAT,
        "config": ticket["config"],
        "seed": ticket["seed"],
        "sparsity": ticket["sparsity"],
        "shapes": {k: list(v.shape) for k, v in ticket["masks"].items()},
        **(extra or {}),
    }
    arrays = {f"mask:{k}": np.packbits(v.ravel()) for k, v in ticket["masks"].items()}
    for k, v in (ticket["conv"] or {}).items():
        arrays[f"conv:{k}"] = np.asarray(v, np.float32)
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    return save_npz_atomic(path, arrays)


def load_ticket(path: str | Path) -> dict[str, Any]:
    """Inverse of :func:`save_ticket` (UserError for a missing or malformed file)."""
    path = Path(path)
    arrays = read_npz(path, "ticket file")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except (KeyError, ValueError) as e:
        raise UserError(f"cannot read ticket {path}: {e}") from None
    if meta.get("format") != TICKET_FORMAT:
        raise UserError(f"{path} is not a lottery-jax ticket (format {meta.get('format')!r})")
    masks = {}
    for key, shape in meta["shapes"].items():
        size = int(np.prod(shape))
        bits = arrays.get(f"mask:{key}")
        if bits is None or bits.size != (size + 7) // 8:
            raise UserError(f"{path}: mask {key} is missing or has the wrong length")
        masks[key] = np.unpackbits(bits, count=size).astype(bool).reshape(shape)
    conv = {k[len("conv:") :]: v for k, v in arrays.items() if k.startswith("conv:")} or None
    return {
        "config": meta["config"],
        "seed": int(meta["seed"]),
        "sparsity": float(meta["sparsity"]),
        "masks": masks,
        "conv": conv,
        "meta": meta,
    }


def ticket_config(ticket: dict[str, Any]) -> PruneConfig:
    known = {f for f in PruneConfig.__dataclass_fields__}
    return PruneConfig(**{k: v for k, v in ticket["config"].items() if k in known})


def net_from_ticket(ticket: dict[str, Any]) -> PrunedNet:
    """Rebuild the pruned network: frozen weights from the seed, masks fixed to the ticket's.

    Each score is set to its 0/1 mask value and each removal count to the number of zeros, so the
    exact top-k mask of the rebuilt net IS the saved mask (zeros are the smallest |score|).
    """
    cfg = ticket_config(ticket)
    net = build_pruned(
        cfg.model, seed=ticket["seed"], redundancy=cfg.redundancy, relu=cfg.relu,
        conv_state=ticket["conv"], method=cfg.method,
    )  # fmt: skip
    entries = masked_entries(net)
    names = {f"{ln}.{w}" for ln, _, w, _, _ in entries}
    if names != set(ticket["masks"]):
        raise UserError(f"ticket masks {sorted(ticket['masks'])} do not fit {cfg.model}")
    for lname, layer, wname, sname, cname in entries:
        mask = ticket["masks"][f"{lname}.{wname}"]
        if mask.shape != getattr(layer, sname)[...].shape:
            raise UserError(f"ticket mask {lname}.{wname} has shape {mask.shape}")
        getattr(layer, sname)[...] = jnp.asarray(mask, jnp.float32)
        getattr(layer, cname)[...] = jnp.int32(mask.size - int(mask.sum()))
    return net


def net_accuracy(net: PrunedNet, images: jax.Array, labels: jax.Array) -> float:
    """Test accuracy of one pruned network (the path used for tickets and final accuracies)."""
    graphdef, frozen, scores, counts = nnx.split(net, Frozen, Score, PruneCount)
    correct = _batched_correct(
        graphdef, frozen, [scores], [counts], images, labels, True, 1000, "unroll"
    )
    return 100.0 * int(np.asarray(correct)[0]) / int(images.shape[0])


def dense_state(net: PrunedNet) -> tuple[str, dict[str, np.ndarray]]:
    """The effective dense network in PyTorch layout (what ``evaluate --weights`` reads).

    A linear redundant layer collapses into one (out, in) matrix; a wide layer is its masked weight.
    Returns (target model name, state).
    """
    state = {}
    if net.conv:
        state["conv1.weight"] = np.asarray(net.conv1.weight[...])
        state["conv2.weight"] = np.asarray(net.conv2.weight[...])
    graphdef, params = nnx.split(net)
    dense = jax.jit(lambda g, p: [layer.dense_weight() for layer in nnx.merge(g, p).layers()],
                    static_argnums=0)(graphdef, params)  # fmt: skip
    for name, w in zip(net.names, dense, strict=True):
        state[f"{name}.weight"] = np.asarray(w)
    family = {3: "fc2", 5: "fc4"}.get(len(net.names) + 1, "fc2")
    if net.conv:
        family = "lenet5"
    return family, state


def export_dense(net: PrunedNet, path: str | Path, meta: dict | None = None) -> Path:
    """Write the effective dense network as a weight file that ``lottery-jax evaluate`` accepts."""
    family, state = dense_state(net)
    if family == "lenet5":
        h1, h2 = state["fc1.weight"].shape[0], state["fc2.weight"].shape[0]
        if h2 != max(1, round(h1 * 84 / 120)):
            raise UserError(
                f"a LeNet5 with fc widths {h1}, {h2} cannot be read by evaluate (it builds "
                f"{h1}, {round(h1 * 84 / 120)}); export the redundant LeNet5 instead"
            )
    hidden = int(state["fc1.weight"].shape[0])
    return save_weights(path, family, state, {"hidden": hidden, "inputs": "normalized",
                                              **(meta or {})})  # fmt: skip


def load_conv_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Conv weights from a ``train``-made LeNet5 weight file (UserError on the wrong shapes)."""
    from lottery_jax.checkpoint import load_weights

    state, _ = load_weights(path)
    return conv_state_from(state, str(path))


__all__ = [
    "PRUNE_MODELS",
    "PUBLISHED_EPOCHS",
    "PUBLISHED_SPARSITIES",
    "Batch",
    "MaskedLinear",
    "PruneConfig",
    "PrunedNet",
    "RedundantLinear",
    "batch_accuracy",
    "build_pruned",
    "export_dense",
    "load_conv_checkpoint",
    "load_ticket",
    "make_batch",
    "make_ticket",
    "member_net",
    "net_accuracy",
    "net_from_ticket",
    "param_counts",
    "redundant_param_count",
    "save_ticket",
    "set_sparsity",
    "train_batch",
    "wide_sizes",
    "wide_width",
]
