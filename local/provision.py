"""The template's resources created in the local stack's moto server: tables, queues, secrets, parameters, alarms,
functions (whose invokes MotoServer routes to our handlers) and state machines."""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from local.moto_server import MotoServer
from local.template import Template

LAMBDA_ROLE_NAME = "bracketflow-local-execution"


def _dummy_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "# the local stack runs the handler from the source tree\n")
    return buf.getvalue()


@contextmanager
def _step(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise RuntimeError(f"creating {what} in moto failed: {exc}") from exc


_ALARM_FIELDS = (
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "ExtendedStatistic",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "Metrics",
    "Unit",
)


def _alarm_args(name: str, props: dict[str, Any]) -> dict[str, Any]:
    """PutMetricAlarm's arguments from an AWS::CloudWatch::Alarm's properties (actions left out: nothing to notify)."""
    args: dict[str, Any] = {"AlarmName": name, **{k: props[k] for k in _ALARM_FIELDS if k in props}}
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in args:
            args[key] = int(args[key])
    if "Threshold" in args:
        args["Threshold"] = float(args["Threshold"])
    return args


def provision(server: MotoServer, template: Template) -> None:
    """Create the template's tables, queues, secrets, parameters, alarms, functions and state machines in moto."""
    iam = server.client("iam")
    role_arn = iam.create_role(
        RoleName=LAMBDA_ROLE_NAME,
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]

    ddb = server.client("dynamodb")
    for table in template.tables.values():
        with _step(f"table {table.logical_id}"):
            ddb.create_table(**_table_args(table.name, table.properties))

    sqs = server.client("sqs")
    pending = list(template.queues.values())
    while pending:  # dead-letter queues first: moto checks the redrive target exists
        created = {q.arn for q in template.queues.values()} - {q.arn for q in pending}
        ready = [q for q in pending if not q.dead_letter_arn or q.dead_letter_arn in created]
        if not ready:
            raise RuntimeError(f"queues with a missing dead-letter queue: {[q.logical_id for q in pending]}")
        for queue in ready:
            with _step(f"queue {queue.logical_id}"):
                sqs.create_queue(QueueName=queue.name, Attributes=_queue_attributes(queue.properties))
            pending.remove(queue)

    secretsmanager = server.client("secretsmanager")
    for name, props in template.secrets.items():
        value = props.get("SecretString")
        if value is None:
            generate = props.get("GenerateSecretString") or {}
            secret = secrets.token_urlsafe(int(generate.get("PasswordLength", 32)))
            key = generate.get("GenerateStringKey")
            template_json = json.loads(generate.get("SecretStringTemplate") or "{}")
            value = json.dumps({**template_json, key: secret}) if key else secret
        with _step(f"secret {name}"):
            secretsmanager.create_secret(Name=name, SecretString=str(value))

    ssm = server.client("ssm")
    for name, props in template.ssm_parameters.items():
        with _step(f"parameter {name}"):
            ssm.put_parameter(Name=name, Type=str(props.get("Type", "String")), Value=str(props.get("Value", "")))

    cloudwatch = server.client("cloudwatch")
    for name, props in template.alarms.items():
        with _step(f"alarm {name}"):
            cloudwatch.put_metric_alarm(**_alarm_args(name, props))

    lam = server.client("lambda")
    code = _dummy_zip()
    for fn in template.functions.values():
        with _step(f"function {fn.logical_id}"):
            lam.create_function(
                FunctionName=fn.name,
                Runtime="python3.11",
                Role=role_arn,
                Handler=fn.handler,
                Code={"ZipFile": code},
                Timeout=fn.timeout,
                MemorySize=fn.memory_size,
                Environment={"Variables": fn.environment},
            )

    sfn = server.client("stepfunctions")
    for sm in template.state_machines.values():
        with _step(f"state machine {sm.logical_id}"):
            sfn.create_state_machine(name=sm.name, definition=json.dumps(sm.definition), roleArn=role_arn, type=sm.type)


def _table_args(name: str, props: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    throughput = props.get("ProvisionedThroughput")
    if args["BillingMode"] == "PROVISIONED" or throughput:
        args["ProvisionedThroughput"] = throughput or {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            args[key] = [
                {
                    k: v
                    for k, v in index.items()
                    if k in ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")
                }
                for index in props[key]
            ]
    stream = props.get("StreamSpecification")
    if stream:
        args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    return args


_QUEUE_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "MaximumMessageSize",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)


def _queue_attributes(props: dict[str, Any]) -> dict[str, str]:
    attrs = {}
    for key in _QUEUE_ATTRIBUTES:
        if key in props:
            value = props[key]
            attrs[key] = str(value).lower() if isinstance(value, bool) else str(value)
    redrive = props.get("RedrivePolicy")
    if redrive:
        attrs["RedrivePolicy"] = redrive if isinstance(redrive, str) else json.dumps(redrive)
    return attrs
