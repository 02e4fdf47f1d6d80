"""The theorem, executable: prune a random redundant network to a given target by SubsetSum.

Pensia et al. (2020), Theorem 1: a random network with about ``log2(1/eps)`` random links per
weight of a target contains a subnetwork that approximates the target within eps. ``construct``
finds that subnetwork. It builds the redundant network of the target's family (FC2, FC4, or
LeNet5's fully connected layers after the target's own conv layers) with redundancy ``r`` and
exactly the frozen random weights ``prune --model red-... --redundancy r --seed S`` draws (the same
:func:`lottery_jax.nets.pruned.build_pruned`), so a solved and a trained ticket of one seed share
every random weight; ``init="uniform"`` redraws them uniformly from [-1, 1], the distribution of the
paper's proof. Then, for every target weight W[o, j], it keeps the subset of its r links whose
products ``w2[o, j r + k] w1[k, j]`` best sum to W (:mod:`lottery_jax.subsetsum.links`), masks the
other ``w2`` entries and every ``w1`` entry no kept link uses.

With the extra ReLU (``relu=True``) a link passes an input ``x >= 0`` only when ``w1 > 0`` and
``x < 0`` only when ``w1 < 0``; the layer represents W for both signs when a subset of the
positive-w1 links and one of the negative-w1 links each sum to W within eps (the paper's two-sided
construction). Inputs of a hidden layer are ReLU outputs (non-negative), and so are LeNet5's conv
features and unit pixels: there only the positive side is needed. Only the first layer of FC2/FC4
fed normalized (signed) inputs needs both sides.

The result is a standard supermask ticket (:mod:`lottery_jax.pruning.ticket`: its masks are
stored directly), so ``evaluate-ticket`` and ``export-ticket`` work on it unchanged; it records its
input mode and init. :func:`construct` returns the ``results.json`` record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lottery_jax import rundir
from lottery_jax.errors import UserError
from lottery_jax.nets import pruned as pn
from lottery_jax.nets.targets import DEFAULT_INPUTS, infer_model, network_for
from lottery_jax.resources import require_memory, require_time
from lottery_jax.results import device_summary
from lottery_jax.subsetsum import links as lk
from lottery_jax.subsetsum import search as ss
from lottery_jax.subsetsum.network import OBJECTIVES, STATUSES, WITHIN_STATUSES

INITS = ("normal", "uniform")
#: ``normal``: Experiment 2's init, shared with ``prune`` (w1 ~ N(0, 2), w2 ~ N(0, 2/in));
#: ``uniform``: every frozen weight uniform on [-1, 1] (the paper's proof).
INIT_NOTES = {
    "normal": "Experiment 2 (prune's): weight1 ~ N(0, 2), weight2 ~ N(0, 2/in)",
    "uniform": "uniform on [-1, 1] (the paper's proof)",
}
#: Stream of the uniform redraw, apart from build_pruned's ``nnx.Rngs(params=seed)``.
UNIFORM_STREAM = 0x1417
#: Output rows per sealed chunk of a layer: about this many weights each.
CHUNK_WEIGHTS = 2**16


@dataclass(frozen=True)
class ConstructConfig:
    """Everything that defines a construction (and its resume fingerprint)."""

    redundancy: int
    epsilon: float = 0.01
    objective: str = "min-error"
    relu: bool = False
    init: str = "normal"
    seed: int = 0
    max_enum_n: int = lk.DEFAULT_MAX_ENUM_N
    feasibility_groups: int = 8
    max_hours: float = 4.0  # budget (not part of the fingerprint)

    def __post_init__(self) -> None:
        if not isinstance(self.redundancy, int | np.integer) or self.redundancy < 1:
            raise UserError(f"redundancy must be an integer of at least 1, got {self.redundancy}")
        if not (isinstance(self.epsilon, int | float) and 0 < self.epsilon < 1):
            raise UserError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"unknown objective {self.objective!r} (choose from {OBJECTIVES})")
        if self.init not in INITS:
            raise UserError(f"unknown init {self.init!r} (choose from {', '.join(INITS)})")
        if not (isinstance(self.seed, int | np.integer) and 0 <= self.seed < 2**32):
            raise UserError(f"seed must be an integer in [0, 2^32), got {self.seed}")
        if not 1 <= self.max_enum_n <= ss.MAX_ENUM_N:
            raise UserError(f"max enumeration n must be in [1, {ss.MAX_ENUM_N}]")
        if not 1 <= self.feasibility_groups <= 64:
            raise UserError(f"feasibility groups must be in [1, 64], got {self.feasibility_groups}")
        if not (math.isfinite(self.max_hours) and self.max_hours > 0):
            raise UserError(f"max hours must be positive, got {self.max_hours}")

    def fingerprint_args(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("max_hours")
        return d

    def side_solve(self) -> lk.SideSolve:
        return lk.SideSolve(self.epsilon, self.objective, self.max_enum_n,
                            self.feasibility_groups, self.seed)  # fmt: skip


# ----------------------------------------------------------------------------- the random network


@dataclass
class RedundantForm:
    """The redundant network of a target: prune's model name, sizes, conv weights, the target's
    own network name, its fc tensors in order and the input mode it is scored with."""

    model: str  # red-fc2, red-fc4, red-lenet5, or red (custom sizes)
    sizes: tuple[int, ...] | None  # for ``red`` only
    layer_sizes: tuple[int, ...]
    conv_state: dict[str, np.ndarray] | None
    target_model: str
    weights: dict[str, np.ndarray]  # fc1.weight ... (out, in), canonical names
    state: dict[str, np.ndarray]  # the canonical target state


def redundant_form(state: dict[str, np.ndarray], source: str = "", model: str | None = None):
    """The redundant form of a target (FC2/FC4 of any width, LeNet5 with its standard fc
    widths); one-line UserError for a target that has none (biases, other LeNet5 widths)."""
    name, canon, _ = infer_model(state, source=source, model=model)
    biases = sorted(k for k in canon if k.endswith(".bias"))
    if biases:
        raise UserError(
            f"{source or 'the target'} has biases ({', '.join(biases[:3])}): a redundant layer "
            "has none, so this target has no redundant form"
        )
    fcs = sorted((k for k in canon if k.startswith("fc")), key=lambda k: int(k[2:].split(".")[0]))
    weights = {k: np.asarray(canon[k], np.float64) for k in fcs}
    sizes = (weights[fcs[0]].shape[1], *(weights[k].shape[0] for k in fcs))
    for a, b in zip(fcs, fcs[1:], strict=False):
        if weights[b].shape[1] != weights[a].shape[0]:
            raise UserError(f"{source}: {b} does not follow {a} ({weights[b].shape})")
    conv = None
    if name == "lenet5":
        if sizes != pn.FC_SIZES["lenet5"]:
            raise UserError(
                f"{source}: a LeNet5 with fc sizes {sizes} has no redundant form (red-lenet5 "
                f"has {pn.FC_SIZES['lenet5']})"
            )
        conv = pn.conv_state_from(canon, source)
        return RedundantForm("red-lenet5", None, sizes, conv, name, weights, canon)
    if sizes == pn.FC_SIZES[name]:
        return RedundantForm(f"red-{name}", None, sizes, None, name, weights, canon)
    return RedundantForm("red", sizes, sizes, None, name, weights, canon)


def apply_init(net: pn.PrunedNet, seed: int, init: str) -> None:
    """Redraw the frozen link weights of ``net`` for ``init`` (``normal`` keeps build_pruned's):
    ``uniform``: layer i's ``weight1``/``weight2`` from ``jax.random.uniform(fold_in(fold_in(
    key(seed), UNIFORM_STREAM), 2 i (+1)), ..., -1, 1)``."""
    if init == "normal":
        return
    if init not in INITS:
        raise UserError(f"unknown init {init!r} (choose from {', '.join(INITS)})")
    base = jax.random.fold_in(jax.random.key(int(seed)), UNIFORM_STREAM)
    for i, layer in enumerate(net.layers()):
        for t, attr in enumerate(("weight1", "weight2")):
            var = getattr(layer, attr)
            key = jax.random.fold_in(base, 2 * i + t)
            var[...] = jax.random.uniform(key, var[...].shape, jnp.float32, -1.0, 1.0)


def build_random(form: RedundantForm, cfg: ConstructConfig) -> pn.PrunedNet:
    """The random redundant network: build_pruned's draws (as ``prune``), then the init."""
    net = pn.build_pruned(form.model, seed=int(cfg.seed), redundancy=int(cfg.redundancy),
                          relu=cfg.relu, conv_state=form.conv_state, sizes=form.sizes)  # fmt: skip
    apply_init(net, cfg.seed, cfg.init)
    return net


