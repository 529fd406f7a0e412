"""Verification tooling: history recorder, linearizability checker, eventual-mode checks and
fault schedules (docs/verification.md, docs/verify.md).

Not part of the runtime: `pip install` ships kv, raft_groups and dynamo_mode only
(pyproject `packages.find`), and none of them imports this package. Its users are
ops/verify.py and the tests; of the runtime it imports `kv.client` and `kv.errors` only.
"""
