"""The local stack runs every function in one process at once; each invocation must publish its own metrics.

Powertools keeps pending metrics in one process-wide set that log_metrics prints and clears at the end of an
invocation: right on AWS (one invocation at a time per instance), lossy here, where one invocation's flush printed and
cleared what another had just added. local.runtime.metrics_per_invocation gives each thread its own sets.
"""

from __future__ import annotations

import json
import threading

from local.runtime import metrics_per_invocation


def _published(out: str) -> list[set[str]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return [{m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]} for line in lines]


def _two_invocations_at_once() -> None:
    from bracketflow.observability import metrics

    both_added = threading.Barrier(2, timeout=10)

    def invocation(name: str) -> None:
        metrics.add_metric(name=name, unit="Count", value=1)
        both_added.wait()  # the other invocation has added its metric before this one flushes
        metrics.flush_metrics()

    threads = [threading.Thread(target=invocation, args=(n,)) for n in ("EmergencyExits", "BracketsClosed")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)


def test_each_invocation_publishes_exactly_its_own_metrics(capsys, monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    # Given the local stack's per-invocation metric sets
    undo = metrics_per_invocation()
    try:
        # When two functions add a metric each and flush at the same moment, each in its own thread
        _two_invocations_at_once()
    finally:
        undo()
    # Then each flush published its own metric, once, and none was lost to the other's flush
    assert sorted(map(sorted, _published(capsys.readouterr().out))) == [["BracketsClosed"], ["EmergencyExits"]]


def test_without_them_one_flush_takes_the_other_invocations_metric(capsys, monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    from bracketflow.observability import metrics

    # Given Powertools' process-wide set (as on AWS, where invocations never overlap in one process), emptied of what
    # earlier tests in this process left pending
    metrics.clear_metrics()
    _two_invocations_at_once()
    # Then the first flush publishes both metrics and the second finds none: what the local stack must not do
    assert _published(capsys.readouterr().out) == [{"BracketsClosed", "EmergencyExits"}]
