"""The cost benchmarks' meter: what AWS would bill for the requests moto serves, the handlers' invocations and the
bytes they log, counted into buckets (bench_cost.py says what each service is billed for)."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

OBSERVER_AGENT = "bracketflow-bench-observer"

# DynamoDB Streams reads and the pollers' empty receives are the fixed cost of an event source, not per bracket.
_FREE_OR_FIXED = {("dynamodbstreams", a) for a in ("GetRecords", "GetShardIterator", "DescribeStream", "ListStreams")}


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


def _typed_size(value: Any) -> int:
    """Size of a DynamoDB JSON value as DynamoDB counts it (close enough: numbers by their digits)."""
    if not isinstance(value, dict) or len(value) != 1:
        return 0
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return math.ceil(len(str(inner).lstrip("-").replace(".", "")) / 2) + 1
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner)) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + _typed_size(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(_typed_size(v) + 1 for v in inner)
    if kind in ("SS", "NS", "BS"):
        return sum(_typed_size({kind[0]: v}) for v in inner)
    return 0


def _item_size(item: dict[str, Any] | None) -> int:
    return sum(len(k.encode()) + _typed_size(v) for k, v in (item or {}).items())


class Meter:
    """Counts billable operations into the current bucket (None: not counting)."""

    def __init__(self) -> None:
        self.bucket: str | None = None
        self._lock = threading.Lock()
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.wru: dict[str, float] = defaultdict(float)
        self.rru: dict[str, float] = defaultdict(float)
        self.lambdas: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        self.triggers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.log_bytes: dict[str, int] = defaultdict(int)
        self.first_events: dict[str, Any] = {}  # the first event each function saw (bench_memory replays them)
        self._gsi_keys: dict[str, list[tuple[str, ...]]] = {}
        self._undo: list[Callable[[], None]] = []

    # -- installing the hooks --

    def install(self, stack: Any) -> None:
        from moto.core.responses import BaseResponse

        for table in stack.template.tables.values():
            description = stack.client("dynamodb").describe_table(TableName=table.name)["Table"]
            self._gsi_keys[table.name] = [
                tuple(k["AttributeName"] for k in index["KeySchema"])
                for index in description.get("GlobalSecondaryIndexes", [])
            ]

        original_call = BaseResponse.call_action
        meter = self

        def call_action(response: Any) -> Any:
            bucket = meter.bucket
            if bucket is None or OBSERVER_AGENT in str(response.headers.get("User-Agent", "")):
                return original_call(response)
            service = type(response).__module__.split(".")[1]
            action = response._get_action()
            before = meter._dynamo_before(response, action) if service == "dynamodb" else None
            result = original_call(response)
            try:
                meter._count(bucket, service, action, response, result, before)
            except Exception as exc:  # a meter bug must never break the stack it watches
                print(f"bench_cost: could not meter {service}.{action}: {exc!r}", file=sys.stderr)
            return result

        BaseResponse.call_action = call_action  # type: ignore[method-assign,assignment]
        self._undo.append(lambda: setattr(BaseResponse, "call_action", original_call))

        runtime = stack.runtime
        original_invoke = runtime.invoke

        def invoke(name_or_arn: str, event: Any) -> Any:
            bucket = meter.bucket
            spec = runtime.spec(name_or_arn)
            if bucket is not None and spec.logical_id not in meter.first_events:
                meter.first_events[spec.logical_id] = copy.deepcopy(event)
            started = time.perf_counter()
            try:
                return original_invoke(name_or_arn, event)
            finally:
                if bucket is not None:
                    meter._count_invocation(bucket, spec, event, (time.perf_counter() - started) * 1000)

        runtime.invoke = invoke
        self._undo.append(lambda: setattr(runtime, "invoke", original_invoke))

        # Handlers log through Powertools (a StreamHandler bound to stdout when created) and print EMF to stdout.
        import logging

        counting = _CountingStream(sys.stdout, self)
        saved_stdout = sys.stdout
        sys.stdout = counting
        self._undo.append(lambda: setattr(sys, "stdout", saved_stdout))
        for handler in logging.getLogger("bracketflow").handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None:
                handler.stream = _CountingStream(stream, self)  # type: ignore[attr-defined]
                self._undo.append(functools.partial(setattr, handler, "stream", stream))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    @contextlib.contextmanager
    def counting(self, bucket: str) -> Iterator[None]:
        previous, self.bucket = self.bucket, bucket
        try:
            yield
        finally:
            self.bucket = previous

    # -- counting --

    def _count_invocation(self, bucket: str, spec: Any, event: Any, ms: float) -> None:
        trigger = _trigger_of(event)
        with self._lock:
            row = self.lambdas[bucket].setdefault(
                spec.logical_id, {"invocations": 0, "billed_ms": 0, "memory_mb": spec.memory_size, "max_ms": 0.0}
            )
            row["invocations"] += 1
            row["billed_ms"] += math.ceil(ms)
            row["max_ms"] = max(row["max_ms"], round(ms, 1))
            self.triggers[bucket][trigger] += 1

    def _table_item(self, response: Any, table: str, key: dict[str, Any]) -> Any:
        with contextlib.suppress(Exception):
            return response.dynamodb_backend.get_item(table, key)
        return None

    def _dynamo_before(self, response: Any, action: str) -> Any:
        body = response.body if isinstance(response.body, dict) else {}
        if action in ("PutItem", "UpdateItem", "DeleteItem"):
            key = body.get("Key") or self._key_of(body.get("TableName", ""), body.get("Item", {}))
            return [(body.get("TableName"), key, self._snapshot(response, body.get("TableName"), key))]
        if action == "TransactWriteItems":
            out = []
            for entry in body.get("TransactItems", []):
                ((kind, op),) = entry.items()
                key = op.get("Key") or self._key_of(op.get("TableName", ""), op.get("Item", {}))
                out.append((op.get("TableName"), key, self._snapshot(response, op.get("TableName"), key), kind))
            return out
        return None

    def _key_of(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k in ("pk", "sk", "id")}

    def _snapshot(self, response: Any, table: str | None, key: dict[str, Any]) -> dict[str, Any] | None:
        found = self._table_item(response, table or "", key)
        return None if found is None else found.to_json()["Attributes"]

    def _write_units(self, table: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
        size = max(_item_size(before), _item_size(after))
        units = _units(size, 1024)
        for keys in self._gsi_keys.get(table, []):
            had = before is not None and all(k in before for k in keys)
            has = after is not None and all(k in after for k in keys)
            if had and has:
                moved = any(before[k] != after[k] for k in keys)  # type: ignore[index]
                units += _units(size, 1024) * (2 if moved else 1)
            elif had or has:
                units += _units(size, 1024)
        return units

    def _dynamodb_units(self, action: str, response: Any, body_out: Any, before: Any) -> tuple[float, float]:
        """The write and read request units one DynamoDB call is billed."""
        wru = rru = 0.0
        body = response.body if isinstance(response.body, dict) else {}
        if action in ("PutItem", "UpdateItem", "DeleteItem"):
            table, key, old = before[0]
            new = self._snapshot(response, table, key)
            wru = self._write_units(table, old, new)
        elif action == "TransactWriteItems":
            for table, key, old, kind in before:
                if kind == "ConditionCheck":
                    wru += 2 * _units(_item_size(old), 1024)
                    continue
                new = self._snapshot(response, table, key)
                wru += 2 * self._write_units(table, old, new)
        elif action == "GetItem":
            factor = 1.0 if body.get("ConsistentRead") else 0.5
            rru = factor * _units(_item_size(body_out.get("Item")), 4096)
        elif action in ("Query", "Scan"):
            factor = 1.0 if body.get("ConsistentRead") else 0.5
            rru = factor * _units(sum(_item_size(i) for i in body_out.get("Items", [])), 4096)
        elif action == "TransactGetItems":
            rru = sum(2 * _units(_item_size(r.get("Item")), 4096) for r in body_out.get("Responses", []))
        elif action == "BatchGetItem":
            rru = sum(
                0.5 * _units(_item_size(i), 4096) for items in body_out.get("Responses", {}).values() for i in items
            )
        elif action == "BatchWriteItem":
            wru = sum(len(v) for v in body.get("RequestItems", {}).values())
        return wru, rru

    def _count(self, bucket: str, service: str, action: str, response: Any, result: Any, before: Any) -> None:
        if (service, action) in _FREE_OR_FIXED or service == "dynamodbstreams":
            return
        body_out: Any = {}
        if isinstance(result, tuple) and result and isinstance(result[-1], str | bytes):
            with contextlib.suppress(ValueError):
                body_out = json.loads(result[-1] or "{}")
        if service == "sqs" and action == "ReceiveMessage" and not (body_out or {}).get("Messages"):
            return  # an empty (long) poll: the fixed cost of a poller
        wru = rru = 0.0
        if service == "dynamodb":
            wru, rru = self._dynamodb_units(action, response, body_out, before)
        with self._lock:
            self.requests[bucket][f"{service}.{action}"] += 1
            self.wru[bucket] += wru
            self.rru[bucket] += rru


class _CountingStream(io.TextIOBase):
    def __init__(self, inner: Any, meter: Meter) -> None:
        self._inner, self._meter = inner, meter

    def write(self, text: str) -> int:
        bucket = self._meter.bucket
        if bucket is not None:
            self._meter.log_bytes[bucket] += len(text.encode())
        return int(self._inner.write(text))

    def flush(self) -> None:
        self._inner.flush()

    def fileno(self) -> int:
        return int(self._inner.fileno())

    def isatty(self) -> bool:
        return False


def _trigger_of(event: Any) -> str:
    if isinstance(event, dict):
        if "httpMethod" in event and "requestContext" in event:
            return "api"
        records = event.get("Records")
        if isinstance(records, list) and records:
            return str(records[0].get("eventSource", "records")).removeprefix("aws:")
        if "requestContext" in event:
            return "websocket"
    return "stepfunctions"
