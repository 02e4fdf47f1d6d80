"""How many runs of a sweep train together in one compiled program (the group size), per family.

A group saves compiles and program launches, and on an accelerator it is one ``vmap``-ed program
whose members' steps run as one (a step there is launch-bound): all members go together. On a CPU
the members of a group run one after another inside the program (``unroll``), each streaming its
own scores, momenta and frozen weights (12 bytes per masked parameter) every step; once a group's
working set outgrows what the cache keeps, every member-step costs more than a single run's.
Measured on a 2-core CPU (``benchmarks/bench_prune.py``; load 4-5, per member-step):

* red-FC2 (2.0M masked parameters, 24 MB a member): 13.6 ms alone, 39 ms in a group of 2, 47 ms in
  a group of 4 -- so one run at a time;
* red-LeNet5 (0.3M, 3.6 MB a member): 14.0 ms alone, 5.3 ms in a group of 4, 3.4 ms in a group
  of 14 -- so the whole grid together.

Hence the rule: a member whose working set exceeds :data:`CPU_ALONE_BYTES` trains alone; smaller
ones go together up to :data:`CPU_GROUP_BYTES` per group. A member's result does not depend on its
group (same arithmetic, bit for bit: ``tests/test_pruning.py``), so the rule changes only speed;
each run's ``results.json`` names the runs it trained with (``batched_with``).
"""

from __future__ import annotations

import jax

from lottery_jax.nets.pruned import pruned_param_count

#: Bytes a member streams per step and masked parameter: score, momentum, frozen weight (float32).
BYTES_PER_PARAM = 12
#: On a CPU, members whose working set exceeds this train one at a time.
CPU_ALONE_BYTES = 16 * 2**20
#: On a CPU, the largest working set of a group of smaller members.
CPU_GROUP_BYTES = 64 * 2**20


def member_bytes(cfg) -> int:
    """The working set one member of ``cfg`` (a ``PruneConfig``) streams every step."""
    return BYTES_PER_PARAM * pruned_param_count(cfg.model, int(cfg.redundancy), cfg.sizes)


def group_size(cfg, members: int, backend: str | None = None) -> int:
    """How many of ``members`` runs of ``cfg`` go into one compiled program on ``backend``
    (default: JAX's default backend): all of them on an accelerator; on a CPU one at a time when a
    member's working set exceeds :data:`CPU_ALONE_BYTES`, else as many as fit
    :data:`CPU_GROUP_BYTES` (at least one)."""
    members = max(int(members), 1)
    if (backend or jax.default_backend()) != "cpu":
        return members
    per = member_bytes(cfg)
    if per > CPU_ALONE_BYTES:
        return 1
    return max(1, min(members, CPU_GROUP_BYTES // per))
