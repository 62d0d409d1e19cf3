"""The metric names in code, in bracketflow.metrics_names and in template.yaml's dashboard and alarms agree.

An alarm on a metric nobody emits never fires; these tests make a rename in one place fail until all three agree.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bracketflow import metrics_names
from bracketflow.services.batch import FINAL_STATUSES
from local.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = [ROOT / "layers/common/bracketflow", ROOT / "functions", ROOT / "streamer/streamer"]


def _template() -> dict[str, Any]:
    return load_yaml(ROOT / "template.yaml")


def _emitted_names() -> set[str]:
    """Every metric name the code passes to add_metric: literals, metrics_names constants, the streamer's flush
    dictionary keys and the batch's `Batches<final status>` f-string, read from the source (no code runs)."""
    names: set[str] = set()
    for base in CODE_DIRS:
        for path in base.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_metric"):
                    continue
                arg = next((k.value for k in node.keywords if k.arg == "name"), node.args[0] if node.args else None)
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
                elif (
                    isinstance(arg, ast.Attribute)
                    and isinstance(arg.value, ast.Name)
                    and arg.value.id
                    in (
                        "metrics_names",
                        "names",
                    )
                ):
                    names.add(getattr(metrics_names, arg.attr))
                elif isinstance(arg, ast.JoinedStr) and "Batches{" in ast.unparse(arg):
                    names.update(f"Batches{s.title().replace('_', '')}" for s in FINAL_STATUSES)
                elif isinstance(arg, ast.Name) and path.name == "metrics.py" and "streamer" in path.parts:
                    names.update(_streamer_flush_keys(tree))
                else:
                    raise AssertionError(
                        f"{path}:{node.lineno}: a metric name this test cannot read: {ast.unparse(arg)}"
                    )
    return names


def _streamer_flush_keys(tree: ast.AST) -> set[str]:
    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys.update(k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
        subscript_of_values = isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
        if subscript_of_values and node.value.id == "values" and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
    # the units dictionary repeats names; keep only metric-looking keys (CamelCase)
    return {k for k in keys if re.fullmatch(r"[A-Z][A-Za-z]+", k)}


def _dashboard_metrics(template: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(namespace, metric, dimensions) of every dashboard line, with the `...` shorthand expanded."""
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    text = re.sub(r"\$\{([^}]+)\}", lambda m: "sub-" + m.group(1).replace(".", "-"), body)
    doc = json.loads(text)
    out: list[tuple[str, str, list[str]]] = []
    for widget in doc["widgets"]:
        previous: list[str] = []
        for line in widget["properties"].get("metrics", []):
            parts = [p for p in line if isinstance(p, str)]
            if parts and parts[0] == "...":
                parts = previous
            previous = parts
            out.append((parts[0], parts[1], parts[2:]))
    return out


def _alarm_metrics(template: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(alarm, namespace, metric) of every alarm, including metric-math alarms' inputs."""
    out = []
    for logical_id, res in template["Resources"].items():
        if res.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        props = res["Properties"]
        if "MetricName" in props:
            out.append((logical_id, props["Namespace"], props["MetricName"]))
        for query in props.get("Metrics", []):
            metric = (query.get("MetricStat") or {}).get("Metric")
            if metric:
                out.append((logical_id, metric["Namespace"], metric["MetricName"]))
    return out


def test_every_metric_the_code_emits_is_in_the_contract() -> None:
    # Given the add_metric calls in the layer, the functions and the streamer
    emitted = _emitted_names()
    # Then each name is one metrics_names knows (so the dashboard and alarms can be checked against it)
    assert emitted, "no add_metric calls found: the scan is broken"
    assert emitted - metrics_names.ALL == set()


def test_every_contract_name_is_emitted_or_listed_as_pending() -> None:
    # Given the contract and what the code emits
    emitted = _emitted_names()
    # Then nothing in the contract is silently dead, and PENDING holds exactly the names no code emits yet
    assert (metrics_names.ALL - metrics_names.PENDING) - emitted == set()
    assert metrics_names.PENDING & emitted == set(), "emitted now: take these out of metrics_names.PENDING"


def test_dashboard_body_is_json_and_reads_only_contract_metrics() -> None:
    # Given the dashboard body with its ${...} substitutions filled
    lines = _dashboard_metrics(_template())
    # Then every bracketflow metric on it is in the contract and carries the service dimension Powertools adds
    ours = [(m, dims) for ns, m, dims in lines if ns == metrics_names.NAMESPACE]
    assert ours
    for metric, dims in ours:
        assert metric in metrics_names.ALL, metric
        assert dims == list(metrics_names.SERVICE_DIMENSION), (metric, dims)


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    # Given the metrics on the dashboard
    shown = {m for _, m, _ in _dashboard_metrics(_template())}
    # Then it has webhook latency, brackets by status, entry-to-protection time, exits, feed lag, reconnects,
    # broker errors, DLQ depth and rate-limiter waits
    wanted = {
        "Duration",
        metrics_names.BRACKETS_REGISTERED,
        metrics_names.BRACKETS_CLOSED,
        metrics_names.ENTRY_TO_PROTECTION_SECONDS,
        metrics_names.EXITS_PLACED,
        metrics_names.STREAMER_FEED_LAG_SECONDS,
        metrics_names.STREAMER_RECONNECTS,
        metrics_names.BROKER_ERRORS,
        "ApproximateNumberOfMessagesVisible",
        metrics_names.ORDER_RATE_LIMIT_WAIT,
    }
    assert wanted - shown == set()


def test_alarms_on_bracketflow_metrics_use_contract_names() -> None:
    alarms = _alarm_metrics(_template())
    ours = [(a, m) for a, ns, m in alarms if ns == metrics_names.NAMESPACE]
    assert ours
    assert [(a, m) for a, m in ours if m not in metrics_names.ALL] == []


@pytest.mark.parametrize(
    ("namespace", "metric"),
    [
        ("bracketflow", metrics_names.STREAMER_HEARTBEAT),
        ("bracketflow", metrics_names.EMERGENCY_EXITS),
        ("bracketflow", metrics_names.RECONCILE_DRIFT),
        ("AWS/States", "ExecutionsFailed"),
    ],
)
def test_the_issue_alarms_exist(namespace: str, metric: str) -> None:
    assert (namespace, metric) in {(ns, m) for _, ns, m in _alarm_metrics(_template())}


def test_every_dead_letter_queue_has_an_alarm() -> None:
    # Given the queues other queues redrive into
    template = _template()
    resources = template["Resources"]
    dlqs = {
        res["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for res in resources.values()
        if res.get("Type") == "AWS::SQS::Queue" and "RedrivePolicy" in res.get("Properties", {})
    }
    # Then each has an alarm on its visible messages
    watched = set()
    for res in resources.values():
        props = res.get("Properties", {})
        if (
            res.get("Type") == "AWS::CloudWatch::Alarm"
            and props.get("MetricName") == "ApproximateNumberOfMessagesVisible"
        ):
            watched.update(d["Value"]["Fn::GetAtt"][0] for d in props["Dimensions"] if d["Name"] == "QueueName")
    assert dlqs and dlqs - watched == set()


def test_streamer_heartbeat_alarm_treats_silence_as_failure() -> None:
    alarm = _template()["Resources"]["StreamerHeartbeatAlarm"]["Properties"]
    assert alarm["TreatMissingData"] == "breaching"
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
