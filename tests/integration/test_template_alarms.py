"""Every alarm in template.yaml reaches a person: it notifies the alarm topic (and shows on the dashboard).

An alarm without AlarmActions changes colour in the console and tells no one; for an exit stuck in a dead-letter
queue that means an open position nobody hears about.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from local.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]


def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_yaml(ROOT / "template.yaml")["Resources"]
    return resources


def _alarms() -> dict[str, Any]:
    return {name: res for name, res in _resources().items() if res.get("Type") == "AWS::CloudWatch::Alarm"}


def test_every_alarm_notifies_the_alarm_topic() -> None:
    # Given every CloudWatch alarm in the template
    alarms = _alarms()
    assert alarms, "no alarms found: the scan is broken"
    # Then each one's AlarmActions is exactly the stack's alarm topic
    wrong = {
        name: res["Properties"].get("AlarmActions")
        for name, res in alarms.items()
        if res["Properties"].get("AlarmActions") != [{"Ref": "AlarmTopic"}]
    }
    assert wrong == {}


def test_ok_actions_if_any_go_to_the_same_topic() -> None:
    # Given the alarms that announce their recovery
    with_ok = {
        name: res["Properties"]["OKActions"] for name, res in _alarms().items() if "OKActions" in res["Properties"]
    }
    # Then they announce it where the alarm went, and every dead-letter alarm is among them (a drained queue is news)
    assert all(actions == [{"Ref": "AlarmTopic"}] for actions in with_ok.values()), with_ok
    dlq_alarms = {
        name
        for name, res in _alarms().items()
        if res["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    }
    assert dlq_alarms and dlq_alarms - with_ok.keys() == set()


def test_the_alarm_topic_lets_cloudwatch_publish() -> None:
    # Given the alarm topic's policy
    statements = _resources()["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    # Then CloudWatch may publish to it (without this the alarms' notifications are dropped)
    assert any(
        s["Effect"] == "Allow"
        and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        and s["Action"] == "sns:Publish"
        for s in statements
    )


def test_every_unconditional_alarm_is_on_the_dashboard() -> None:
    # Given the dashboard body and the alarms that always exist (a conditional one cannot be referenced when absent)
    body = _resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    shown = set(re.findall(r"\$\{(\w+)\.Arn\}", body))
    always = {name for name, res in _alarms().items() if "Condition" not in res}
    # Then each one is on the dashboard's alarm widget
    assert always - shown == set()
