"""Batch orders in the single table: the batch's STATE, one item per leg, and the batch's audit events.

pk               sk             what
BATCH#<id>       STATE          account_id, status (IN_PROGRESS, ROLLING_BACK, PLACED, PARTIAL, ROLLED_BACK, FAILED),
                                rollback_on_failure, total_orders, created_at, updated_at, completed_at, message
                                  gsi1pk=ACCOUNT#<account_id>, gsi1sk=BATCH#<created_at>#<batch_id>  (an account's
                                  batches, newest first; the "BATCH#" prefix keeps them out of the order book, whose
                                  range keys start with the date)
BATCH#<id>       LEG#<nn>       one leg (nn = 01..10, the request's order): the validated order (tradingsymbol,
                                exchange, transaction_type, quantity in units, order_type, product, price,
                                trigger_price, validity), its broker tag, status (CREATED, PLACED, FAILED, CANCELLED,
                                SQUARED_OFF), order_id, broker_status, filled_quantity, average_price, message, and
                                the compensation: rollback (DONE, NOT_NEEDED, GAVE_UP), rollback_action (CANCEL,
                                SQUARE_OFF, CANCEL_AND_SQUARE_OFF, NONE), rollback_order_id, rollback_quantity
BATCH#<id>       EVENT#<n>      immutable audit event; n is a time-ordered id (ULID), so events sort by when they
                                happened even when legs are placed concurrently
DEDUPE#<account>#BATCH#<client_batch_id>  KEY   batch_id, request_hash, expires_at: the client's idempotency key,
                                written in the SAME transaction as the batch (so a key names a batch that exists) and
                                taken only while absent or expired (TTL deletion lags by hours)

Every change of a leg or of the STATE is a conditional update on the status (or rollback) it expects, written in
the same transaction as its audit event: a step that runs twice finds the condition false, writes nothing and
reads back what the first run recorded. Money is stored as DynamoDB numbers (Decimal), never float.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo.records import account_pk, dedupe_batch_key, iso, plain, to_dynamo
from bracketflow.adapters.dynamo.table import ddb, table, table_name
from bracketflow.domain.ids import new_ulid

STATE = "STATE"
LEG_PREFIX = "LEG#"
EVENT_PREFIX = "EVENT#"
LISTING_PREFIX = "BATCH#"


def batch_pk(batch_id: str) -> str:
    return f"BATCH#{batch_id}"


def state_key(batch_id: str) -> dict[str, str]:
    return {"pk": batch_pk(batch_id), "sk": STATE}


def leg_key(batch_id: str, leg: int) -> dict[str, str]:
    return {"pk": batch_pk(batch_id), "sk": f"{LEG_PREFIX}{leg:02d}"}


def now_iso() -> str:
    return iso(datetime.now(UTC))


def state_item(batch_id: str, account_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    created_at = str(fields["created_at"])
    return {
        **state_key(batch_id),
        "type": "BATCH",
        "batch_id": batch_id,
        "account_id": account_id,
        **{k: to_dynamo(v) for k, v in fields.items() if v is not None},
        "gsi1pk": account_pk(account_id),
        "gsi1sk": f"{LISTING_PREFIX}{created_at}#{batch_id}",
    }


def leg_item(batch_id: str, account_id: str, leg: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **leg_key(batch_id, leg),
        "type": "BATCH_LEG",
        "batch_id": batch_id,
        "account_id": account_id,
        "leg": leg,
        **{k: to_dynamo(v) for k, v in fields.items() if v is not None},
    }


def event_item(batch_id: str, account_id: str, event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "pk": batch_pk(batch_id),
        "sk": f"{EVENT_PREFIX}{new_ulid()}",
        "type": "BATCH_EVENT",
        "event_type": event_type,
        "at": now_iso(),
        "batch_id": batch_id,
        "account_id": account_id,
        "data": to_dynamo({k: v for k, v in data.items() if v is not None}),
    }


@dataclass(frozen=True)
class BatchIdKey:
    """A client_batch_id to claim with the batch: the key item, and the clock its expiry is judged by."""

    account_id: str
    client_batch_id: str
    request_hash: str
    now_s: int
    window_s: int


class BatchIdTaken(Exception):
    """The client_batch_id is held by a live earlier batch; nothing of the new batch was written."""


class BatchRepository:
    """Persistence of batches: one transaction per change, each with its audit event."""

    def create(
        self,
        state: dict[str, Any],
        legs: Iterable[dict[str, Any]],
        event: dict[str, Any],
        batch_id_key: BatchIdKey | None = None,
    ) -> None:
        """The batch, all its legs, its first event and its client_batch_id key, together or not at all.

        Raises BatchIdTaken (writing nothing) when the key is held by a batch whose window has not ended.
        """
        not_there = "attribute_not_exists(pk)"
        items = [state, *legs, event]
        ops: list[dict[str, Any]] = [
            {"Put": {"TableName": table_name(), "Item": item, "ConditionExpression": not_there}} for item in items
        ]
        if batch_id_key is not None:
            k = batch_id_key
            key_item = {
                **dedupe_batch_key(k.account_id, k.client_batch_id),
                "type": "DEDUPE",
                "batch_id": state["batch_id"],
                "request_hash": k.request_hash,
                "expires_at": k.now_s + k.window_s,
            }
            ops.append(
                {
                    "Put": {
                        "TableName": table_name(),
                        "Item": key_item,
                        "ConditionExpression": "attribute_not_exists(pk) OR expires_at < :now",
                        "ExpressionAttributeValues": {":now": k.now_s},
                    }
                }
            )
        try:
            ddb().transact_write_items(TransactItems=ops)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            taken = (
                batch_id_key is not None
                and exc.response["Error"]["Code"] == "TransactionCanceledException"
                and len(reasons) == len(ops)
                and (reasons[-1] or {}).get("Code") == "ConditionalCheckFailed"
            )
            if taken:
                raise BatchIdTaken(batch_id_key.client_batch_id if batch_id_key else "") from exc
            raise

    def batch_id_key(self, account_id: str, client_batch_id: str, now_s: int) -> dict[str, Any] | None:
        """The live key item of a client_batch_id (batch_id, request_hash), or None when absent or expired."""
        item = table().get_item(Key=dedupe_batch_key(account_id, client_batch_id), ConsistentRead=True).get("Item")
        if item is None or int(item.get("expires_at", 0)) < now_s:
            return None
        return plain(item)

    # ---------- reads ----------
    def get(self, batch_id: str) -> dict[str, Any] | None:
        item = table().get_item(Key=state_key(batch_id), ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def legs(self, batch_id: str) -> list[dict[str, Any]]:
        return [plain(i) for i in self._query(batch_pk(batch_id), LEG_PREFIX)]

    def leg(self, batch_id: str, leg: int) -> dict[str, Any] | None:
        item = table().get_item(Key=leg_key(batch_id, leg), ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def events(self, batch_id: str) -> list[dict[str, Any]]:
        out = []
        for item in self._query(batch_pk(batch_id), EVENT_PREFIX):
            out.append({"type": item["event_type"], "at": item["at"], **plain(item.get("data") or {})})
        return out

    def list_for_account(self, account_id: str, limit: int = 50) -> list[dict[str, Any]]:
        cond = Key("gsi1pk").eq(account_pk(account_id)) & Key("gsi1sk").begins_with(LISTING_PREFIX)
        out = table().query(IndexName="gsi1", KeyConditionExpression=cond, ScanIndexForward=False, Limit=limit)
        return [plain(i) for i in out.get("Items", [])]

    # ---------- conditional changes ----------
    def update_leg(
        self,
        batch_id: str,
        leg: int,
        changes: Mapping[str, Any],
        *,
        when: tuple[str, tuple[Any, ...]],
        event: dict[str, Any] | None,
    ) -> bool:
        """Apply `changes` to a leg if its attribute when[0] is one of when[1] (None: the attribute is absent).

        Returns False, writing nothing, when the leg is not in that state any more (the step already ran).
        """
        return self._update(leg_key(batch_id, leg), changes, when, event)

    def update_state(
        self,
        batch_id: str,
        changes: Mapping[str, Any],
        *,
        when: tuple[str, tuple[Any, ...]],
        event: dict[str, Any] | None,
    ) -> bool:
        return self._update(state_key(batch_id), changes, when, event)

    # ---------- plumbing ----------
    def _update(
        self,
        key: dict[str, str],
        changes: Mapping[str, Any],
        when: tuple[str, tuple[Any, ...]],
        event: dict[str, Any] | None,
    ) -> bool:
        names = {"#c": when[0]}
        values: dict[str, Any] = {}
        sets, removes = [], []
        for i, (name, value) in enumerate(changes.items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
            else:
                sets.append(f"#f{i} = :f{i}")
                values[f":f{i}"] = to_dynamo(value)
        expression = ("SET " + ", ".join(sets) if sets else "") + (" REMOVE " + ", ".join(removes) if removes else "")
        conditions = []
        for i, allowed in enumerate(when[1]):
            if allowed is None:
                conditions.append("attribute_not_exists(#c)")
            else:
                conditions.append(f"#c = :w{i}")
                values[f":w{i}"] = allowed
        update: dict[str, Any] = {
            "TableName": table_name(),
            "Key": key,
            "UpdateExpression": expression.strip(),
            "ConditionExpression": "attribute_exists(pk) AND (" + " OR ".join(conditions) + ")",
            "ExpressionAttributeNames": names,
        }
        if values:
            update["ExpressionAttributeValues"] = values
        items: list[dict[str, Any]] = [{"Update": update}]
        if event is not None:
            items.append(
                {"Put": {"TableName": table_name(), "Item": event, "ConditionExpression": "attribute_not_exists(pk)"}}
            )
        try:
            ddb().transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                if not reasons or reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
            raise
        return True

    def _query(self, pk: str, prefix: str) -> list[dict[str, Any]]:
        cond = Key("pk").eq(pk) & Key("sk").begins_with(prefix)
        kwargs: dict[str, Any] = {"KeyConditionExpression": cond, "ConsistentRead": True}
        items: list[dict[str, Any]] = []
        while True:
            out = table().query(**kwargs)
            items.extend(out.get("Items", []))
            if "LastEvaluatedKey" not in out:
                return items
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
