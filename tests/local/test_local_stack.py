"""The local stack realises a template end to end: health, routes, SQS with partial failures and a DLQ, schedules,
DynamoDB Streams, and a state machine run by moto's interpreter with an in-process Lambda task and a task token.

One stack (on free ports, from tests/local/fixtures/local_stack/template.yaml) serves the whole module.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from local.components import ComponentState
from local.stack import LocalStack, StackConfig

pytestmark = pytest.mark.xdist_group(name="stack")

FIXTURE = Path(__file__).parent / "fixtures" / "local_stack" / "template.yaml"


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def eventually(check: Callable[[], Any], what: str, within_s: float = 15.0) -> Any:
    """Poll until `check()` returns something truthy (asynchronous machinery), failing with `what` if it never does."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def health_during_start() -> list[tuple[str, int, dict]]:
    return []


@pytest.fixture(scope="module")
def stack(health_during_start) -> Iterator[LocalStack]:
    config = StackConfig(
        template_path=FIXTURE,
        api_port=0,
        moto_port=0,
        paper=False,
        streamer=False,
        schedule_every_s=0.5,
        seed_dev_account=False,  # the fixture template has no accounts table
    )
    local = LocalStack(config)

    def probe(change: ComponentState) -> None:
        # While the stack is still coming up, ask /health what it says (the API listens first).
        if change.name == "aws" and change.state == "up":
            status, body = http("GET", f"{local.api_url}/health")
            health_during_start.append((change.name, status, body))

    local.components.subscribe(probe)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def table(stack: LocalStack):
    return stack.client("dynamodb"), stack.table_name("ProbeTable")


def get_item(table, pk: str) -> dict | None:
    client, name = table
    return client.get_item(TableName=name, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")


# ---------- health ----------


def test_health_answers_503_while_starting_and_200_with_every_component_once_up(stack, health_during_start):
    # Given the stack was asked for /health while moto was up but functions and events were not
    (_, status_during, body_during) = health_during_start[0]
    assert status_during == 503
    assert body_during["components"]["aws"] == "up"
    assert body_during["components"]["events"] == "starting"

    # When everything is up
    status, body = http("GET", f"{stack.api_url}/health")

    # Then /health is 200 and names each component as up (no child processes here, so nothing was restarted)
    assert status == 200
    assert body == {
        "status": "ok",
        "components": {"api": "up", "aws": "up", "functions": "up", "events": "up"},
        "restarts": {},
    }


def test_template_resources_are_realised_and_unknown_types_skipped(stack):
    # Given the fixture template (a table with its name from !Sub, two queues, a state machine, an alarm)
    # Then they exist in moto under their resolved names (the alarm too, never evaluated: a test sets its state)
    assert stack.table_name("ProbeTable") == "probe-test"
    assert "probe-test" in stack.client("dynamodb").list_tables()["TableNames"]
    urls = stack.client("sqs").list_queues()["QueueUrls"]
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == [
        "bracketflow-local-WorkDeadLetterQueue",
        "bracketflow-local-WorkQueue",
    ]
    machines = stack.client("stepfunctions").list_state_machines()["stateMachines"]
    assert [m["name"] for m in machines] == ["bracketflow-local-ApprovalWorkflow"]
    alarms = stack.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert len(alarms) == 1 and alarms[0]["MetricName"] == "Errors"
    assert stack.template.skipped == {}


# ---------- the API ----------


def test_route_from_the_template_gets_an_api_gateway_proxy_event(stack):
    # When a client calls a templated route with a path parameter and a repeated query parameter
    status, body = http("GET", f"{stack.api_url}/echo/BR-42?side=buy&tag=a&tag=b")

    # Then the template's handler got a REST proxy event for that resource
    assert status == 200
    assert body["resource"] == "/echo/{id}"
    assert body["path"] == "/echo/BR-42"
    assert body["method"] == "GET"
    assert body["pathParameters"] == {"id": "BR-42"}
    assert body["query"] == {"side": "buy", "tag": "b"}
    assert body["multiQuery"] == {"side": ["buy"], "tag": ["a", "b"]}
    assert body["sourceIp"] == "127.0.0.1"
    assert body["stage"] == "test"
    assert body["function"] == "bracketflow-local-EchoFunction"


def test_post_body_and_greedy_proxy_path_reach_the_handler(stack):
    # When a JSON body is posted, and a nested path hits the {proxy+} route with any method
    status, posted = http("POST", f"{stack.api_url}/items", b'{"qty": 10}', {"Content-Type": "application/json"})
    proxy_status, proxied = http("DELETE", f"{stack.api_url}/files/reports/2024/jan.csv")

    # Then the handler's status is returned, the body passes through as text, the proxy path is one parameter
    assert (status, posted["body"], posted["isBase64Encoded"]) == (201, '{"qty": 10}', False)
    assert posted["contentType"] == "application/json"
    assert proxy_status == 200
    assert proxied["pathParameters"] == {"proxy": "reports/2024/jan.csv"}


def test_unknown_route_and_unsupported_methods_are_api_gateways_403_and_a_crash_502_as_json(stack):
    missing = (403, {"message": "Missing Authentication Token"})
    assert http("GET", f"{stack.api_url}/nowhere") == missing
    assert http("POST", f"{stack.api_url}/echo/1") == missing
    for method in ("TRACE", "PATCH", "CONNECT", "PROPFIND"):
        assert http(method, f"{stack.api_url}/echo/1") == missing, method
    assert http("POST", f"{stack.api_url}/health") == missing
    status, body = http("GET", f"{stack.api_url}/echo/crash")
    assert status == 502
    assert body == {"status": "error", "message": "the EchoFunction function failed: RuntimeError"}


# ---------- event sources ----------


def test_sqs_source_delivers_a_batch_deletes_successes_and_redrives_reported_failures_to_the_dlq(stack, table):
    sqs = stack.client("sqs")
    queue, dlq = stack.queue_url("WorkQueue"), stack.queue_url("WorkDeadLetterQueue")

    # Given a batch with two good messages and one the handler reports as failed
    sqs.send_message_batch(
        QueueUrl=queue,
        Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(["ok-1", "fail-1", "ok-2"])],
    )

    # Then the good ones are processed exactly once
    eventually(lambda: get_item(table, "done#ok-1") and get_item(table, "done#ok-2"), "both good messages processed")

    # And the failed one is retried until maxReceiveCount (2) and then lands in the dead-letter queue
    def dead_lettered():
        got = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0).get("Messages", [])
        return got[0] if got else None

    dead = eventually(dead_lettered, "the failing message moved to the DLQ")
    assert dead["Body"] == "fail-1"
    assert get_item(table, "attempt#fail-1")["attempts"] == {"N": "2"}
    assert get_item(table, "done#ok-1")["times"] == {"N": "1"}
    assert get_item(table, "done#ok-2")["times"] == {"N": "1"}
    assert get_item(table, "attempt#ok-1")["attempts"] == {"N": "1"}
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")


