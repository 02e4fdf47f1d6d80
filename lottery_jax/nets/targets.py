"""Target networks of the paper in Flax NNX: FC2, FC4 and LeNet5.

Weights are stored in PyTorch layout (linear: (out, in), applied as ``x @ W.T``; conv: (out, in, kh,
kw)) so that a PyTorch state dict maps onto them key for key (``fc1.weight`` ...). Initialisation is
PyTorch's default for ``nn.Linear``/``nn.Conv2d`` (uniform on +-1/sqrt(fan_in)), as in the published
code. In LeNet5 the conv weights are :class:`Frozen`: they stay at their random init (as in the published code).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lottery_jax.errors import UserError

MODEL_NAMES = ("fc2", "fc4", "lenet5")


class Frozen(nnx.Variable):
    """Random weights that are never trained (LeNet5 convs; the weights of pruned networks)."""


def torch_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """PyTorch's default init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class Linear(nnx.Module):
    """Fully connected layer with a PyTorch-layout (out, in) weight and an optional bias."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, rngs: nnx.Rngs):
        self.weight = nnx.Param(
            torch_uniform(rngs.params(), (out_features, in_features), in_features)
        )
        self.bias = (
            nnx.Param(torch_uniform(rngs.params(), (out_features,), in_features)) if bias else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x @ self.weight[...].T
        return y if self.bias is None else y + self.bias[...]


class FrozenConv(nnx.Module):
    """2-d convolution (NHWC activations, OIHW kernel) whose kernel is :class:`Frozen`."""

    def __init__(
        self, cin: int, cout: int, k: int, *, padding: int = 0, bias: bool = False, rngs: nnx.Rngs
    ):
        fan_in = cin * k * k
        self.weight = Frozen(torch_uniform(rngs.params(), (cout, cin, k, k), fan_in))
        self.bias = Frozen(torch_uniform(rngs.params(), (cout,), fan_in)) if bias else None
        self.padding = padding

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        w = self.weight[...]
        if w.shape[1] == 1 and jax.default_backend() == "cpu":
            y = _single_channel_conv(x, w, p)
        else:
            y = jax.lax.conv_general_dilated(
                x, w, (1, 1), [(p, p), (p, p)], dimension_numbers=("NHWC", "OIHW", "NHWC")
            )
        return y if self.bias is None else y + self.bias[...]


def _single_channel_conv(x: jax.Array, w: jax.Array, p: int) -> jax.Array:
    """A 1-input-channel convolution as sums of k*k shifted, scaled copies of the image.

    XLA's CPU convolution is several times slower than this for LeNet5's conv1 (C_in = 1). The
    optimization barriers keep XLA from fusing the shifted sums into their consumers (which
    recomputes them per pooling window). Equal to ``conv_general_dilated`` up to float32 summation
    order (~1e-7).
    """
    k = w.shape[-1]
    xp = jax.lax.optimization_barrier(jnp.pad(x[..., 0], ((0, 0), (p, p), (p, p))))
    h, wd = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    planes = []
    for c in range(w.shape[0]):
        acc = jnp.zeros((x.shape[0], h, wd), x.dtype)
        for i in range(k):
            for j in range(k):
                acc = acc + xp[:, i : i + h, j : j + wd] * w[c, 0, i, j]
        planes.append(acc)
    return jax.lax.optimization_barrier(jnp.stack(planes, axis=-1))


def max_pool2(x: jax.Array) -> jax.Array:
    return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


def flatten(x: jax.Array) -> jax.Array:
    """(B, 28, 28, 1) or any NHWC map -> (B, features) in PyTorch's C, H, W order."""
    if x.ndim == 4:
        x = jnp.transpose(x, (0, 3, 1, 2))
    return x.reshape(x.shape[0], -1)


class FC2(nnx.Module):
    """784-hidden-10 with ReLU, no biases (the paper's target for Experiment 1)."""

    def __init__(self, *, hidden: int = 500, bias: bool = False, rngs: nnx.Rngs):
        self.fc1 = Linear(784, hidden, bias=bias, rngs=rngs)
        self.fc2 = Linear(hidden, 10, bias=bias, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.relu(self.fc1(flatten(x))))


