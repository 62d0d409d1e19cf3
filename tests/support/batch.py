"""Shared fixtures for the batch API and batch service tests (no tests of its own).

moto holds the brackets table (from template.yaml) and a stand-in batch state machine (one Pass state), so the API
can start executions without running the saga; the service tests drive the saga's steps themselves, against the
paper exchange.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.support.intake import REGION, Trader, _invoke, api_event, aws  # noqa: F401

# the condor's strikes and legs, for the batch tests that import them from here
from tests.support.iron_condor import LONG_CALL, LONG_PUT, SHORT_CALL, SHORT_PUT, condor_quotes, iron_condor, leg  # noqa: F401


@pytest.fixture
def batch_aws(aws, monkeypatch):  # noqa: F811
    """The intake test AWS plus a stand-in batch state machine; POST wait is cut to a fraction of a second."""
    from bracketflow.adapters.aws import reset_clients

    definition = {"StartAt": "Hold", "States": {"Hold": {"Type": "Pass", "End": True}}}
    iam = boto3.client("iam", region_name=REGION)
    role_arn = iam.create_role(RoleName="sfn-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    arn = aws.sfn.create_state_machine(name="batch", definition=json.dumps(definition), roleArn=role_arn)[
        "stateMachineArn"
    ]
    monkeypatch.setenv("BATCH_STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("BATCH_WAIT_SECONDS", "0.3")
    reset_clients()
    aws.batch_state_machine_arn = arn
    return aws


def batch_executions(env: Any) -> list[dict[str, Any]]:
    return env.sfn.list_executions(stateMachineArn=env.batch_state_machine_arn)["executions"]


def batch_items(env: Any) -> list[dict[str, Any]]:
    return [i for i in env.table.scan()["Items"] if i["pk"].startswith("BATCH#")]


def call_batch_api(method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    return _invoke("functions.batch.app", api_event(method, path, body, **kwargs))


def post_batch(trader: Trader, orders: Any, **extra: Any) -> Any:
    return call_batch_api(
        "POST", "/api/v1/batchorders", {"orders": orders, **extra}, headers={"X-API-KEY": trader.api_key}
    )


def quote_condor(paper: Any) -> None:
    paper.set_quotes(condor_quotes())
