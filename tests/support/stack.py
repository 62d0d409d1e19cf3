"""Helpers for the tests that drive the whole local stack (tests/statemachine, tests/e2e): the stack itself, the
paper exchange's market, brackets placed through the API, and bounded waits that say what never happened.

Rules every user keeps (moto's state is global to a process, see tests/e2e/conftest.py): a module that starts a
stack marks itself `pytestmark = pytest.mark.xdist_group("stack")` and starts it only through `stack_fixture`, whose
stack lives for that one module and is torn down before the next module brings up its own.

The in-process helpers that read the table (bracket, events, token_stored ...) work because the stack points this
process's AWS clients at its moto server while it is up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import websocket

from local.stack import LocalStack, StackConfig

# An upper bound for slow machines, never a speed claim: a wait that runs out fails, naming what never happened.
DEFAULT_BOUND_S = 45.0

# Requests to the paper exchange's Kite API, as the broker adapter makes them.
KITE_HEADERS = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}

# The bracket workflow's stack: a manual paper market that moves only when a test quotes it, short broker retries,
# and a one-second delay before the entry is placed.
BRACKET_STACK_ENV = {
    "PAPER_MARKET": "manual",
    "BROKER_MAX_ATTEMPTS": "2",
    "BROKER_LOOKUP_PAUSE_S": "0.05",
    "BROKER_TIMEOUT_S": "2",
}
BRACKET_STACK_PARAMETERS = {"BracketOrderDelaySeconds": "1"}


# ---------- the stack ----------


def stack_fixture(
    api_key: str,
    *,
    relay: bool,
    extra_env: dict[str, str] | None = None,
    parameter_overrides: dict[str, str] | None = None,
    postbacks: bool = False,
) -> Any:
    """A module-scoped `stack` fixture: the whole stack on free ports, with no streamer process and no schedules (a
    test starts reconcile itself, so it knows which run saw what), the dev account's API key `api_key`.

    relay: paper ticker order updates reach the watcher through OrderEventsQueue (see OrderUpdateRelay); without it
    every order update is "dropped". postbacks: the paper exchange also POSTs each order update to the stack's
    /broker/postback, as Kite does. extra_env / parameter_overrides: the handlers' environment and the template's
    parameters (default: BRACKET_STACK_ENV / BRACKET_STACK_PARAMETERS). Use as `stack = stack_fixture(...)`.
    """
    env = dict(BRACKET_STACK_ENV if extra_env is None else extra_env)
    parameters = dict(BRACKET_STACK_PARAMETERS if parameter_overrides is None else parameter_overrides)

    @pytest.fixture(scope="module", name="stack")
    def _stack() -> Iterator[LocalStack]:
        config = StackConfig(
            api_port=0,
            moto_port=0,
            paper_port=0,
            local_api_key=api_key,
            streamer=False,
            schedules=False,
            paper_postbacks=postbacks,
            parameter_overrides=dict(parameters),
            extra_env=dict(env),
        )
        local = LocalStack(config)
        local.start()
        try:
            assert local.dev_account_seeded, "the dev account could not be seeded (see the stack's log)"
            with OrderUpdateRelay(local) if relay else nullcontext():
                yield local
        finally:
            local.stop()

    return _stack


class OrderUpdateRelay:
    """Paper ticker order updates -> OrderEventsQueue as {"source","received_at","order"}: the streamer's job, done
    here so a test does not depend on the streamer's process."""

    def __init__(self, stack: LocalStack) -> None:
        assert stack.paper_url is not None
        ws_url = stack.paper_url.replace("http://", "ws://") + "/ws?api_key=paper&access_token=paper-token"
        self.sqs = stack.client("sqs")
        self.queue_url = stack.queue_url("OrderEventsQueue")
        self.connected = threading.Event()
        self.app = websocket.WebSocketApp(ws_url, on_message=self._on_message, on_open=lambda _ws: self.connected.set())
        self.thread = threading.Thread(target=self.app.run_forever, name="order-update-relay", daemon=True)

    def _on_message(self, _ws: Any, message: Any) -> None:
        if not isinstance(message, str):
            return  # ticks (binary) are the streamer's business
        update = json.loads(message)
        if update.get("type") == "order":
            body = {"source": "ticker", "received_at": datetime.now(UTC).isoformat(), "order": update["data"]}
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))

    def __enter__(self) -> OrderUpdateRelay:
        self.thread.start()
        assert self.connected.wait(10), "the relay could not connect to the paper ticker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.close()
        self.thread.join(5)


