"""Experiment 2: pruning random networks with supermasks (no weight training, only masks).

Networks (the paper's Experiment 2 and its published code):

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lottery_jax.errors import UserError
from lottery_jax.nets.supermask import (
    PruneCount,
    Score,
    check_sparsity,
    masked,
    num_pruned,
)
from lottery_jax.nets.targets import Frozen, FrozenConv, flatten, max_pool2

PRUNE_MODELS = ("red-fc2", "red-fc4", "red-lenet5", "wide-fc2", "wide-fc4", "wide-lenet5")
FC_SIZES = {"fc2": (784, 500, 10), "fc4": (784, 500, 500, 500, 10), "lenet5": (400, 120, 84, 10)}


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
    """Hidden width of the wide net whose fc parameter count matches ``total`` (as published)."""
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


#: Redundant or wide networks of any layer sizes (``sizes`` given explicitly).
CUSTOM_MODELS = ("red", "wide")


def parse_model(name: str) -> tuple[str, str]:
    """``red-fc2`` -> ("red", "fc2"); ``red``/``wide`` (any sizes) -> ("red"/"wide", "custom")."""
    if name in CUSTOM_MODELS:
        return name, "custom"
    if name not in PRUNE_MODELS:
        choices = ", ".join(PRUNE_MODELS + CUSTOM_MODELS)
        raise UserError(f"unknown model {name!r} (choose from {choices})")
    kind, family = name.split("-", 1)
    return kind, family


def pruned_sizes(name: str, redundancy: int = 5, sizes=None) -> tuple[int, ...]:
    """Layer sizes of the fully connected part: the paper's for a named model (wide ones
    parameter-matched to the redundant net of ``redundancy``), ``sizes`` for ``red``/``wide``."""
    kind, family = parse_model(name)
    if family == "custom":
        if sizes is None or len(sizes) < 2:
            raise UserError(f"model {name!r} needs layer sizes (input, hidden..., output)")
        out = tuple(int(x) for x in sizes)
        if any(x < 1 for x in out) or any(x != y for x, y in zip(out, sizes, strict=True)):
            raise UserError(f"layer sizes must be positive integers, got {tuple(sizes)}")
        return out
    if sizes is not None:
        raise UserError(f"{name} has the paper's sizes; use model 'red' or 'wide' for other sizes")
    return FC_SIZES[family] if kind == "red" else wide_sizes(family, redundancy)


def pruned_param_count(name: str, redundancy: int = 5, sizes=None) -> int:
    """Fully connected (masked) parameters of the network :func:`build_pruned` makes."""
    kind, _ = parse_model(name)
    s = pruned_sizes(name, redundancy, sizes)
    pairs = list(zip(s[:-1], s[1:], strict=True))
    if kind == "red":
        return sum(redundancy * a + b * a * redundancy for a, b in pairs)
    return sum(a * b for a, b in pairs)


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
    sizes=None,
) -> PrunedNet:
    """Build a pruned network whose frozen weights and initial scores are drawn from ``seed``.

    ``name`` is one of the paper's six models (``red-fc2`` ...) or ``red``/``wide`` with explicit
    layer ``sizes`` (e.g. ``(784, 32, 10)``; the first is the flattened input). ``conv_state``
    (``conv1.weight``, ``conv2.weight``) replaces the random conv weights of the LeNet5 variants,
    so that they share the baseline's conv features.
    """
    kind, family = parse_model(name)
    if int(redundancy) < 1:
        raise UserError(f"redundancy must be at least 1, got {redundancy}")
    layer_sizes = pruned_sizes(name, redundancy, sizes)
    rngs = nnx.Rngs(params=seed)
    conv = family == "lenet5"
    net = PrunedNet(
        layer_sizes, redundancy=redundancy if kind == "red" else None, relu=relu, conv=conv,
        rngs=rngs, method=method,
    )  # fmt: skip
    if conv and conv_state is not None:
        conv_state = conv_state_from(conv_state)
        net.conv1.weight[...] = jnp.asarray(conv_state["conv1.weight"])
        net.conv2.weight[...] = jnp.asarray(conv_state["conv2.weight"])
    return net


class MaskedEntry(NamedTuple):
    """One masked tensor of a pruned net: its layer's path prefix and module, and the names of
    its weight, score and removal-count attributes; ``key`` (``fc1.weight2``) names it in
    tickets, ``scores``/``counts`` are the variables themselves."""

    path: str
    layer: nnx.Module
    weight: str
    score: str
    count: str

    @property
    def key(self) -> str:
        return f"{self.path}.{self.weight}"

    @property
    def scores(self) -> Any:
        return getattr(self.layer, self.score)

    @property
    def counts(self) -> Any:
        return getattr(self.layer, self.count)


def masked_entries(net: PrunedNet) -> list[MaskedEntry]:
    """A :class:`MaskedEntry` for every masked tensor."""
    out = []
    for lname, layer in zip(net.names, net.layers(), strict=True):
        for w, s, c in layer.masked_tensors():
            out.append(MaskedEntry(lname, layer, w, s, c))
    return out


def set_sparsity(net: PrunedNet, sparsity: float) -> None:
    """Remove ``int(sparsity * size)`` entries from every masked tensor (as published)."""
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
