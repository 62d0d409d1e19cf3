"""Shared fixtures and helpers for the intake, read-API, accounts and fuzz tests (no tests of its own).

The table is created from template.yaml's BracketsTable (keys, GSIs), so the tests follow the real schema.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
TABLE = "bracketflow-intake-test"
REGION = "ap-south-1"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML; intrinsic functions (!Ref, !Sub ...) are not needed here and load as None."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def brackets_table_schema() -> dict[str, Any]:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    props = template["Resources"]["BracketsTable"]["Properties"]
    return {
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"],
        "BillingMode": "PAY_PER_REQUEST",
    }


@dataclass
class Aws:
    ddb: Any
    table: Any
    sfn: Any
    state_machine_arn: str

    def items(self, prefix: str = "") -> list[dict[str, Any]]:
        items = self.table.scan()["Items"]
        return [i for i in items if i["pk"].startswith(prefix)]

    def executions(self) -> list[dict[str, Any]]:
        return self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]


@pytest.fixture
def aws(monkeypatch):
    """moto with the brackets table and a stand-in bracket state machine; the placement clock moves 1 s a call."""
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.secrets import reset_pepper_cache
    from bracketflow.services import register_bracket

    with mock_aws():
        ddb = boto3.resource("dynamodb", region_name=REGION)
        table = ddb.create_table(TableName=TABLE, **brackets_table_schema())
        sfn = boto3.client("stepfunctions", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        definition = {"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": True}}}
        arn = sfn.create_state_machine(name="bracket", definition=json.dumps(definition), roleArn=role)[
            "stateMachineArn"
        ]
        monkeypatch.setenv("TABLE_NAME", TABLE)
        monkeypatch.setenv("BRACKET_STATE_MACHINE_ARN", arn)
        monkeypatch.setenv("BROKER", "paper")
        monkeypatch.setenv("STAGE", "local")
        clock = itertools.count(1_775_000_000_000, 1000)
        monkeypatch.setattr(register_bracket, "now_ms", lambda: next(clock))
        reset_clients()
        reset_pepper_cache()
        yield Aws(ddb=ddb, table=table, sfn=sfn, state_machine_arn=arn)
        reset_pepper_cache()


@dataclass
class Trader:
    account_id: str
    api_key: str


@pytest.fixture
def trader(aws) -> Trader:
    from bracketflow.services.accounts import create_account

    account, key = create_account("Asha", account_id="acc_asha")
    return Trader(account.account_id, key)


@pytest.fixture
def other_trader(aws) -> Trader:
    from bracketflow.services.accounts import create_account

    account, key = create_account("Ravi", account_id="acc_ravi")
    return Trader(account.account_id, key)


class FakeContext:
    function_name = "test"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:test"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


_request_ids = itertools.count(1)


def api_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    source_ip: str = "52.89.214.238",
    content_type: str = "application/json",
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event as Lambda receives it."""
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    all_headers = {"Content-Type": content_type, **(headers or {})}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": None if query is None else {k: [v] for k, v in query.items()},
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": f"r-{next(_request_ids)}",
            "stage": "dev",
            "path": path,
            "httpMethod": method,
            "identity": {"sourceIp": source_ip},
            "resourcePath": path,
        },
        "body": body,
        "isBase64Encoded": False,
    }


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def _invoke(module: str, event: dict[str, Any]) -> Answer:
    import importlib

    handler = importlib.import_module(module).lambda_handler
    out = handler(event, FakeContext())
    body = json.loads(out["body"]) if out.get("body") else {}
    return Answer(out["statusCode"], body)


def call_api(method: str, path: str, body: Any = None, **kwargs: Any) -> Answer:
    return _invoke("functions.api.app", api_event(method, path, body, **kwargs))


def call_webhook(body: Any = None, *, token: str | None = None, **kwargs: Any) -> Answer:
    path = "/tradingview/webhook/bracket" + (f"/{token}" if token else "")
    return _invoke("functions.webhook.app", api_event("POST", path, body, **kwargs))


def bracket_request(api_key: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid BUY bracket on INFY (tick 0.05, lot 1), the bracket API's own example."""
    body: dict[str, Any] = {
        "symbol": "INFY",
        "exchange": "NSE",
        "product": "MIS",
        "action": "BUY",
        "quantity": 10,
        "entry_price": 1500,
        "sl_price": 1480,
        "target_price": 1550,
    }
    if api_key is not None:
        body["apikey"] = api_key
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}
