"""`make demo` (`python -m local.demo [BRACKET_ID]`): a bracket from alert to exit, live, against a running `make run`.

Without a bracket id it sends a TradingView-style alert to the webhook (a MARKET BUY of one INFY with its stop, target
and trail set close to the live price, so the walking paper market closes it within a minute or two) and follows the
bracket it made; with an id it follows that bracket the same way. Following = GET /api/v1/brackets/{id} every
`poll_s` and one line per NEW audit event, in the trail's order: time, what happened, the price it happened at, the
detail. A push on the WebSocket API (when it answers) about the bracket makes the next look immediate. At the end a
one-screen summary of the bracket and its audit trail; the exit code says how it ended (see EXIT_*).

A client of the public interfaces only: the REST API and webhook, the WebSocket API, and the paper exchange's
Kite-style GET /quote/ltp (it is the local broker) for the price the alert's levels are measured from.

Options come from the command line, else the environment `make run` uses: API_PORT, WEBSOCKET_PORT, PAPER_PORT,
LOCAL_API_KEY, PAPER_API_KEY, PAPER_ACCESS_TOKEN; DEMO_API_URL / DEMO_WS_URL / DEMO_PAPER_URL override whole URLs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests

from local.demo_output import LABEL_WIDTH, PRICE_WIDTH, TIME_WIDTH, Line, describe, money, summary

EXIT_CLOSED = 0  # the bracket reached CLOSED
EXIT_ENDED_OTHERWISE = 1  # FAILED, CANCELLED, EXPIRED or NEEDS_REVIEW
EXIT_TIMEOUT = 2  # still open when the follow timed out (the bracket itself carries on)
EXIT_UNREACHABLE = 3  # the stack could not be reached, or refused the alert or the key

# The statuses after which nothing more happens to a bracket (NEEDS_REVIEW waits for a human: stop there too).
FINAL_STATUSES = frozenset({"CLOSED", "FAILED", "CANCELLED", "EXPIRED", "NEEDS_REVIEW"})

# The demo alert. The paper walk moves a price about 2 bp per 0.2 s step (roughly 0.2% a minute), so a 0.1% trail
# is usually crossed within a minute and a stop 0.25% / target 0.5% away bound the rest; the bracket stays small.
DEMO_SYMBOL = "NSE:INFY"
DEMO_QUANTITY = 1
DEMO_SL_PERCENT = "0.25"
DEMO_TARGET_PERCENT = "0.5"
DEMO_TRAIL = "0.1%"
DEMO_STRATEGY = "demo"
# The pasted alert's levels are wider: its entry_price is the price when `make run` started, and the walk moves on.
BANNER_LEVELS = ("1", "2", "0.5%")
DEFAULT_TIMEOUT_S = 150.0
DEFAULT_POLL_S = 0.25


@dataclass(frozen=True)
class DemoConfig:
    api_url: str
    api_key: str
    paper_url: str
    paper_api_key: str = "paper"
    paper_access_token: str = "paper-token"
    ws_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DemoConfig:
        env = os.environ if environ is None else environ
        api_port = int(env.get("API_PORT") or 3000)
        ws_port = int(env.get("WEBSOCKET_PORT") or api_port + 1)
        return cls(
            api_url=env.get("DEMO_API_URL") or f"http://127.0.0.1:{api_port}",
            api_key=env.get("LOCAL_API_KEY") or "local-dev-key",
            paper_url=env.get("DEMO_PAPER_URL") or f"http://127.0.0.1:{int(env.get('PAPER_PORT') or 8700)}",
            paper_api_key=env.get("PAPER_API_KEY") or "paper",
            paper_access_token=env.get("PAPER_ACCESS_TOKEN") or "paper-token",
            # the template's default stage is dev; the local WebSocket API serves it on API_PORT + 1
            ws_url=env.get("DEMO_WS_URL") or f"ws://127.0.0.1:{ws_port}/dev",
        )


class DemoError(Exception):
    """The stack could not be reached or refused a request: the message says what to do."""


# ---------- talking to the stack ----------
def last_price(paper_url: str, symbol: str, api_key: str = "paper", access_token: str = "paper-token") -> Decimal:
    """The instrument's last traded price from the (paper) broker's Kite-style GET /quote/ltp."""
    try:
        answer = requests.get(
            f"{paper_url}/quote/ltp",
            params={"i": symbol},
            headers={"Authorization": f"token {api_key}:{access_token}", "X-Kite-Version": "3"},
            timeout=5,
        )
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise DemoError(f"cannot reach the paper exchange at {paper_url} ({reason}): is `make run` up?") from None
    if answer.status_code != 200:
        raise DemoError(f"the paper exchange answered {answer.status_code} for {symbol}'s price: {answer.text[:200]}")
    quote = answer.json().get("data", {}).get(symbol)
    if not quote or not quote.get("last_price"):
        raise DemoError(f"the paper exchange has no price for {symbol}")
    return Decimal(str(quote["last_price"]))


def demo_alert(
    api_key: str,
    price: Decimal,
    *,
    symbol: str = DEMO_SYMBOL,
    client_order_id: str | None = None,
    levels: tuple[str, str, str] = (DEMO_SL_PERCENT, DEMO_TARGET_PERCENT, DEMO_TRAIL),
) -> dict:
    """The TradingView-style alert the demo sends: MARKET entry, levels as percent of `price`, a percent trail.
    levels: (sl_percent, target_percent, trail)."""
    alert: dict[str, Any] = {
        "apikey": api_key,
        "symbol": symbol,
        "action": "buy",
        "quantity": str(DEMO_QUANTITY),
        "product": "MIS",
        "pricetype": "MARKET",
        "entry_price": str(price),  # what {{close}} would be: the price the percent levels are measured from
        "sl_percent": levels[0],
        "target_percent": levels[1],
        "trail": levels[2],
        "strategy": DEMO_STRATEGY,
    }
    if client_order_id:
        alert["client_order_id"] = client_order_id
    return alert


def alert_curl(
    api_url: str,
    api_key: str,
    price: Decimal | str,
    *,
    symbol: str = DEMO_SYMBOL,
    levels: tuple[str, str, str] = BANNER_LEVELS,
) -> str:
    """A ready-to-paste curl that sends an alert to the webhook as TradingView does (text/plain JSON)."""
    alert = demo_alert(api_key, Decimal(str(price)), symbol=symbol, levels=levels)
    body = json.dumps(alert, separators=(", ", ": "))
    return f"curl -s -X POST {api_url}/tradingview/webhook/bracket -H 'Content-Type: text/plain' \\\n  -d '{body}'"


def ready_banner(api_url: str, api_key: str, paper_url: str | None, ws_url: str | None) -> str:
    """What `make run` prints once it is ready: how to place a first bracket and where to look."""
    price: Decimal | str = "1500"
    where = "edit entry_price to the price you want the levels measured from"
    if paper_url:
        try:
            price = last_price(paper_url, DEMO_SYMBOL)
            where = f"entry_price is {DEMO_SYMBOL}'s price now: update it as the walk moves; `make demo` reads it live"
        except DemoError:
            pass
    lines = [
        "",
        "first bracket: run `make demo` in another terminal (same API_PORT/PAPER_PORT as here), or send an alert:",
        alert_curl(api_url, api_key, price),
        f"  ({where})",
        f"then: `make demo BRACKET=<bracket_id>` follows it live, or "
        f"curl -s -H 'X-API-KEY: {api_key}' {api_url}/api/v1/brackets/<bracket_id>",
        f"Swagger UI: {api_url}/swagger   OpenAPI: {api_url}/swagger?format=json",
    ]
    if ws_url:
        lines.append(f'live updates: {ws_url}?apikey={api_key}  then send {{"action": "subscribe"}}')
    if paper_url:
        lines.append(
            f"paper market: {paper_url}/_paper/state (a seeded random walk; PAPER_MARKET=manual holds it still)"
        )
    return "\n".join(lines) + "\n"


def send_alert(config: DemoConfig, symbol: str = DEMO_SYMBOL) -> tuple[str, dict[str, Any]]:
    """Send the demo alert at the live price; returns (bracket_id, the webhook's answer)."""
    price = last_price(config.paper_url, symbol, config.paper_api_key, config.paper_access_token)
    # a fresh client_order_id: two demos in the alert-dedupe window are two brackets, not one and a duplicate
    alert = demo_alert(config.api_key, price, symbol=symbol, client_order_id=f"demo-{uuid.uuid4().hex[:16]}")
    try:
        answer = requests.post(
            f"{config.api_url}/tradingview/webhook/bracket",
            data=json.dumps(alert),
            headers={"Content-Type": "text/plain"},
            timeout=30,
        )
    except requests.RequestException as exc:
        raise DemoError(f"cannot reach the API at {config.api_url} ({type(exc).__name__}): is `make run` up?") from None
    body = _json(answer)
    if answer.status_code != 200 or not body.get("bracket_id"):
        raise DemoError(f"the webhook answered {answer.status_code}: {body.get('message') or answer.text[:300]}")
    return str(body["bracket_id"]), body


def get_bracket(config: DemoConfig, bracket_id: str) -> dict[str, Any]:
    """GET /api/v1/brackets/{id}: the bracket's state and its audit trail ("events", oldest first)."""
    try:
        answer = requests.get(
            f"{config.api_url}/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": config.api_key}, timeout=30
        )
    except requests.RequestException as exc:
        raise DemoError(f"cannot reach the API at {config.api_url} ({type(exc).__name__}): is `make run` up?") from None
    body = _json(answer)
    if answer.status_code != 200:
        raise DemoError(f"GET /api/v1/brackets/{bracket_id} answered {answer.status_code}: {body.get('message')}")
    return dict(body["data"])


