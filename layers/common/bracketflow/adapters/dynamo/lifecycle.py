"""The workflow's own items beside the bracket: broker-order maps, task tokens, order-update dedupe keys.

pk                                          sk       what
BROKERORDER#<broker_order_id>               MAP      bracket_id, account_id, role (ENTRY | EXIT): the watcher's lookup,
                                                     written in the same transaction that records the order
TAG#<order_tag>                             MAP      bracket_id, account_id, role (+ what the watcher needs to record
                                                     the order itself: exit_reason, message); written BEFORE the
                                                     order is placed, so its first update can never outrun it
BRACKET#<bracket_id>                        STATE    + entry_task_token / exit_task_token / entry_rest_task_token
                                                     (the waiting Step Functions tasks); not part of the aggregate,
                                                     so save() leaves them alone
BRACKET#<bracket_id>                        EXITLEASE  owner, until (epoch s): the one exit attempt that may place an
                                                     order for this bracket now (TTL expires_at)
ORDERUPDATE#<order_id>#<status>#<filled>    DEDUPE   one order update seen (TTL expires_at): CLAIMED while a watcher
                                                     acts on it (until lease_until), DONE once it has
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.table import table
from bracketflow.domain.bracket import Bracket, LegOrder

ENTRY_TOKEN = "entry_task_token"
EXIT_TOKEN = "exit_task_token"
ENTRY_REST_TOKEN = "entry_rest_task_token"  # WaitForEntryRest: a protected bracket whose entry still works
DEDUPE = "DEDUPE"


def broker_order_map_item(broker_order_id: str, bracket: Bracket, role: str) -> dict[str, Any]:
    return {
        **r.broker_order_key(broker_order_id),
        "type": "BROKERORDER",
        "broker_order_id": broker_order_id,
        "bracket_id": bracket.id,
        "account_id": bracket.account_id,
        "role": role,
    }


def get_broker_order_map(broker_order_id: str) -> dict[str, Any] | None:
    item = table().get_item(Key=r.broker_order_key(broker_order_id), ConsistentRead=True).get("Item")
    return r.plain(item) if item else None


TAG_MAP_KEEP_S = 30 * 86400  # far beyond any order's life (a DAY entry, a MARKET exit); the table's TTL drops it


class TagTaken(RuntimeError):
    """TAG#<tag> already names another bracket: two brackets hashed to one tag; placing would confuse their orders."""


