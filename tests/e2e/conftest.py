"""The whole local stack for end-to-end tests: template.yaml on moto, the in-process Lambdas, the local API, the
pollers, and the paper exchange / streamer processes when they exist, all on free ports.

moto's state is global to a process, so two stacks must never be up in one process at once: every test that starts a
stack (here, tests/statemachine, the local-stack tests) is in the one xdist group "stack", and each stack lives for one
module only, torn down before the next module brings its own up.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.stack import DEV_ACCOUNT_ID, LocalStack, StackConfig
from tests.support.stack import paper, quote

E2E_API_KEY = "e2e-dev-key"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("e2e/"):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group(name="stack"))


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    """The running stack: .api_url, .aws_endpoint, .paper_url, .client(service), .queue_url(id), .table_name(id)."""
    stack = LocalStack(StackConfig(api_port=0, moto_port=0, paper_port=0, local_api_key=E2E_API_KEY))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def api_url(local_stack: LocalStack) -> str:
    return local_stack.api_url


@pytest.fixture(scope="module")
def dev_api_key(local_stack: LocalStack) -> str:
    """The seeded dev account's API key (account id "local")."""
    assert local_stack.dev_account_seeded, f"the dev account {DEV_ACCOUNT_ID!r} could not be seeded (see the log)"
    return E2E_API_KEY


@pytest.fixture
def manual_market(local_stack: LocalStack) -> Iterator[LocalStack]:
    """The paper market holds still at INFY 1500 (bid 1499.95 / ask 1500) until the test moves it; it walks again
    (or whatever it did before) afterwards."""
    before = paper(local_stack, "state", method="GET")["market"]
    paper(local_stack, "config", {"market": "manual"})
    quote(local_stack, "1500", "1499.95", "1500")
    yield local_stack
    paper(local_stack, "config", {"market": before})
