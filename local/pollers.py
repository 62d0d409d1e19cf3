"""The event sources Lambda would run for us: SQS pollers, EventBridge schedule timers, DynamoDB Streams pollers.

Each is a thread built from one entry of a function's (or state machine's) Events in template.yaml, talking to the moto
server like Lambda's pollers talk to AWS:
- SQS: receive up to BatchSize (within MaximumBatchingWindowInSeconds), call the handler, delete what succeeded;
  several batches at once (sqs_pollers: Lambda's five, or the source's ScalingConfig.MaximumConcurrency if lower);
  with ReportBatchItemFailures only the reported messages stay; failures come back after the visibility timeout and
  moto moves a message to the dead-letter queue once it has been received maxReceiveCount times.
- Schedule/ScheduleV2: rate(...) on its own interval, cron(...) every `cron_every_s` (local runs are not market
  hours); a state machine schedule starts an execution.
- DynamoDB: read the table's stream from LATEST (or TRIM_HORIZON), hand records to the handler in batches; a failed
  batch is retried from the first failed record, up to MaximumRetryAttempts (3 locally when unset), then skipped.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from local.runtime import FunctionError, LambdaRuntime
from local.template import ACCOUNT_ID, EventSource, FunctionSpec, StateMachineSpec, Template

log = logging.getLogger("local.events")


class Worker:
    """A named daemon thread running `run_once` until stopped; errors are logged and the loop keeps going."""

    idle_s = 0.2

    def __init__(self, name: str):
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("%s failed; retrying", self.name)
                busy = False
            if not busy:
                self._stop.wait(self.idle_s)

    def run_once(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------- SQS ----------


def _sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    attributes = {}
    for name, attr in (message.get("MessageAttributes") or {}).items():
        attributes[name] = {
            "stringValue": attr.get("StringValue"),
            "binaryValue": base64.b64encode(attr["BinaryValue"]).decode() if "BinaryValue" in attr else None,
            "stringListValues": attr.get("StringListValues", []),
            "binaryListValues": [base64.b64encode(b).decode() for b in attr.get("BinaryListValues", [])],
            "dataType": attr.get("DataType"),
        }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes") or {},
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def _failed_ids(result: Any, all_ids: list[str]) -> set[str]:
    """The ids a ReportBatchItemFailures response names; a malformed response fails the whole batch, as in AWS."""
    if result is None or (isinstance(result, dict) and not result.get("batchItemFailures")):
        return set()
    failures = result.get("batchItemFailures") if isinstance(result, dict) else None
    if not isinstance(failures, list):
        return set(all_ids)
    ids = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not item or item not in all_ids:
            return set(all_ids)
        ids.add(item)
    return ids


LAMBDA_SQS_POLLERS = 5  # Lambda starts an SQS event source with five concurrent pollers


def sqs_pollers(properties: dict[str, Any]) -> int:
    """How many batches of one SQS event source run at once: as on Lambda, five, or fewer when the source's
    ScalingConfig.MaximumConcurrency says so. One poller alone would make every message wait behind a slow batch
    (an exit waiting out a broker outage, say), which Lambda never does."""
    scaling = properties.get("ScalingConfig") or {}
    try:
        most = int(scaling.get("MaximumConcurrency", LAMBDA_SQS_POLLERS))
    except (TypeError, ValueError):
        most = LAMBDA_SQS_POLLERS
    return max(1, min(most, LAMBDA_SQS_POLLERS))


class SqsPoller(Worker):
    def __init__(
        self,
        runtime: LambdaRuntime,
        fn: FunctionSpec,
        event: EventSource,
        template: Template,
        sqs: Any,
        index: int = 0,
    ):
        super().__init__(f"sqs:{fn.logical_id}.{event.name}" + (f"#{index}" if index else ""))
        self.index = index
        queue = template.queue_by_arn(str(event.properties["Queue"]))
        if queue is None:
            raise ValueError(f"{fn.logical_id}.{event.name}: queue {event.properties['Queue']} is not in the template")
        self.runtime, self.fn, self.sqs, self.queue = runtime, fn, sqs, queue
        self.region = queue.arn.split(":")[3]
        self.batch_size = int(event.properties.get("BatchSize", 10))
        self.window_s = float(event.properties.get("MaximumBatchingWindowInSeconds", 0))
        self.partial = "ReportBatchItemFailures" in (event.properties.get("FunctionResponseTypes") or [])

    def run_once(self) -> bool:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.window_s
        while len(messages) < self.batch_size and not self.stopping:
            got = self.sqs.receive_message(
                QueueUrl=self.queue.url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                # short long-poll so stop() is prompt; the extra pollers of a source never long-poll (the first one
                # does): dozens of threads waiting in moto at once made stopping the stack slow under load
                WaitTimeSeconds=0 if messages or self.index else 1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(got)
            if not got or time.monotonic() >= deadline:
                break
        if not messages:
            return False
        records = [_sqs_record(m, self.queue.arn, self.region) for m in messages]
        ids = [r["messageId"] for r in records]
        try:
            result = self.runtime.invoke(self.fn.logical_id, {"Records": records})
            failed = _failed_ids(result, ids) if self.partial else set()
        except FunctionError:
            failed = set(ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        log.info(
            "%s <- %s: %d message(s), %d failed (back after the visibility timeout)",
            self.fn.logical_id,
            self.queue.name,
            len(messages),
            len(failed),
        )
        return True


# ---------- schedules ----------

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_S = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def schedule_interval_s(expression: str, cron_every_s: float) -> float:
    found = _RATE.fullmatch(expression.strip())
    if found:
        return int(found.group(1)) * _UNIT_S[found.group(2)]
    if expression.strip().startswith(("cron(", "at(")):
        return cron_every_s
    raise ValueError(f"unsupported schedule expression {expression!r}")


class ScheduleTimer(Worker):
    """Fires every interval (first after one interval, as EventBridge does) for a function or a state machine."""

    def __init__(
        self,
        target: FunctionSpec | StateMachineSpec,
        event: EventSource,
        interval_s: float,
        fire: Any,
    ):
        super().__init__(f"schedule:{target.logical_id}.{event.name}")
        self.target, self.event, self.interval_s, self._fire = target, event, interval_s, fire
        props = event.properties
        self.expression = str(props.get("Schedule") or props.get("ScheduleExpression"))
        self.input = props.get("Input")
        self.idle_s = interval_s
        self._next = time.monotonic() + interval_s

    @property
    def enabled(self) -> bool:
        props = self.event.properties
        return props.get("Enabled", True) is not False and str(props.get("State", "ENABLED")).upper() == "ENABLED"

    def payload(self) -> Any:
        if self.input is not None:
            return json.loads(self.input) if isinstance(self.input, str) else self.input
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT_ID,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.target.arn.split(":")[3],
            "resources": [f"arn:aws:events:{self.target.arn.split(':')[3]}:{ACCOUNT_ID}:rule/{self.name}"],
            "detail": {},
        }

    def run_once(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.idle_s = self._next - now
            return False
        self._next = now + self.interval_s
        self.idle_s = self.interval_s
        log.info("%s fired (%s)", self.name, self.expression)
        self._fire(self.target, self.payload())
        return False


# ---------- DynamoDB Streams ----------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


class StreamPoller(Worker):
    def __init__(
        self,
        runtime: LambdaRuntime,
        fn: FunctionSpec,
        event: EventSource,
        stream_arn: str,
        streams: Any,
        forget_iterator: Any = None,
    ):
        super().__init__(f"stream:{fn.logical_id}.{event.name}")
        self.runtime, self.fn, self.streams, self.stream_arn = runtime, fn, streams, stream_arn
        props = event.properties
        self.batch_size = int(props.get("BatchSize", 100))
        self.partial = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])
        retries = int(props.get("MaximumRetryAttempts", 3))
        self.max_retries = 3 if retries < 0 else retries  # AWS's -1 (forever) would stall a dev stack
        self.region = stream_arn.split(":")[3]
        self._forget = forget_iterator or (lambda _it: None)
        shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self.shard_id = shard
        position = str(props.get("StartingPosition", "LATEST"))
        self._iterator = streams.get_shard_iterator(
            StreamArn=stream_arn,
            ShardId=shard,
            ShardIteratorType="TRIM_HORIZON" if position == "TRIM_HORIZON" else "LATEST",
        )["ShardIterator"]
        self._attempts = 0

    def _seek(self, sequence_number: str) -> None:
        self._forget(self._iterator)
        self._iterator = self.streams.get_shard_iterator(
            StreamArn=self.stream_arn,
            ShardId=self.shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=sequence_number,
        )["ShardIterator"]

    def run_once(self) -> bool:
        got = self.streams.get_records(ShardIterator=self._iterator, Limit=self.batch_size)
        records = got.get("Records", [])
        if not records:
            self._forget(self._iterator)
            self._iterator = got["NextShardIterator"]
            return False
        event_records = []
        for record in records:
            rec = _jsonable(record)
            rec["awsRegion"] = self.region
            rec["eventSourceARN"] = self.stream_arn
            event_records.append(rec)
        sequences = [r["dynamodb"]["SequenceNumber"] for r in event_records]
        try:
            result = self.runtime.invoke(self.fn.logical_id, {"Records": event_records})
            failed = _failed_ids(result, sequences) if self.partial else set()
        except FunctionError:
            failed = set(sequences)
        if failed and self._attempts < self.max_retries:
            self._attempts += 1
            first = min(failed, key=int)
            log.warning("%s: batch failed from sequence %s, retry %d", self.name, first, self._attempts)
            self._seek(first)
            return False
        if failed:
            log.error("%s: giving up on %d record(s) after %d retries", self.name, len(failed), self._attempts)
        self._attempts = 0
        self._forget(self._iterator)
        self._iterator = got["NextShardIterator"]
        log.info("%s <- %d stream record(s)", self.fn.logical_id, len(records))
        return True
