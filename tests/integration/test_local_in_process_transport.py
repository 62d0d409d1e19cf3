"""The local stack's in-process AWS transport (local/aws.py InProcessTransport): a handler in the stack's process
reaches moto without a socket, and gets exactly what the same call over HTTP gets: items, errors, cancellation
reasons. Other hosts, and clients of other sessions, still go over the network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local.aws import MotoServer

TABLE = "transport"
REGION = "ap-south-1"


@pytest.fixture
def server() -> Iterator[MotoServer]:
    moto = MotoServer(port=0)
    moto.start()
    try:
        moto.client("dynamodb").create_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield moto
    finally:
        moto.stop()


def _over_http(server: MotoServer, service: str) -> Any:
    # Another boto3 session carries none of the default session's handlers: a plain HTTP client of the server.
    return boto3.Session().client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}),
    )


def _counting(server: MotoServer) -> list[str]:
    transport = server._transport
    assert transport is not None
    answered: list[str] = []
    app = transport._app

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        answered.append(environ.get("HTTP_X_AMZ_TARGET", environ["PATH_INFO"]))
        return app(environ, start_response)

    transport._app = counted
    return answered


def _error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as raised:
        call()
    response = raised.value.response
    return {"code": response["Error"]["Code"], "reasons": response.get("CancellationReasons")}


def test_in_process_calls_answer_exactly_as_http_does_without_a_socket(server: MotoServer) -> None:
    # Given a client of the stack's process (default session) and a plain HTTP client of the same server
    answered = _counting(server)
    local, http = server.client("dynamodb"), _over_http(server, "dynamodb")
    item = {"pk": {"S": "a"}, "n": {"N": "1"}, "m": {"M": {"x": {"L": [{"S": "y"}, {"BOOL": True}]}}}}

    def transact(client: Any) -> None:
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "b"}}}},
                {"Put": {"TableName": TABLE, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
            ]
        )

    # When each makes the same calls, successful and refused
    local.put_item(TableName=TABLE, Item=item)
    results = {}
    for name, client in (("local", local), ("http", http)):
        results[name] = {
            "get": client.get_item(TableName=TABLE, Key={"pk": {"S": "a"}})["Item"],
            "update": client.update_item(
                TableName=TABLE,
                Key={"pk": {"S": "a"}},
                UpdateExpression="SET n = n + :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="UPDATED_NEW",
            )["Attributes"],
            "conditional": _error(
                lambda c=client: c.put_item(TableName=TABLE, Item=item, ConditionExpression="attribute_not_exists(pk)")
            ),
            "cancelled": _error(lambda c=client: transact(c)),
            "missing_table": _error(lambda c=client: c.get_item(TableName="nope", Key={"pk": {"S": "a"}})),
        }

    # Then the answers match call for call (the counter went up once per update), and only the local client's
    # calls were answered in-process
    assert results["local"]["get"] == item
    assert results["local"]["update"] == {"n": {"N": "2"}}
    assert results["http"]["update"] == {"n": {"N": "3"}}
    assert results["http"]["get"] == {**item, "n": {"N": "2"}}
    for key in ("conditional", "cancelled", "missing_table"):
        assert results["local"][key] == results["http"][key]
    assert results["local"]["conditional"]["code"] == "ConditionalCheckFailedException"
    assert results["local"]["cancelled"]["code"] == "TransactionCanceledException"
    assert [r["Code"] for r in results["local"]["cancelled"]["reasons"]] == ["None", "ConditionalCheckFailed"]
    assert results["local"]["missing_table"]["code"] == "ResourceNotFoundException"
    assert len(answered) == 6  # the put, then get/update/put/transact/get of the local client; none of http's


def test_queues_and_workflows_go_in_process_too_and_the_transport_ends_with_the_server() -> None:
    # Given a running server, a queue and a state machine
    server = MotoServer(port=0)
    server.start()
    try:
        answered = _counting(server)
        sqs, sfn = server.client("sqs"), server.client("stepfunctions")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        role = server.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        definition = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
        arn = sfn.create_state_machine(name="m", definition=definition, roleArn=role)["stateMachineArn"]

        # When a message goes through the queue and an execution starts twice under one name
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        first = sfn.start_execution(stateMachineArn=arn, name="x", input="{}")
        again = _error(lambda: sfn.start_execution(stateMachineArn=arn, name="x", input='{"other": 1}'))

        # Then they behave as over HTTP, answered in-process
        assert [m["Body"] for m in got] == ["hello"]
        assert first["executionArn"].endswith(":x")
        assert again["code"] == "ExecutionAlreadyExists"
        assert len(answered) >= 7
        transport = server._transport
    finally:
        server.stop()

    # And once the server is gone, a client built meanwhile no longer answers in-process (nothing is served)
    assert transport is not None and transport.enabled is False
    with pytest.raises(Exception) as raised:
        sqs.list_queues()
    assert "Could not connect" in str(raised.value) or "Connect" in type(raised.value).__name__
