"""`make account STACK=...` against a deployed stack: moto's CloudFormation stands in for the trader's account.

The stand-in stack is made from template.yaml's own table, pepper secret and the outputs the command reads, created
through CloudFormation (so region, outputs and parameters come back as DescribeStacks gives them). The command runs
as the trader runs it, in its own process; the key it prints is then checked by the API's own handler, and the
webhook token by the webhook's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
import yaml
from moto.server import ThreadedMotoServer

from bracketflow.adapters.aws import reset_clients
from bracketflow.adapters.secrets import reset_pepper_cache
from local.stack import free_port
from local.template import load_yaml
from tests.support.intake import bracket_request, call_api, call_webhook

# moto's state is global to a process: never beside a running local stack (see tests/e2e/conftest.py)
pytestmark = pytest.mark.xdist_group("stack")

ROOT = Path(__file__).resolve().parents[2]
REGION = "ap-south-1"
STACK = "bracketflow-dev"


def _stand_in_template() -> str:
    """The deployed stack's parts the command touches, as template.yaml declares them. moto's CloudFormation cannot
    make a Secrets Manager secret: the pepper is made beside it (as the template makes it) and handed in by ARN."""
    app = load_yaml(ROOT / "template.yaml")
    table = app["Resources"]["BracketsTable"]["Properties"]
    keep = ("BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
    doc = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"Stage": {"Type": "String", "Default": "dev"}, "ApiKeyPepperSecret": {"Type": "String"}},
        "Resources": {
            "BracketsTable": {"Type": "AWS::DynamoDB::Table", "Properties": {k: table[k] for k in keep}},
        },
        "Outputs": {name: app["Outputs"][name] for name in ("BracketsTableName", "ApiKeyPepperSecretName")},
    }
    assert doc["Outputs"]["ApiKeyPepperSecretName"]["Value"] == {"Ref": "ApiKeyPepperSecret"}
    return yaml.safe_dump(doc)  # load_yaml turned the short tags into CloudFormation's long form


def _make_pepper(sm) -> str:
    """The pepper secret as template.yaml's ApiKeyPepperSecret makes it: its name, a generated 64-character value."""
    props = load_yaml(ROOT / "template.yaml")["Resources"]["ApiKeyPepperSecret"]["Properties"]
    name = props["Name"]["Fn::Sub"].replace("${Stage}", "dev")
    value = sm.get_random_password(PasswordLength=64, ExcludePunctuation=True)["RandomPassword"]
    return sm.create_secret(Name=name, SecretString=value)["ARN"]


@pytest.fixture
def moto() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    requests.post(f"{endpoint}/moto-api/reset", timeout=30)  # moto's state is per process: start from nothing
    try:
        yield endpoint
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=30)
        server.stop()


def _client(endpoint: str, service: str):
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def _admin(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "common"), str(ROOT)]),
    }
    for local_only in ("TABLE_NAME", "API_KEY_PEPPER_SECRET_NAME", "STAGE"):
        env.pop(local_only, None)
    return subprocess.run(
        [sys.executable, "-m", "bracketflow.admin", "--stack", STACK, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def deployed(moto: str, monkeypatch) -> Iterator[dict[str, str]]:
    pepper_arn = _make_pepper(_client(moto, "secretsmanager"))
    cfn = _client(moto, "cloudformation")
    cfn.create_stack(
        StackName=STACK,
        TemplateBody=_stand_in_template(),
        Parameters=[{"ParameterKey": "ApiKeyPepperSecret", "ParameterValue": pepper_arn}],
    )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]}
    # This process plays the deployed API: the stack's table and pepper, on the stand-in account
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("TABLE_NAME", outputs["BracketsTableName"])
    monkeypatch.setenv("API_KEY_PEPPER_SECRET_NAME", outputs["ApiKeyPepperSecretName"])
    monkeypatch.setenv("STAGE", "dev")
    monkeypatch.setenv("CREDENTIAL_CACHE_SECONDS", "0")
    reset_clients()
    reset_pepper_cache()
    yield outputs
    reset_pepper_cache()


def test_make_account_passes_the_stack_through() -> None:
    dry = subprocess.run(
        ["make", "-n", "account", "NAME=Asha", f"STACK={STACK}"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert f'-m bracketflow.admin --stack "{STACK}" create-account "Asha"' in dry.stdout


def test_the_printed_key_and_webhook_token_work_against_the_deployed_stack(deployed, moto):
    sm = _client(moto, "secretsmanager")
    secrets_before = sorted(s["Name"] for s in sm.list_secrets()["SecretList"])

    # When the trader creates an account against the deployed stack
    made = _admin(moto, "create-account", "Asha")
    assert made.returncode == 0, made.stderr
    key = re.search(r"api_key:\s+(\S+)", made.stdout).group(1)
    account_id = re.search(r"account_id:\s+(\S+)", made.stdout).group(1)

    # Then the deployed API accepts the key (a bracket that is not there is a 404, not a 401) and refuses another
    missing = f"/api/v1/brackets/{uuid.uuid4().hex}"
    assert call_api("GET", missing, headers={"X-API-KEY": key}).status == 404
    assert call_api("GET", missing, headers={"X-API-KEY": key + "x"}).status == 401

    # And a webhook token made the same way is accepted by the deployed webhook
    token_made = _admin(moto, "create-token", account_id, "orb")
    assert token_made.returncode == 0, token_made.stderr
    token = re.search(r"webhook token for strategy orb: (\S+)", token_made.stdout).group(1)
    body = bracket_request()
    body.pop("apikey", None)
    accepted = call_webhook(body, token=token)
    assert accepted.status == 200 and accepted.body["status"] == "success", accepted.body
    assert call_webhook(body, token=token + "x").status == 401

    # And no secret was created in the account
    assert sorted(s["Name"] for s in sm.list_secrets()["SecretList"]) == secrets_before


def test_a_missing_pepper_is_a_clear_error_never_a_new_secret(deployed, moto):
    sm = _client(moto, "secretsmanager")
    sm.delete_secret(SecretId=deployed["ApiKeyPepperSecretName"], ForceDeleteWithoutRecovery=True)

    made = _admin(moto, "create-account", "Asha")

    assert made.returncode == 2
    assert "does not exist" in made.stderr and "nothing was created" in made.stderr
    assert "api_key" not in made.stdout
    assert sm.list_secrets()["SecretList"] == []


def test_an_unknown_stack_is_a_clear_error(moto):
    made = _admin(moto, "create-account", "Asha")
    assert made.returncode == 2
    assert f"no stack {STACK!r}" in made.stderr
    assert _client(moto, "secretsmanager").list_secrets()["SecretList"] == []
