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
from lottery_jax.resources import require_memory

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


def lenet5_widths(h1: int | None = None) -> tuple[int, int]:
    """LeNet5's two fc widths: ``h1`` (default 120) and the second scaled alike from 84 (the one
    formula for every LeNet5 this package builds or reads)."""
    h1 = h1 or 120
    return h1, max(1, round(h1 * 84 / 120))


def target_widths(name: str, hidden: int | None = None) -> tuple[int, ...]:
    """Layer widths of the fully connected part (FC2/FC4 from the 784 pixels, LeNet5 from the 400
    conv features), as :func:`build_model` makes them."""
    if name == "fc2":
        return (784, hidden or 500, 10)
    if name == "fc4":
        h = hidden or 500
        return (784, h, h, h, 10)
    if name == "lenet5":
        return (400, *lenet5_widths(hidden), 10)
    raise UserError(f"unknown model {name!r} (choose from {', '.join(MODEL_NAMES)})")


def target_param_count(name: str, hidden: int | None = None, bias: bool = False) -> int:
    """Parameters of :func:`build_model`'s network, computed without building it (conv included)."""
    w = target_widths(name, hidden)
    n = sum(a * b + (b if bias else 0) for a, b in zip(w[:-1], w[1:], strict=True))
    if name == "lenet5":
        n += 6 * 25 + 16 * 6 * 25 + ((6 + 16) if bias else 0)
    return n


def build_model(
    name: str, *, seed: int, hidden: int | None = None, bias: bool = False
) -> nnx.Module:
    """Build a target network with weights drawn from ``seed``.

    ``hidden`` is the hidden width of FC2/FC4 (default 500) or LeNet5's first fc width (second = 84
    scaled alike; default 120).
    """
    if hidden is not None and hidden < 1:
        raise UserError(f"hidden size must be positive, got {hidden}")
    if name in MODEL_NAMES:  # refuse before allocating: the weights and their random draws
        params = target_param_count(name, hidden, bias)
        require_memory(8 * params, f"a {name} of {params:,} parameters", "use a smaller width")
    rngs = nnx.Rngs(params=seed)
    if name == "fc2":
        return FC2(hidden=hidden or 500, bias=bias, rngs=rngs)
    if name == "fc4":
        return FC4(hidden=hidden or 500, bias=bias, rngs=rngs)
    if name == "lenet5":
        return LeNet5(hidden=lenet5_widths(hidden), bias=bias, rngs=rngs)
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


#: The input preprocessing a weight file without ``__meta__["inputs"]`` was made for: the paper fed
#: FC2/FC4 pixels in [0, 1] (Experiment 1) and normalized LeNet5's (Experiment 2).
DEFAULT_INPUTS = {"fc2": "unit", "fc4": "unit", "lenet5": "normalized"}


def infer_model(
    state: dict[str, np.ndarray], *, source: str = "", model: str | None = None
) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """Which target network a PyTorch-layout ``state`` describes, under its canonical key names.

    Any key names work (``fc1.weight``, ``0.weight`` of an ``nn.Sequential``, ``net.3.bias``...):
    the weight tensors are taken in file order, 4-D ones as conv kernels and 2-D ones as linear
    layers, each with the ``.bias`` of the same prefix. Two convs and three linears are LeNet5, two
    linears FC2, four FC4 (``model``, e.g. from the file's metadata, is checked instead of guessed).
    Returns ``(name, canonical state, {canonical key: original key})``.
    """
    where = f"{source}: " if source else ""
    convs: list[str] = []
    fcs: list[str] = []
    for k, v in state.items():
        if not k.endswith("weight"):
            continue
        nd = np.ndim(v)
        if nd == 4:
            convs.append(k[: -len("weight")])
        elif nd == 2:
            fcs.append(k[: -len("weight")])
    shapes = {(0, 2): "fc2", (0, 4): "fc4", (2, 3): "lenet5"}
    name = shapes.get((len(convs), len(fcs)))
    if model is not None and model in MODEL_NAMES:
        name = model if name == model else None
    if name is None:
        raise UserError(
            f"{where}{len(convs)} conv and {len(fcs)} linear weight tensors fit none of FC2 (2 "
            f"linear), FC4 (4 linear) or LeNet5 (2 conv + 3 linear)"
        )
    mapping: dict[str, str] = {}
    for kind, prefixes in (("conv", convs), ("fc", fcs)):
        for i, p in enumerate(prefixes, 1):
            mapping[f"{kind}{i}.weight"] = f"{p}weight"
            if f"{p}bias" in state:
                mapping[f"{kind}{i}.bias"] = f"{p}bias"
    extra = sorted(set(state) - set(mapping.values()))
    if extra:
        raise UserError(f"{where}tensors {', '.join(extra[:6])} fit no layer of {name.upper()}")
    return name, {c: np.asarray(state[o]) for c, o in mapping.items()}, mapping


def network_for(
    state: dict[str, np.ndarray], *, source: str = "", model: str | None = None
) -> tuple[str, nnx.Module]:
    """The network a PyTorch-layout ``state`` describes (FC2, FC4 or LeNet5, with or without
    biases, any key names), built and loaded: ``(name, network)``; see :func:`infer_model`."""
    name, canonical, _ = infer_model(state, source=source, model=model)
    return name, model_from_state(name, canonical, source=source)
