"""The layering of DESIGN.md §1, enforced by reading every module's imports with `ast`.

Rules (each failure names the file, the import and the rule it breaks):

1. Pure modules (PURE below: decision code, models and wire messages) import no I/O —
   no event loop, threads, sockets, processes, clocks read implicitly, HTTP, LevelDB or
   pysyncobj. Time, randomness and peers are their parameters (DESIGN.md §8.2).
2. Each third-party library has one importer in the runtime packages (ONE_IMPORTER), and
   each test-only one a single test module (TEST_ONE_IMPORTER).
3. `kv` core does not import the mode packages, except the composition root
   (kv/node.py, kv/__main__.py); the two modes do not import each other.
4. Runtime packages never import verification tooling, ops or tests (what `pip install`
   puts on a server holds what a server runs).
5. `ops/` and `kvctl/` (the operator CLI) reach nodes only through the API or `kv.client`:
   they may run pure code and in-memory models (ops/ae_measure.py models anti-entropy over
   MemoryEngine replicas), but never open a node's storage, run a node, its servers,
   transport or Raft groups; the node's packages never import kvctl.
6. Runtime modules stay under 400 lines and the median function under 10 lines.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("kv", "raft_groups", "dynamo_mode", "kvctl")
SERVER = ("kv", "raft_groups", "dynamo_mode")
CLIENTS = ("ops", "kvctl")  # rule 5
TOOLING = ("verification", "ops", "tests")

PURE = (
    "kv/auth.py",
    "kv/backup.py",
    "kv/batching.py",
    "kv/claim.py",
    "kv/errors.py",
    "kv/hashing.py",
    "kv/internode.py",
    "kv/keyspace.py",
    "kv/listing.py",
    "kv/meta.py",
    "kv/meta_machine.py",
    "kv/meta_ops.py",
    "kv/plan.py",
    "kv/ring.py",
    "kv/routing.py",
    "kv/sizes.py",
    "kv/storage.py",
    "kv/voters.py",
    "kv/wire.py",
    "dynamo_mode/canonical.py",
    "dynamo_mode/context_seal.py",
    "dynamo_mode/expiry.py",
    "dynamo_mode/hints.py",
    "dynamo_mode/membership*.py",
    "dynamo_mode/merkle*.py",
    "dynamo_mode/messages.py",
    "dynamo_mode/phi.py",
    "dynamo_mode/quorum.py",
    "dynamo_mode/scan_messages.py",
    "dynamo_mode/siblings.py",
    "dynamo_mode/vclock.py",
    "raft_groups/commands.py",
    "raft_groups/expiry.py",
    "raft_groups/forwarding.py",
    "raft_groups/layout.py",
    "raft_groups/moves.py",
    "raft_groups/placement.py",
    "raft_groups/syncobj_adapter/log_records.py",
    "raft_groups/syncobj_adapter/membership.py",
    "raft_groups/syncobj_adapter/read_index.py",
    "raft_groups/state_machine.py",
    "kvctl/archive.py",
    "kvctl/errors.py",
    "kvctl/keys.py",
    "kvctl/render.py",
    "kvctl/status.py",
)
IO_MODULES = (
    "asyncio",
    "threading",
    "socket",
    "selectors",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "time",
    "aiohttp",
    "plyvel",
    "pysyncobj",
    "kv.leveldb",
    "kv.node",
    "kv.transport",
    "kv.memory",
)
# library → the runtime files allowed to import it (globs), and why there
ONE_IMPORTER = {
    "plyvel": ("kv/leveldb.py",),  # the StorageEngine over LevelDB
    "pysyncobj": ("raft_groups/syncobj_adapter*",),  # camelCase, threads, FAIL_REASON stop here
    "mmh3": ("kv/hashing.py",),  # ring tokens
    # the HTTP server (kv/http, with the internode protocol's upgrade) and the public client;
    # the internode client (kv/wire_client.py) speaks asyncio directly
    "aiohttp": ("kv/http/*", "kv/client.py"),
    "cryptography": ("kv/keys.py",),  # keys derived from the cluster secret (and pysyncobj's)
    "click": ("kvctl/cli.py", "kvctl/cli_*.py"),  # the operator CLI's commands
    "orjson": ("kv/json_codec.py",),  # JSON bytes stored and sent
    "prometheus_client": ("kv/metrics.py",),  # /metrics: per-node registry, collectors
    # test-only: tests/cluster/test_status_page.py drives headless Chromium with it
    "playwright": (),
}
# test-only libraries → the one test module that may import each (rule 2 for tests/)
TEST_ONE_IMPORTER = {"playwright": "tests/cluster/test_status_page.py"}
COMPOSITION_ROOT = ("kv/node.py", "kv/node_switch.py", "kv/node_backup.py", "kv/__main__.py")
OPS_MUST_NOT_IMPORT = (
    "kv/leveldb.py",
    "kv/node.py",
    "kv/__main__.py",
    "kv/transport.py",
    "kv/wire_client.py",
    "kv/wire_server.py",
    "kv/http/*",
    "raft_groups/syncobj_adapter/*",
    "raft_groups/manager.py",
    "raft_groups/meta_group.py",
    "raft_groups/frontend.py",
    "dynamo_mode/coordinator.py",
    "dynamo_mode/gossip.py",
    "dynamo_mode/handoff.py",
    "dynamo_mode/tombstones.py",
    "dynamo_mode/replica_server.py",
)


def imports(source: str) -> Iterator[str]:
    """Every module name `source` imports (absolute; relative imports are not used here)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in patterns)


