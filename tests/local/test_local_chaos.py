"""The local runtime's chaos (local/chaos.py): an invocation that dies right after the broker acted, as a Lambda
timeout or crash would end it. The broker has done the work; the function's caller sees a Lambda error it cannot
catch inside the handler; nothing else (reads, calls outside an invocation, other functions) is touched."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import requests

from local.chaos import ERROR_TYPES, CrashAfterBroker
from local.runtime import FunctionError, LambdaRuntime
from local.template import FunctionSpec

HEADERS = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}


def _function(tmp_path: Path, logical_id: str) -> FunctionSpec:
    code = tmp_path / logical_id
    code.mkdir()
    # A handler that places an order and, like ours, catches every Exception around the broker call.
    (code / "app.py").write_text(
        textwrap.dedent(
            """
            import requests

            def lambda_handler(event, context):
                try:
                    answer = requests.request(event["method"], event["url"], data=event.get("form"),
                                              headers=event["headers"], timeout=10)
                except Exception as exc:
                    return {"caught": type(exc).__name__}
                return {"status": answer.status_code}
            """
        )
    )
    return FunctionSpec(
        logical_id=logical_id,
        name=f"local-{logical_id}",
        arn=f"arn:aws:lambda:ap-south-1:123456789012:function:local-{logical_id}",
        code_dir=code,
        handler="app.lambda_handler",
        environment={},
        timeout=30,
        memory_size=128,
        layer_dirs=[],
        events=[],
    )


@pytest.fixture
def chaos(paper_exchange):
    crash = CrashAfterBroker(1.0, seed=3, functions=["PlaceEntryFunction"])
    undo = crash.install(paper_exchange.base_url)
    yield crash
    undo()


def _order(paper_exchange) -> dict:
    return {
        "method": "POST",
        "url": f"{paper_exchange.base_url}/orders/regular",
        "headers": HEADERS,
        "form": {
            "exchange": "NSE",
            "tradingsymbol": "INFY",
            "transaction_type": "BUY",
            "quantity": "1",
            "product": "MIS",
            "order_type": "LIMIT",
            "price": "1490",
            "tag": "BFCHAOSE",
        },
    }


def test_an_invocation_dies_after_the_broker_placed_its_order(tmp_path, paper_exchange, chaos) -> None:
    runtime = LambdaRuntime({"PlaceEntryFunction": _function(tmp_path, "PlaceEntryFunction")})
    paper_exchange.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])

    with pytest.raises(FunctionError) as died:
        runtime.invoke("PlaceEntryFunction", _order(paper_exchange))

    # The handler's own `except Exception` never saw it; Lambda's error names say what ended it
    assert died.value.error_type in ERROR_TYPES
    assert "POST /orders/regular 200" in died.value.message
    # and the broker had acted: the order is there
    assert [o["tag"] for o in paper_exchange.state()["orders"]] == ["BFCHAOSE"]
    assert chaos.fired == {"PlaceEntryFunction": 1}


def test_reads_other_functions_and_calls_outside_an_invocation_are_left_alone(tmp_path, paper_exchange, chaos) -> None:
    runtime = LambdaRuntime(
        {
            "PlaceEntryFunction": _function(tmp_path, "PlaceEntryFunction"),
            "FinalizeFunction": _function(tmp_path, "FinalizeFunction"),
        }
    )
    paper_exchange.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    read = {"method": "GET", "url": f"{paper_exchange.base_url}/orders", "headers": HEADERS}

    assert runtime.invoke("PlaceEntryFunction", read) == {"status": 200}
    assert runtime.invoke("FinalizeFunction", _order(paper_exchange)) == {"status": 200}
    outside = _order(paper_exchange)
    assert requests.post(outside["url"], data=outside["form"], headers=HEADERS, timeout=10).status_code == 200
    # a refused call is not "the broker acted"
    paper_exchange.set_faults([{"kind": "http_500", "match": {"path": "/orders"}}])
    assert runtime.invoke("PlaceEntryFunction", _order(paper_exchange)) == {"status": 500}
    assert chaos.fired == {}
    chaos.rate = 0
    assert runtime.invoke("PlaceEntryFunction", _order(paper_exchange)) == {"status": 200}


def test_it_is_off_unless_the_environment_asks() -> None:
    assert CrashAfterBroker.from_env({}) is None
    assert CrashAfterBroker.from_env({"LOCAL_CHAOS_CRASH_RATE": "0"}) is None
    chaos = CrashAfterBroker.from_env({"LOCAL_CHAOS_CRASH_RATE": "0.2", "LOCAL_CHAOS_CRASH_FUNCTIONS": "ExitFunction"})
    assert chaos is not None and chaos.rate == 0.2 and chaos.functions == frozenset({"ExitFunction"})
    with pytest.raises(ValueError):
        CrashAfterBroker(1.5)


def test_an_invocation_that_stalled_past_its_timeout_cannot_reach_the_broker(tmp_path, paper_exchange) -> None:
    import dataclasses

    from local.runtime import refuse_broker_calls_past_timeout

    # Given a function with a 1 s timeout whose invocation stalls for 1.5 s before placing an order (a loaded
    # machine): Lambda would have ended it at 1 s, and its workflow would already be retrying it
    spec = dataclasses.replace(_function(tmp_path, "PlaceEntryFunction"), timeout=1)
    runtime = LambdaRuntime({"PlaceEntryFunction": spec})
    undo = refuse_broker_calls_past_timeout(paper_exchange.base_url)
    try:
        stalled = {**_order(paper_exchange), "stall_s": 1.5}
        code = (tmp_path / "PlaceEntryFunction" / "app.py").read_text()
        (tmp_path / "PlaceEntryFunction" / "app.py").write_text(
            code.replace("    try:\n", "    import time\n    time.sleep(event.get('stall_s', 0))\n    try:\n", 1)
        )
        # When it goes on to call the broker
        with pytest.raises(FunctionError) as died:
            runtime.invoke("PlaceEntryFunction", stalled)
        # Then the invocation ends as Lambda's timeout would, and nothing reached the broker
        assert died.value.error_type == "Sandbox.Timedout"
        assert paper_exchange.state()["orders"] == []
        # while one within its timeout still places
        assert runtime.invoke("PlaceEntryFunction", _order(paper_exchange)) == {"status": 200}
    finally:
        undo()
