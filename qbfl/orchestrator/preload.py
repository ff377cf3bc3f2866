"""Imported once by the local backend's forkserver, before any node forks from it (and before any
gRPC use): torch imported and warmed, the task's dataset decoded, then every object frozen, so 50
node processes share those pages copy-on-write instead of paying ~210 MB each (DEVELOPERS notes:
a warmed forkserver child costs ~25 MB)."""

from __future__ import annotations

import gc
import importlib
import os

import torch

from qbfl.learning.data import load_dataset
from qbfl.learning.models import build_model

torch.set_num_threads(1)
# The first optimizer step imports torch._dynamo (~890 modules); do it here, once, for everyone.
_model = build_model(os.environ.get("QBFL_PRELOAD_MODEL", "fcnn-mpo"), seed=0)
_opt = torch.optim.SGD(_model.parameters(), lr=0.01, momentum=0.9)
_x = torch.zeros(2, 1, 28, 28)
torch.nn.functional.cross_entropy(_model(_x), torch.zeros(2, dtype=torch.long)).backward()
_opt.step()
del _model, _opt, _x
_task = os.environ.get("QBFL_PRELOAD_TASK")
if _task:
    load_dataset(_task, "train")  # cached per process: every node slices its shard from it
# What a node imports besides gRPC (which must not be initialised before a fork): the protocol
# core, the ledger, the crypto, opacus (and the scipy it pulls in). Imported in every child, these
# were ~90 MB of private memory per node.
for _name in (
    "qbfl.learning.dp",
    "qbfl.node.learner",
    "qbfl.node.runtime",
    "qbfl.consensus.round",
    "qbfl.consensus.qba",
    "qbfl.ledger.recovery",
    "qbfl.crypto.bb84",
    "qbfl.crypto.keychunks",
    "qbfl.aggregation.registry",
    "sqlite3",
    "http.server",
):
    importlib.import_module(_name)
gc.collect()
gc.freeze()
