"""Experiment 2: pruning random networks with supermasks.

* :mod:`.batched`: several (seed, sparsity) members trained by one compiled program;
* :mod:`.ticket`: pruning tickets (seed + packed masks), rebuilding and exporting them;
* :mod:`.sweep`: running the published grid (or a sub-grid) into a results directory.

The networks themselves live in :mod:`lottery_jax.nets.pruned`; their names are re-exported here.
"""

from lottery_jax.nets.pruned import (
    FC_SIZES,
    PRUNE_MODELS,
    MaskedLinear,
    PrunedNet,
    RedundantLinear,
    build_pruned,
    collapse,
    conv_state_from,
    masked_entries,
    param_counts,
    parse_model,
    redundant_param_count,
    set_sparsity,
    wide_sizes,
    wide_width,
)
from lottery_jax.nets.supermask import topk_mask

from .batched import (
    PUBLISHED_EPOCHS,
    PUBLISHED_SPARSITIES,
    Batch,
    PruneConfig,
    batch_accuracy,
    make_batch,
    make_batched_runner,
    member_mode,
    member_net,
    train_batch,
)
from .ticket import (
    SupermaskTicket,
    dense_state,
    export_dense,
    load_conv_checkpoint,
    load_ticket,
    make_ticket,
    net_accuracy,
    net_from_ticket,
    save_ticket,
    ticket_masks,
)

__all__ = [
    "FC_SIZES",
    "PRUNE_MODELS",
    "PUBLISHED_EPOCHS",
    "PUBLISHED_SPARSITIES",
    "Batch",
    "MaskedLinear",
    "PruneConfig",
    "SupermaskTicket",
    "PrunedNet",
    "RedundantLinear",
    "batch_accuracy",
    "build_pruned",
    "collapse",
    "conv_state_from",
    "dense_state",
    "export_dense",
    "load_conv_checkpoint",
    "load_ticket",
    "make_batch",
    "make_batched_runner",
    "make_ticket",
    "masked_entries",
    "member_mode",
    "member_net",
    "net_accuracy",
    "net_from_ticket",
    "param_counts",
    "parse_model",
    "redundant_param_count",
    "save_ticket",
    "set_sparsity",
    "ticket_masks",
    "topk_mask",
    "train_batch",
    "wide_sizes",
    "wide_width",
]
