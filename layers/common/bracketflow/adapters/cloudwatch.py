"""CloudWatch alarms: which of the stack's alarms are firing (the console's status panel)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bracketflow.adapters.aws import client

_NAMES_PER_CALL = 100  # DescribeAlarms takes at most 100 names


def firing_alarms(names: list[str]) -> list[dict[str, Any]]:
    """The alarms among `names` in state ALARM: name, description, since (ISO UTC), reason; oldest first."""
    firing: list[dict[str, Any]] = []
    for start in range(0, len(names), _NAMES_PER_CALL):
        page = client("cloudwatch").describe_alarms(
            AlarmNames=names[start : start + _NAMES_PER_CALL],
            StateValue="ALARM",
            AlarmTypes=["MetricAlarm", "CompositeAlarm"],
        )
        for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
            if alarm.get("StateValue") != "ALARM":  # moto ignores StateValue next to AlarmNames; AWS applies both
                continue
            since = alarm.get("StateUpdatedTimestamp")
            firing.append(
                {
                    "name": alarm["AlarmName"],
                    "description": alarm.get("AlarmDescription", "").strip(),
                    "since": _iso(since) if isinstance(since, datetime) else None,
                    "reason": alarm.get("StateReason", ""),
                }
            )
    return sorted(firing, key=lambda a: a["since"] or "")


def _iso(at: datetime) -> str:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