class FC4(nnx.Module):
    """784-h-h-h-10 with ReLUs."""

    def __init__(self, *, hidden: int = 500, bias: bool = False, rngs: nnx.Rngs):
        self.fc1 = Linear(784, hidden, bias=bias, rngs=rngs)
        self.fc2 = Linear(hidden, hidden, bias=bias, rngs=rngs)
        self.fc3 = Linear(hidden, hidden, bias=bias, rngs=rngs)
        self.fc4 = Linear(hidden, 10, bias=bias, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = flatten(x)
        for layer in (self.fc1, self.fc2, self.fc3):
            h = jax.nn.relu(layer(h))
        return self.fc4(h)


class LeNet5(nnx.Module):
    """LeNet5 with frozen random conv weights; only fc 400-120-84-10 train (the paper's Experiment 2).

    ``features`` uses only the modules in ``feature_modules`` (all :class:`Frozen`), so training
    may compute it once per dataset and train ``head`` on the result (see ``train.fit``).
    """

    feature_modules = ("conv1", "conv2")

    def __init__(self, *, hidden: tuple[int, int] = (120, 84), bias: bool = False, rngs: nnx.Rngs):
        self.conv1 = FrozenConv(1, 6, 5, padding=2, bias=bias, rngs=rngs)
        self.conv2 = FrozenConv(6, 16, 5, bias=bias, rngs=rngs)
        self.fc1 = Linear(400, hidden[0], bias=bias, rngs=rngs)
        self.fc2 = Linear(hidden[0], hidden[1], bias=bias, rngs=rngs)
        self.fc3 = Linear(hidden[1], 10, bias=bias, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Frozen conv features, (B, 400) flattened in PyTorch's C, H, W order."""
        x = max_pool2(jax.nn.relu(self.conv1(x)))
        x = max_pool2(jax.nn.relu(self.conv2(x)))
        return flatten(x)

    def head(self, h: jax.Array) -> jax.Array:
        """The trained fully connected part, on (B, 400) features."""
        h = jax.nn.relu(self.fc1(h))
        return self.fc3(jax.nn.relu(self.fc2(h)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def build_model(
    name: str, *, seed: int, hidden: int | None = None, bias: bool = False
) -> nnx.Module:
    """Build a target network with weights drawn from ``seed``.

    ``hidden`` is the hidden width of FC2/FC4 (default 500) or LeNet5's first fc width (second = 84
    scaled alike; default 120).
    """
    rngs = nnx.Rngs(params=seed)
    if hidden is not None and hidden < 1:
        raise UserError(f"hidden size must be positive, got {hidden}")
    if name == "fc2":
        return FC2(hidden=hidden or 500, bias=bias, rngs=rngs)
    if name == "fc4":
        return FC4(hidden=hidden or 500, bias=bias, rngs=rngs)
    if name == "lenet5":
        h1 = hidden or 120
        return LeNet5(hidden=(h1, max(1, round(h1 * 84 / 120))), bias=bias, rngs=rngs)
    raise UserError(f"unknown model {name!r} (choose from {', '.join(MODEL_NAMES)})")


def torch_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """All variables as numpy arrays keyed PyTorch-style (``fc1.weight``, ``conv1.weight``...)."""
    return {
        ".".join(str(p) for p in path): np.asarray(var[...])
        for path, var in nnx.to_flat_state(nnx.state(model))
    }


def load_torch_state(model: nnx.Module, state: dict[str, np.ndarray], *, source: str = "") -> None:
    """Copy a PyTorch-layout state into ``model`` in place; every key and shape must match."""
    where = f"{source}: " if source else ""
    own = {".".join(str(p) for p in path): var for path, var in nnx.to_flat_state(nnx.state(model))}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise UserError(f"{where}weights do not fit the model ({'; '.join(parts)})")
    for key, var in own.items():
        value = np.asarray(state[key])
        if value.shape != var[...].shape:
            raise UserError(
                f"{where}{key} has shape {value.shape}, the model expects {tuple(var[...].shape)}"
            )
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise UserError(f"{where}{key} is not a finite floating-point array")
    nnx.update(
        model,
        nnx.from_flat_state(
            {
                path: jnp.asarray(state[".".join(str(p) for p in path)], jnp.float32)
                for path, _ in nnx.to_flat_state(nnx.state(model))
            }
        ),
    )


def count_params(model: nnx.Module, var_type: type = nnx.Param) -> int:
    """Number of scalars in variables of ``var_type`` (default: the trainable ones)."""
    return sum(int(np.prod(v[...].shape)) for _, v in nnx.to_flat_state(nnx.state(model, var_type)))


def model_from_state(name: str, state: dict[str, np.ndarray], *, source: str = "") -> nnx.Module:
    """Build network ``name`` sized to fit a PyTorch-layout ``state`` and load it.

    The hidden width is read off ``fc1.weight`` (rows) and biases from the presence of ``.bias``
    keys; anything else that does not fit is a UserError from :func:`load_torch_state`.
    """
    w = state.get("fc1.weight")
    if w is None or np.ndim(w) != 2:
        where = f"{source}: " if source else ""
        raise UserError(f"{where}fc1.weight is missing or not a 2-D matrix")
    bias = any(k.endswith(".bias") for k in state)
    net = build_model(name, seed=0, hidden=int(np.shape(w)[0]), bias=bias)
    load_torch_state(net, state, source=source)
    return net