def layer_sides(index: int, cfg: ConstructConfig, form: RedundantForm, inputs: str):
    """The sides a layer must solve: ``all`` links (linear), else ``positive`` (non-negative
    inputs: hidden layers, LeNet5's conv features, unit pixels) or both signs (the first layer of
    FC2/FC4 fed normalized inputs)."""
    if not cfg.relu:
        return ("all",)
    signed = index == 0 and form.target_model != "lenet5" and inputs == "normalized"
    if signed and cfg.redundancy < 2:
        raise UserError(
            "a ReLU construction for signed inputs (normalized pixels) needs redundancy >= 2: "
            "each link passes one input sign only"
        )
    return ("positive", "negative") if signed else ("positive",)


# ----------------------------------------------------------------------------- solving


@dataclass
class LayerConstruction:
    """One redundant layer solved: masks, per weight error/status/sum, per side statuses."""

    name: str
    sides: tuple[str, ...]
    mask1: np.ndarray  # (r, in) bool
    mask2: np.ndarray  # (out, in r) bool
    errors: np.ndarray  # (out, in): the worse side's
    status: np.ndarray  # (out, in) uint8: the worse side's
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # side -> (out, in)
    side_status: dict[str, np.ndarray] = field(default_factory=dict)


def _chunk_rows(n_in: int) -> int:
    return max(1, CHUNK_WEIGHTS // max(1, n_in))


def _solve_block(w1, w2_rows, w_rows, side, how, stats):
    """One side of a block of output rows: ``(bits (rows, in, r), SideResult)``."""
    rows, n_in = w_rows.shape
    r = w1.shape[0]
    coefs = lk.link_products(w1, w2_rows).reshape(-1, r)
    usable = lk.usable_links(w1, side, rows).reshape(-1, r)
    res = lk.solve_side(coefs, usable, w_rows.reshape(-1), how, stats)
    return res.bits.reshape(rows, n_in, r), res


def _block(run, name, w1, w2_rows, w_rows, side, how, stats):
    """A block's side, read back from its sealed chunk when the run has it, else solved (and
    sealed)."""
    size, r = w_rows.size, w1.shape[0]
    shape_bits = (size, (r + 7) // 8)
    if run is not None:
        got = run.load_chunk(name, {"bits": shape_bits, "sums": (size,), "errors": (size,),
                                    "status": (size,)})  # fmt: skip
        if got is not None:
            bits = np.unpackbits(got["bits"], axis=-1, count=r).astype(bool)
            return bits.reshape(*w_rows.shape, r), got, True
    bits, res = _solve_block(w1, w2_rows, w_rows, side, how, stats)
    arrays = {"bits": np.packbits(res.bits, axis=-1), "sums": res.sums, "errors": res.errors,
              "status": res.status}  # fmt: skip
    if run is not None:
        run.save_chunk(name, arrays)
    return bits, arrays, False


def construct_layer(name, w1, w2, target, sides, how, *, run=None, stats=None, on_chunk=None):
    """Solve every weight of one layer on each of its ``sides``; the masks keep every chosen
    link's ``w2`` entry and every ``w1`` entry some kept link uses."""
    stats = stats or ss.SolveStats()
    out, n_in = target.shape
    r = w1.shape[0]
    step = _chunk_rows(n_in)
    keep = np.zeros((out, n_in, r), bool)
    errors = np.zeros((out, n_in))
    status = np.zeros((out, n_in), np.uint8)
    sums = {s: np.zeros((out, n_in)) for s in sides}
    side_status = {s: np.zeros((out, n_in), np.uint8) for s in sides}
    resumed = 0
    for i, s0 in enumerate(range(0, out, step)):
        s1 = min(out, s0 + step)
        for side in sides:
            bits, got, was = _block(run, f"{name}-{side}-{i:05d}", w1, w2[s0:s1], target[s0:s1],
                                    side, how, stats)  # fmt: skip
            resumed += was
            keep[s0:s1] |= bits
            shape = (s1 - s0, n_in)
            sums[side][s0:s1] = got["sums"].reshape(shape)
            side_status[side][s0:s1] = got["status"].reshape(shape)
            errors[s0:s1] = np.maximum(errors[s0:s1], got["errors"].reshape(shape))
            status[s0:s1] = lk.worse_status(status[s0:s1], side_status[side][s0:s1])
        if on_chunk is not None:
            on_chunk(name, s1)
    mask2 = keep.reshape(out, n_in * r)
    mask1 = keep.any(axis=0).T
    layer = LayerConstruction(name, tuple(sides), mask1, mask2, errors, status, sums, side_status)
    return layer, resumed


# ----------------------------------------------------------------------------- plan


def plan_seconds(form: RedundantForm, cfg: ConstructConfig, inputs: str) -> float:
    """Estimated solving seconds (the exact tier's measured cost model; a ReLU side has about
    half the links)."""
    total = 0.0
    for i, w in enumerate(form.weights.values()):
        sides = layer_sides(i, cfg, form, inputs)
        n = cfg.redundancy if not cfg.relu else -(-cfg.redundancy // 2) + 1
        total += len(sides) * lk.exact_seconds(n, w.size)
    return total


def check_budget(form: RedundantForm, cfg: ConstructConfig, inputs: str) -> None:
    """Refuse up front (one line) a construction over the memory or the time budget."""
    r = int(cfg.redundancy)
    links = sum(w.size for w in form.weights.values()) * r
    params = pn.pruned_param_count(form.model, r, form.sizes)
    block = (CHUNK_WEIGHTS + max(w.shape[1] for w in form.weights.values())) * r
    # Frozen weights + scores (float32), the kept links (bool) and per weight its records, plus one
    # block's products, flags, order and bits (about 40 bytes a link).
    needed = 8 * params + links + 40 * links / r + 40 * block + 2**28
    require_memory(needed, f"constructing {form.model} with redundancy {r}",
                   "use a smaller redundancy")  # fmt: skip
    require_time(plan_seconds(form, cfg, inputs), f"constructing {form.model} with r = {r}",
                 cfg.max_hours, "raise the budget (max hours) or use a smaller redundancy")  # fmt: skip


# ----------------------------------------------------------------------------- tickets


def ticket_of(form, cfg, layers: dict[str, LayerConstruction], inputs: str, net):
    """The solved masks as a standard supermask ticket (the format ``prune`` writes)."""
    from lottery_jax.pruning.batched import PruneConfig
    from lottery_jax.pruning.ticket import SupermaskTicket

    masks = {}
    for name, lc in layers.items():
        masks[f"{name}.weight1"] = lc.mask1
        masks[f"{name}.weight2"] = lc.mask2
    size = sum(m.size for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    pcfg = PruneConfig(model=form.model, redundancy=int(cfg.redundancy), relu=cfg.relu, epochs=0,
                       sizes=form.sizes)  # fmt: skip
    conv = None
    if net.conv:
        conv = {k: np.asarray(getattr(net, k.split(".")[0]).weight[...])
                for k in ("conv1.weight", "conv2.weight")}  # fmt: skip
    meta = {"inputs": inputs, "init": cfg.init, "constructed": True}
    return SupermaskTicket(pcfg.as_dict(), int(cfg.seed), 1.0 - kept / size, masks, conv, meta)


def target_sha256(form: RedundantForm) -> str:
    h = hashlib.sha256()
    for k in sorted(form.state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(form.state[k], np.float32).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- scoring


def _forward(model: nnx.Module) -> Callable[[jax.Array], jax.Array]:
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x))
    return lambda x: fn(state, x)


def max_logit_error(target_net, ticket_net, images: jax.Array, batch: int = 1000) -> float:
    """``max over the examples of max_o |f(x)_o - g(x)_o|``: the target's logits against the
    pruned random network's (both float32)."""
    f, g = _forward(target_net), _forward(ticket_net)
    worst = 0.0
    for s in range(0, int(images.shape[0]), batch):
        x = images[s : s + batch]
        worst = max(worst, float(jnp.max(jnp.abs(f(x) - g(x)))))
    return worst


def score(form: RedundantForm, ticket: dict, data) -> dict[str, Any]:
    """Test accuracy of the target and of the ticket run as the pruned random network (rebuilt
    from the ticket exactly as ``evaluate-ticket`` does), and the largest logit difference."""
    from lottery_jax.pruning.ticket import net_accuracy, net_from_ticket
    from lottery_jax.training import evaluate

    t0 = time.perf_counter()
    _, target_net = network_for(form.state, model=form.target_model)
    net = net_from_ticket(ticket)
    return {
        "target_accuracy": evaluate(target_net, data.test_images, data.test_labels),
        "ticket_accuracy": net_accuracy(net, data.test_images, data.test_labels),
        "max_logit_error": max_logit_error(target_net, net, data.test_images),
        "eval_seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------- edge-popup beside it


def compare_edge_popup(form, cfg, ticket, data, epochs: int, *, on_chunk=None, on_epoch=None):
    """Train edge-popup masks (``prune``'s trainer) on the same random network, with exactly the
    solved ticket's removal count per tensor, for ``epochs`` epochs. Returns its record and its
    ticket."""
    from lottery_jax.nets.supermask import PruneCount, Score
    from lottery_jax.nets.targets import Frozen
    from lottery_jax.pruning import batched
    from lottery_jax.pruning.ticket import make_ticket, net_accuracy, net_from_ticket

    removed = {k: int(m.size - m.sum()) for k, m in ticket["masks"].items()}
    pcfg = batched.PruneConfig(model=form.model, redundancy=int(cfg.redundancy), relu=cfg.relu,
                               epochs=int(epochs), sizes=form.sizes)  # fmt: skip
    batched.require_time_for([(pcfg, 1)], int(data.train_images.shape[0]), cfg.max_hours)
    batch = batched.make_batch(pcfg, [(int(cfg.seed), 0.0)], conv_state=form.conv_state)
    net = build_random(form, cfg)  # the ticket's frozen weights (and prune's initial scores)
    for lname, layer, wname, _, cname in pn.masked_entries(net):
        getattr(layer, cname)[...] = jnp.int32(removed[f"{lname}.{wname}"])
    graphdef, frozen, scores, counts = nnx.split(net, Frozen, Score, PruneCount)
    total = sum(m.size for m in ticket["masks"].values())
    batch = dataclasses.replace(
        batch,
        graphdef=graphdef,
        frozen=frozen,
        scores=[scores],
        counts=[counts],
        totals=[(total, total - sum(removed.values()))],
    )
    t0 = time.perf_counter()
    history = batched.train_batch(batch, data, on_chunk=on_chunk, on_epoch=on_epoch)
    wall = time.perf_counter() - t0
    trained = make_ticket(batched.member_net(batch, 0), pcfg, int(cfg.seed), ticket["sparsity"])
    trained = dataclasses.replace(trained, meta=dict(ticket["meta"], constructed=False))
    acc = net_accuracy(net_from_ticket(trained), data.test_images, data.test_labels)
    kept = {k: int(m.sum()) for k, m in trained["masks"].items()}
    record = {
        "epochs": int(epochs), "ticket_accuracy": acc,
        "test_accuracy": history["test_accuracy"][0], "remaining_params": sum(kept.values()),
        "remaining": kept, "seconds": wall, "epoch_seconds": history["epoch_seconds"],
        "compile_seconds": history["compile_seconds"], "lr": pcfg.learning_rate,
        "ticket": "edge-popup-ticket.npz",
    }  # fmt: skip
    return record, trained


# ----------------------------------------------------------------------------- records


def _counts(status: np.ndarray) -> dict[str, int]:
    return {s: int((status == i).sum()) for i, s in enumerate(STATUSES)}


def layer_record(lc: LayerConstruction) -> dict[str, Any]:
    """One row per layer: statuses (and per side), max error, kept links, per-tensor sparsity."""
    within = sum(v for k, v in _counts(lc.status).items() if k in WITHIN_STATUSES)
    k1, k2 = int(lc.mask1.sum()), int(lc.mask2.sum())
    return {
        "layer": lc.name,
        "shape": list(lc.errors.shape),
        "sides": list(lc.sides),
        "weights": int(lc.errors.size),
        "within_epsilon": int(within),
        "status_counts": _counts(lc.status),
        "side_status_counts": {s: _counts(v) for s, v in lc.side_status.items()},
        "max_error": float(lc.errors.max()),
        "mean_error": float(lc.errors.mean()),
        "remaining_params": k1 + k2,
        "remaining": {"weight1": k1, "weight2": k2},
        "total": {"weight1": int(lc.mask1.size), "weight2": int(lc.mask2.size)},
        "sparsity": {"weight1": 1 - k1 / lc.mask1.size, "weight2": 1 - k2 / lc.mask2.size},
    }


def not_within(layers, form, limit: int = 100) -> dict[str, Any]:
    """The weights left outside eps, each with its best error (the first ``limit`` listed)."""
    good = [STATUSES.index(s) for s in WITHIN_STATUSES]
    total, rows = 0, []
    for name, lc in layers.items():
        bad = ~np.isin(lc.status, good)
        total += int(bad.sum())
        w = form.weights[f"{name}.weight"]
        for o, j in np.argwhere(bad)[: max(0, limit - len(rows))]:
            rows.append({"layer": f"{name}.weight", "index": [int(o), int(j)],
                         "w": float(w[o, j]), "error": float(lc.errors[o, j]),
                         "status": STATUSES[lc.status[o, j]]})  # fmt: skip
    return {"total": total, "shown": len(rows), "weights": rows}


def summary(layers, form, cfg, stats, resumed: int) -> dict[str, Any]:
    """The solver's part of the record: fractions, counts, sizes, errors, timings."""
    table = [layer_record(lc) for lc in layers.values()]
    weights = sum(t["weights"] for t in table)
    within = sum(t["within_epsilon"] for t in table)
    remaining = sum(t["remaining_params"] for t in table)
    counts = {s: sum(t["status_counts"][s] for t in table) for s in STATUSES}
    total = pn.pruned_param_count(form.model, int(cfg.redundancy), form.sizes)
    return {
        "weights": weights, "within_epsilon": within,
        "within_epsilon_fraction": within / weights, "all_within_epsilon": within == weights,
        "max_error": max(t["max_error"] for t in table), "status_counts": counts,
        "total_params": total, "remaining_params": remaining, "sparsity": 1 - remaining / total,
        "relative_size": remaining / weights, "target_params": weights,
        "seconds": stats.seconds, "compile_seconds": stats.compile_seconds,
        "resumed_chunks": resumed, "layers": table,
        "not_within_epsilon": not_within(layers, form),
    }  # fmt: skip


# ----------------------------------------------------------------------------- the run


#: Exit status when some weight has no subset within eps (as ``approximate``).
EXIT_NOT_WITHIN = 3


@dataclass
class Construction:
    """What :func:`construct` produced: the ``results.json`` record, the ticket (the masks, in
    the supermask ticket's form), the edge-popup ticket when compared, and per layer results
    (None when the run was read back finished from its directory)."""

    results: dict[str, Any]
    ticket: dict[str, Any]
    edge_popup_ticket: dict[str, Any] | None = None
    layers: dict[str, LayerConstruction] | None = None
    resumed: bool = False

    @property
    def exit_status(self) -> int:
        return int(self.results["exit_status"])

    def save(self, path: str | Path) -> Path:
        """Write the ticket (``evaluate-ticket``/``export-ticket`` read it)."""
        from lottery_jax.pruning.ticket import save_ticket

        return save_ticket(path, self.ticket, ticket_extra(self.ticket, self.results))


def ticket_extra(ticket: dict, results: dict) -> dict[str, Any]:
    """What the ticket's ``__meta__`` adds to ``prune``'s: input mode, init, accuracy."""
    return {**ticket["meta"], "test_accuracy": results.get("ticket_accuracy"),
            "epsilon": results["epsilon"], "objective": results["objective"]}  # fmt: skip


def resolve_target(target, model: str | None = None):
    """``paper`` / ``paper-fc2`` / ``paper-lenet5`` / a weight file / a state dict ->
    ``(state, metadata, source name)``."""
    from lottery_jax import checkpoint
    from lottery_jax.paper import resolve_weights

    if isinstance(target, dict):
        return {k: np.asarray(v) for k, v in target.items()}, {"model": model}, "state"
    name = "paper-fc2" if str(target) == "paper" else str(target)
    state, meta = checkpoint.load_weights(resolve_weights(name))
    return {k: np.asarray(v) for k, v in state.items()}, meta, name


def _solve_all(form, cfg, net, inputs, run, on_layer, on_chunk):
    stats = ss.SolveStats()
    layers: dict[str, LayerConstruction] = {}
    resumed = 0
    how = cfg.side_solve()
    for i, (lname, layer) in enumerate(zip(net.names, net.layers(), strict=True)):
        target = form.weights[f"{lname}.weight"]
        if on_layer is not None:
            on_layer(lname, target.shape[0])
        w1 = np.asarray(layer.weight1[...], np.float64)
        w2 = np.asarray(layer.weight2[...], np.float64)
        lc, got = construct_layer(lname, w1, w2, target, layer_sides(i, cfg, form, inputs), how,
                                  run=run, stats=stats, on_chunk=on_chunk)  # fmt: skip
        layers[lname], resumed = lc, resumed + got
    return layers, stats, resumed


def _open_run(out, cfg, form, inputs, compare_epochs):
    if out is None or isinstance(out, rundir.RunDir):
        return out, False
    args = {"construct": "lottery-jax-construct/1", **cfg.fingerprint_args(), "inputs": inputs,
            "target_sha256": target_sha256(form), "model": form.model,
            "compare_epochs": int(compare_epochs)}  # fmt: skip
    return rundir.RunDir(out, command="construct", args=args).open(), True


def _finished(run) -> Construction | None:
    """The committed construction of ``run``, if it finished."""
    import json

    from lottery_jax.pruning.ticket import load_ticket

    if run is None or not (run.committed() or {}).get("done"):
        return None
    results = json.loads((run.path / "results.json").read_text())
    ticket = load_ticket(run.path / "ticket.npz")
    return Construction(results, ticket, resumed=True)


def construct(
    target: Any = "paper",
    *,
    redundancy: int,
    epsilon: float = 0.01,
    objective: str = "min-error",
    relu: bool = False,
    init: str = "normal",
    seed: int = 0,
    inputs: str | None = None,
    model: str | None = None,
    data: Any = None,
    evaluate: bool = True,
    out: Any = None,
    compare_epochs: int = 0,
    max_enum_n: int = lk.DEFAULT_MAX_ENUM_N,
    feasibility_groups: int = 8,
    max_hours: float = 4.0,
    on_layer: Callable[[str, int], None] | None = None,
    on_chunk: Callable[[str, int], None] | None = None,
    on_train_chunk: Callable | None = None,
    on_epoch: Callable | None = None,
) -> Construction:
    """Prune the random redundant network of ``target``'s family to ``target`` by SubsetSum.

    ``target``: ``paper`` (the paper's FC2), ``paper-lenet5``, a weight file or a state dict.
    ``inputs``: the target's input mode (default: its metadata, else unit for FC2/FC4 and
    normalized for LeNet5); ``data``: the test data preprocessed so (loaded when None and
    ``evaluate``). ``out``: a run directory (locked; finished layer chunks are resumed; the
    ticket, results and edge-popup ticket commit together). ``compare_epochs``: also train
    edge-popup masks at the solved ticket's per-tensor sparsity (:func:`compare_edge_popup`).
    """
    t_start = time.perf_counter()
    cfg = ConstructConfig(redundancy=redundancy, epsilon=epsilon, objective=objective, relu=relu,
                          init=init, seed=seed, max_enum_n=max_enum_n,
                          feasibility_groups=feasibility_groups, max_hours=max_hours)  # fmt: skip
    if not (isinstance(compare_epochs, int) and 0 <= compare_epochs < 2**31):
        raise UserError(f"compare epochs must be a non-negative integer, got {compare_epochs}")
    state, meta, source = resolve_target(target, model)
    form = redundant_form(state, source, model or meta.get("model"))
    inputs = inputs or meta.get("inputs") or DEFAULT_INPUTS[form.target_model]
    if inputs not in ("unit", "normalized"):
        raise UserError(f"unknown input mode {inputs!r} (unit or normalized)")
    check_budget(form, cfg, inputs)  # (also refuses sides the inputs cannot have)
    run, owned = _open_run(out, cfg, form, inputs, compare_epochs)
    try:
        done = _finished(run)
        if done is not None:
            return done
        if (evaluate or compare_epochs) and data is None:
            from lottery_jax.data import load_dataset

            data = load_dataset(inputs=inputs)
        result = _construct(
            form,
            cfg,
            inputs,
            source,
            data if evaluate or compare_epochs else None,
            run,
            compare_epochs,
            on_layer,
            on_chunk,
            on_train_chunk,
            on_epoch,
        )
        result.results["wall_seconds"] = time.perf_counter() - t_start
        if run is not None:
            run.commit(_files(result), state={"done": True})
        return result
    finally:
        if owned:
            run.close()


def _construct(form, cfg, inputs, source, data, run, compare_epochs, on_layer, on_chunk,
               on_train_chunk, on_epoch) -> Construction:  # fmt: skip
    net = build_random(form, cfg)
    layers, stats, resumed = _solve_all(form, cfg, net, inputs, run, on_layer, on_chunk)
    ticket = ticket_of(form, cfg, layers, inputs, net)
    record = summary(layers, form, cfg, stats, resumed)
    scores = {"target_accuracy": None, "ticket_accuracy": None, "max_logit_error": None}
    if data is not None:
        scores = score(form, ticket, data)
    outside = record["not_within_epsilon"]["total"]
    results = {
        "command": "construct", **scores, **record,
        "target": source, "target_model": form.target_model, "model": form.model,
        "sizes": list(form.layer_sizes), "redundancy": int(cfg.redundancy),
        "epsilon": cfg.epsilon, "objective": cfg.objective, "relu": cfg.relu, "init": cfg.init,
        "init_note": INIT_NOTES[cfg.init], "seed": int(cfg.seed), "inputs": inputs,
        "config": {**cfg.fingerprint_args(), "inputs": inputs, "target": source,
                   "compare_epochs": int(compare_epochs), "max_hours": cfg.max_hours},
        "device": device_summary(), "exit_status": EXIT_NOT_WITHIN if outside else 0,
        "ticket": "ticket.npz", "edge_popup": None,
    }  # fmt: skip
    trained = None
    if compare_epochs:
        results["edge_popup"], trained = compare_edge_popup(
            form, cfg, ticket, data, compare_epochs, on_chunk=on_train_chunk, on_epoch=on_epoch
        )
    return Construction(results, ticket, trained, layers)


def _files(result: Construction) -> dict[str, Any]:
    from lottery_jax.pruning.ticket import save_ticket

    files: dict[str, Any] = {
        "ticket.npz": lambda p: save_ticket(p, result.ticket,
                                            ticket_extra(result.ticket, result.results)),
        "results.json": rundir.json_bytes(result.results),
    }  # fmt: skip
    if result.edge_popup_ticket is not None:
        ep = result.results["edge_popup"]
        extra = {**result.edge_popup_ticket["meta"], "test_accuracy": ep["ticket_accuracy"]}
        files["edge-popup-ticket.npz"] = lambda p: save_ticket(p, result.edge_popup_ticket, extra)
    return files
