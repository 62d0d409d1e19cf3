"""Benchmark: how fast does the TradingView webhook answer, warm, and how long does its module take to import cold?

Local stack (the target's measure): HTTP POSTs of distinct alerts to the local API Gateway of `python -m local`'s
stack (LocalStack on free ports, moto in SERVER mode, so every AWS call is an HTTP round trip as in AWS), timed at
the client, after a warm-up; then the same alerts resent (the duplicate path). The webhook starts each bracket's
execution on a stand-in one-state machine: the local stack runs every Lambda in this one Python process, and 170
real bracket workflows placing entries at the paper exchange would share its GIL and the two cores with the requests
being timed (a first attempt with them measured the stack's own backlog, seconds per request, not the webhook).
In-process: the real handler (functions/webhook/app.py) against moto in-process, N distinct alerts (each a full
registration: auth, placement limit, validation, the CREATED transaction, risk/guard/duplicate reads, the
workflow start, the order log) and N resends of them (the duplicate path). moto is slower per call than
DynamoDB's few ms over the network but has no network: the numbers say what OUR code costs per request.
Cold: `import app` for functions/webhook in a fresh interpreter (as Lambda's init does), median of several runs.
Targets (README): p99 under 25 ms warm; import under 350 ms.

Run alone: `python -m benchmarks.bench_webhook`; `make bench` runs it with the others.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "webhook.json"
TABLE = "bracketflow-bench-webhook"
REGION = "ap-south-1"
N = 150
N_LOCAL = 40  # over HTTP: fewer, so every resend still falls inside the 5-minute alert dedupe window
IMPORT_RUNS = 5


class _CfnLoader(yaml.SafeLoader):
    pass


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


class _Context:
    function_name = "bench"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:bench"
    aws_request_id = "bench"


def _event(body: str, n: int) -> dict[str, Any]:
    return {
        "resource": "/tradingview/webhook/bracket",
        "path": "/tradingview/webhook/bracket",
        "httpMethod": "POST",
        "headers": {"Content-Type": "text/plain"},
        "multiValueHeaders": {"Content-Type": ["text/plain"]},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"requestId": f"bench-{n}", "stage": "dev", "identity": {"sourceIp": "52.89.214.238"}},
        "body": body,
        "isBase64Encoded": False,
    }


class _AwsTimer:
    """Accumulates wall time spent inside boto3/botocore API calls (here: moto), and counts them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def install(self) -> Any:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        timer = self

        def timed(client: Any, operation: str, params: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(client, operation, params)
            finally:
                timer.seconds += time.perf_counter() - t0
                timer.calls += 1

        BaseClient._make_api_call = timed  # type: ignore[method-assign]
        return lambda: setattr(BaseClient, "_make_api_call", original)


def _clear_all_but_accounts(table: Any) -> None:
    for item in table.scan(ProjectionExpression="pk, sk")["Items"]:
        if not item["pk"].startswith(("ACCOUNT#", "APIKEY#")):
            table.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "max_ms": round(ordered[-1], 3),
        "n": len(ordered),
    }


