"""Readable console lines as things move: item changes on every table with a stream (a bracket's status going from
one value to the next), and workflow executions starting and finishing. Console only; nothing depends on it."""

from __future__ import annotations

import logging
from typing import Any

from local.pollers import Worker
from local.template import StateMachineSpec, TableSpec

log = logging.getLogger("local.activity")


def _plain(value: dict[str, Any]) -> Any:
    ((kind, inner),) = value.items()
    if kind == "M":
        return {k: _plain(v) for k, v in inner.items()}
    if kind == "L":
        return [_plain(v) for v in inner]
    return inner


def describe_change(record: dict[str, Any]) -> str:
    """`MODIFY pk=BR#1 sk=STATE status ENTRY_PLACED -> ENTRY_FILLED` from a DynamoDB stream record."""
    data = record["dynamodb"]
    keys = " ".join(f"{k}={_plain(v)}" for k, v in data.get("Keys", {}).items())
    old = {k: _plain(v) for k, v in (data.get("OldImage") or {}).items()}
    new = {k: _plain(v) for k, v in (data.get("NewImage") or {}).items()}
    parts = [record["eventName"], keys]
    for name in sorted(set(old) | set(new)):
        if "status" not in name.lower():
            continue
        before, after = old.get(name), new.get(name)
        if before != after:
            parts.append(f"{name} {before or '-'} -> {after or '-'}")
        elif after is not None:
            parts.append(f"{name} {after}")
    return " ".join(parts)


class TableActivity(Worker):
    idle_s = 0.5

    def __init__(self, table: TableSpec, stream_arn: str, streams: Any, forget: Any):
        super().__init__(f"activity:{table.logical_id}")
        self.table, self.streams, self._forget = table, streams, forget
        shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self._iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard, ShardIteratorType="LATEST")[
            "ShardIterator"
        ]

    def run_once(self) -> bool:
        got = self.streams.get_records(ShardIterator=self._iterator, Limit=100)
        self._forget(self._iterator)
        self._iterator = got["NextShardIterator"]
        for record in got.get("Records", []):
            log.info("%s %s", self.table.logical_id, describe_change(record))
        return bool(got.get("Records"))


class ExecutionActivity(Worker):
    idle_s = 1.0

    def __init__(self, machines: list[StateMachineSpec], sfn: Any):
        super().__init__("activity:workflows")
        self.machines, self.sfn = machines, sfn
        self._seen: dict[str, str] = {}

    def run_once(self) -> bool:
        for sm in self.machines:
            for execution in self.sfn.list_executions(stateMachineArn=sm.arn, maxResults=100)["executions"]:
                arn, status = execution["executionArn"], execution["status"]
                if self._seen.get(arn) != status:
                    self._seen[arn] = status
                    log.info("%s %s %s", sm.logical_id, execution["name"], status)
        return False
