"""Benchmark: each Lambda's peak memory, measured, so template.yaml's MemorySize is chosen from numbers.

The local stack comes up and one full bracket lifecycle plus two reconcile runs are driven through it (the same
driver as bench_cost), recording the first event each function received. Then every function of the template runs
in a FRESH Python process (as a cold Lambda container would): import the handler module (the layer on the path, the
stack's environment: moto's endpoint, the paper broker), time the import, invoke the handler once with its recorded
event (or, for a function the lifecycle does not reach, a small event of its trigger's shape), and report the peak
RSS of the process (VmHWM). A replayed event finds the bracket already moved on, so the second run takes the
idempotent path; it still imports everything, builds the same AWS clients and makes the same kinds of calls.

What Lambda reports as "Max Memory Used" adds its runtime client (roughly 15-25 MB over a bare interpreter), so
RUNTIME_OVERHEAD_MB is added before the headroom. Memory also buys CPU, so the recommendation is the larger of
(peak + overhead) x HEADROOM and what keeps the cold import inside INIT_BUDGET_S, rounded up to 64 MB (at least
128); latency-critical functions get more: see LATENCY_CRITICAL.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import bench_cost

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_OVERHEAD_MB = 20
HEADROOM = 1.5
STEP_MB = 64
# CPU is proportional to memory (1,769 MB = one vCPU; 192 MB is about a ninth of one, so a 1-2 s import becomes a
# cold start of many seconds). Functions on the path from an alert to an order, from a fill to its protection, or
# from a crossed stop to the exit get more than they need to hold their data: a faster cold start and broker call.
# The price is small: each runs once or twice per bracket.
LATENCY_CRITICAL = {
    "WebhookFunction": (1024, "the trader's alert answer and the start of the entry"),
    "ApiFunction": (1024, "REST placement: the same path as the webhook"),
    "PlaceEntryFunction": (1024, "alert -> entry order at the broker"),
    "PlaceProtectionFunction": (1024, "the position has no stop at the broker until its GTT is placed"),
    "EmergencyExitFunction": (1024, "protection failed: the open position is flattened now"),
    "ExitFunction": (1024, "a crossed stop -> the exit order (target p50 < 250 ms)"),
    "WatcherFunction": (512, "records the entry fill that releases the protection step"),
    "PlaceBatchLegFunction": (512, "legs of one batch should reach the broker close together"),
}
# A synthetic event that fails validation never gets to the AWS clients and broker calls that make up most of the
# difference between import and peak; such functions are sized like the largest function that did.
EXERCISED_MB = 5.0
# Lambda gives one vCPU at 1,769 MB and a share in proportion below it. A cold start must import the whole package
# (and, with no writable __pycache__, compile it): the import measured here at one full core, scaled by that share,
# must fit INIT_BUDGET_S — well inside Lambda's 10 s init limit, so no cold start ever runs into it.
VCPU_MB = 1769
INIT_BUDGET_S = 4.0


_RUNNER = r"""
import importlib.util, json, sys, time
file, event_path = sys.argv[1], sys.argv[2]

def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0

def rss_mb():
    return status_mb("VmRSS")

class Context:
    function_name = "bench-memory"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:bench-memory"
    memory_limit_in_mb = 1024
    aws_request_id = "bench-memory"
    log_group_name = "/aws/lambda/bench-memory"
    log_stream_name = "bench-memory"
    def get_remaining_time_in_millis(self):
        return 30000

start = rss_mb()
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("bench_handler", file)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import_s = time.perf_counter() - t0
after_import = rss_mb()
event = json.load(open(event_path))
error = None
t1 = time.perf_counter()
try:
    module.lambda_handler(event, Context())
except Exception as exc:
    error = f"{type(exc).__name__}: {str(exc)[:200]}"
invoke_s = time.perf_counter() - t1
# VmHWM (this program's own RSS high-water mark): ru_maxrss would still carry the forking parent's
peak = status_mb("VmHWM")
print("BENCH_MEMORY " + json.dumps({
    "interpreter_mb": round(start, 1), "after_import_mb": round(after_import, 1), "peak_mb": round(peak, 1),
    "import_s": round(import_s, 3), "invoke_s": round(invoke_s, 3), "error": error,
}))
"""


def _synthetic_event(logical_id: str, spec: Any, events: dict[str, Any], bracket_id: str) -> dict[str, Any]:
    """A small event of the function's trigger shape, for functions the lifecycle does not reach."""
    api = events.get("WebhookFunction")
    if logical_id in ("ApiFunction", "BatchFunction", "HealthFunction") and isinstance(api, dict):
        path = {
            "ApiFunction": f"/api/v1/brackets/{bracket_id}",
            "BatchFunction": "/api/v1/batches/bt_unknown",
            "HealthFunction": "/health",
        }[logical_id]
        event = json.loads(json.dumps(api))
        event.update({"httpMethod": "GET", "path": path, "resource": path, "body": None})
        event["headers"] = {**(event.get("headers") or {}), "X-API-KEY": "bench-cost-key"}
        event["requestContext"] = {**event.get("requestContext", {}), "httpMethod": "GET", "path": path}
        return dict(event)
    if logical_id == "SyncStopFunction":
        body = {"bracket_id": bracket_id, "stop_price": "1504.75", "at": "2026-01-01T04:00:00Z"}
        return {
            "Records": [
                {
                    "messageId": "m1",
                    "receiptHandle": "r1",
                    "body": json.dumps(body),
                    "attributes": {},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "awsRegion": "ap-south-1",
                }
            ]
        }
    if logical_id == "WebSocketFunction":
        return {
            "requestContext": {
                "routeKey": "$connect",
                "eventType": "CONNECT",
                "connectionId": "bench=",
                "domainName": "localhost",
                "stage": "local",
            },
            "queryStringParameters": {"apikey": "bench-cost-key"},
            "headers": {},
        }
    return {"bracket_id": bracket_id, "batch_id": "bt_unknown", "leg_index": 0}


