"""Pruning tickets (Experiment 2): the seed that regenerates a network's frozen weights, its
configuration and its packed masks; rebuilding a network from one and exporting its dense equivalent.
"""

from __future__ import annotations

import json
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
from lottery_jax.nets.targets import Frozen
from lottery_jax.pruning.batched import PruneConfig, _batched_correct
from lottery_jax.results import save_npz_atomic
from lottery_jax.tickets import SUPERMASK_FORMAT, open_ticket

#: Format id of the supermask ticket (files of the first release, ``lottery-jax-ticket/1``, load too).
TICKET_FORMAT = SUPERMASK_FORMAT


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
    """``.npz``: ``__meta__`` JSON (``format`` = ``lottery-jax-supermask-ticket/2``),
    ``mask:<tensor>`` = ``np.packbits`` of the flat mask, shapes in the metadata, and
    ``conv:<key>`` = the frozen conv weights of LeNet5 variants."""
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
    """Inverse of :func:`save_ticket`; reads first-release files (``lottery-jax-ticket/1``) too.

    UserError (one line) for a missing or malformed file or a SubsetSum ticket.
    """
    t = open_ticket(path, "supermask")
    path, arrays, meta = t.path, t.arrays, t.meta
    try:
        shapes = {str(k): [int(d) for d in v] for k, v in meta["shapes"].items()}
        head = (meta["config"], int(meta["seed"]), float(meta["sparsity"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"ticket {path}: malformed metadata ({type(e).__name__}: {e})") from None
    if not isinstance(head[0], dict):
        raise UserError(f"ticket {path}: malformed metadata (config is not an object)")
    masks = {}
    for key, shape in shapes.items():
        size = int(np.prod(shape))
        bits = arrays.get(f"mask:{key}")
        if bits is None or bits.dtype != np.uint8 or bits.size != (size + 7) // 8:
            raise UserError(f"{path}: mask {key} is missing or has the wrong length")
        masks[key] = np.unpackbits(bits, count=size).astype(bool).reshape(shape)
    conv = {k[len("conv:") :]: v for k, v in arrays.items() if k.startswith("conv:")} or None
    return {
        "config": head[0],
        "seed": head[1],
        "sparsity": head[2],
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
    exact top-k mask of the rebuilt net IS the saved mask (zeros are the smallest |score|): any
    mask is represented, the solved ones of ``construct`` too. A ticket whose metadata names an
    ``init`` other than ``normal`` (``construct --init uniform``) has its frozen weights redrawn
    so.
    """
    cfg = ticket_config(ticket)
    net = build_pruned(
        cfg.model, seed=ticket["seed"], redundancy=cfg.redundancy, relu=cfg.relu,
        conv_state=ticket["conv"], method=cfg.method, sizes=cfg.sizes,
    )  # fmt: skip
    init = (ticket.get("meta") or {}).get("init", "normal")
    if init != "normal":  # frozen weights redrawn by `construct --init` (lottery_jax.subsetsum)
        from lottery_jax.subsetsum.construct import apply_init

        apply_init(net, ticket["seed"], init)
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
    """Conv weights from a ``train``-made LeNet5 weight file, or ``paper-lenet5`` (the paper's
    trained LeNet5, built in); UserError on the wrong shapes."""
    from lottery_jax.checkpoint import load_weights
    from lottery_jax.paper import resolve_weights

    state, _ = load_weights(resolve_weights(path))
    return conv_state_from(state, str(path))