def test_a_slow_batch_does_not_hold_the_queues_other_messages_back(stack, table):
    sqs = stack.client("sqs")
    queue = stack.queue_url("WorkQueue")
    # Given a message whose handler is held (an exit waiting out a broker outage, say)
    sqs.send_message(QueueUrl=queue, MessageBody="slow-1")
    eventually(lambda: get_item(table, "attempt#slow-1"), "the slow message taken")
    try:
        # When another message arrives meanwhile
        sqs.send_message(QueueUrl=queue, MessageBody="ok-after-slow")
        # Then it is handled while the first is still held, as Lambda's concurrent pollers would
        eventually(lambda: get_item(table, "done#ok-after-slow"), "the second message handled")
        assert get_item(table, "done#slow-1") is None
    finally:
        client, name = table
        client.put_item(TableName=name, Item={"pk": {"S": "release#slow-1"}})
    eventually(lambda: get_item(table, "done#slow-1"), "the slow message finished once released")


def test_schedule_fires_its_function_with_the_schedules_input(stack, table):
    client, name = table

    def ticks():
        items = client.scan(TableName=name, ConsistentRead=True)["Items"]
        return [i for i in items if i["pk"]["S"].startswith("tick#")]

    fired = eventually(lambda: len(ticks()) >= 2 and ticks(), "the schedule fired twice")
    assert {i["source"]["S"] for i in fired} == {"timer"}