def under(name: str, prefixes: Iterable[str]) -> str | None:
    """The prefix `name` is (or is inside), if any."""
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def module_file(name: str, known: Iterable[str]) -> str | None:
    """The project file a dotted import names (module or package), if it is one of ours."""
    parts = name.split(".")
    for path in (f"{'/'.join(parts)}.py", f"{'/'.join(parts)}/__init__.py"):
        if path in known:
            return path
    return None


def violations(files: dict[str, str]) -> list[str]:
    """All rule breaks in `files` (repo-relative path → source)."""
    out: list[str] = []
    for path, source in sorted(files.items()):
        for name in sorted(set(imports(source))):
            out.extend(f"{path}: imports {name} — {why}" for why in _broken(path, name, files))
    return out


def _broken(path: str, name: str, files: dict[str, str]) -> Iterator[str]:
    top = path.split("/", 1)[0]
    if matches(path, PURE) and (io := under(name, IO_MODULES)):
        yield f"a pure module imports no I/O ({io}); pass it in as a parameter (rule 1)"
    if top in RUNTIME:
        for lib, allowed in ONE_IMPORTER.items():
            if under(name, [lib]) and not matches(path, allowed):
                yield f"only {', '.join(allowed) or 'no runtime module'} may import {lib} (rule 2)"
    if top == "kv" and under(name, ["dynamo_mode", "raft_groups"]):
        if path not in COMPOSITION_ROOT:
            yield "kv core imports a mode package; only the composition root may (rule 3)"
    if {top, name.split(".")[0]} == {"dynamo_mode", "raft_groups"}:
        yield "the two modes do not import each other (rule 3)"
    if top in RUNTIME and under(name, TOOLING):
        yield "runtime code imports tooling (rule 4)"
    if top in SERVER and under(name, ["kvctl"]):
        yield "the node's packages do not import the CLI (rule 5)"
    if top in CLIENTS and under(name, SERVER) and name not in SERVER:
        target = module_file(name, files)
        if target is not None and matches(target, OPS_MUST_NOT_IMPORT):
            yield f"{top}/ reaches nodes through the API or the client (rule 5)"


def project_files() -> dict[str, str]:
    out = {}
    for top in (*RUNTIME, "verification", "ops"):
        for file in sorted((ROOT / top).rglob("*.py")):
            out[file.relative_to(ROOT).as_posix()] = file.read_text()
    return out


