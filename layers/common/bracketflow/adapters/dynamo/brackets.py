"""BracketRepository: the bracket's STATE, legs and audit events, written together or not at all.

Every write of the STATE item is conditional: a create on the key not existing, a change on the version and
status it was read at. Each change carries its audit event(s) in the same TransactWriteItems, so a bracket
never changes without a record of why (docs/reliability.md). A lost race raises ConcurrentModification.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.table import ddb, table, table_name
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus
from bracketflow.errors import ConcurrentModification


@dataclass(frozen=True)
class ConditionalPut:
    """An extra item written in the same transaction only if its condition holds (e.g. a dedupe key)."""

    item: dict[str, Any]
    condition: str
    values: Mapping[str, Any] | None = None


class ExtraConditionFailed(Exception):
    """One of the extra conditional puts lost (its key is taken); the bracket was NOT written."""

    def __init__(self, index: int) -> None:
        super().__init__(f"extra item {index} already exists")
        self.index = index


def event_payload(event: Any, at: datetime | None = None) -> dict[str, Any]:
    """A domain event (an object with to_dict(), or a plain mapping) as {"type", "at", ...its fields}."""
    if isinstance(event, Mapping):
        payload = dict(event)
    elif hasattr(event, "to_dict"):
        payload = dict(event.to_dict())
    else:
        raise TypeError(f"not an event: {event!r}")
    # Domain events nest their fields under "data"; the audit item keeps them flat beside type and at.
    nested = payload.pop("data", None)
    if isinstance(nested, Mapping):
        payload = {**{k: v for k, v in payload.items() if k not in ("bracket_id", "bracket_version")}, **nested}
    payload["type"] = payload.get("type") or payload.get("event_type") or type(event).__name__
    when = payload.get("at") or payload.get("occurred_at") or at or datetime.now(UTC)
    if isinstance(when, str):
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(when)
    payload["at"] = r.iso(when) if isinstance(when, datetime) else str(when)
    return payload


class BracketRepository:
    """Persistence of the bracket aggregate; general enough for the lifecycle Lambdas to build on."""

    # ---------- reads ----------
    def get(self, bracket_id: str) -> Bracket | None:
        item = table().get_item(Key=r.bracket_state_key(bracket_id), ConsistentRead=True).get("Item")
        return r.bracket_from_item(item) if item else None

    def get_for_account(self, account_id: str, bracket_id: str) -> Bracket | None:
        """The bracket only if it belongs to `account_id` (another account's bracket looks absent)."""
        found = self.get(bracket_id)
        return found if found is not None and found.account_id == account_id else None

    def events(self, bracket_id: str) -> list[dict[str, Any]]:
        items = self._query_pk(r.bracket_pk(bracket_id), r.EVENT_PREFIX)
        return [r.event_from_item(i) for i in items]

    def legs(self, bracket_id: str) -> list[dict[str, Any]]:
        return [r.plain(i) for i in self._query_pk(r.bracket_pk(bracket_id), r.ORDER_PREFIX)]

    def list_open(self, account_id: str | None = None) -> list[Bracket]:
        """Every bracket not yet terminal (optionally one account's), from the sparse OPEN index."""
        cond = Key("gsi2pk").eq(r.OPEN)
        if account_id is not None:
            cond = cond & Key("gsi2sk").begins_with(f"{account_id}#")
        return [r.bracket_from_item(i) for i in self._query_index("gsi2", cond)]

    def order_book(self, account_id: str, day: str | None = None, limit: int = 1000) -> list[Bracket]:
        """An account's brackets, newest first; `day` (YYYY-MM-DD, UTC) narrows to one day."""
        return [b for b, _ in self.order_book_with_pnl(account_id, day, limit)]

    def order_book_with_pnl(
        self, account_id: str, day: str | None = None, limit: int = 1000
    ) -> list[tuple[Bracket, Decimal | None]]:
        """order_book, each bracket with the realised P&L its close recorded (None while it is not closed)."""
        cond = Key("gsi1pk").eq(r.account_pk(account_id))
        cond = cond & (Key("gsi1sk").begins_with(day) if day else Key("gsi1sk").begins_with("2"))
        items = self._query_index("gsi1", cond, forward=False, limit=limit)
        return [(r.bracket_from_item(i), _decimal_or_none(i.get("realised_pnl"))) for i in items]

    def realised_pnl_between(self, account_id: str, start: str, end: str) -> Decimal:
        """Sum of `realised_pnl` (written when a bracket closes) over brackets created in [start, end) (ISO UTC)."""
        cond = Key("gsi1pk").eq(r.account_pk(account_id)) & Key("gsi1sk").between(start, end)
        total = Decimal(0)
        kwargs: dict[str, Any] = {
            "IndexName": "gsi1",
            "KeyConditionExpression": cond,
            "ProjectionExpression": "realised_pnl",
        }
        while True:
            page = table().query(**kwargs)
            total += sum((Decimal(i["realised_pnl"]) for i in page["Items"] if "realised_pnl" in i), Decimal(0))
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # ---------- writes ----------
    def create(
        self,
        bracket: Bracket,
        events: Sequence[Any],
        *,
        legs: Iterable[dict[str, Any]] = (),
        extra: Sequence[ConditionalPut] = (),
    ) -> None:
        """Write a new bracket (CREATED), its legs, its events and any extra conditional items, atomically.

        Raises ExtraConditionFailed(index) when an extra item's condition failed (nothing is written).
        """
        self.create_many([(bracket, events, legs)], extra=extra)

    def create_many(
        self,
        brackets: Sequence[tuple[Bracket, Sequence[Any], Iterable[dict[str, Any]]]],
        *,
        extra: Sequence[ConditionalPut] = (),
    ) -> None:
        """create() for several new brackets (a scale-out's shares), each with its events and legs: all or none."""
        name = table_name()
        items: list[dict[str, Any]] = []
        for bracket, events, legs in brackets:
            items.append(
                {
                    "Put": {
                        "TableName": name,
                        "Item": r.bracket_to_item(bracket),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
            items += [{"Put": {"TableName": name, "Item": leg}} for leg in legs]
            items += self._event_puts(bracket, events)
        first_extra = len(items)
        for put in extra:
            op: dict[str, Any] = {"TableName": name, "Item": put.item, "ConditionExpression": put.condition}
            if put.values:
                op["ExpressionAttributeValues"] = dict(put.values)
            items.append({"Put": op})
        self._transact(items, first_extra=first_extra if extra else None)

    def save(
        self,
        previous: Bracket,
        current: Bracket,
        events: Sequence[Any],
        *,
        legs: Iterable[dict[str, Any]] = (),
        extra: Sequence[ConditionalPut] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist `current` over `previous` if nobody changed the bracket since `previous` was read.

        `attributes` are extra STATE attributes the aggregate does not carry (realised_pnl, exit_price), SET too.
        """
        if current.id != previous.id or current.version <= previous.version:
            raise ValueError("save() needs the next version of the same bracket")
        item = {**r.bracket_to_item(current), **(attributes or {})}
        names: dict[str, str] = {}
        values: dict[str, Any] = {":expected_version": previous.version, ":expected_status": previous.status.value}
        sets = []
        for i, (attr, value) in enumerate((k, v) for k, v in item.items() if k not in ("pk", "sk")):
            names[f"#a{i}"] = attr
            values[f":v{i}"] = value
            sets.append(f"#a{i} = :v{i}")
        removes = []
        for j, attr in enumerate(r.removable_state_attrs(item)):
            names[f"#r{j}"] = attr
            removes.append(f"#r{j}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        names["#version"], names["#status"] = "version", "status"
        name = table_name()
        ops: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": name,
                    "Key": r.bracket_state_key(current.id),
                    "UpdateExpression": expression,
                    "ConditionExpression": "#version = :expected_version AND #status = :expected_status",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            }
        ]
        ops += [{"Put": {"TableName": name, "Item": leg}} for leg in legs]
        ops += self._event_puts(current, events)
        first_extra = len(ops)
        for put in extra:
            op: dict[str, Any] = {"TableName": name, "Item": put.item, "ConditionExpression": put.condition}
            if put.values:
                op["ExpressionAttributeValues"] = dict(put.values)
            ops.append({"Put": op})
        self._transact(ops, first_extra=first_extra if extra else None, bracket_id=current.id)

    def transition(self, bracket: Bracket, to_status: BracketStatus, event: Any, **changes: Any) -> Bracket:
        """Move the bracket to `to_status` (the transition table decides), with its event; returns the new bracket."""
        current = bracket.transition(to_status, **changes)
        self.save(bracket, current, [event])
        return current

    def append_event(self, bracket: Bracket, event: Any, **changes: Any) -> Bracket:
        """Record an event that changes no status (e.g. a workflow start that failed), bumping the version."""
        current = bracket.update(**changes)
        self.save(bracket, current, [event])
        return current

    # ---------- helpers ----------
    def _event_puts(self, bracket: Bracket, events: Sequence[Any]) -> list[dict[str, Any]]:
        name = table_name()
        out = []
        for seq, event in enumerate(events):
            payload = event_payload(event, at=bracket.updated_at)
            item = r.event_item(bracket.id, bracket.account_id, bracket.version, seq, payload)
            out.append({"Put": {"TableName": name, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}})
        return out

    def _transact(self, ops: list[dict[str, Any]], *, first_extra: int | None, bracket_id: str | None = None) -> None:
        try:
            ddb().transact_write_items(TransactItems=ops)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or []
            codes = [(x or {}).get("Code", "None") for x in reasons]
            if first_extra is not None:
                for index, code in enumerate(codes[first_extra:]):
                    if code == "ConditionalCheckFailed":
                        raise ExtraConditionFailed(index) from exc
            if "ConditionalCheckFailed" in codes or not codes:
                raise ConcurrentModification(
                    f"bracket {bracket_id or '(new)'} was changed by someone else; read it again"
                ) from exc
            raise

    def _query_pk(self, pk: str, prefix: str) -> list[dict[str, Any]]:
        cond = Key("pk").eq(pk) & Key("sk").begins_with(prefix)
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": cond, "ConsistentRead": True}
        while True:
            page = table().query(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query_index(
        self, index: str, cond: Any, *, forward: bool = True, limit: int | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"IndexName": index, "KeyConditionExpression": cond, "ScanIndexForward": forward}
        while True:
            page = table().query(**kwargs)
            items += page["Items"]
            if limit is not None and len(items) >= limit:
                return items[:limit]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)
