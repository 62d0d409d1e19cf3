"""Once-a-day alert markers: a conditional put per IST day, so a check that runs often alerts the trader once."""

from __future__ import annotations

from datetime import date

from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo.table import table

SESSION_ALERT_PK = "BROKER_SESSION_ALERT"


def first_session_alert_of_the_day(day: date, expires_at: int) -> bool:
    """True the first time it is asked for `day` (the marker is written); False every later time that day."""
    try:
        table().put_item(
            Item={"pk": SESSION_ALERT_PK, "sk": day.isoformat(), "type": "SESSION_ALERT", "expires_at": expires_at},
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True
