"""The composition of backup and restore (docs/backup.md): each mode's backup operations
(raft_groups/backup.py, dynamo_mode/backup.py) behind kv/backups.py, served by the routes
of kv/http/backup.py. Part of the composition root (with kv/node.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dynamo_mode.backup import EventualBackup
from kv.backups import BackupOps, Backups
from kv.http.backup import BACKUPS
from raft_groups.backup import LinearizableBackup

if TYPE_CHECKING:
    from kv.node import Node


def wire(node: Node, app: Any) -> None:
    """Register the `lin_export` and `lin_import` ops and set the routes' `Backups` on
    `app` (the node's aiohttp application)."""
    cfg = node.config
    linearizable = LinearizableBackup(node.groups, cfg.node_id, node.transport, node._metadata)
    linearizable.register(node.ops)
    modes: dict[str, BackupOps] = {
        "linearizable": linearizable,
        "eventual": EventualBackup(node.transport),
    }
    app[BACKUPS] = Backups(node.service, modes)