# ---------- bounded waits ----------


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = DEFAULT_BOUND_S) -> Any:
    """Poll until probe() is truthy and return that value; after timeout_s fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last saw {value!r}")
        time.sleep(0.2)


def wait_for_status(bracket_id: str, *statuses: str, timeout_s: float = DEFAULT_BOUND_S) -> Any:
    """The bracket once its status is one of `statuses`; fails with the status it was left in."""
    last: list[str | None] = [None]

    def probe() -> Any:
        found = bracket(bracket_id)
        last[0] = None if found is None else found.status.value
        return found if found is not None and found.status.value in statuses else None

    try:
        return wait_for(f"{bracket_id} in {statuses}", probe, timeout_s)
    except AssertionError:
        raise AssertionError(f"{bracket_id} never reached {statuses} in {timeout_s:g} s; it is {last[0]}") from None


def wait_for_execution_end(stack: LocalStack, bracket_id: str) -> dict[str, Any]:
    """The bracket workflow's execution (named by the bracket id) once it is no longer RUNNING."""
    arn = stack.state_machine_arn("BracketStateMachine").replace(":stateMachine:", ":execution:") + f":{bracket_id}"
    return _execution_end(stack, arn, f"the execution of {bracket_id} to end")


def run_reconcile(stack: LocalStack) -> dict[str, Any]:
    """Start one reconcile execution and wait for it; its output is the summary."""
    sfn = stack.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.state_machine_arn("ReconcileStateMachine"), name=f"run-{time.time_ns()}", input="{}"
    )["executionArn"]
    done = _execution_end(stack, arn, "the reconcile run to end")
    assert done["status"] == "SUCCEEDED", done
    return dict(json.loads(done["output"]))


def _execution_end(stack: LocalStack, execution_arn: str, what: str) -> dict[str, Any]:
    sfn = stack.client("stepfunctions")

    def ended() -> Any:
        described = sfn.describe_execution(executionArn=execution_arn)
        return described if described["status"] != "RUNNING" else None

    return dict(wait_for(what, ended))


# ---------- the paper market ----------


