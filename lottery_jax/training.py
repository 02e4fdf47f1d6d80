"""Training: the published recipe as one compiled loop over an on-device dataset.

Recipe (the published code): SGD with momentum 0.9, weight decay 5e-4 added to the gradient (PyTorch
style), cosine annealing stepped once per EPOCH (lr_e = lr (1 + cos(pi e / epochs)) / 2), batch 64,
cross-entropy of log-softmax outputs. Batches are gathered on the device from a seeded permutation;
the last partial batch is kept (padded and masked), as PyTorch's DataLoader does without drop_last.

The core is pure: :func:`make_step_runner` builds a jitted function over ``nnx.split`` state that runs
a range of steps with ``lax.fori_loop`` (one compilation for any range, so a progress bar can update
between chunks). :func:`fit` is the thin shell around it (progress, timing, per-epoch test accuracy).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lottery_jax.data import Dataset
from lottery_jax.errors import UserError
from lottery_jax.resources import require_memory, training_bytes

#: Published learning rates: 0.1 for the fully connected nets, 0.01 for LeNet5 (the published code).
DEFAULT_LR = {"fc2": 0.1, "fc4": 0.1, "lenet5": 0.01}
#: Largest step count (optax keeps it in int32).
INT32_MAX = 2**31 - 1
#: Steps per compiled call between progress-bar updates.
PROGRESS_CHUNK = 100
#: Cosine schedules: stepped per epoch (published) or per step.
SCHEDULES = ("epoch", "step")


def make_optimizer(
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "epoch",
) -> optax.GradientTransformation:
    """PyTorch's ``SGD(lr, momentum, weight_decay)`` with a cosine schedule.

    ``schedule="epoch"`` (the published recipe) steps the cosine once per epoch, so the rate is
    constant within an epoch; ``"step"`` anneals it every step over the whole run (our option: far
    better accuracy for very short runs, e.g. one epoch).

    PyTorch: g <- g + wd p; b <- m b + g; p <- p - lr_e b. ``add_decayed_weights`` then
    ``sgd(momentum)`` (trace without dampening, scaled by the scheduled rate) is the same update.
    """

    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")

    cosine = optax.cosine_decay_schedule(lr, epochs)

    def rate(count: jax.Array) -> jax.Array:
        if schedule == "step":
            return cosine(count / steps_per_epoch)
        return cosine(count // steps_per_epoch)

    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(rate, momentum=momentum))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def epoch_indices(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A seeded permutation of ``range(n)`` cut into batches: (idx[steps, B], valid[steps, B])."""
    steps = steps_per_epoch(n, batch_size)
    perm = jax.random.permutation(key, n).astype(jnp.int32)
    pad = steps * batch_size - n
    idx = jnp.concatenate([perm, jnp.zeros((pad,), jnp.int32)]).reshape(steps, batch_size)
    valid = (jnp.arange(steps * batch_size) < n).reshape(steps, batch_size)
    return idx, valid


def epoch_key(seed: int, epoch: int) -> jax.Array:
    """The shuffling key of one epoch: independent of where a (resumed) run started."""
    return jax.random.fold_in(jax.random.key(seed), epoch)


