"""Pruning tickets (Experiment 2): the seed that regenerates a network's frozen weights, its
configuration and its packed masks; rebuilding a network from one and exporting its dense equivalent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lottery_jax.checkpoint import save_weights
from lottery_jax.errors import UserError
from lottery_jax.nets.pruned import PrunedNet, build_pruned, conv_state_from, masked_entries
from lottery_jax.nets.supermask import (
    PruneCount,
    Score,
    topk_mask,
)
from lottery_jax.nets.targets import Frozen, lenet5_widths
from lottery_jax.pruning.batched import Batch, PruneConfig, batched_correct, member_net
from lottery_jax.rundir import write_npz
from lottery_jax.tickets import SUPERMASK_FORMAT, open_ticket

#: Format id of the supermask ticket (files of the first release, ``lottery-jax-ticket/1``, load too).
TICKET_FORMAT = SUPERMASK_FORMAT
#: The largest mask a ticket may declare (entries): far above any network the tool builds.
MAX_MASK_ENTRIES = 1 << 30


# ----------------------------------------------------------------------------- tickets


@jax.jit(static_argnames=("method",))
def _masks(scores: list[jax.Array], counts: list[jax.Array], method: str) -> list[jax.Array]:
    return [topk_mask(jnp.abs(sc), k, method) > 0 for sc, k in zip(scores, counts, strict=True)]


def ticket_masks(net: PrunedNet) -> dict[str, np.ndarray]:
    """The 0/1 masks (bool arrays) of every masked tensor, keyed ``fc1.weight2`` etc."""
    entries = masked_entries(net)
    masks = _masks(
        [e.scores[...] for e in entries], [e.counts[...] for e in entries], entries[0].layer.method
    )
    return {e.key: np.asarray(m) for e, m in zip(entries, masks, strict=True)}


@dataclass(frozen=True)
class SupermaskTicket:
    """A pruning ticket: the seed that regenerates the frozen weights, the config (as
    :meth:`PruneConfig.as_dict`), the sparsity, the 0/1 masks (bool arrays keyed ``fc1.weight2``),
    the frozen conv weights of LeNet5 variants, and (when loaded) the file's metadata.

    ``to_json``/``from_json`` are the metadata form of ``ticket.npz`` (without the arrays).
    ``ticket["masks"]`` reads a field by name, as the dict form of the first release did."""

    config: dict[str, Any]
    seed: int
    sparsity: float
    masks: dict[str, np.ndarray]
    conv: dict[str, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def to_json(self) -> dict[str, Any]:
        return {"format": TICKET_FORMAT, "config": self.config, "seed": self.seed,
                "sparsity": self.sparsity,
                "shapes": {k: list(v.shape) for k, v in self.masks.items()}}  # fmt: skip

    @classmethod
    def from_json(cls, meta: dict[str, Any], masks, conv=None) -> SupermaskTicket:
        return cls(meta["config"], int(meta["seed"]), float(meta["sparsity"]), masks, conv, meta)


def make_ticket(net: PrunedNet, config: PruneConfig, seed: int, sparsity: float) -> SupermaskTicket:
    """A ticket: the seed that regenerates the frozen weights, the config, and the masks."""
    conv = {k: np.asarray(getattr(net, k.split(".")[0]).weight[...])
            for k in ("conv1.weight", "conv2.weight")} if net.conv else None  # fmt: skip
    return SupermaskTicket(config.as_dict(), int(seed), float(sparsity), ticket_masks(net), conv)


def member_ticket(batch: Batch, i: int) -> SupermaskTicket:
    """The ticket of member ``i`` of a trained batch (:func:`~lottery_jax.pruning.batched.train_batch`):
    its seed, sparsity, the batch's config and the member's masks."""
    if not (isinstance(i, int) and 0 <= i < len(batch.members)):
        raise UserError(f"member {i!r} is not in the batch (0 to {len(batch.members) - 1})")
    seed, sparsity = batch.members[i]
    return make_ticket(member_net(batch, i), batch.config, seed, sparsity)


def save_ticket(path: str | Path, ticket: SupermaskTicket, extra: dict | None = None) -> Path:
    """``.npz``: ``__meta__`` JSON (``format`` = ``lottery-jax-supermask-ticket/2``),
    ``mask:<tensor>`` = ``np.packbits`` of the flat mask, shapes in the metadata, and
    ``conv:<key>`` = the frozen conv weights of LeNet5 variants."""
    meta = {**ticket.to_json(), **(extra or {})}
    arrays = {f"mask:{k}": np.packbits(v.ravel()) for k, v in ticket.masks.items()}
    for k, v in (ticket.conv or {}).items():
        arrays[f"conv:{k}"] = np.asarray(v, np.float32)
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    return write_npz(path, arrays)


def load_ticket(path: str | Path) -> SupermaskTicket:
    """Inverse of :func:`save_ticket`; reads first-release files (``lottery-jax-ticket/1``) too.

    UserError (one line) for a missing or malformed file or a SubsetSum ticket.
    """
    t = open_ticket(path, "supermask")
    path, arrays, meta = t.path, t.arrays, t.meta
    shapes, head = _ticket_head(meta, path)
    masks = {}
    for key, shape in shapes.items():
        size = math.prod(shape)
        bits = arrays.get(f"mask:{key}")
        if bits is None or bits.dtype != np.uint8 or bits.ndim != 1 or bits.size != (size + 7) // 8:
            raise UserError(f"{path}: mask {key} is missing or has the wrong length")
        masks[key] = np.unpackbits(bits, count=size).astype(bool).reshape(shape)
    conv = {k[len("conv:") :]: v for k, v in arrays.items() if k.startswith("conv:")} or None
    return SupermaskTicket(head[0], head[1], head[2], masks, conv, meta)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ticket_head(meta: dict[str, Any], path) -> tuple[dict[str, list[int]], tuple]:
    """The mask shapes and (config, seed, sparsity) of a ticket's metadata, every one of the
    right type and range (a one-line UserError naming the first that is not)."""

    def bad(what: str) -> UserError:
        return UserError(f"ticket {path}: malformed metadata ({what})")

    for key in ("shapes", "config", "seed", "sparsity"):
        if key not in meta:
            raise bad(f"no {key}")
    seed, sparsity, config = meta["seed"], meta["sparsity"], meta["config"]
    if not (_is_int(seed) and 0 <= seed < 2**32):
        raise bad(f"seed {seed!r} is not an integer in [0, 2^32)")
    if not (isinstance(sparsity, int | float) and not isinstance(sparsity, bool)
            and 0 <= sparsity < 1):  # fmt: skip
        raise bad(f"sparsity {sparsity!r} is not a number in [0, 1)")
    if not isinstance(config, dict):
        raise bad("config is not an object")
    if not isinstance(meta["shapes"], dict) or not meta["shapes"]:
        raise bad("shapes is not a non-empty object")
    shapes = {}
    for k, v in meta["shapes"].items():
        ok = isinstance(v, list) and 1 <= len(v) <= 4 and all(_is_int(d) and d > 0 for d in v)
        if not ok or math.prod(v) > MAX_MASK_ENTRIES:
            raise bad(f"shape of {k} {v!r} is not 1 to 4 positive sizes of at most "
                      f"{MAX_MASK_ENTRIES:,} entries")  # fmt: skip
        shapes[str(k)] = [int(d) for d in v]
    return shapes, (config, int(seed), float(sparsity))


def ticket_config(ticket: SupermaskTicket) -> PruneConfig:
    """The :class:`PruneConfig` a ticket records, validated (a one-line UserError when it holds
    wrong types or values; :class:`PruneConfig` checks the values as it is built)."""
    known = {f for f in PruneConfig.__dataclass_fields__}
    try:
        cfg = PruneConfig(**{k: v for k, v in ticket.config.items() if k in known})
        _check_config_types(cfg)
    except UserError as e:
        raise UserError(f"ticket config: {e}") from None
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as e:
        raise UserError(f"ticket config is malformed ({type(e).__name__}: {e})") from None
    return cfg


def _check_config_types(cfg: PruneConfig) -> None:
    for name in ("redundancy", "epochs", "batch_size"):
        if not _is_int(getattr(cfg, name)):
            raise UserError(f"{name} {getattr(cfg, name)!r} is not an integer")
    if not isinstance(cfg.relu, bool):
        raise UserError(f"relu {cfg.relu!r} is not true or false")
    if cfg.sizes is not None and not (isinstance(cfg.sizes, list | tuple)
                                      and all(_is_int(x) for x in cfg.sizes)):  # fmt: skip
        raise UserError(f"sizes {cfg.sizes!r} is not a list of integers")


def net_from_ticket(ticket: SupermaskTicket) -> PrunedNet:
    """Rebuild the pruned network: frozen weights from the seed, masks fixed to the ticket's.

    Each score is set to its 0/1 mask value and each removal count to the number of zeros, so the
    exact top-k mask of the rebuilt net IS the saved mask (zeros are the smallest |score|): any
    mask is represented, the solved ones of ``construct`` too. A ticket whose metadata names an
    ``init`` other than ``normal`` (``construct --init uniform``) has its frozen weights redrawn
    so.
    """
    cfg = ticket_config(ticket)
    net = build_pruned(
        cfg.model, seed=ticket.seed, redundancy=cfg.redundancy, relu=cfg.relu,
        conv_state=ticket.conv, method=cfg.method, sizes=cfg.sizes,
    )  # fmt: skip
    init = (ticket.meta or {}).get("init", "normal")
    if init != "normal":  # frozen weights redrawn by `construct --init` (lottery_jax.subsetsum)
        from lottery_jax.subsetsum.construct import apply_init

        apply_init(net, ticket["seed"], init)
    entries = masked_entries(net)
    if {e.key for e in entries} != set(ticket.masks):
        raise UserError(f"ticket masks {sorted(ticket.masks)} do not fit {cfg.model}")
    for e in entries:
        mask = ticket.masks[e.key]
        if mask.shape != e.scores[...].shape:
            raise UserError(f"ticket mask {e.key} has shape {mask.shape}")
        e.scores[...] = jnp.asarray(mask, jnp.float32)
        e.counts[...] = jnp.int32(mask.size - int(mask.sum()))
    return net


def net_accuracy(
    net: PrunedNet, images: jax.Array, labels: jax.Array, batch_size: int = 1000
) -> float:
    """Test accuracy of one pruned network (the path used for tickets and final accuracies)."""
    graphdef, frozen, scores, counts = nnx.split(net, Frozen, Score, PruneCount)
    correct = batched_correct(
        graphdef, frozen, [scores], [counts], images, labels, True, batch_size, "unroll"
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
    return _target_family(state), state


def _target_family(state: dict[str, np.ndarray]) -> str:
    """Which target network (fc2, fc4, lenet5) the dense ``state`` is, its shapes checked by
    building it (a custom depth or width is none: a one-line UserError, never a wrong label).
    LeNet5's widths are :func:`export_dense`'s check."""
    from lottery_jax.nets.targets import infer_model, network_for

    try:
        family = infer_model(state)[0]
        if family != "lenet5":
            network_for(state, model=family)
    except UserError:
        shapes = ", ".join("x".join(map(str, v.shape)) for v in state.values())
        raise UserError(
            f"the dense network ({shapes}) is none of fc2, fc4, lenet5, so evaluate cannot read "
            "it; export a ticket of one of those shapes"
        ) from None
    return family


def export_dense(net: PrunedNet, path: str | Path, meta: dict | None = None) -> Path:
    """Write the effective dense network as a weight file that ``lottery-jax evaluate`` accepts."""
    family, state = dense_state(net)
    if family == "lenet5":
        h1, h2 = state["fc1.weight"].shape[0], state["fc2.weight"].shape[0]
        if (h1, h2) != lenet5_widths(h1):
            raise UserError(
                f"a LeNet5 with fc widths {h1}, {h2} cannot be read by evaluate (it builds "
                f"{h1}, {lenet5_widths(h1)[1]}); export the redundant LeNet5 instead"
            )
    hidden = int(state["fc1.weight"].shape[0])
    return save_weights(path, family, state, {"hidden": hidden, "inputs": "normalized",
                                              **(meta or {})})  # fmt: skip


def load_conv_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Conv weights from a ``train``-made LeNet5 weight file, or ``paper-lenet5`` (the paper's
    trained LeNet5, built in); UserError on the wrong shapes."""
    from lottery_jax.checkpoint import load_weights
    from lottery_jax.paper import resolve_weights

    state, _ = load_weights(resolve_weights(path))
    return conv_state_from(state, str(path))
