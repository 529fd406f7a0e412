"""The Raft adapter: the only importer of pysyncobj (DESIGN.md §3, STYLE.md rule 12).

pysyncobj's camelCase API, its FAIL_REASON codes and its threads stop here. Modules:

- `settings`: `RaftNodeSettings`, `GroupSettings` — our frozen, validated config;
- `shim`: every access to pysyncobj internals, checked against the pinned version when
  this package is imported (imported first, below);
- `mux`: `RaftMux`, ONE Raft port per node for every group (meta group included);
- `driver`: `RaftDriver`, ONE thread ticking every group; its `cycle` is the documented
  sequence tick → sync journals → flush (nothing leaves the node before its journal sync);
- `node_log` (records: `log_records`, pure): `NodeLog`, ONE log per node holding every
  group's journal, term and vote — a sync step is one write and one fdatasync;
- `durable`: a new group directory's sync, and the import of a group's files written in
  the format before the node's log;
- `snapshot`: snapshots streamed from a background thread through pysyncobj's hooks;
- `stats`: what a group reports, `RaftStatus` (`/v1/cluster`) and `GroupStats` (`/metrics`);
- `group`: `RaftGroup`, one replica group: `propose(bytes)`, `status()`, typed errors,
  and its membership changes (`add_member`, `remove_member`, `wait_caught_up`,
  `transfer_leadership`);
- `membership` (pure: outcomes, checks, the per-group serializer), `reconfig` (the change
  flows) and `changes` (pysyncobj's side of a change): docs/raft.md "Membership changes".

State crosses from the driver thread into asyncio only through `call_soon_threadsafe`.
The driver lock (`RaftDriver.lock`) is held for a whole driver cycle; see `group` for which
methods take it.
"""

from raft_groups.syncobj_adapter import shim  # noqa: F401 - version check before any use
from raft_groups.syncobj_adapter.driver import RaftDriver
from raft_groups.syncobj_adapter.group import RaftGroup, StateMachine
from raft_groups.syncobj_adapter.membership import (
    ChangeOutcome,
    Done,
    Moved,
    NotMoved,
    Refusal,
    Refused,
    TransferOutcome,
    Unknown,
)
from raft_groups.syncobj_adapter.mux import RaftMux
from raft_groups.syncobj_adapter.node_log import NodeLog
from raft_groups.syncobj_adapter.settings import GroupSettings, RaftNodeSettings
from raft_groups.syncobj_adapter.stats import GroupStats, RaftStatus

__all__ = [
    "ChangeOutcome",
    "Done",
    "GroupSettings",
    "GroupStats",
    "Moved",
    "NodeLog",
    "NotMoved",
    "RaftDriver",
    "RaftGroup",
    "RaftMux",
    "RaftNodeSettings",
    "RaftStatus",
    "Refusal",
    "Refused",
    "StateMachine",
    "TransferOutcome",
    "Unknown",
]
