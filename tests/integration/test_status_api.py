"""GET /api/v1/status (the console's status panel): the broker session, the streamer and its feed from its heartbeat,
the last reconciliation (each trader sees only their own repaired brackets), the stack's alarms that fire; and the
template hands the status function every alarm of the stack."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from local.template import load_template
from tests.support.intake import REGION, _invoke, api_event, aws, other_trader, trader  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
STATUS = "/api/v1/status"


def get_status(api_key: str | None):
    headers = {"X-API-KEY": api_key} if api_key is not None else None
    return _invoke("functions.status.app", api_event("GET", STATUS, headers=headers))


def beat(at: datetime, *, connected: bool = True, rate: float | None = 1.0, every_s: float = 60.0) -> None:
    from bracketflow.adapters.dynamo.streamer_health import put_heartbeat

    put_heartbeat(
        at=at, every_s=every_s, connected=connected, messages_per_s=rate, watched=2, reconnects=1, feed_lag_s=0.4
    )


def test_the_status_needs_an_api_key(aws, trader):
    assert get_status(None).status == 401
    assert get_status("bfk_wrong").status == 401


def test_before_anything_ran_every_part_says_it_has_nothing_yet(aws, trader):
    answer = get_status(trader.api_key)
    assert answer.status == 200, answer.body
    data = answer.body["data"]
    assert data["streamer"]["state"] == "unknown" and data["feed"]["state"] == "unknown"
    assert data["reconciliation"] == {"last_run": None, "last_repair": None}
    assert data["alarms"] == {"watched": 0, "firing": []}
    assert data["broker_session"]["login"] == "/broker/login"
    assert data["broker_session"]["state"] in ("none", "expired", "valid", "misconfigured")


def test_a_beating_streamer_is_up_with_its_feed_flowing(aws, trader):
    beat(datetime.now(UTC) - timedelta(seconds=10))
    data = get_status(trader.api_key).body["data"]
    assert data["streamer"]["state"] == "up" and data["streamer"]["watched"] == 2
    assert data["streamer"]["reconnects"] == 1 and 9 <= data["streamer"]["heartbeat_age_s"] < 600
    assert data["feed"] == {"state": "flowing", "messages_per_s": 1.0, "lag_s": 0.4}


@pytest.mark.parametrize(
    ("age_s", "connected", "rate", "streamer", "feed"),
    [
        (181 + 5, True, 1.0, "down", "down"),  # three missed beats of 60 s (and a margin): gone
        (10, False, None, "up", "down"),  # running, its ticker socket closed (reconnecting)
        (10, True, 0.0, "up", "silent"),  # connected, but the broker sent nothing for a whole interval
        (10, True, None, "up", "connected"),  # just started: no full interval measured yet
    ],
)
def test_the_streamer_and_feed_states(aws, trader, age_s, connected, rate, streamer, feed):
    beat(datetime.now(UTC) - timedelta(seconds=age_s), connected=connected, rate=rate)
    data = get_status(trader.api_key).body["data"]
    assert (data["streamer"]["state"], data["feed"]["state"]) == (streamer, feed)


def test_the_last_reconciliation_shows_counts_and_only_the_callers_repaired_brackets(aws, trader, other_trader):
    from bracketflow.adapters.dynamo.reconcile import put_last_run

    # Given a run that repaired one bracket of each trader, then a run that repaired nothing
    put_last_run({
        "run_id": "r1", "at": "2026-03-02T04:00:00Z", "brackets": 5, "repairs": {"REPROTECTED": 1, "GTT_TRIGGERED": 1},
        "errors": 0, "orphan_gtts": 0, "repaired": [
            {"bracket_id": "br_asha", "repair": "REPROTECTED", "account_id": trader.account_id},
            {"bracket_id": "br_ravi", "repair": "GTT_TRIGGERED", "account_id": other_trader.account_id},
        ],
    })  # fmt: skip
    put_last_run({
        "run_id": "r2", "at": "2026-03-02T04:01:00Z", "brackets": 4, "repairs": {}, "errors": 1, "orphan_gtts": 2,
        "repaired": [],
    })  # fmt: skip
    # When each trader reads the status
    asha = get_status(trader.api_key).body["data"]["reconciliation"]
    ravi = get_status(other_trader.api_key).body["data"]["reconciliation"]
    # Then the latest run is the quiet one, and the latest repair is still the first run's
    assert asha["last_run"] == {
        "run_id": "r2", "at": "2026-03-02T04:01:00Z", "brackets": 4, "repairs": {}, "errors": 1, "orphan_gtts": 2,
        "repaired": [],
    }  # fmt: skip
    assert asha["last_repair"]["run_id"] == "r1"
    assert asha["last_repair"]["repairs"] == {"REPROTECTED": 1, "GTT_TRIGGERED": 1}
    # And each sees only their own bracket among those repaired
    assert asha["last_repair"]["repaired"] == [{"bracket_id": "br_asha", "repair": "REPROTECTED"}]
    assert ravi["last_repair"]["repaired"] == [{"bracket_id": "br_ravi", "repair": "GTT_TRIGGERED"}]


def test_only_the_stacks_alarms_in_alarm_are_listed(aws, trader, monkeypatch):
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    for name in ("stack-ExitDeadLetterAlarm-1", "stack-OrphanGttsAlarm-2", "someone-elses-alarm"):
        cloudwatch.put_metric_alarm(
            AlarmName=name, AlarmDescription=f"{name} described", Namespace="bracketflow", MetricName="M",
            Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
        )  # fmt: skip
    # Given the stack's exit dead-letter alarm firing, its orphan GTT alarm quiet, and another stack's alarm firing
    cloudwatch.set_alarm_state(AlarmName="stack-ExitDeadLetterAlarm-1", StateValue="ALARM", StateReason="1 message")
    cloudwatch.set_alarm_state(AlarmName="someone-elses-alarm", StateValue="ALARM", StateReason="not ours")
    monkeypatch.setenv("ALARM_NAMES", "stack-ExitDeadLetterAlarm-1,stack-OrphanGttsAlarm-2")
    from bracketflow.adapters.aws import reset_clients

    reset_clients()
    alarms = get_status(trader.api_key).body["data"]["alarms"]
    # Then only the stack's firing alarm is listed, with its description, reason and since when
    assert alarms["watched"] == 2
    assert [(a["name"], a["description"], a["reason"]) for a in alarms["firing"]] == [
        ("stack-ExitDeadLetterAlarm-1", "stack-ExitDeadLetterAlarm-1 described", "1 message")
    ]
    assert alarms["firing"][0]["since"].endswith("Z")


@pytest.mark.parametrize("streamer_count", ["0", "1"])
def test_the_status_function_is_given_every_alarm_of_the_stack(streamer_count):
    # Given the template as the local stack resolves it, with and without the streamer
    tpl = load_template(ROOT / "template.yaml", parameter_overrides={"StreamerDesiredCount": streamer_count})
    given = set(tpl.functions["StatusFunction"].environment["ALARM_NAMES"].split(","))
    # Then the status function reads exactly the alarms the stack creates
    assert tpl.alarms and given == set(tpl.alarms)


def test_the_status_route_is_read_only_and_behind_the_api_key_like_the_rest():
    tpl = load_template(ROOT / "template.yaml")
    events = [(e.properties.get("Path"), e.properties.get("Method")) for e in tpl.functions["StatusFunction"].events]
    assert events == [("/api/v1/status", "GET")]
    assert json.dumps(tpl.functions["StatusFunction"].environment).count("API_KEY_PEPPER_SECRET_NAME") == 1