def _measure(file: Path, event: Any, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(event, f)
        event_path = f.name
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, str(file), event_path],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        os.unlink(event_path)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_MEMORY ")), None)
    if line is None:
        raise RuntimeError(f"{file}: the measuring process printed no result: {done.stderr[-800:]}")
    return dict(json.loads(line.removeprefix("BENCH_MEMORY ")))


def recommend(logical_id: str, peak_mb: float, import_s: float) -> tuple[int, str]:
    """MemorySize for one function: enough to hold its peak, and enough CPU that its cold import fits the budget."""
    to_step = lambda mb: max(128, math.ceil(mb / STEP_MB) * STEP_MB)  # noqa: E731
    for_memory = to_step((peak_mb + RUNTIME_OVERHEAD_MB) * HEADROOM)
    for_cpu = to_step(VCPU_MB * import_s / INIT_BUDGET_S)
    need = max(for_memory, for_cpu)
    why = (
        f"memory: (peak {peak_mb:.0f} + {RUNTIME_OVERHEAD_MB} runtime) x {HEADROOM} -> {for_memory}; "
        f"cpu: a {import_s:.2f} s import (at one vCPU) within {INIT_BUDGET_S:.0f} s of init -> {for_cpu}"
    )
    critical = LATENCY_CRITICAL.get(logical_id)
    if critical and critical[0] > need:
        return critical[0], f"latency: {critical[1]} (measured need {need}: {why})"
    return need, why


def run() -> dict[str, Any]:
    meter = bench_cost.Meter()
    stack = bench_cost.start_stack()
    results: dict[str, Any] = {}
    try:
        meter.install(stack)
        try:
            lifecycle = bench_cost.drive_lifecycle(stack, meter, stack.config.local_api_key)
        finally:
            meter.uninstall()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "common"), str(ROOT / "streamer"), str(ROOT)]),
            "POWERTOOLS_METRICS_NAMESPACE": "bracketflow",
        }
        for logical_id, spec in sorted(stack.template.functions.items()):
            recorded = logical_id in meter.first_events
            event = meter.first_events.get(logical_id) or _synthetic_event(
                logical_id, spec, meter.first_events, lifecycle["bracket_id"]
            )
            file = spec.code_dir.joinpath(*spec.handler.rpartition(".")[0].split(".")).with_suffix(".py")
            row = _measure(file, event, env)
            results[logical_id] = {
                **row,
                "event": "recorded from the lifecycle" if recorded else "synthetic",
                "exercised": row["peak_mb"] - row["after_import_mb"] >= EXERCISED_MB,
                "template_memory_mb": spec.memory_size,
            }
    finally:
        stack.stop()
    largest_exercised = max(r["peak_mb"] for r in results.values() if r["exercised"])
    # Every function imports the same layer, so their imports take the same time; one process's import is noisy on a
    # busy machine, the median of all of them is not.
    typical_import_s = statistics.median(r["import_s"] for r in results.values())
    for logical_id, row in results.items():
        # the health check makes no AWS or broker call: its import is its need
        basis = row["peak_mb"] if row["exercised"] or logical_id == "HealthFunction" else largest_exercised
        # /health's cold start delays nobody's order: memory alone sizes it
        import_s = 0.0 if logical_id == "HealthFunction" else typical_import_s
        memory, why = recommend(logical_id, basis, import_s)
        if basis != row["peak_mb"]:
            why += " (not exercised by its event: sized like the largest function that was)"
        row.update(recommended_mb=memory, why=why)
    peaks = sorted(r["peak_mb"] for r in results.values())
    largest = max(results.items(), key=lambda kv: kv[1]["peak_mb"])
    return {
        "headline": (
            f"peak RSS per function {peaks[0]:.0f}-{peaks[-1]:.0f} MB in a fresh process "
            f"(largest {largest[0]} {largest[1]['peak_mb']:.0f} MB); {len(results)} functions"
        ),
        "typical_import_s": round(typical_import_s, 3),
        "init_budget_s": INIT_BUDGET_S,
        "runtime_overhead_mb": RUNTIME_OVERHEAD_MB,
        "headroom": HEADROOM,
        "functions": results,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
