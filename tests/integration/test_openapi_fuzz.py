"""schemathesis against one real node (issue 13 item 3; DESIGN.md §5, §7).

The node's own `/v1/openapi.json` is loaded through schemathesis, which generates
requests for every operation — valid ones (positive) and ones that break the description
(negative) — and checks each reply: no 5xx at all, a status the operation documents, its
content type and headers, and a body matching the documented schema. Key operations go
to an eventual and a linearizable keyspace of the node as well as to generated names.

A requested `timeout_ms` below `MIN_TIMEOUT_MS` is raised to it: on one node a shorter
deadline can end a Raft proposal or metadata change in 504 "may have been applied",
which the contract allows (tests/integration/test_http_fuzz.py covers it); here any 5xx
fails. Invalid values (0, text, over 60000) are sent as generated.

The seed is printed; rerun a failure with `KV_FUZZ_SEED=<seed>`. `KV_OPENAPI_EXAMPLES`
sets the examples per operation and mode.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kv.http.openapi import PATH, document
from tests.integration.conftest import (
    Api,
    api_of,
    create_keyspace,
    linearizable_keyspace,
    running,
    single_node_config,
)

SEED = int(os.environ.get("KV_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
EXAMPLES = int(os.environ.get("KV_OPENAPI_EXAMPLES") or 10)
MIN_TIMEOUT_MS = 10_000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EVENTUAL = "ev"


def _runs() -> list[tuple[str, GenerationMode]]:
    """(operationId, mode): positive for every operation, negative for those that take
    something to break (parameters or a body)."""
    out = []
    for path_item in document()["paths"].values():
        for method, op in path_item.items():
            if method == "parameters":
                continue
            out.append((op["operationId"], GenerationMode.POSITIVE))
            if "parameters" in path_item or "parameters" in op or "requestBody" in op:
                out.append((op["operationId"], GenerationMode.NEGATIVE))
    return sorted(out)


@pytest.fixture(scope="module")
def node_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One node with an eventual keyspace `ev` and a linearizable one `lin` whose Raft
    groups have leaders."""
    with running([single_node_config(tmp_path_factory.mktemp("n1"))]) as nodes:
        api = api_of(nodes["n1"])
        create_keyspace(api, EVENTUAL, {"consistency": "eventual", "replication": 1})
        linearizable_keyspace(api)
        yield api


@pytest.fixture(scope="module")
def schema(node_api: Api) -> Any:
    """The description as the node serves it (and as the checked-in file says)."""
    reply = node_api.get(PATH)
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    assert reply.json() == document()
    return schemathesis.openapi.from_url(node_api.base_url + PATH)


def _with_deadline(case: Case) -> Case:
    raw = (case.query or {}).get("timeout_ms")
    if isinstance(raw, int | str) and str(raw).isdigit() and 0 < int(raw) < MIN_TIMEOUT_MS:
        case.query["timeout_ms"] = MIN_TIMEOUT_MS
    return case


def _cases(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Case]:
    generated = operation.as_strategy(mode)
    if "ks" not in (p.name for p in operation.path_parameters):
        return generated.map(_with_deadline)  # type: ignore[no-any-return]
    served = st.sampled_from([EVENTUAL, "lin"]).flatmap(
        lambda ks: operation.as_strategy(mode, path_parameters={"ks": ks})
    )
    return st.one_of(served, generated).map(_with_deadline)


@pytest.mark.parametrize(("operation_id", "mode"), _runs(), ids=lambda v: str(v))
# The node's Raft thread (pysyncobj election timeouts) draws from the global `random` while
# Hypothesis generates examples; the strategies here never do.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_replies_match_the_description(
    schema: Any, node_api: Api, operation_id: str, mode: GenerationMode
) -> None:
    print(f"openapi fuzz seed={SEED} (rerun with KV_FUZZ_SEED={SEED}), examples={EXAMPLES}")
    operation = schema.find_operation_by_id(operation_id)
    session = requests.Session()

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_cases(operation, mode))
    def one_request(case: Case) -> None:
        case.call_and_validate(session=session, checks=CHECKS, timeout=30)

    try:
        one_request()
    finally:
        session.close()
    assert node_api.healthy(), "node unhealthy after the run"
