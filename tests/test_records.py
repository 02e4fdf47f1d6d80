"""Typed records (issue 16): each to_json is the file's form, from_json reads it back, and files
of earlier releases (other keys, missing ones) still load."""

from __future__ import annotations

import json

import numpy as np

from lottery_jax.pruning.ticket import SupermaskTicket
from lottery_jax.results import PruneRecord, TrainRecord
from lottery_jax.training import History


def test_train_record_round_trip_and_derived_fields():
    r = TrainRecord("run", {"model": "fc2", "seed": 3}, 3, {"backend": "cpu"}, [90.0, 92.5],
                    [0.4, 0.3], [1.0, 1.1], 0.5, 397_510, 0)  # fmt: skip
    d = json.loads(json.dumps(r.to_json()))
    assert d["command"] == "train" and d["epochs_done"] == 2 and d["final_test_accuracy"] == 92.5
    assert TrainRecord.from_json(d) == r
    # A file of another release: an unknown key is ignored, a missing one defaults.
    old = {k: v for k, v in d.items() if k != "frozen_params"} | {"extra": 1}
    back = TrainRecord.from_json(old)
    assert back.frozen_params == 0 and back.test_accuracy == [90.0, 92.5]
    assert TrainRecord.from_json({}).final_test_accuracy is None


def test_prune_record_round_trip():
    r = PruneRecord("red-fc2-r2-linear-e1-s0.5-seed1", {"model": "red-fc2"}, 1, 0.5, 100, 50,
                    [93.0], 93.0, [0.3], [2.0], 1.0, 0.1, ["a"], "unroll", [1], {})  # fmt: skip
    d = json.loads(json.dumps(r.to_json()))
    assert d["command"] == "prune" and d["ticket"] == "ticket.npz" and "note" in d
    assert PruneRecord.from_json(d) == r
    del d["device_members"], d["eval_seconds"]  # (files of the first release lack them)
    back = PruneRecord.from_json(d)
    assert back.device_members is None and back.eval_seconds == 0.0


def test_history_and_supermask_ticket_records():
    h = History([90.0], [0.5], [1.0], 0.2, 0.1, opt_state=object())
    back = History.from_json(json.loads(json.dumps(h.to_json())))
    assert back.test_accuracy == [90.0] and back.feature_seconds == 0.1 and back.opt_state is None
    masks = {"fc1.weight": np.array([[True, False]])}
    t = SupermaskTicket({"model": "wide-fc2"}, 2, 0.5, masks)
    meta = json.loads(json.dumps(t.to_json()))
    assert meta["shapes"] == {"fc1.weight": [1, 2]} and meta["seed"] == 2
    again = SupermaskTicket.from_json(meta, masks)
    assert (again.seed, again.sparsity, again.config) == (2, 0.5, {"model": "wide-fc2"})
    assert again["masks"] is masks  # (read by name, as the first release's dict)
