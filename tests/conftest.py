"""Shared test setup: no test ever reaches real AWS."""

from __future__ import annotations

import os

import pytest

# The shared helpers assert too: pytest explains their failures as it does a test's (it rewrites test_*.py only).
pytest.register_assert_rewrite("tests.support")

# Fake credentials and a fixed region for every test, set before anything builds a boto3 client.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SECURITY_TOKEN", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ["AWS_DEFAULT_REGION"] = "ap-south-1"
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "bracketflow")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_DEV", "0")


@pytest.fixture(autouse=True)
def _fresh_aws_clients():
    """Each test builds its own clients, so a moto mock started by the test is the one they talk to."""
    from bracketflow.adapters.aws import reset_clients

    reset_clients()
    yield
    reset_clients()


@pytest.fixture(scope="session")
def paper_exchange_session():
    """One paper exchange (manual market) per test session (per xdist worker), on a free 127.0.0.1 port."""
    from paper.testing import start_paper_exchange

    with start_paper_exchange(market="manual") as paper:
        yield paper


@pytest.fixture
def paper_exchange(paper_exchange_session):
    """The session's paper exchange, reset (no orders, GTTs, positions, quotes or faults) for this test."""
    paper_exchange_session.reset()
    return paper_exchange_session