def paper(stack: LocalStack, path: str, body: Any = None, method: str = "POST") -> Any:
    """Call the paper exchange's control API (/_paper/<path>) and return its data."""
    answer = requests.request(method, f"{stack.paper_url}/_paper/{path}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def quote(stack: LocalStack, ltp: str, bid: str, ask: str, *, symbol: str = "INFY", **quantities: int) -> None:
    """Move one NSE instrument's market (quantities: bid_qty / ask_qty, what is offered)."""
    row = {"exchange": "NSE", "tradingsymbol": symbol, "ltp": ltp, "bid": bid, "ask": ask, **quantities}
    paper(stack, "quotes", {"quotes": [row]})


def reset_market(stack: LocalStack) -> None:
    """No orders, GTTs, positions, quotes or faults, and every order fills in full."""
    paper(stack, "reset")
    paper(stack, "config", {"partial_fills": False})


def broker_orders(stack: LocalStack, symbol: str | None = None) -> list[dict[str, Any]]:
    """The orders at the paper exchange (of one tradingsymbol if given), as GET /orders lists them."""
    response = requests.get(f"{stack.paper_url}/orders", headers=KITE_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    return [o for o in response.json()["data"] if symbol is None or o["tradingsymbol"] == symbol]


def positions(stack: LocalStack) -> list[dict[str, Any]]:
    """The net positions at the paper exchange, one row per instrument and product."""
    response = requests.get(f"{stack.paper_url}/portfolio/positions", headers=KITE_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["net"])


def net_position(stack: LocalStack, symbol: str) -> int:
    return sum(int(p["quantity"]) for p in positions(stack) if p["tradingsymbol"] == symbol)


def gtts(stack: LocalStack) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.paper_url}/gtt/triggers", headers=KITE_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


# ---------- brackets ----------


def fresh_strategy(prefix: str) -> str:
    """A strategy name no other bracket has: intake refuses a second open bracket of one symbol and strategy."""
    return f"{prefix}-{time.monotonic_ns()}"


def place(stack: LocalStack, strategy: str | None = None, **fields: Any) -> str:
    """POST a BUY 10 INFY MIS at 1500 (stop 1480, target 1550) through the stack's API, `fields` changed; its id.
    strategy: as given, or a fresh one (fields may also name it)."""
    body = {
        "symbol": "INFY",
        "exchange": "NSE",
        "product": "MIS",
        "action": "BUY",
        "quantity": 10,
        "entry_price": "1500",
        "sl_price": "1480",
        "target_price": "1550",
        "strategy": strategy if strategy is not None else fresh_strategy("test"),
        **fields,
    }
    headers = {"X-API-KEY": stack.config.local_api_key}
    for _attempt in range(10):
        response = requests.post(f"{stack.api_url}/api/v1/placebracketorder", json=body, headers=headers, timeout=30)
        if response.status_code != 429:
            break
        # The key's placement limit (2/s), spent by a test just before: a client waits and sends again. A 429
        # places nothing, so this is no resend of a placed order.
        time.sleep(0.6)
    assert response.status_code == 200, response.text
    return str(response.json()["bracket_id"])


def protected_bracket(
    stack: LocalStack, strategy: str | None = None, *, timeout_s: float = DEFAULT_BOUND_S, **fields: Any
) -> Any:
    """A bracket placed and PROTECTED, its workflow already waiting for the exit (the exit wait's token stored)."""
    bracket_id = place(stack, strategy, **fields)
    found = wait_for_status(bracket_id, "PROTECTED", timeout_s=timeout_s)
    wait_for("the exit wait's token", lambda: token_stored(bracket_id, "exit_task_token"))
    return found


def bracket(bracket_id: str) -> Any:
    """The bracket as its STATE item says now (None if there is none)."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    return BracketRepository().get(bracket_id)


def events(bracket_id: str) -> list[dict[str, Any]]:
    """The bracket's audit trail, oldest first."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    return BracketRepository().events(bracket_id)


def event_types(bracket_id: str) -> list[str]:
    return [e["type"] for e in events(bracket_id)]


def assert_every_version_audited(bracket_id: str) -> None:
    current = bracket(bracket_id)
    versions = {e["version"] for e in events(bracket_id)}
    assert versions == set(range(1, current.version + 1)), f"versions without an audit event: {versions}"


def token_stored(bracket_id: str, name: str) -> bool:
    """Whether the workflow's wait `name` ("entry_task_token" / "exit_task_token") has stored its task token."""
    from bracketflow.adapters.dynamo import lifecycle as store

    return bool(store.get_task_token(bracket_id, name))


def set_aside_open_brackets() -> None:
    """Take every bracket still open out of later tests and reconcile runs (NEEDS_REVIEW -> CANCELLED, a human's
    resolution): two open INFY brackets alike make a GTT child's fill ambiguous, and reconcile would repair both."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BracketStatus
    from bracketflow.domain.states import is_terminal
    from bracketflow.errors import ConcurrentModification

    repo = BracketRepository()
    for leftover in repo.list_open():
        for _attempt in range(20):  # the stack may still be moving it (an exit landing): read it again
            b = repo.get(leftover.id)
            if b is None or is_terminal(b.status):
                break
            try:
                if b.status is not BracketStatus.NEEDS_REVIEW:
                    b = repo.transition(b, BracketStatus.NEEDS_REVIEW, {"type": "TestCleanup"})
                repo.transition(b, BracketStatus.CANCELLED, {"type": "TestCleanup"})
                break
            except ConcurrentModification:
                time.sleep(0.1)


def clean_market(stack: LocalStack, *, sbin: bool = False, set_aside: bool = True) -> LocalStack:
    """A clean paper exchange quoting INFY 1499.95 / 1500.00 (and SBIN 799.95 / 800.00 with `sbin`) and, unless
    `set_aside` is False, no bracket left open by an earlier test (set_aside_open_brackets says why)."""
    reset_market(stack)
    quote(stack, "1500", "1499.95", "1500")
    if sbin:
        quote(stack, "800", "799.95", "800", symbol="SBIN")
    if set_aside:
        set_aside_open_brackets()
    return stack


def market_fixture(*, sbin: bool = False, set_aside: bool = True) -> Any:
    """A `market` fixture: clean_market before each test. Use as `market = market_fixture(...)`."""

    @pytest.fixture(name="market")
    def _market(stack: LocalStack) -> LocalStack:
        return clean_market(stack, sbin=sbin, set_aside=set_aside)

    return _market


def get_bracket(stack: LocalStack, api_key: str, bracket_id: str) -> dict[str, Any]:
    """GET /api/v1/brackets/{id}'s data, as the trader sees it."""
    answer = requests.get(f"{stack.api_url}/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": api_key}, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["data"])