def cross_entropy(
    logits: jax.Array, labels: jax.Array, valid: jax.Array | None = None
) -> jax.Array:
    """Mean cross-entropy of log-softmax outputs over the valid examples."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if valid is None:
        return losses.mean()
    valid = valid.astype(losses.dtype)
    return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def correct_count(apply, images, labels, batch_size):
    """Correct predictions of ``apply`` over ``images`` in batches (the last one padded, masked)."""
    n = images.shape[0]
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    x = jnp.pad(images, [(0, pad)] + [(0, 0)] * (images.ndim - 1)).reshape(
        (nb, batch_size) + images.shape[1:]
    )
    y = jnp.pad(labels, (0, pad)).reshape(nb, batch_size)
    valid = (jnp.arange(nb * batch_size) < n).reshape(nb, batch_size)

    def body(total, batch):
        xb, yb, vb = batch
        hit = (jnp.argmax(apply(xb), axis=-1) == yb) & vb
        return total + jnp.sum(hit, dtype=jnp.int32), None

    total, _ = jax.lax.scan(body, jnp.int32(0), (x, y, valid))
    return total


def _apply(graphdef, state, method: str):
    return getattr(nnx.merge(graphdef, state), method)


@jax.jit(static_argnames=("graphdef", "batch_size", "method"))
def _model_correct(graphdef, state, images, labels, batch_size, method="__call__"):
    return correct_count(lambda x: _apply(graphdef, state, method)(x), images, labels, batch_size)


def evaluate(
    model: nnx.Module,
    images: jax.Array,
    labels: jax.Array,
    batch_size: int = 1000,
    method: str = "__call__",
) -> float:
    """Test accuracy (percent) of an NNX model; compiled once per model structure.

    A pruned network (:func:`~lottery_jax.nets.pruned.build_pruned`, ``member_net``,
    ``net_from_ticket``) is measured by the path its training reports
    (:func:`lottery_jax.pruning.ticket.net_accuracy`), so a network rebuilt from its ticket gives
    the very accuracy ``train_batch`` reported.
    """
    from lottery_jax.nets.pruned import PrunedNet

    if isinstance(model, PrunedNet) and method == "__call__":
        from lottery_jax.pruning.ticket import net_accuracy

        return net_accuracy(model, images, labels, batch_size)
    graphdef, state = nnx.split(model)
    correct = _model_correct(graphdef, state, images, labels, batch_size, method)
    return 100.0 * int(correct) / int(images.shape[0])


@jax.jit(static_argnames=("graphdef",))
def _features_chunk(graphdef, state, images):
    return _apply(graphdef, state, "features")(images)


def _features(graphdef, state, images, batch_size: int = 1000) -> jax.Array:
    # One compiled call per chunk rather than one lax.map: inside a loop XLA's CPU backend runs
    # the convolutions several times slower than as a top-level program.
    n = int(images.shape[0])
    parts = []
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        if chunk.shape[0] < batch_size:  # keep one compiled shape
            pad = [(0, batch_size - chunk.shape[0])] + [(0, 0)] * (images.ndim - 1)
            chunk = jnp.pad(chunk, pad)
        parts.append(_features_chunk(graphdef, state, chunk))
    return jnp.concatenate(parts)[:n]


def frozen_features(model: nnx.Module, wrt: Any, data: Dataset) -> Dataset | None:
    """The dataset mapped through ``model.features`` when that part is frozen, else ``None``.

    A model may declare ``feature_modules`` (the sub-modules ``features`` uses) and a ``head``. When
    none of the variables selected by ``wrt`` lives in those modules, the features are a fixed
    function of the input, so they are computed once and training runs on ``head`` alone: the same
    computation as training the whole model, without redoing the frozen convolutions every step.
    """
    modules = getattr(model, "feature_modules", None)
    if not modules or not hasattr(model, "head"):
        return None
    trained = {path[0] for path, _ in nnx.to_flat_state(nnx.state(model, wrt))}
    if trained & set(modules):
        return None
    graphdef, state = nnx.split(model)
    return data._replace(
        train_images=_features(graphdef, state, data.train_images),
        test_images=_features(graphdef, state, data.test_images),
    )


def make_step_runner(graphdef, optimizer: optax.GradientTransformation, method: str = "__call__"):
    """Jitted ``run(trainable, opt_state, rest, images, labels, idx, valid, start, stop)``.

    Runs SGD steps ``start..stop`` of one epoch (batches ``idx[i]``) and returns the new
    ``(trainable, opt_state, mean_loss)``. ``start``/``stop`` are traced, so any range reuses one
    compilation. ``method`` names the model method that maps a batch to logits.
    """

    def loss_fn(trainable, rest, x, y, v):
        model = nnx.merge(graphdef, trainable, rest)
        return cross_entropy(getattr(model, method)(x), y, v)

    grad_fn = jax.value_and_grad(loss_fn)

    def run(trainable, opt_state, rest, images, labels, idx, valid, start, stop):
        def body(i, carry):
            trainable, opt_state, loss_sum = carry
            bi = idx[i]
            loss, grads = grad_fn(trainable, rest, images[bi], labels[bi], valid[i])
            updates, opt_state = optimizer.update(grads, opt_state, trainable)
            return optax.apply_updates(trainable, updates), opt_state, loss_sum + loss

        trainable, opt_state, loss_sum = jax.lax.fori_loop(
            start, stop, body, (trainable, opt_state, jnp.float32(0.0))
        )
        return trainable, opt_state, loss_sum / jnp.maximum(stop - start, 1)

    return jax.jit(run, donate_argnums=(0, 1))


@dataclass(frozen=True)
class Recipe:
    """The training settings of :func:`fit` (the published recipe by default), checked once here.

    ``schedule``: the cosine stepped per ``epoch`` (published) or per ``step``
    (:func:`make_optimizer`)."""

    lr: float
    epochs: int
    batch_size: int = 64
    seed: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "epoch"

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise UserError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise UserError(f"batch size must be positive, got {self.batch_size}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise UserError(f"learning rate must be a positive number, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise UserError(f"momentum must be in [0, 1), got {self.momentum}")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise UserError(f"weight decay must be non-negative, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise UserError(
                f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})"
            )

    def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
        return make_optimizer(self.lr, self.epochs, steps_per_epoch, self.momentum,
                              self.weight_decay, self.schedule)  # fmt: skip


#: The per-epoch series of a :class:`History`.
HISTORY_SERIES = ("test_accuracy", "train_loss", "epoch_seconds")


@dataclass
class History:
    """What :func:`fit` measured: one entry per epoch run of ``test_accuracy`` (percent),
    ``train_loss`` (mean) and ``epoch_seconds`` (wall time, compile excluded), plus
    ``compile_seconds``, ``feature_seconds`` (frozen features computed once) and the final
    ``opt_state`` (not part of the JSON form)."""

    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    compile_seconds: float = 0.0
    feature_seconds: float = 0.0
    opt_state: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {**{k: list(getattr(self, k)) for k in HISTORY_SERIES},
                "compile_seconds": self.compile_seconds,
                "feature_seconds": self.feature_seconds}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> History:
        return cls(**{k: list(d.get(k) or []) for k in HISTORY_SERIES},
                   compile_seconds=float(d.get("compile_seconds") or 0.0),
                   feature_seconds=float(d.get("feature_seconds") or 0.0))  # fmt: skip


def _check_fit(model: nnx.Module, data: Dataset, wrt: Any, recipe: Recipe) -> int:
    """What the recipe cannot check alone: the batch against the data, the step count against
    int32, the memory against the machine. Returns the steps per epoch."""
    n = int(data.train_images.shape[0])
    if recipe.batch_size > n:
        raise UserError(f"batch size {recipe.batch_size} exceeds the {n:,} training examples")
    spe = steps_per_epoch(n, recipe.batch_size)
    if recipe.epochs * spe > INT32_MAX:  # optax counts steps in int32
        raise UserError(
            f"{recipe.epochs:,} epochs of {spe:,} steps exceed 2^31 - 1 optimizer steps"
        )
    params = sum(int(x.size) for x in jax.tree.leaves(nnx.state(model)))
    widths = sum(int(x.shape[0]) for x in jax.tree.leaves(nnx.state(model, wrt)) if x.ndim == 2)
    data_bytes = sum(int(x.nbytes) for x in data[:4])
    require_memory(
        training_bytes(params, recipe.batch_size, widths, data_bytes),
        f"training {params:,} parameters with batch size {recipe.batch_size}",
        "use a smaller batch size or network",
    )
    return spe


def fit(
    model: nnx.Module,
    data: Dataset,
    recipe: Recipe,
    *,
    wrt: Any = nnx.Param,
    start_epoch: int = 0,
    opt_state: Any = None,
    on_chunk: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[int, History, nnx.Module, Any], None] | None = None,
    precompute_features: bool = True,
) -> History:
    """Train the variables of ``model`` selected by ``wrt`` in place under ``recipe``; the rest
    stays untouched. Returns the :class:`History`.

    The library draws nothing: ``on_chunk(epoch, steps_done, steps_total, mean_loss)`` reports
    progress every :data:`PROGRESS_CHUNK` steps (the loss is read back at that point whether or
    not a callback is given, so callbacks never change when the host syncs), and
    ``on_epoch(epoch, history, model, opt_state)`` runs after each epoch with the history so far
    (for checkpoints). ``epoch`` counts from 1, as printed ("epoch 1/10"): in ``on_epoch`` it is
    also the number of epochs done; ``start_epoch`` is the number done before this call. With ``precompute_features`` a frozen feature extractor (the LeNet5 convs)
    runs once over the dataset instead of every step (``feature_seconds``); see
    :func:`frozen_features`. A run resumed with ``start_epoch``/``opt_state`` reproduces the
    uninterrupted one exactly.
    """
    spe = _check_fit(model, data, wrt, recipe)
    optimizer = recipe.optimizer(spe)
    graphdef, trainable, rest = nnx.split(model, wrt, ...)
    # The runner donates these buffers: copy, so the caller's arrays (init weights, opt_state) live.
    trainable = jax.tree.map(jnp.copy, trainable)
    opt_state = (
        optimizer.init(trainable) if opt_state is None else jax.tree.map(jnp.copy, opt_state)
    )
    t0 = time.perf_counter()
    feats = frozen_features(model, wrt, data) if precompute_features else None
    method = "__call__" if feats is None else "head"
    data = data if feats is None else jax.block_until_ready(feats)
    history = History(feature_seconds=time.perf_counter() - t0)
    n = int(data.train_images.shape[0])
    idx, valid = epoch_indices(epoch_key(recipe.seed, start_epoch), n, recipe.batch_size)
    args = (trainable, opt_state, rest, data.train_images, data.train_labels, idx, valid)
    t0 = time.perf_counter()
    compiled = (
        make_step_runner(graphdef, optimizer, method)
        .lower(*args, jnp.int32(0), jnp.int32(1))
        .compile()
    )
    graph_eval = nnx.split(model)
    _model_correct.lower(
        graph_eval[0], graph_eval[1], data.test_images, data.test_labels, 1000, method
    ).compile()
    history.compile_seconds = time.perf_counter() - t0
    for epoch in range(start_epoch, recipe.epochs):
        idx, valid = epoch_indices(epoch_key(recipe.seed, epoch), n, recipe.batch_size)
        jax.block_until_ready(idx)
        t0 = time.perf_counter()
        trainable, opt_state, loss = _run_epoch(
            compiled, (trainable, opt_state, rest, data.train_images, data.train_labels),
            idx, valid, epoch + 1, spe, on_chunk,
        )  # fmt: skip
        jax.block_until_ready(trainable)
        history.epoch_seconds.append(time.perf_counter() - t0)
        nnx.update(model, trainable)
        history.test_accuracy.append(
            evaluate(model, data.test_images, data.test_labels, method=method)
        )
        history.train_loss.append(loss)
        if on_epoch is not None:
            on_epoch(epoch + 1, history, model, opt_state)
    history.opt_state = opt_state
    return history


def _run_epoch(compiled, state, idx, valid, epoch: int, spe: int, on_chunk):
    """One epoch in :data:`PROGRESS_CHUNK`-step compiled calls: the new trainable variables and
    optimizer state, and the epoch's mean loss."""
    trainable, opt_state, rest, images, labels = state
    loss_total = 0.0
    for start in range(0, spe, PROGRESS_CHUNK):
        stop = min(start + PROGRESS_CHUNK, spe)
        trainable, opt_state, loss = compiled(
            trainable, opt_state, rest, images, labels, idx, valid, jnp.int32(start),
            jnp.int32(stop),
        )  # fmt: skip
        loss_total += float(loss) * (stop - start)
        if on_chunk is not None:
            on_chunk(epoch, stop, spe, loss_total / stop)
    return trainable, opt_state, loss_total / spe
