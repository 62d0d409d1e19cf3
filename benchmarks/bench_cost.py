"""Benchmark: what one bracket costs on AWS, from the billable operations of one full lifecycle on the local stack.

The local stack comes up on free ports (moto in this process, the in-process Lambdas and their pollers, the paper
exchange in manual mode and the streamer as child processes; schedules off so no timer adds work). One TradingView
alert then runs the whole lifecycle: webhook -> bracket workflow -> MARKET entry filled -> GTT protection -> the
streamer trails the stop as the price rises (the GTT's stop follows if its sync interval comes round) -> the price
falls through it -> one exit -> the exit's fill -> Finalize -> CLOSED. While it runs, a meter counts what AWS would
bill:

- Step Functions: state transitions of the bracket's execution (its history's *StateEntered events);
- Lambda: invocations per function and their duration, billed per 1 ms at the template's MemorySize (in-process
  on this laptop, so durations are a stand-in for arm64 Lambda; warm, no cold starts, no init duration billed);
- DynamoDB: every request moto serves (from the Lambdas in this process and the streamer's process alike), in
  request units: a write is ceil(size/1 KB) WRU of the larger of the item before and after, plus the same again for
  each GSI the item is (or was) in, twice for a GSI key that moved; transactional items x2; a read is ceil(size/4 KB)
  RRU (eventually consistent 0.5, transactional x2), a Query the sum of the items it returned. Item sizes are
  moto's (attribute names + values);
- SQS: requests (send, delete, receives that returned messages — empty long polls are the fixed cost of a poller);
  DynamoDB Streams reads are free for Lambda triggers and not counted;
- API Gateway: REST requests reaching a function (the alert);
- CloudWatch Logs: bytes the handlers write to stdout (Powertools logs and EMF metrics), a rough ingestion figure;
- X-Ray: one trace per API request, workflow execution and queue/stream-triggered invocation (Tracing is Active);
- Secrets Manager: GetSecretValue calls (one process shares the cache here, so real Lambdas call it more: once per
  cold container and function).

Reconciliation adds a per-open-minute cost: it runs every minute in market hours and checks each open bracket. One
reconcile run is measured with the bracket open and one after it closed; the difference is one open bracket's share.

Prices are ap-south-1 list prices as remembered (no internet on this machine), without free tiers: PRICES below.
The benchmark's own observation (polling the table, starting the reconcile runs) uses a client marked with
OBSERVER_AGENT and is not counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from benchmarks.cost_meter import OBSERVER_AGENT, Meter

BOUND_S = 120.0  # an upper bound for waiting on a slow machine, never a measurement
SYMBOL = "INFY"

# ap-south-1 (Mumbai) list prices in USD as remembered from the AWS price pages (DynamoDB after its November 2024
# on-demand price cut). No free tier applied. Check them on the price pages before relying on them.
PRICES_AS_OF = "2025 (remembered; no internet here)"
PRICES = {
    "stepfunctions_per_transition": 0.025 / 1000,  # Standard workflows
    "lambda_per_request": 0.20 / 1e6,
    "lambda_arm64_per_gb_s": 0.0000133334,
    "dynamodb_per_wru": 0.7125 / 1e6,  # on-demand write request unit
    "dynamodb_per_rru": 0.1425 / 1e6,  # on-demand read request unit
    "sqs_per_request": 0.40 / 1e6,  # Standard queues, per 64 KB chunk
    "apigateway_rest_per_request": 3.50 / 1e6,
    "logs_ingestion_per_gb": 0.50,  # CloudWatch Logs standard ingestion (check: regional prices differ)
    "xray_per_trace": 5.00 / 1e6,
    "secretsmanager_per_call": 0.05 / 10_000,
}

# The default ReconcileSchedule: every minute 03:00-18:59 UTC, Monday to Friday (~22 weekdays a month).
RECONCILE_RUNS_PER_MONTH = 16 * 60 * 22

# ---- driving one lifecycle ----


def _observer(stack: Any, service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=stack.aws_endpoint,
        region_name=stack.config.region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(user_agent_extra=OBSERVER_AGENT),
    )


def _eventually(check: Callable[[], Any], what: str, bound_s: float = BOUND_S) -> Any:
    deadline = time.monotonic() + bound_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise RuntimeError(f"gave up waiting for {what}; last saw {last!r}")


def _paper(stack: Any, path: str, body: Any = None, method: str = "POST") -> Any:
    answer = requests.request(method, f"{stack.paper_url}/_paper/{path}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]


def _quote(stack: Any, ltp: str, bid: str, ask: str) -> None:
    _paper(
        stack, "quotes", {"quotes": [{"exchange": "NSE", "tradingsymbol": SYMBOL, "ltp": ltp, "bid": bid, "ask": ask}]}
    )


def _state(stack: Any, ddb: Any, bracket_id: str) -> dict[str, Any]:
    from bracketflow.adapters.dynamo import records as r

    item = ddb.get_item(TableName=stack.table_name("BracketsTable"), Key=_typed(r.bracket_state_key(bracket_id)))
    return item.get("Item") or {}


def _typed(key: dict[str, str]) -> dict[str, Any]:
    return {k: {"S": v} for k, v in key.items()}


def _status(item: dict[str, Any]) -> str:
    return str(item.get("status", {}).get("S", ""))


def _run_reconcile(stack: Any, sfn: Any) -> str:
    arn = stack.state_machine_arn("ReconcileStateMachine")
    execution = sfn.start_execution(stateMachineArn=arn, name=f"bench-cost-{time.time_ns()}", input="{}")[
        "executionArn"
    ]
    _eventually(
        lambda: sfn.describe_execution(executionArn=execution)["status"] != "RUNNING", "the reconcile run to finish"
    )
    return str(execution)


def _transitions(sfn: Any, execution_arn: str) -> int:
    events: list[dict[str, Any]] = []
    token = None
    while True:
        page = sfn.get_execution_history(
            executionArn=execution_arn, maxResults=1000, **({"nextToken": token} if token else {})
        )
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            break
    return sum(1 for e in events if e["type"].endswith("StateEntered"))


def _quiet(stack: Any, sqs: Any, queues: list[str]) -> bool:
    for logical_id in queues:
        attrs = sqs.get_queue_attributes(
            QueueUrl=stack.queue_url(logical_id),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if attrs["ApproximateNumberOfMessages"] != "0" or attrs["ApproximateNumberOfMessagesNotVisible"] != "0":
            return False
    return True


def drive_lifecycle(stack: Any, meter: Meter, api_key: str) -> dict[str, Any]:
    """Alert -> PROTECTED -> trailed -> exited -> CLOSED, counted in meter bucket "lifecycle"; reconcile runs with the
    bracket open and after it closed in "reconcile_open" / "reconcile_idle". Returns the ids and execution arns."""
    ddb, sfn, sqs = _observer(stack, "dynamodb"), _observer(stack, "stepfunctions"), _observer(stack, "sqs")
    _paper(stack, "config", {"market": "manual"})
    _quote(stack, "1500", "1499.95", "1500")
    alert = {
        "apikey": api_key,
        "symbol": f"NSE:{SYMBOL}",
        "action": "buy",
        "quantity": "1",
        "product": "MIS",
        "pricetype": "MARKET",
        "entry_price": "1500",
        "sl_percent": "1",
        "target_percent": "5",
        "trail": "1%",
        "strategy": "bench-cost",
        "client_order_id": f"bench-cost-{time.time_ns()}",
    }
    queues = ["ExitQueue", "StopSyncQueue", "OrderEventsQueue", "StreamerControlQueue"]
    started = time.monotonic()
    with meter.counting("lifecycle"):
        answer = requests.post(
            f"{stack.api_url}/tradingview/webhook/bracket",
            data=json.dumps(alert),
            headers={"Content-Type": "text/plain"},
            timeout=30,
        )
        if answer.status_code != 200:
            raise RuntimeError(f"the webhook answered {answer.status_code}: {answer.text[:300]}")
        bracket_id = answer.json()["bracket_id"]
        _eventually(lambda: _status(_state(stack, ddb, bracket_id)) == "PROTECTED", "PROTECTED")
        _eventually(lambda: _quiet(stack, sqs, queues), "the queues to drain")
        time.sleep(2)  # the table stream's notify pushes settle before the reconcile run is measured
    with meter.counting("reconcile_open"):
        reconcile_open = _run_reconcile(stack, sfn)
    with meter.counting("lifecycle"):
        stop0 = _state(stack, ddb, bracket_id)["stop_price"]["N"]
        _quote(stack, "1520", "1519.95", "1520")
        _eventually(lambda: _state(stack, ddb, bracket_id)["stop_price"]["N"] != stop0, "the stop to trail")
        time.sleep(3)  # the streamer's coalesced stop persistence and GTT stop sync happen on their timers
        _quote(stack, "1500", "1499.95", "1500")
        _eventually(lambda: _status(_state(stack, ddb, bracket_id)) == "CLOSED", "CLOSED")
        execution = next(
            e["executionArn"]
            for e in sfn.list_executions(stateMachineArn=stack.state_machine_arn("BracketStateMachine"))["executions"]
            if e["name"] == bracket_id
        )
        _eventually(lambda: sfn.describe_execution(executionArn=execution)["status"] != "RUNNING", "the workflow end")
        _eventually(lambda: _quiet(stack, sqs, queues), "the queues to drain")
        time.sleep(2)  # the table stream's notify pushes and the streamer's unwatch settle
    lifecycle_s = time.monotonic() - started
    with meter.counting("reconcile_idle"):
        reconcile_idle = _run_reconcile(stack, sfn)
    final = _state(stack, ddb, bracket_id)
    return {
        "bracket_id": bracket_id,
        "status": _status(final),
        "exit_reason": final.get("exit_reason", {}).get("S"),
        "lifecycle_wall_s": round(lifecycle_s, 1),
        "transitions": {
            "bracket": _transitions(sfn, execution),
            "reconcile_open": _transitions(sfn, reconcile_open),
            "reconcile_idle": _transitions(sfn, reconcile_idle),
        },
    }


def start_stack() -> Any:
    from local.stack import LocalStack, StackConfig

    stack = LocalStack(
        StackConfig(api_port=0, moto_port=0, paper_port=0, local_api_key="bench-cost-key", schedules=False)
    )
    stack.start()
    if not stack.dev_account_seeded:
        stack.stop()
        raise RuntimeError("the dev account could not be seeded")
    return stack


# ---- pricing ----


def _price(meter: Meter, bucket: str, transitions: int) -> dict[str, Any]:
    p = PRICES
    lambdas = meter.lambdas.get(bucket, {})
    invocations = sum(int(v["invocations"]) for v in lambdas.values())
    gb_s = sum(v["memory_mb"] / 1024 * v["billed_ms"] / 1000 for v in lambdas.values())
    reqs = meter.requests.get(bucket, {})
    sqs = sum(n for k, n in reqs.items() if k.startswith("sqs."))
    secrets = sum(n for k, n in reqs.items() if k == "secretsmanager.GetSecretValue")
    triggers = meter.triggers.get(bucket, {})
    api = triggers.get("api", 0)
    executions = 1 if transitions else 0
    traces = api + executions + sum(n for t, n in triggers.items() if t not in ("api", "stepfunctions"))
    log_gb = meter.log_bytes.get(bucket, 0) / 1024**3
    usd = {
        "step_functions": transitions * p["stepfunctions_per_transition"],
        "lambda_requests": invocations * p["lambda_per_request"],
        "lambda_compute": gb_s * p["lambda_arm64_per_gb_s"],
        "dynamodb_writes": meter.wru.get(bucket, 0) * p["dynamodb_per_wru"],
        "dynamodb_reads": meter.rru.get(bucket, 0) * p["dynamodb_per_rru"],
        "sqs": sqs * p["sqs_per_request"],
        "api_gateway": api * p["apigateway_rest_per_request"],
        "logs_ingestion": log_gb * p["logs_ingestion_per_gb"],
        "xray": traces * p["xray_per_trace"],
        "secrets_manager": secrets * p["secretsmanager_per_call"],
    }
    return {
        "counts": {
            "step_functions_transitions": transitions,
            "lambda_invocations": invocations,
            "lambda_gb_s": round(gb_s, 3),
            "dynamodb_wru": meter.wru.get(bucket, 0),
            "dynamodb_rru": meter.rru.get(bucket, 0),
            "sqs_requests": sqs,
            "api_requests": api,
            "log_bytes": meter.log_bytes.get(bucket, 0),
            "xray_traces": traces,
            "secrets_manager_calls": secrets,
        },
        "lambda_by_function": {k: dict(v) for k, v in sorted(lambdas.items())},
        "invocations_by_trigger": dict(triggers),
        "aws_requests": dict(sorted(reqs.items())),
        "usd": {k: round(v, 8) for k, v in usd.items()},
        "usd_total": round(sum(usd.values()), 8),
    }


def run() -> dict[str, Any]:
    meter = Meter()
    stack = start_stack()
    try:
        meter.install(stack)
        try:
            lifecycle = drive_lifecycle(stack, meter, stack.config.local_api_key)
        finally:
            meter.uninstall()
    finally:
        stack.stop()
    if lifecycle["status"] != "CLOSED":
        raise RuntimeError(f"the bracket ended {lifecycle['status']}, not CLOSED")
    t = lifecycle["transitions"]
    per_bracket = _price(meter, "lifecycle", t["bracket"])
    open_run = _price(meter, "reconcile_open", t["reconcile_open"])
    idle_run = _price(meter, "reconcile_idle", t["reconcile_idle"])
    per_open_minute = round(open_run["usd_total"] - idle_run["usd_total"], 8)
    reconcile_fixed_month = round(idle_run["usd_total"] * RECONCILE_RUNS_PER_MONTH, 4)
    total = per_bracket["usd_total"]
    c = per_bracket["counts"]
    headline = (
        f"one bracket lifecycle ~ USD {total:.6f} ({c['step_functions_transitions']} transitions, "
        f"{c['lambda_invocations']} Lambda invocations / {c['lambda_gb_s']} GB-s, {c['dynamodb_wru']:.0f} WRU + "
        f"{c['dynamodb_rru']:.1f} RRU, {c['sqs_requests']} SQS requests, {c['api_requests']} API request); "
        f"+ USD {per_open_minute:.6f} per open minute (reconcile); ap-south-1 list prices"
    )
    return {
        "headline": headline,
        "usd_per_bracket": total,
        "usd_per_1000_brackets": round(total * 1000, 4),
        "usd_per_open_bracket_minute": per_open_minute,
        "usd_per_month_reconcile_with_nothing_open": reconcile_fixed_month,
        "reconcile_runs_per_month": RECONCILE_RUNS_PER_MONTH,
        "lifecycle": lifecycle,
        "per_bracket": per_bracket,
        "reconcile_run_with_one_open_bracket": open_run,
        "reconcile_run_with_none_open": idle_run,
        "prices_usd": PRICES,
        "prices_as_of": PRICES_AS_OF,
        "notes": [
            "Counts come from one lifecycle on the local stack (moto, in-process Lambdas, paper exchange, streamer).",
            "Lambda durations are this machine's, warm and in-process: a stand-in for arm64 Lambda, no init billed.",
            "Secrets Manager calls are a floor: one process shares the cache that each real Lambda container keeps.",
            "Log bytes are the handlers' stdout (Powertools JSON logs, EMF); Lambda's own START/END/REPORT lines add "
            "~300 bytes per invocation.",
            "Excluded as fixed (see README's monthly table): NAT gateway hours, Fargate, secrets, dashboard, alarms, "
            "custom metrics, pollers' empty receives; NAT data processing of a bracket's few KB is negligible.",
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2, default=str))
