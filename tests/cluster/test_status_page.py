"""The status page at /ui in headless Chromium (issue 13 item 7; docs/status_page.md).

Three real nodes with a keyspace of each mode; Chromium (Debian's /usr/bin/chromium, driven
by playwright — never a browser playwright downloads) loads /ui from n1 and must show the
three members alive, every partition's preference list for both keyspaces, and request
rates and p99s read from the nodes' metrics; then n3 is killed (SIGKILL) and the page must
show it down within 10 s of the kill (the issue's bound, polled; the failure detector's
own bound is 6.2 s for 3 nodes, docs/gossip.md). Throughout: no console error, no uncaught
exception, no failed request and no HTTP error reply. Skipped, with the reason, where
Chromium or playwright is missing.

With auth on (a node in-process, tests/integration/conftest.py `auth_node`) the page itself
needs no token and asks for one; with a read token pasted into it, it shows the cluster and
says that plan moves need an admin token; with an admin token it shows them too.

The only importer of playwright (tests/unit/test_layering.py).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.harness import Cluster, wait_until
from tests.integration.conftest import auth_node

CHROMIUM = os.environ.get("KV_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright (pip install -e '.[test]')"
)
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"needs Chromium at {CHROMIUM} (apt-get install chromium, or set KV_CHROMIUM)",
    ),
]

DOWN_WITHIN_S = 10.0  # issue 13: the page shows a killed node as down within 10 s
DEADLINE_S = 60.0  # a poll, not a bound: start-up on a loaded machine


@pytest.fixture
def page() -> Iterator[Any]:
    """A page of a headless Chromium; the browser and playwright's driver are stopped after
    the test, also on failure."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def watch(page: Any) -> list[str]:
    """Every console error, uncaught exception, failed request and HTTP error reply."""
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status}: {r.url}"))
    return problems


def api(cluster: Cluster, node: str, method: str, path: str, body: Any = None) -> Any:
    """The reply's JSON; again while it fails (a node still learning of a new keyspace, a
    meta election on a loaded machine), until a deadline."""

    def once() -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{cluster.http(node)}{path}", data, method=method)
        with urllib.request.urlopen(req, timeout=30) as reply:
            return json.load(reply)

    return wait_until(once, DEADLINE_S, f"{method} {path} on {node}", interval=0.2)


def wait_for(page: Any, script: str, arg: Any, deadline_s: float) -> Any:
    """Poll `script` (a JS function of `arg`) in the page until it is truthy."""
    return page.wait_for_function(script, arg=arg, timeout=deadline_s * 1000, polling=100)


STATUS_OF = "n => document.querySelector(`#members tr[data-node='${n}']`)?.dataset.status"
CELL = "([n, col]) => document.querySelector(`#members tr[data-node='${n}'] td:nth-child(${col})`)"
RATE_ABOVE_0 = f"a => parseFloat(({CELL})([a, 5])?.textContent) > 0"
P99_IN_MS = f"a => /^[0-9.]+ ms$/.test(({CELL})([a, 6])?.textContent)"


