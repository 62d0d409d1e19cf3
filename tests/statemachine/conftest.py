"""Fixtures for the modules that run the workflows on a local stack (each defines its own `stack` with
tests/support/stack.stack_fixture)."""

from __future__ import annotations

import pytest
from kiteconnect import KiteConnect

from local.stack import LocalStack


@pytest.fixture
def kite(stack: LocalStack) -> KiteConnect:
    """The trader's own hands at the broker: the official client against the stack's paper exchange."""
    client = KiteConnect(api_key="paper", root=stack.paper_url, timeout=5)
    client.set_access_token("paper-token")
    return client