def _warm() -> dict[str, Any]:
    env = {
        "TABLE_NAME": TABLE,
        "AWS_DEFAULT_REGION": REGION,
        "BROKER": "paper",
        "STAGE": "local",
        "PLACEMENT_RATE_LIMIT_PER_SECOND": "100000",  # measure the request, not the limiter refusing it
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "bracketflow",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with mock_aws():
            template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
            props = template["Resources"]["BracketsTable"]["Properties"]
            boto3.client("dynamodb", region_name=REGION).create_table(
                TableName=TABLE,
                AttributeDefinitions=props["AttributeDefinitions"],
                KeySchema=props["KeySchema"],
                GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
                BillingMode="PAY_PER_REQUEST",
            )
            sfn = boto3.client("stepfunctions", region_name=REGION)
            role = boto3.client("iam", region_name=REGION).create_role(RoleName="b", AssumeRolePolicyDocument="{}")
            definition = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
            arn = sfn.create_state_machine(name="bracket", definition=definition, roleArn=role["Role"]["Arn"])
            os.environ["BRACKET_STATE_MACHINE_ARN"] = arn["stateMachineArn"]

            from bracketflow.adapters.aws import reset_clients
            from bracketflow.adapters.secrets import reset_pepper_cache
            from bracketflow.services.accounts import create_account
            from bracketflow.services.models import RiskLimits

            reset_clients()
            reset_pepper_cache()
            limits = RiskLimits(max_open_brackets=10**6, daily_loss_limit=10**9, max_order_value=10**12)
            _, key = create_account("Bench", limits=limits)
            handler = importlib.import_module("functions.webhook.app").lambda_handler
            # Each alert is distinct (its own strategy), so each is a full registration, not a duplicate.
            alerts = [
                json.dumps(
                    {
                        "apikey": key,
                        "symbol": "NSE:INFY",
                        "action": "buy",
                        "product": "MIS",
                        "quantity": "1",
                        "entry_price": "1500",
                        "sl_percent": "1",
                        "target_percent": "2",
                        "trail": "0.5%",
                        "strategy": f"s{i}",
                    }
                )
                for i in range(N + 20)
            ]
            for i in range(20):  # warm-up: first-call imports, client creation, the pepper read
                handler(_event(alerts[N + i], N + i), _Context())
            _clear_all_but_accounts(boto3.resource("dynamodb", region_name=REGION).Table(TABLE))
            new_ms, resend_ms, statuses = [], [], set()
            new_own, resend_own, new_calls, resend_calls = [], [], [], []
            timer = _AwsTimer()
            uninstall = timer.install()
            table = boto3.resource("dynamodb", region_name=REGION).Table(TABLE)
            for i in range(N):
                # A trader's table is small per request (a few open brackets); moto's queries cost O(table size),
                # so each round starts from just the account, and the clean-up is outside the timing.
                _clear_all_but_accounts(table)
                for total, own, calls in ((new_ms, new_own, new_calls), (resend_ms, resend_own, resend_calls)):
                    aws_before, calls_before = timer.seconds, timer.calls
                    t0 = time.perf_counter()
                    out = handler(_event(alerts[i], i), _Context())
                    elapsed = time.perf_counter() - t0
                    total.append(elapsed * 1000)
                    own.append((elapsed - (timer.seconds - aws_before)) * 1000)
                    calls.append(timer.calls - calls_before)
                    statuses.add(out["statusCode"])
            uninstall()
            if statuses != {200}:
                raise RuntimeError(f"the benchmark's requests were not all accepted: {statuses}")
            reset_clients()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {
        "new_alert": _percentiles(new_ms),
        "resent_alert": _percentiles(resend_ms),
        # Our code, Powertools and boto3 serialisation, without the time moto spends answering.
        "new_alert_excluding_aws_calls": _percentiles(new_own),
        "resent_alert_excluding_aws_calls": _percentiles(resend_own),
        "aws_calls_per_request": {"new_alert": max(new_calls), "resent_alert": max(resend_calls)},
        "load_average_1m": os.getloadavg()[0],
    }


def _local_stack() -> dict[str, Any]:
    """Warm latency through the local API Gateway and moto in server mode, as a TradingView POST sees it."""
    import requests

    from local.stack import LocalStack, StackConfig

    key = "bench-webhook-key"
    config = StackConfig(
        api_port=0,
        moto_port=0,
        paper_port=0,
        local_api_key=key,
        streamer=False,
        schedules=False,
        extra_env={
            "PLACEMENT_RATE_LIMIT_PER_SECOND": "100000",  # measure the request, not the limiter refusing it
            "DEFAULT_MAX_OPEN_BRACKETS": "1000000",
            "DEFAULT_MAX_ORDER_VALUE": "1000000000000",
            "PAPER_MARKET": "manual",  # no quotes: entries rest, so the workflows wait quietly beside the benchmark
            "ENTRY_TIMEOUT_S": "3600",
            "POWERTOOLS_TRACE_DISABLED": "1",
        },
    )
    stack = LocalStack(config)
    stack.start()
    arn_before = os.environ.get("BRACKET_STATE_MACHINE_ARN")
    try:
        from bracketflow.adapters.aws import reset_clients

        role = stack.client("iam").create_role(RoleName="bench-stand-in", AssumeRolePolicyDocument="{}")
        definition = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
        stand_in = stack.client("stepfunctions").create_state_machine(
            name="bench-stand-in", definition=definition, roleArn=role["Role"]["Arn"]
        )
        os.environ["BRACKET_STATE_MACHINE_ARN"] = stand_in["stateMachineArn"]
        reset_clients()
        url = f"{stack.api_url}/tradingview/webhook/bracket"
        session = requests.Session()
        headers = {"Content-Type": "text/plain"}

        def alert(i: int) -> str:
            return json.dumps(
                {
                    "apikey": key,
                    "symbol": "NSE:INFY",
                    "action": "buy",
                    "product": "MIS",
                    "quantity": "1",
                    "entry_price": "1500",
                    "sl_percent": "1",
                    "target_percent": "2",
                    "trail": "0.5%",
                    "strategy": f"local{i}",
                }
            )

        def post(body: str) -> float:
            t0 = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=30)
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"the benchmark's alert was refused: {response.status_code} {response.text}")
            return elapsed

        for i in range(20):  # warm-up: first-call imports, client creation, the pepper and credential reads
            post(alert(N + i))
        new_ms = [post(alert(i)) for i in range(N_LOCAL)]
        resend_ms = [post(alert(i)) for i in range(N_LOCAL)]
    finally:
        if arn_before is None:
            os.environ.pop("BRACKET_STATE_MACHINE_ARN", None)
        else:
            os.environ["BRACKET_STATE_MACHINE_ARN"] = arn_before
        stack.stop()
    return {
        "new_alert": _percentiles(new_ms),
        "resent_alert": _percentiles(resend_ms),
        "load_average_1m": os.getloadavg()[0],
    }


def _cold_import() -> dict[str, Any]:
    code = "import time; t = time.perf_counter(); import app; print((time.perf_counter() - t) * 1000)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common"), "POWERTOOLS_TRACE_DISABLED": "1"}
    runs = []
    for _ in range(IMPORT_RUNS):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT / "functions" / "webhook", env=env, capture_output=True, text=True,
            check=True, timeout=60,
        )  # fmt: skip
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return {
        "median_ms": round(statistics.median(runs), 1),
        "min_ms": round(min(runs), 1),
        "runs_ms": [round(r, 1) for r in runs],
    }


def run() -> dict[str, Any]:
    local = _local_stack()
    warm = _warm()
    cold = _cold_import()
    return {
        "what": "TradingView webhook: warm latency over HTTP on the local stack (moto server mode) and of the handler "
        "against moto in-process; cold import time of functions/webhook/app.py",
        "local_stack": local,
        "warm": warm,
        "cold_import": cold,
        "targets": {"warm_p99_ms": 25, "cold_import_ms": 350},
        "meets_targets": local["new_alert"]["p99_ms"] < 25 and cold["median_ms"] < 350,
    }


if __name__ == "__main__":
    result = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