@pytest.mark.cluster
def test_the_page_shows_the_cluster_and_a_killed_node_down_within_10s(
    cluster: Cluster, page: Any
) -> None:
    for name, config in (
        ("ev", {"consistency": "eventual", "replication": 3}),
        ("lin", {"consistency": "linearizable", "replication": 3}),
    ):
        api(cluster, "n1", "PUT", f"/v1/keyspaces/{name}", config)
    partitions = len(api(cluster, "n1", "GET", "/v1/cluster")["partitions"])
    problems = watch(page)
    page.goto(f"http://{cluster.http('n1')}/ui")
    all_alive = "() => ['n1', 'n2', 'n3'].every(n => (" + STATUS_OF + ")(n) === 'alive')"
    wait_for(page, all_alive, None, DEADLINE_S)

    for node in ("n1", "n2", "n3"):  # a rate and p99 needs two readings of a node's totals
        api(cluster, node, "PUT", "/v1/keyspaces/ev/keys/k", {"value": node})
        wait_for(page, RATE_ABOVE_0, node, DEADLINE_S)
        wait_for(page, P99_IN_MS, node, DEADLINE_S)
    columns = page.eval_on_selector_all(
        "#placement thead th[data-mode]", "ths => ths.map(th => th.dataset.mode)"
    )
    assert columns == ["eventual", "linearizable"]
    rows = page.eval_on_selector_all(
        "#placement tbody tr", "trs => trs.map(tr => tr.innerText.split(/\\s+/).filter(Boolean))"
    )
    assert len(rows) == partitions
    for p, row in enumerate(rows):  # partition, then 3 owners per column
        assert row[0] == str(p) and len(row) == 7 and set(row[1:]) <= {"n1", "n2", "n3"}, row
    keyspaces = page.eval_on_selector_all("#keyspaces tr[data-keyspace]", "t => t.length")
    assert keyspaces == 2
    assert page.text_content("#plan") == "No plan in flight."
    q = "kvStatus.quantile"
    assert page.evaluate(f"{q}(0.99, [[0.001, 50], [0.01, 100]], 100)") == pytest.approx(0.00982)
    assert page.evaluate(f"{q}(0.99, [[0.001, 0]], 0)") is None
    assert page.evaluate(f"{q}(0.99, [[0.001, 0], [10, 1]], 3)") == float("inf")
    assert problems == []

    killed = time.monotonic()
    cluster.kill("n3")
    left = max(DOWN_WITHIN_S - (time.monotonic() - killed), 0.001)  # 0 would be no deadline
    wait_for(page, f"n => ({STATUS_OF})(n) === 'down'", "n3", left)
    print(f"n3 shown down {time.monotonic() - killed:.1f}s after the kill")
    unreachable = f"() => ({CELL})(['n3', 6])?.querySelector('.error')"
    wait_for(page, unreachable, None, DEADLINE_S)  # its totals: the error of the call
    assert page.get_attribute("#members tr[data-node='n1']", "data-status") == "alive"
    assert problems == []


def mint(base_url: str, admin: str, role: str) -> str:
    body = json.dumps({"name": role, "role": role}).encode()
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    req = urllib.request.Request(f"{base_url}/v1/tokens", body, headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as reply:
        return str(json.load(reply)["token"])


def use_token(page: Any, token: str) -> None:
    page.fill("#token", token)
    page.click("#token-form button[type=submit]")


PLAN_SAYS = "t => document.querySelector('#plan').textContent.includes(t)"


@pytest.mark.cluster
def test_with_auth_on_the_page_is_open_and_reads_with_the_token_pasted_into_it(
    tmp_path: Any, page: Any
) -> None:
    with auth_node(tmp_path) as (api, admin):
        reader = mint(api.base_url, admin, "read")
        problems = watch(page)
        page.goto(f"{api.base_url}/ui")
        wait_for(page, "() => !document.querySelector('#notice').hidden", None, DEADLINE_S)
        assert "needs a token" in page.text_content("#notice")
        assert problems and all("401" in p for p in problems), problems  # the first poll's
        problems.clear()

        use_token(page, reader)
        wait_for(page, f"n => ({STATUS_OF})(n) === 'alive'", "n1", DEADLINE_S)
        wait_for(page, PLAN_SAYS, "need an admin token", DEADLINE_S)
        assert page.is_hidden("#notice")
        responses = [p for p in problems if not p.startswith("console: ")]
        assert responses == [f"403: {api.base_url}/v1/membership"], problems  # asked once

        use_token(page, admin)
        wait_for(page, PLAN_SAYS, "No plan in flight.", DEADLINE_S)
        assert page.evaluate("sessionStorage.getItem('kv.token')") == admin
        assert all("403" in p for p in problems), problems
