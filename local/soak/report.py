"""The soak's results: the results file, the README's table, the summary printed, and where the logs go."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.soak.checks import UNPROTECTED_GOAL_S, SoakResult
from local.stack import REPO_ROOT

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "soak.json"
README_PATH = REPO_ROOT / "README.md"
README_BEGIN = "<!-- soak results: written by `make soak` -->"
README_END = "<!-- end of soak results -->"


def write_results(result: SoakResult, path: Path = RESULTS_PATH, readme: Path | None = README_PATH) -> None:
    from benchmarks.__main__ import machine

    record = {
        **result.as_dict(),
        "machine": machine(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if readme is not None and readme.is_file():
        text = readme.read_text()
        if README_BEGIN in text and README_END in text:
            head, rest = text.split(README_BEGIN, 1)
            _, tail = rest.split(README_END, 1)
            readme.write_text(head + README_BEGIN + "\n" + readme_table(record) + README_END + tail)


def readme_table(record: dict[str, Any]) -> str:
    faults = ", ".join(f"{k} {v}" for k, v in sorted(record["faults_fired"].items()) if v)
    by_check = ", ".join(f"{k} {v}" for k, v in sorted(record["violation_counts"].items())) or "none"
    rows = [
        ("brackets (distinct alerts)", f"{record['brackets']} ({record['alerts']})"),
        ("bracket statuses at the end", ", ".join(f"{k} {v}" for k, v in sorted(record["statuses"].items()))),
        ("faults fired, by kind", faults),
        ("violations", f"{len(record['violations'])} ({by_check})"),
        ("worst unprotected time", f"{record['worst_unprotected_s']:.1f} s (goal < {UNPROTECTED_GOAL_S:.0f} s)"),
        ("wall time", f"{record['wall_time_s']:.0f} s"),
        ("seed / machine", f"{record['seed']} / {record['machine']['cpu']}, {record['machine']['cores']} cores"),
        ("date", record["date"]),
    ]
    lines = ["| measure | result |", "| --- | --- |", *(f"| {k} | {v.replace('|', '/')} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def summary(result: SoakResult) -> str:
    lines = [
        f"soak seed {result.seed}: {result.brackets} brackets from {result.alerts} alerts "
        f"in {result.wall_time_s:.0f} s",
        f"  statuses: {result.statuses}",
        f"  faults fired: {result.faults_fired}",
        f"  worst unprotected: {result.worst_unprotected_s:.2f} s (goal < {UNPROTECTED_GOAL_S:.0f} s)",
        f"  violations: {len(result.violations)} {result.violation_counts()}",
        f"  scale-out: {result.counts.get('scale_out')}",
        f"  breakeven at a price: {result.counts.get('breakeven_at')}",
    ]
    lines += [f"    - {json.dumps(v, default=str)}" for v in result.violations[:60]]
    if len(result.violations) > 60:
        lines.append(f"    ... and {len(result.violations) - 60} more (see the results file)")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def quiet_app_logs() -> None:
    """The functions' own (Powertools, JSON) logs go to the stack's log file, not to the terminal.

    Powertools filters its logger's records out of the root's handlers (so Lambda does not print them twice), so
    propagating to the root would drop them: the app's logger writes to the root handlers' streams itself."""
    import bracketflow.observability  # noqa: F401 - builds the app's logger and its stdout handler

    app = logging.getLogger("bracketflow")
    json_lines = app.handlers[0].formatter if app.handlers else None  # Powertools' JSON, with the keys it appends
    for handler in list(app.handlers):
        app.removeHandler(handler)
    for root_handler in logging.getLogger().handlers:
        if isinstance(root_handler, logging.StreamHandler):
            handler = logging.StreamHandler(root_handler.stream)
            handler.setFormatter(json_lines or root_handler.formatter)
            app.addHandler(handler)
    app.propagate = False