# ---------------------------------------------------------------------- the checks
def test_the_project_keeps_its_layering() -> None:
    found = violations(project_files())
    assert not found, "layering broken:\n  " + "\n  ".join(found)


def test_every_pure_pattern_names_a_module() -> None:
    files = project_files()
    for pattern in PURE:
        assert any(fnmatch.fnmatch(f, pattern) for f in files), f"{pattern}: no such file"


def test_a_pure_module_importing_asyncio_is_named_with_the_rule() -> None:
    synthetic = {"kv/routing.py": "import asyncio\nfrom kv import errors\n"}
    assert violations(synthetic) == [
        "kv/routing.py: imports asyncio — a pure module imports no I/O (asyncio); "
        "pass it in as a parameter (rule 1)"
    ]


def test_each_rule_names_its_offender() -> None:
    synthetic = {
        "dynamo_mode/vclock.py": "from time import monotonic\n",
        "kv/ring.py": "import plyvel\n",
        "kv/service.py": "from dynamo_mode import coordinator\n",
        "raft_groups/manager.py": "from dynamo_mode.replica import KeyRef\n",
        "kv/storage.py": "from verification import checker\n",
        "ops/bench.py": "from kv.leveldb import LevelDBEngine\n",
        "kv/leveldb.py": "",
    }
    found = "\n".join(violations(synthetic))
    assert "dynamo_mode/vclock.py: imports time — a pure module" in found
    assert "kv/ring.py: imports plyvel — only kv/leveldb.py may import plyvel" in found
    assert "kv/service.py: imports dynamo_mode — kv core imports a mode package" in found
    assert "raft_groups/manager.py: imports dynamo_mode.replica — the two modes" in found
    assert "kv/storage.py: imports verification — runtime code imports tooling" in found
    assert "ops/bench.py: imports kv.leveldb — ops/ reaches nodes through the API" in found


def test_the_cli_keeps_to_the_api_and_click_to_one_module() -> None:
    synthetic = {
        "kvctl/cli.py": "from kv.node import Node\nimport click\n",
        "kvctl/render.py": "import click\n",
        "kvctl/status.py": "import time\n",
        "kv/service.py": "from kvctl import status\n",
        "kv/node.py": "",
    }
    assert violations(synthetic) == [
        "kv/service.py: imports kvctl — the node's packages do not import the CLI (rule 5)",
        "kv/service.py: imports kvctl.status — the node's packages do not import the CLI (rule 5)",
        "kvctl/cli.py: imports kv.node — kvctl/ reaches nodes through the API or the client "
        "(rule 5)",
        "kvctl/render.py: imports click — only kvctl/cli.py, kvctl/cli_*.py may import click "
        "(rule 2)",
        "kvctl/status.py: imports time — a pure module imports no I/O (time); pass it in as a "
        "parameter (rule 1)",
    ]


def test_each_test_only_library_has_one_test_module_importing_it() -> None:
    found = []
    for file in sorted((ROOT / "tests").rglob("*.py")):
        path = file.relative_to(ROOT).as_posix()
        names = set(imports(file.read_text()))
        for lib, allowed in TEST_ONE_IMPORTER.items():
            if path != allowed and any(under(name, [lib]) for name in names):
                found.append(f"{path}: imports {lib} — only {allowed} may (rule 2)")
    assert not found, found


def test_the_composition_root_may_wire_the_modes() -> None:
    assert violations({"kv/node.py": "from dynamo_mode.replica import DynamoReplica\n"}) == []


# ---------------------------------------------------------------------- sizes (issue 8)
MAX_MODULE_LINES = 400
MAX_MEDIAN_FUNCTION_LINES = 10


def test_runtime_modules_stay_small_and_functions_short() -> None:
    lengths: list[int] = []
    too_long = []
    for path, source in project_files().items():
        if path.split("/", 1)[0] not in RUNTIME:
            continue
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lengths.append((node.end_lineno or node.lineno) - node.lineno + 1)
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    lengths.sort()
    median = lengths[len(lengths) // 2]
    assert median < MAX_MEDIAN_FUNCTION_LINES, f"median function length {median}"
