"""Networks: the paper's target networks, supermask variables and top-k, redundant and wide layers.

* :mod:`.targets`: FC2, FC4 and LeNet5 in PyTorch layout (the trained targets of both experiments),
  the ``Frozen`` variable type, and reading/writing PyTorch-layout state dicts.
* :mod:`.supermask`: the ``Score`` variable type and the exact top-k mask (radix/bisection select).
* :mod:`.pruned`: the redundant ("our structure") and wide networks of Experiment 2.
"""

from .pruned import (
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
from .supermask import PruneCount, Score, num_pruned, pruned_flags, supermask, topk_mask
from .targets import (
    FC2,
    FC4,
    MODEL_NAMES,
    Frozen,
    LeNet5,
    build_model,
    count_params,
    load_torch_state,
    model_from_state,
    torch_state,
)

__all__ = [
    "FC2",
    "FC4",
    "FC_SIZES",
    "MODEL_NAMES",
    "PRUNE_MODELS",
    "Frozen",
    "LeNet5",
    "MaskedLinear",
    "PruneCount",
    "PrunedNet",
    "RedundantLinear",
    "Score",
    "build_model",
    "build_pruned",
    "collapse",
    "conv_state_from",
    "count_params",
    "load_torch_state",
    "masked_entries",
    "model_from_state",
    "num_pruned",
    "param_counts",
    "parse_model",
    "pruned_flags",
    "redundant_param_count",
    "set_sparsity",
    "supermask",
    "topk_mask",
    "torch_state",
    "wide_sizes",
    "wide_width",
]
