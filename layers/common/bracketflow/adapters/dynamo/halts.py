"""An account's halt for one IST day (the kill switch): HALT#<account>, sk the IST date. Intake reads it on every
placement; the kill switch writes it once a day (services/kill_switch.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo.table import table
from bracketflow.domain.calendar import IST


def halt_key(account_id: str, now: datetime) -> dict[str, str]:
    return {"pk": f"HALT#{account_id}", "sk": now.astimezone(IST).date().isoformat()}


def halt_reason(account_id: str, now: datetime) -> str | None:
    """Why the account is halted for the IST day of `now`, or None when it may trade."""
    item = table().get_item(Key=halt_key(account_id, now), ConsistentRead=True).get("Item")
    return None if item is None else str(item["reason"])


def put_halt(account_id: str, now: datetime, fields: dict[str, Any]) -> bool:
    """Write the day's halt; False when the account was already halted that day (the first halt stays)."""
    item = {**halt_key(account_id, now), "type": "HALT", "account_id": account_id, **fields}
    try:
        table().put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True