def test_dynamodb_stream_record_reaches_its_handler(stack, table):
    client, name = table

    # When an item is written to a table whose stream feeds a function
    client.put_item(TableName=name, Item={"pk": {"S": "watch#7"}, "note": {"S": "stop moved"}})

    # Then the handler got the INSERT record with the new image
    seen = eventually(lambda: get_item(table, "seen#watch#7"), "the stream record was handled")
    assert seen["event_name"] == {"S": "INSERT"}
    assert seen["note"] == {"S": "stop moved"}
    assert seen["source"] == {"S": "aws:dynamodb"}


# ---------- Step Functions ----------


def _history(sfn, execution_arn: str) -> list[dict]:
    return sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def _status(sfn, execution_arn: str) -> str | None:
    status = sfn.describe_execution(executionArn=execution_arn)["status"]
    return None if status == "RUNNING" else status


def test_state_machine_waits_runs_the_lambda_in_process_and_resumes_on_send_task_success(stack, table):
    sfn = stack.client("stepfunctions")

    # Given the approval workflow: Wait 1 s -> AddFee (a Lambda task) -> AwaitApproval (.waitForTaskToken)
    execution = sfn.start_execution(
        stateMachineArn=stack.state_machine_arn("ApprovalWorkflow"),
        name="order-1",
        input=json.dumps({"ref": "order-1", "amount": 100}),
    )["executionArn"]

    # When the task token the workflow parked is completed with SendTaskSuccess
    parked = eventually(lambda: get_item(table, "token#order-1"), "the workflow parked its task token")
    assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
    sfn.send_task_success(taskToken=parked["token"]["S"], output=json.dumps({"approved_by": "risk desk"}))

    # Then it succeeds, with the in-process handler's result (100 + the template's FeePoints 5) and the approval
    status = eventually(lambda: _status(sfn, execution), "the execution finished")
    assert status == "SUCCEEDED"
    output = json.loads(sfn.describe_execution(executionArn=execution)["output"])
    assert output["priced"] == {"total": 105}
    assert output["approval"] == {"approved_by": "risk desk"}

    # And the Wait state really waited its second before the Lambda ran
    events = _history(sfn, execution)
    entered = next(e["timestamp"] for e in events if e["type"] == "WaitStateEntered")
    exited = next(e["timestamp"] for e in events if e["type"] == "WaitStateExited")
    assert isinstance(entered, datetime)
    assert (exited - entered).total_seconds() >= 0.95
    types = [e["type"] for e in events]
    assert types.index("WaitStateExited") < types.index("LambdaFunctionSucceeded")


def test_a_named_error_from_a_lambda_task_is_caught_by_its_class_name(stack):
    sfn = stack.client("stepfunctions")

    # When the Lambda task raises BrokerDown (a negative amount cannot be priced)
    execution = sfn.start_execution(
        stateMachineArn=stack.state_machine_arn("ApprovalWorkflow"),
        name="order-bad",
        input=json.dumps({"ref": "order-bad", "amount": -1}),
    )["executionArn"]

    # Then the workflow's Catch on "BrokerDown" routes it to the Rejected state
    status = eventually(lambda: _status(sfn, execution), "the execution finished")
    assert status == "FAILED"
    described = sfn.describe_execution(executionArn=execution)
    assert described["error"] == "OrderRejected"
    failed = [e for e in _history(sfn, execution) if e["type"] == "LambdaFunctionFailed"]
    assert failed[0]["lambdaFunctionFailedEventDetails"]["error"] == "BrokerDown"


def test_send_task_failure_fails_the_waiting_task_with_the_given_error(stack, table):
    sfn = stack.client("stepfunctions")

    # Given an execution parked on its task token
    execution = sfn.start_execution(
        stateMachineArn=stack.state_machine_arn("ApprovalWorkflow"),
        name="order-2",
        input=json.dumps({"ref": "order-2", "amount": 1}),
    )["executionArn"]
    parked = eventually(lambda: get_item(table, "token#order-2"), "the workflow parked its task token")

    # When the token is completed with SendTaskFailure
    sfn.send_task_failure(taskToken=parked["token"]["S"], error="EntryRejected", cause="RMS: margin exceeds")

    # Then the execution fails with that error and cause
    assert eventually(lambda: _status(sfn, execution), "the execution finished") == "FAILED"
    assert sfn.describe_execution(executionArn=execution)["error"] == "EntryRejected"
    failed = next(e for e in _history(sfn, execution) if e["type"] == "ExecutionFailed")
    assert failed["executionFailedEventDetails"] == {"error": "EntryRejected", "cause": "RMS: margin exceeds"}