def put_order_tag_map(tag: str, bracket: Bracket, role: str, **context: Any) -> None:
    """Write TAG#<tag> -> the bracket before placing an order with that tag. Idempotent: a retry (or a later attempt
    with the same tag, e.g. a second exit) rewrites it with its own context; another bracket's item is never taken."""
    item = {
        **r.order_tag_key(tag),
        "type": "TAG",
        "tag": tag,
        "bracket_id": bracket.id,
        "account_id": bracket.account_id,
        "role": role,
        "expires_at": int(time.time()) + TAG_MAP_KEEP_S,
        **{k: r.to_dynamo(v) for k, v in context.items() if v is not None},
    }
    try:
        table().put_item(
            Item=item,
            ConditionExpression="attribute_not_exists(pk) OR bracket_id = :bracket",
            ExpressionAttributeValues={":bracket": bracket.id},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise TagTaken(f"order tag {tag} already belongs to another bracket; {bracket.id} must not use it") from exc
        raise


def get_order_tag_map(tag: str) -> dict[str, Any] | None:
    item = table().get_item(Key=r.order_tag_key(tag), ConsistentRead=True).get("Item")
    return r.plain(item) if item else None


def leg_put(bracket: Bracket, leg: LegOrder, **fields: Any) -> dict[str, Any]:
    """The ORDER#<ROLE> item mirroring a leg of the aggregate (the order book and GET show the legs)."""
    return r.leg_item(
        bracket.id,
        bracket.account_id,
        leg.role.value,
        leg.status.value,
        r.iso(bracket.updated_at),
        quantity=leg.quantity,
        filled_quantity=leg.filled_quantity,
        broker_order_id=leg.broker_order_id,
        average_price=leg.average_price,
        message=leg.message,
        **fields,
    )


def store_task_token(bracket_id: str, name: str, token: str, statuses: tuple[str, ...]) -> bool:
    """Put a waiting task's token on the bracket if it is still in one of `statuses`; False if it moved on."""
    values = {":token": token, **{f":s{i}": s for i, s in enumerate(statuses)}}
    try:
        table().update_item(
            Key=r.bracket_state_key(bracket_id),
            UpdateExpression="SET #token = :token",
            ConditionExpression=f"#status IN ({', '.join(f':s{i}' for i in range(len(statuses)))})",
            ExpressionAttributeNames={"#token": name, "#status": "status"},
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def get_task_token(bracket_id: str, name: str) -> str | None:
    item = (
        table()
        .get_item(
            Key=r.bracket_state_key(bracket_id),
            ConsistentRead=True,
            ProjectionExpression="#token",
            ExpressionAttributeNames={"#token": name},
        )
        .get("Item")
    )
    return None if not item else item.get(name)


def order_update_key(order_id: str, status: str, filled_quantity: int) -> dict[str, str]:
    return {"pk": f"ORDERUPDATE#{order_id}#{status}#{filled_quantity}", "sk": DEDUPE}


CLAIMED, DONE = "CLAIMED", "DONE"


def claim_order_update(order_id: str, status: str, filled_quantity: int, keep_s: int, lease_s: int) -> bool:
    """True the first time this (order_id, status, filled_quantity) is seen; False for a repeat.

    A claim is a lease: a watcher that dies while acting on the update (a crash, a Lambda timeout) never marks it
    DONE nor releases it, so once lease_until has passed the next delivery claims it again and acts (every fact is
    applied idempotently). While the lease runs, the same update from the other source is a duplicate."""
    now = int(time.time())
    try:
        table().put_item(
            Item={
                **order_update_key(order_id, status, filled_quantity),
                "type": "ORDERUPDATE",
                "claim": CLAIMED,
                "claimed_at": now,
                "lease_until": now + lease_s,
                "expires_at": now + keep_s,
            },
            ConditionExpression=(
                "attribute_not_exists(pk) OR expires_at < :now OR (#claim = :claimed AND lease_until < :now)"
            ),
            ExpressionAttributeNames={"#claim": "claim"},
            ExpressionAttributeValues={":now": now, ":claimed": CLAIMED},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def finish_order_update(order_id: str, status: str, filled_quantity: int) -> None:
    """The update was acted on: its key now only deduplicates (no lease left to expire)."""
    table().update_item(
        Key=order_update_key(order_id, status, filled_quantity),
        UpdateExpression="SET #claim = :done REMOVE lease_until",
        ExpressionAttributeNames={"#claim": "claim"},
        ExpressionAttributeValues={":done": DONE},
    )


def release_order_update(order_id: str, status: str, filled_quantity: int) -> None:
    """Forget a claim whose processing failed, so the redelivered update is processed again."""
    table().delete_item(Key=order_update_key(order_id, status, filled_quantity))


EXIT_LEASE = "EXITLEASE"


def take_exit_lease(bracket_id: str, owner: str, seconds: float, now: float | None = None) -> bool:
    """Become the one exit attempt that may place an order for this bracket for `seconds`: True unless another
    attempt holds an unexpired lease. Two attempts of one exit (a redelivery, the watchdog's resume) can run at once;
    only the holder looks the exit order up and places it."""
    now = time.time() if now is None else now
    try:
        table().put_item(
            Item={
                "pk": r.bracket_pk(bracket_id),
                "sk": EXIT_LEASE,
                "type": EXIT_LEASE,
                "owner": owner,
                "until": r.to_dynamo(round(now + seconds, 3)),
                "expires_at": int(now) + 86400,
            },
            ConditionExpression="attribute_not_exists(pk) OR #until < :now OR #owner = :owner",
            ExpressionAttributeNames={"#until": "until", "#owner": "owner"},
            ExpressionAttributeValues={":now": r.to_dynamo(round(now, 3)), ":owner": owner},
        )
        return True
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise


def hold_exit_lease(bracket_id: str, owner: str, seconds: float, now: float | None = None) -> None:
    """Keep (or end, with 0) our lease `seconds` from now; another attempt's lease is never touched."""
    now = time.time() if now is None else now
    try:
        table().update_item(
            Key={"pk": r.bracket_pk(bracket_id), "sk": EXIT_LEASE},
            UpdateExpression="SET #until = :until",
            ConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#until": "until", "#owner": "owner"},
            ExpressionAttributeValues={":until": r.to_dynamo(round(now + seconds, 3)), ":owner": owner},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