def _json(answer: requests.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# ---------- following ----------
class PushWakeup:
    """Wakes the follow loop when the WebSocket API pushes anything about the bracket (best effort: without it the
    loop just polls). Status changes arrive this way; stop moves do not, so polling stays the source of truth."""

    def __init__(self, ws_url: str | None, api_key: str, bracket_id: str) -> None:
        self.event = threading.Event()
        self.connected = False
        self._ws: Any = None
        self._bracket_id = bracket_id
        if not ws_url:
            return
        try:
            import websocket

            self._ws = websocket.create_connection(f"{ws_url}?apikey={api_key}", timeout=3)
            self._ws.send(json.dumps({"action": "subscribe"}))
            self.connected = json.loads(self._ws.recv()).get("type") == "subscribed"
        except Exception:  # no WebSocket API up: polling alone is fine
            self.close()
            return
        self._ws.settimeout(None)
        threading.Thread(target=self._listen, name="demo-ws", daemon=True).start()

    def _listen(self) -> None:
        while self._ws is not None:
            try:
                message = self._ws.recv()
            except Exception:
                return
            if self._bracket_id in str(message):
                self.event.set()

    def wait(self, seconds: float) -> None:
        self.event.wait(seconds)
        self.event.clear()

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()


def event_key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes an audit event itself: its id when it has one, else its version, type and time."""
    if event.get("event_id"):
        return ("id", event["event_id"])
    return ("v", event.get("version"), event.get("type"), event.get("at"))


@dataclass
class FollowResult:
    bracket: dict[str, Any]
    lines: list[Line]
    timed_out: bool


def follow(
    fetch: Callable[[], dict[str, Any]],
    emit: Callable[[Line], None],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    wait: Callable[[float], None] = time.sleep,
) -> FollowResult:
    """Look at the bracket until it is final (or timeout_s passes); emit one Line per audit event not seen before.

    Events are known by their identity (id, else version, type and time), not by their position, so each is
    printed exactly once, in the trail's order, whatever the polling interval — and an event that shows up at a
    version already shown (a write that lost a race and was retried) is still printed when it appears.
    """
    deadline = time.monotonic() + timeout_s
    lines: list[Line] = []
    seen: set[tuple[Any, ...]] = set()
    while True:
        bracket = fetch()
        for event in bracket.get("events") or []:
            key = event_key(event)
            if key in seen:
                continue
            seen.add(key)
            line = describe(event, bracket)
            lines.append(line)
            emit(line)
        if bracket.get("status") in FINAL_STATUSES:
            return FollowResult(bracket, lines, timed_out=False)
        if time.monotonic() >= deadline:
            return FollowResult(bracket, lines, timed_out=True)
        wait(poll_s)


# ---------- the command ----------
def run(
    config: DemoConfig,
    bracket_id: str | None,
    *,
    out: Callable[[str], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    symbol: str = DEMO_SYMBOL,
    use_websocket: bool = True,
) -> int:
    """Send the demo alert (unless a bracket id is given), follow the bracket, print the summary; the exit code."""
    if out is None:
        out = _print
    try:
        if bracket_id is None:
            bracket_id, answer = send_alert(config, symbol)
            out(
                f"alert sent to {config.api_url}/tradingview/webhook/bracket: {answer.get('action')} "
                f"{answer.get('quantity')} {answer.get('exchange')}:{answer.get('symbol')} at market (~"
                f"{money(answer.get('entry_price'))}), stop {money(answer.get('sl_price'))}, target "
                f"{money(answer.get('target_price'))}, trail {DEMO_TRAIL}"
            )
        wakeup = PushWakeup(config.ws_url if use_websocket else None, config.api_key, bracket_id)
        live = f"GET every {poll_s:.2f} s" + (" + WebSocket pushes" if wakeup.connected else "")
        out(f"following {bracket_id} ({live}; Ctrl-C stops following, not the bracket)")
        out(f"{'time':<{TIME_WIDTH}}  {'event':<{LABEL_WIDTH}}  {'price':>{PRICE_WIDTH}}  detail")
        try:
            result = follow(
                lambda: get_bracket(config, bracket_id),
                lambda line: out(str(line)),
                timeout_s=timeout_s,
                poll_s=poll_s,
                wait=wakeup.wait,
            )
        finally:
            wakeup.close()
    except DemoError as exc:
        out(f"demo: {exc}")
        return EXIT_UNREACHABLE
    out(summary(result.bracket))
    status = result.bracket.get("status")
    if result.timed_out:
        out(
            f"demo: {bracket_id} is still {status} after {timeout_s:.0f} s; it carries on in the stack — "
            f"`make demo BRACKET={bracket_id}` follows it again"
        )
        return EXIT_TIMEOUT
    if status != "CLOSED":
        out(f"demo: {bracket_id} ended {status}, not CLOSED; its audit trail above says why")
        return EXIT_ENDED_OTHERWISE
    return EXIT_CLOSED


def _print(text: str) -> None:
    print(text, flush=True)  # make pipes our output: each line should show as it happens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("bracket_id", nargs="?", help="follow this bracket instead of sending the demo alert")
    parser.add_argument("--symbol", default=DEMO_SYMBOL, help=f"EXCHANGE:SYMBOL for the alert (default {DEMO_SYMBOL})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to follow before giving up")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_S, help="seconds between looks at the bracket")
    parser.add_argument("--no-websocket", action="store_true", help="poll only")
    args = parser.parse_args(argv)
    config = DemoConfig.from_env()
    try:
        return run(
            config,
            args.bracket_id or None,
            timeout_s=args.timeout,
            poll_s=args.poll,
            symbol=args.symbol,
            use_websocket=not args.no_websocket,
        )
    except KeyboardInterrupt:
        print("\nstopped following (the bracket carries on in the stack)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
