"""The paper exchange over HTTP and websocket: Kite Connect v3 REST, the Kite Ticker, and /_paper/ test controls.

One aiohttp app on one port. Everything runs on one event loop, so the engine needs no locks.

Sessions work as Kite's do: GET /connect/login?api_key=..&v=3 is a login page whose button sends the browser to the
app's redirect URL (PAPER_REDIRECT_URL) with a one-time request_token and status=success; POST /session/token trades
it (with checksum = sha256(api_key + request_token + api_secret)) for a new access_token, and the previous one stops
working (its ticker connections are closed). Until the first login the configured PAPER_ACCESS_TOKEN works, so
tests and `make run` need no login. POST /_paper/session {"expire": true} ends every session, as 06:00 IST does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

from bracketflow.domain.instruments import Instrument, InstrumentMaster, default_master, instruments_csv_text
from paper import ticker
from paper.config import PaperConfig
from paper.engine import (
    DEFAULT_TICK,
    IST,
    MARKET_PROTECTION_CANCELLED,
    USER_ID,
    Engine,
    KiteError,
    Order,
    kite_timestamp,
    parse_market_hours,
)
from paper.faults import FaultRule, FaultRuleError, Faults

log = logging.getLogger("paper")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOCAL_ADDRESSES = {"127.0.0.1", "::1", "localhost"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return kite_timestamp(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(payload: Any) -> str:
    return json.dumps(payload, default=_jsonable)


def success(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps({"status": "success", "data": data}), status=status, content_type="application/json")


def error(message: str, error_type: str, status: int) -> web.Response:
    body = {"status": "error", "message": message, "error_type": error_type, "data": None}
    return web.Response(text=dumps(body), status=status, content_type="application/json")


# Statuses Kite sends no postback for while nothing has filled: the order was only accepted or is being placed.
POSTBACK_QUIET = frozenset({"OPEN", "TRIGGER PENDING", "PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING"})


class TickerClient:
    """One ticker connection: its subscriptions and an outbound queue so messages leave in order."""

    def __init__(self, ws: web.WebSocketResponse, access_token: str = "") -> None:
        self.ws = ws
        self.access_token = access_token
        self.modes: dict[int, str] = {}
        self.outbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()

    def send(self, message: bytes | str | None) -> None:
        """Queue a message; None ends the connection's writer."""
        self.outbox.put_nowait(message)

    async def pump(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None or self.ws.closed:
                return
            try:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_str(message)
            except (ConnectionError, RuntimeError):
                return


class RandomWalk:
    """A seeded random walk per instrument: small moves in ticks, a one-tick spread."""

    def __init__(self, instruments: InstrumentMaster, seed: int, step_bps: float = 2.0) -> None:
        self._instruments = [i for i in instruments if i.last_price > 0]
        self._rng = random.Random(seed)
        self.prices = {i.instrument_token: i.last_price for i in self._instruments}
        self.step_fraction = Decimal(str(step_bps)) / 10000

    def step(self) -> list[tuple[Instrument, Decimal, Decimal, Decimal]]:
        moves = []
        for instrument in self._instruments:
            tick = instrument.tick_size if instrument.tick_size > 0 else DEFAULT_TICK
            price = self.prices[instrument.instrument_token]
            # About step_fraction (2 basis points by default) a step, at least a tick, so cheap options move too.
            scale = max(int(price * self.step_fraction / tick), 1)
            price = max(price + tick * self._rng.randint(-scale, scale), tick)
            self.prices[instrument.instrument_token] = price
            bid = price - tick if price - tick > 0 else price
            moves.append((instrument, price, bid, price + tick))
        return moves


class OrderRateLimits:
    """Kite's order rate limits, per API key: order writes (place, modify, cancel) per second and per minute, and
    placements per IST day. A write past a limit is refused and counted nowhere. The windows slide (any 1 s, any
    60 s), which is stricter than Kite's calendar seconds: what passes here passes there."""

    def __init__(self, config: PaperConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.reset()

    def admit(self, api_key: str, placement: bool) -> str | None:
        """Count one order write and answer None, or name the limit that refuses it."""
        now = self.clock()
        writes = self._writes.setdefault(api_key, deque())
        while writes and writes[0] <= now - 60:
            writes.popleft()
        last_second = 0
        for t in reversed(writes):
            if t <= now - 1:
                break
            last_second += 1
        day = datetime.fromtimestamp(now, IST).date().isoformat()
        placed_day, placed = self._placed.get(api_key, (day, 0))
        placed = placed if placed_day == day else 0
        refusal = None
        if self.per_second and last_second >= self.per_second:
            refusal = f"{self.per_second} orders per second"
        elif self.per_minute and len(writes) >= self.per_minute:
            refusal = f"{self.per_minute} orders per minute"
        elif placement and self.per_day and placed >= self.per_day:
            refusal = f"{self.per_day} orders per day"
        if refusal is not None:
            self.refused += 1
            return refusal
        writes.append(now)
        if placement:
            self._placed[api_key] = (day, placed + 1)
        return None

    def reset(self) -> None:
        """The configured limits, and nothing counted."""
        self.per_second = self.config.order_rate_per_second
        self.per_minute = self.config.order_rate_per_minute
        self.per_day = self.config.orders_per_day
        self.refused = 0
        self._writes: dict[str, deque[float]] = {}
        self._placed: dict[str, tuple[str, int]] = {}  # api key -> (IST date, placements that day)


class PaperExchange:
    def __init__(self, config: PaperConfig, instruments: InstrumentMaster | None = None) -> None:
        self.config = config
        self.instruments = instruments or default_master()
        self.engine = Engine(
            self.instruments,
            partial_fills=config.partial_fills,
            market_hours=parse_market_hours(config.market_hours),
        )
        self.faults = Faults(config.seed)
        self.order_limits = OrderRateLimits(config)
        self.market = config.market
        self.walk = RandomWalk(self.instruments, config.seed, config.walk_step_bps)
        self.clients: set[TickerClient] = set()
        # Access tokens that work now (the configured one until the first login), and request tokens not yet used.
        self.access_tokens: set[str] = {config.access_token}
        self.request_tokens: set[str] = set()
        self.stopping = asyncio.Event()
        self._pending_updates: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._replay_task: asyncio.Task[Any] | None = None
        self._postback_session: ClientSession | None = None
        self._postbacks: set[asyncio.Task[None]] = set()
        # slow_visibility: ("order", id) / ("gtt", id) -> the monotonic time from which GET shows it.
        self.hidden: dict[tuple[str, str], float] = {}
        # outage_after: (the rule whose path is down, the monotonic time the outage ends).
        self.outages: list[tuple[FaultRule, float]] = []
        self.engine.listeners.append(self._on_order_update)
        self.engine.reject_gate = self._reject_gate
        self.engine.fill_gate = self._fill_gate
        self.engine.partial_cancel_gate = self._partial_cancel_gate

    # ---- engine hooks --------------------------------------------------------------------------------------

    def _on_order_update(self, order: dict[str, Any]) -> None:
        log.info(
            "order %s %s %s %s:%s qty=%s filled=%s price=%s avg=%s%s",
            order["order_id"],
            order["status"],
            order["transaction_type"],
            order["exchange"],
            order["tradingsymbol"],
            order["quantity"],
            order["filled_quantity"],
            order["price"],
            order["average_price"],
            f" ({order['status_message']})" if order.get("status_message") else "",
        )
        self._pending_updates.append(order)

    def hide_if_slow(self, kind: str, object_id: str, path: str, tradingsymbol: str) -> None:
        """The slow_visibility fault: what this POST created stays out of GET answers for the rule's seconds."""
        rule = self.faults.take({"slow_visibility"}, path=path, method="POST", tradingsymbol=tradingsymbol)
        if rule is not None:
            log.info("fault: %s %s hidden from GET for %ss", kind, object_id, rule.seconds)
            self.hidden[(kind, object_id)] = time.monotonic() + (rule.seconds or 0)

    def visible(self, kind: str, object_id: str | int) -> bool:
        until = self.hidden.get((kind, str(object_id)))
        if until is None:
            return True
        if time.monotonic() >= until:
            del self.hidden[(kind, str(object_id))]
            return True
        return False

    def in_outage(self, path: str) -> bool:
        now = time.monotonic()
        self.outages = [(rule, until) for rule, until in self.outages if until > now]
        return any(rule.matches(path, None, None) for rule, _ in self.outages)

    def _reject_gate(self, path: str, instrument: Instrument) -> str | None:
        rule = self.faults.take({"reject"}, path=path, method="POST", tradingsymbol=instrument.tradingsymbol)
        return (rule.message or "Paper exchange fault: order rejected.") if rule else None

    def _fill_gate(self, order: Order) -> float | None:
        rule = self.faults.take({"delay_fill"}, tradingsymbol=order.instrument.tradingsymbol)
        return rule.seconds if rule else None

    def _partial_cancel_gate(self, order: Order) -> tuple[float, str] | None:
        rule = self.faults.take(
            {"partial_cancel"}, path="/orders", method="POST", tradingsymbol=order.instrument.tradingsymbol
        )
        return (rule.fill_ratio, rule.message or MARKET_PROTECTION_CANCELLED) if rule else None

    def flush_updates(self) -> None:
        """Send order updates (after the ticks that caused them) to every ticker connection, as Kite does, and, with a
        postback URL configured, POST each one there too: two channels, each of which may lose an update."""
        updates, self._pending_updates = self._pending_updates, []
        for update in updates:
            self._postback(update)
            if self.faults.take({"drop_order_update"}, tradingsymbol=update["tradingsymbol"]):
                log.info("fault: order update %s %s dropped", update["order_id"], update["status"])
                continue
            message = dumps({"type": "order", "data": {**update, "user_id": USER_ID, "unfilled_quantity": 0}})
            for client in list(self.clients):
                client.send(message)

    def _postback(self, update: dict[str, Any]) -> None:
        """Kite's postback of an order update: JSON with checksum = sha256(order_id + order_timestamp + api_secret),
        for fills, cancellations, rejections and changes (not for an order merely accepted), sent without waiting."""
        url = self.config.postback_url
        if not url or (update["status"] in POSTBACK_QUIET and not update.get("filled_quantity")):
            return
        if self.faults.take({"drop_postback"}, tradingsymbol=update["tradingsymbol"]):
            log.info("fault: postback %s %s dropped", update["order_id"], update["status"])
            return
        stamp = str(update.get("order_timestamp") or "")
        checksum = hashlib.sha256((str(update["order_id"]) + stamp + self.config.api_secret).encode()).hexdigest()
        body = dumps({**update, "user_id": USER_ID, "unfilled_quantity": 0, "checksum": checksum})
        task = asyncio.get_running_loop().create_task(self._send_postback(url, body))
        self._postbacks.add(task)
        task.add_done_callback(self._postbacks.discard)

    async def _send_postback(self, url: str, body: str) -> None:
        if self._postback_session is None:
            self._postback_session = ClientSession(timeout=ClientTimeout(total=10))
        try:
            async with self._postback_session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as answer:
                if answer.status >= 400:
                    log.warning("postback to %s answered %s", url, answer.status)
        except Exception as exc:  # the app being down loses a postback, as with Kite
            log.warning("postback to %s failed: %s", url, type(exc).__name__)

    # ---- market data ---------------------------------------------------------------------------------------

    def broadcast_ticks(self, instruments: Iterable[Instrument]) -> None:
        changed = {i.instrument_token: i for i in instruments}
        for instrument in changed.values():
            if self.faults.take({"drop_ws"}, path="/ws", tradingsymbol=instrument.tradingsymbol):
                self.drop_sockets()
                break
        for client in list(self.clients):
            packets = []
            for token, mode in client.modes.items():
                moved = changed.get(token)
                quote = self.engine.quotes.get(token)
                if moved is not None and quote is not None:
                    packets.append(ticker.encode_packet(ticker.snapshot_from_quote(moved, quote), mode))
            if packets:
                client.send(ticker.encode_message(packets))

    def send_snapshot(self, client: TickerClient, tokens: Iterable[int]) -> None:
        packets = []
        for token in tokens:
            instrument = self.instruments.by_token(token)
            quote = self.engine.quotes.get(token)
            if instrument is not None and quote is not None:
                packets.append(ticker.encode_packet(ticker.snapshot_from_quote(instrument, quote), client.modes[token]))
        if packets:
            client.send(ticker.encode_message(packets))

    def issue_request_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.request_tokens.add(token)
        return token

    def start_session(self) -> str:
        """A new access token; the previous ones stop working and their ticker connections are closed."""
        token = "paper-" + secrets.token_hex(16)
        self.end_sessions(keep={token})
        return token

    def end_sessions(self, keep: set[str] | None = None) -> None:
        self.access_tokens = set(keep or ())
        stale = [c for c in self.clients if c.access_token not in self.access_tokens]
        if stale:
            log.info("session ended: closing %d ticker connection(s) on the old token", len(stale))
        for client in stale:
            self.clients.discard(client)
            client.send(None)
            asyncio.get_running_loop().create_task(client.ws.close(code=1000, message=b"session ended"))

    def token_works(self, access_token: str) -> bool:
        return any(hmac.compare_digest(access_token, known) for known in self.access_tokens)

    def drop_sockets(self) -> None:
        log.info("fault: dropping %d ticker connection(s)", len(self.clients))
        for client in list(self.clients):
            client.send(None)
            asyncio.get_running_loop().create_task(client.ws.close(code=1011, message=b"paper fault: drop_ws"))
        self.clients.clear()

    def set_quotes(self, quotes: list[dict[str, Any]]) -> list[str]:
        """Validate every quote first (nothing moves on bad input), then move the books, stream, match."""
        parsed = []
        for raw in quotes:
            if not isinstance(raw, dict):
                raise KiteError("each quote must be an object")
            try:
                parsed.append(self._parse_quote(raw))
            except (TypeError, ValueError):
                raise KiteError(f"quote {raw!r}: numbers expected for token, prices and quantities") from None
        for instrument, ltp, bid, ask, extras in parsed:
            self.engine.set_quote(instrument, ltp, bid, ask, **extras)
        self.broadcast_ticks(p[0] for p in parsed)
        self.flush_updates()
        return [p[0].key for p in parsed]

    def _parse_quote(self, raw: dict[str, Any]) -> tuple[Instrument, Decimal, Decimal | None, Decimal | None, dict]:
        instrument = None
        if raw.get("instrument_token") is not None:
            instrument = self.instruments.by_token(int(raw["instrument_token"]))
        elif raw.get("tradingsymbol"):
            instrument = self.instruments.get(str(raw.get("exchange") or "NSE"), str(raw["tradingsymbol"]))
        if instrument is None:
            raise KiteError(f"unknown instrument in quote: {raw!r}")
        try:
            ltp = Decimal(str(raw["ltp"]))
            bid = Decimal(str(raw["bid"])) if raw.get("bid") is not None else None
            ask = Decimal(str(raw["ask"])) if raw.get("ask") is not None else None
        except (KeyError, InvalidOperation):
            raise KiteError(f"quote for {instrument.key} needs a numeric ltp (bid and ask optional)") from None
        if not all(p.is_finite() for p in (ltp, bid, ask) if p is not None):
            raise KiteError(f"quote for {instrument.key}: prices must be finite numbers")
        if ltp <= 0 or (bid is not None and bid < 0) or (ask is not None and ask < 0):
            raise KiteError(f"quote for {instrument.key}: prices must be positive")
        if bid is not None and ask is not None and bid > 0 and ask > 0 and bid > ask:
            raise KiteError(f"quote for {instrument.key}: bid {bid} is above ask {ask}")
        extras = {k: int(raw[k]) for k in ("bid_qty", "ask_qty", "volume", "last_qty") if raw.get(k) is not None}
        if any(v < 0 for v in extras.values()):
            raise KiteError(f"quote for {instrument.key}: quantities cannot be negative")
        return instrument, ltp, bid, ask, extras

    def _open_walk(self) -> None:
        """A walking market opens at the instrument master's prices, so quotes exist from the first request."""
        for instrument in self.instruments:
            price = self.walk.prices.get(instrument.instrument_token)
            if price is not None:
                tick = instrument.tick_size if instrument.tick_size > 0 else DEFAULT_TICK
                self.engine.set_quote(instrument, price, max(price - tick, tick), price + tick)

    async def _walk_loop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.config.walk_interval_s)
            if self.market != "walk":
                continue
            moved = []
            for instrument, price, bid, ask in self.walk.step():
                self.engine.set_quote(instrument, price, bid, ask)
                moved.append(instrument)
            self.broadcast_ticks(moved)
            self.flush_updates()

    async def _heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.config.heartbeat_interval_s)
            if self.faults.take({"drop_ws"}, path="/ws"):
                self.drop_sockets()
            for client in list(self.clients):
                client.send(ticker.HEARTBEAT)

    async def _release_loop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(0.1)
            self.engine.release_held()
            self.flush_updates()

    async def replay(self, path: Path, speed: float) -> int:
        """Play a frames file (4-byte big-endian length + raw message) to ticker clients, moving the books too."""
        data = path.read_bytes()
        messages = []
        offset = 0
        while offset + 4 <= len(data):
            length = int.from_bytes(data[offset : offset + 4], "big")
            messages.append(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
        interval = 0.2 / speed if speed > 0 else 0.0

        async def play() -> None:
            for message in messages:
                if self.stopping.is_set():
                    return
                for client in list(self.clients):
                    client.send(message)
                with contextlib.suppress(ValueError):
                    for packet in ticker.split_message(message):
                        touch = ticker.decode_touch(packet)
                        instrument = self.instruments.by_token(touch.token) if touch else None
                        if touch is None or instrument is None or touch.ltp <= 0:
                            continue
                        self.engine.set_quote(
                            instrument,
                            Decimal(touch.ltp) / 100,
                            Decimal(touch.bid) / 100 if touch.bid else None,
                            Decimal(touch.ask) / 100 if touch.ask else None,
                        )
                self.flush_updates()
                await asyncio.sleep(interval)

        if self._replay_task and not self._replay_task.done():
            self._replay_task.cancel()
        self._replay_task = asyncio.get_running_loop().create_task(play())
        return len(messages)

    async def start_background(self, app: web.Application) -> None:
        if self.market == "walk":
            self._open_walk()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._walk_loop()),
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._release_loop()),
        ]

    async def stop_background(self, app: web.Application) -> None:
        self.stopping.set()
        for task in [*self._tasks, *([self._replay_task] if self._replay_task else [])]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in list(self._postbacks):
            task.cancel()
        if self._postback_session is not None:
            await self._postback_session.close()
        for client in list(self.clients):
            client.send(None)
            with contextlib.suppress(Exception):
                await client.ws.close(code=1001, message=b"paper exchange stopping")
        self.clients.clear()

    def reset(self) -> None:
        """Back to the configured start: no orders, GTTs, positions, quotes or faults; configured market."""
        self.engine.reset()
        self.hidden = {}
        self.outages = []
        self.engine.partial_fills = self.config.partial_fills
        self.market = self.config.market
        self.faults.clear()
        self.order_limits.reset()
        self.access_tokens = {self.config.access_token}
        self.request_tokens = set()
        self.walk = RandomWalk(self.instruments, self.config.seed, self.config.walk_step_bps)
        self._pending_updates = []
        if self.market == "walk":
            self._open_walk()


EXCHANGE_KEY = web.AppKey("exchange", PaperExchange)


# ---- HTTP plumbing ---------------------------------------------------------------------------------------------


def _exchange(request: web.Request) -> PaperExchange:
    return request.app[EXCHANGE_KEY]


async def _params(request: web.Request) -> dict[str, Any]:
    if request.method in {"GET", "DELETE"}:
        return dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise KiteError("The body is not valid JSON.") from None
        return body if isinstance(body, dict) else {}
    return dict(await request.post())


async def _tradingsymbol_of(request: web.Request, exchange: PaperExchange) -> str | None:
    order_id = request.match_info.get("order_id")
    if order_id and order_id in exchange.engine.orders:
        return exchange.engine.orders[order_id].instrument.tradingsymbol
    if request.method in {"POST", "PUT"} and request.content_type != "application/json":
        form = await request.post()
        symbol = form.get("tradingsymbol")
        if symbol:
            return str(symbol)
        condition = form.get("condition")
        if condition:
            with contextlib.suppress(ValueError, AttributeError):
                return str(json.loads(str(condition)).get("tradingsymbol") or "") or None
    return None


ORDER_WRITES = frozenset({"POST", "PUT", "DELETE"})


def _over_order_rate(request: web.Request, exchange: PaperExchange) -> web.Response | None:
    """Kite's answer to an order write past the rate limits (429, nothing done), or None when it may go on."""
    if request.method not in ORDER_WRITES or not request.path.startswith("/orders/"):
        return None
    api_key = request.headers.get("Authorization", "").removeprefix("token ").split(":", 1)[0]
    refusal = exchange.order_limits.admit(api_key, placement=request.method == "POST")
    if refusal is None:
        return None
    log.info("rate limit: %s %s refused, over %s", request.method, request.path, refusal)
    return error("Too many requests", "NetworkException", 429)


async def _hold_answer(request: web.Request, exchange: PaperExchange, rule: FaultRule) -> None:
    """The timeout fault: the work is done, but the answer waits until the client gives up or time runs out."""
    log.info("fault: holding the answer to %s %s for up to %ss", request.method, request.path, rule.seconds)
    deadline = asyncio.get_running_loop().time() + (rule.seconds or 0)
    while asyncio.get_running_loop().time() < deadline and not exchange.stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.05)


@web.middleware
async def kite_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:  # noqa: C901, PLR0912 - each request passes these gates in this order
    exchange = _exchange(request)
    path = request.path
    if path.startswith("/_paper"):
        remote = request.remote or ""
        if remote not in LOCAL_ADDRESSES:
            return error("Test controls answer only on 127.0.0.1.", "PermissionException", 403)
        try:
            return await handler(request)
        except KiteError as exc:
            return web.json_response({"status": "error", "message": exc.message}, status=exc.http_status)
    is_socket = request.headers.get("Upgrade", "").lower() == "websocket"
    if path.startswith("/connect/"):  # Kite's login pages: a browser's, no API session
        return await handler(request)
    if not is_socket and path != "/session/token":
        prefix = f"token {exchange.config.api_key}:"
        given = request.headers.get("Authorization", "")
        if not (given.startswith(prefix) and exchange.token_works(given[len(prefix) :])):
            return error("Incorrect `api_key` or `access_token`.", "TokenException", 403)
    try:
        if not is_socket:
            if exchange.in_outage(path):
                log.info("fault: outage, %s %s refused", request.method, path)
                return error("Something went wrong at the exchange.", "GeneralException", 500)
            refused = _over_order_rate(request, exchange)
            if refused is not None:
                return refused
            symbol = await _tradingsymbol_of(request, exchange)
            rule = exchange.faults.take(
                {"http_500", "http_429"}, path=path, method=request.method, tradingsymbol=symbol
            )
            if rule is not None:
                log.info("fault: %s on %s %s", rule.kind, request.method, path)
                if rule.kind == "http_429":
                    return error(rule.message or "Too many requests", "NetworkException", 429)
                return error(rule.message or "Something went wrong at the exchange.", "GeneralException", 500)
            timeout_rule = exchange.faults.take(
                {"timeout", "http_500_after", "outage_after"}, path=path, method=request.method, tradingsymbol=symbol
            )
        else:
            timeout_rule = None
        response = await handler(request)
        exchange.flush_updates()
        if timeout_rule is not None and timeout_rule.kind == "outage_after":
            down = FaultRule(kind="outage_after", path=timeout_rule.path or path)
            exchange.outages.append((down, time.monotonic() + (timeout_rule.seconds or 0)))
            log.info(
                "fault: %s %s done, answered 500; %s down for %ss",
                request.method,
                path,
                down.path,
                timeout_rule.seconds,
            )
        if timeout_rule is not None and timeout_rule.kind in ("http_500_after", "outage_after"):
            log.info("fault: %s %s done, answered 500", request.method, path)
            return error(timeout_rule.message or "Something went wrong at the exchange.", "GeneralException", 500)
        if timeout_rule is not None:
            await _hold_answer(request, exchange, timeout_rule)
        return response
    except KiteError as exc:
        exchange.flush_updates()
        return error(exc.message, exc.error_type, exc.http_status)
    except web.HTTPNotFound:
        return error(f"Route not found: {request.method} {path}", "GeneralException", 404)
    except web.HTTPMethodNotAllowed:
        return error(f"Method not allowed: {request.method} {path}", "InputException", 405)
    except web.HTTPException:
        raise
    except Exception:  # an unexpected bug must still answer in Kite's envelope, and be logged
        log.exception("unhandled error on %s %s", request.method, path)
        return error("Internal error in the paper exchange.", "GeneralException", 500)


# ---- Kite REST ---------------------------------------------------------------------------------------------


async def place_order(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    params = await _params(request)
    reject = exchange.faults.take(
        {"reject"}, path=request.path, method="POST", tradingsymbol=str(params.get("tradingsymbol") or "")
    )
    reason = (reject.message or "Paper exchange fault: order rejected.") if reject else None
    order = exchange.engine.place_order(request.match_info["variety"], params, reject_reason=reason)
    exchange.hide_if_slow("order", order.order_id, request.path, order.instrument.tradingsymbol)
    return success({"order_id": order.order_id})


async def modify_order(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    order = exchange.engine.modify_order(
        request.match_info["variety"], request.match_info["order_id"], await _params(request)
    )
    return success({"order_id": order.order_id})


async def cancel_order(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    order = exchange.engine.cancel_order(request.match_info["variety"], request.match_info["order_id"])
    return success({"order_id": order.order_id})


async def list_orders(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    return success([o.as_kite() for o in exchange.engine.orders.values() if exchange.visible("order", o.order_id)])


def _visible_order(exchange: PaperExchange, order_id: str) -> Order:
    if not exchange.visible("order", order_id):
        raise KiteError("Couldn't find that `order_id`.", "InputException", 404)
    return exchange.engine.order(order_id)


async def order_history(request: web.Request) -> web.Response:
    return success(list(_visible_order(_exchange(request), request.match_info["order_id"]).history))


async def order_trades(request: web.Request) -> web.Response:
    engine = _exchange(request).engine
    order = _visible_order(_exchange(request), request.match_info["order_id"])
    return success([t.as_kite() for t in engine.trades if t.order is order])


async def list_trades(request: web.Request) -> web.Response:
    return success([t.as_kite() for t in _exchange(request).engine.trades])


async def positions(request: web.Request) -> web.Response:
    return success(_exchange(request).engine.positions_view())


async def holdings(request: web.Request) -> web.Response:
    return success([])


def _requested_instruments(request: web.Request) -> list[Instrument]:
    exchange = _exchange(request)
    found = []
    for key in request.query.getall("i", []):
        instrument = exchange.instruments.by_key(key) if ":" in key else None
        if instrument is not None:
            found.append(instrument)
    return found


async def quote(request: web.Request) -> web.Response:
    engine = _exchange(request).engine
    return success({i.key: engine.quote_view(i) for i in _requested_instruments(request)})


async def ltp(request: web.Request) -> web.Response:
    engine = _exchange(request).engine
    return success(
        {
            i.key: {"instrument_token": i.instrument_token, "last_price": engine.ltp(i) or Decimal(0)}
            for i in _requested_instruments(request)
        }
    )


async def instrument_list(request: web.Request) -> web.Response:
    text = instruments_csv_text()
    wanted = request.match_info.get("exchange")
    if wanted:
        lines = text.splitlines()
        exchange_column = lines[0].split(",").index("exchange")
        rows = [line for line in lines[1:] if line.split(",")[exchange_column] == wanted.upper()]
        text = "\n".join([lines[0], *rows]) + "\n"
    return web.Response(text=text, content_type="text/csv")


async def place_gtt(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    gtt = exchange.engine.place_gtt(await _params(request))
    exchange.hide_if_slow("gtt", str(gtt.id), request.path, gtt.instrument.tradingsymbol)
    return success({"trigger_id": gtt.id})


async def list_gtts(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    return success([g.as_kite() for g in exchange.engine.all_gtts() if exchange.visible("gtt", g.id)])


async def get_gtt(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    if not exchange.visible("gtt", request.match_info["trigger_id"]):
        raise KiteError("Couldn't find that trigger.", "InputException", 404)
    return success(exchange.engine.gtt(request.match_info["trigger_id"]).as_kite())


async def modify_gtt(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    gtt = exchange.engine.modify_gtt(request.match_info["trigger_id"], await _params(request))
    return success({"trigger_id": gtt.id})


async def delete_gtt(request: web.Request) -> web.Response:
    gtt = _exchange(request).engine.delete_gtt(request.match_info["trigger_id"])
    return success({"trigger_id": gtt.id})


async def session_token(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    params = await _params(request)
    config = exchange.config
    api_key = str(params.get("api_key") or "")
    request_token = str(params.get("request_token") or "")
    checksum = str(params.get("checksum") or "")
    if api_key != config.api_key:
        raise KiteError("Invalid `api_key`.", "InputException", 400)
    if not request_token:
        raise KiteError("Missing `request_token`.", "InputException", 400)
    expected = hashlib.sha256((api_key + request_token + config.api_secret).encode()).hexdigest()
    if not hmac.compare_digest(checksum, expected):
        raise KiteError("Invalid `checksum`.", "TokenException", 403)
    if request_token not in exchange.request_tokens:
        raise KiteError("Token is invalid or has expired.", "TokenException", 403)
    exchange.request_tokens.discard(request_token)  # one use, as Kite's
    access_token = exchange.start_session()
    return success(
        {
            "user_type": "individual",
            "email": "paper@example.com",
            "user_name": "Paper Trader",
            "user_shortname": "Paper",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BSE"],
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "avatar_url": None,
            "user_id": USER_ID,
            "api_key": config.api_key,
            "access_token": access_token,
            "public_token": "paper-public-token",
            "refresh_token": "",
            "enctoken": "",
            "login_time": kite_timestamp(datetime.now(IST)),
            "meta": {"demat_consent": "physical"},
        }
    )


async def delete_session(request: web.Request) -> web.Response:
    return success(True)


def _html(status: int, title: str, body: str) -> web.Response:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=page, status=status, content_type="text/html")


async def connect_login_page(request: web.Request) -> web.Response:
    """Kite's login page for an app: here one button logs the paper trader in."""
    exchange = _exchange(request)
    api_key = request.query.get("api_key", "")
    if not hmac.compare_digest(api_key, exchange.config.api_key):
        return _html(400, "Invalid api_key", "<p>No app has this api_key.</p>")
    if request.query.get("v") != "3":
        return _html(400, "Unsupported version", "<p>Kite Connect login needs v=3.</p>")
    form = (
        f'<form method="post" action="/connect/login?{html.escape(urlencode({"api_key": api_key, "v": "3"}))}">'
        f"<p>Log in to the paper exchange as {html.escape(USER_ID)} (Paper Trader).</p>"
        '<button type="submit" id="login">Login</button></form>'
    )
    return _html(200, "Login to Kite (paper exchange)", form)


async def connect_login_submit(request: web.Request) -> web.StreamResponse:
    """The login button: back to the app's redirect URL with a one-time request_token, as Kite does."""
    exchange = _exchange(request)
    api_key = request.query.get("api_key", "")
    if not hmac.compare_digest(api_key, exchange.config.api_key):
        return _html(400, "Invalid api_key", "<p>No app has this api_key.</p>")
    query = {"action": "login", "type": "login", "status": "success", "request_token": exchange.issue_request_token()}
    target = exchange.config.redirect_url
    raise web.HTTPFound(target + ("&" if "?" in target else "?") + urlencode(query))


async def profile(request: web.Request) -> web.Response:
    return success(
        {
            "user_id": USER_ID,
            "user_name": "Paper Trader",
            "user_shortname": "Paper",
            "user_type": "individual",
            "email": "paper@example.com",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BSE"],
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "meta": {"demat_consent": "physical"},
        }
    )


# ---- ticker --------------------------------------------------------------------------------------------------


async def ticker_socket(request: web.Request) -> web.StreamResponse:
    exchange = _exchange(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        if request.path == "/":
            return web.json_response({"status": "success", "data": {"service": "bracketflow paper exchange"}})
        return error("The ticker needs a websocket upgrade.", "InputException", 400)
    config = exchange.config
    access_token = request.query.get("access_token", "")
    if not (
        hmac.compare_digest(request.query.get("api_key", ""), config.api_key) and exchange.token_works(access_token)
    ):
        return error("Incorrect `api_key` or `access_token`.", "TokenException", 403)
    ws = web.WebSocketResponse(autoping=True)
    client = TickerClient(ws, access_token)
    # Registered before the handshake completes, so no order update can slip past a client that just connected.
    exchange.clients.add(client)
    try:
        await ws.prepare(request)
    except Exception:
        exchange.clients.discard(client)
        raise
    pump = asyncio.get_running_loop().create_task(client.pump())
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                _handle_ticker_command(exchange, client, message.data)
            elif message.type in {WSMsgType.ERROR, WSMsgType.CLOSE}:
                break
    finally:
        exchange.clients.discard(client)
        client.send(None)
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


def _tokens(values: Any) -> list[int]:
    if not isinstance(values, list):
        return []
    return [int(v) for v in values if isinstance(v, int | str) and str(v).isdigit()]


def _handle_ticker_command(exchange: PaperExchange, client: TickerClient, text: str) -> None:
    try:
        command = json.loads(text)
    except ValueError:
        client.send(dumps({"type": "error", "data": "Invalid message: not JSON."}))
        return
    if not isinstance(command, dict):
        return
    action, value = command.get("a"), command.get("v")
    if action == "subscribe":
        tokens = _tokens(value)
        for token in tokens:
            client.modes.setdefault(token, ticker.MODE_QUOTE)  # Kite's default mode on subscribe
        exchange.send_snapshot(client, tokens)
    elif action == "unsubscribe":
        for token in _tokens(value):
            client.modes.pop(token, None)
    elif action == "mode" and isinstance(value, list) and len(value) == 2 and value[0] in ticker.MODES:
        tokens = _tokens(value[1])
        for token in tokens:
            client.modes[token] = value[0]
        exchange.send_snapshot(client, tokens)
    else:
        client.send(dumps({"type": "error", "data": f"Unknown ticker message: {text[:100]}"}))


# ---- /_paper/ test controls --------------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise KiteError("The body must be JSON.") from None


async def control_quotes(request: web.Request) -> web.Response:
    """POST sets quotes; GET answers the current ones ({"NSE:INFY": {"ltp", "bid", "ask"}}, `?i=` narrows), past
    every fault rule: what the trader's screen shows while the broker's API is failing."""
    exchange = _exchange(request)
    if request.method == "GET":
        quotes = exchange.engine.state_quotes()
        wanted = request.query.getall("i", [])
        if wanted:
            quotes = {key: quotes[key] for key in wanted if key in quotes}
        return web.Response(text=dumps({"status": "success", "data": quotes}), content_type="application/json")
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("quotes"), list):
        raise KiteError('The body must be {"quotes": [{"exchange", "tradingsymbol", "ltp", "bid", "ask"}]}.')
    return web.json_response({"status": "success", "data": {"updated": exchange.set_quotes(body["quotes"])}})


async def control_faults(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    if request.method == "POST":
        try:
            exchange.faults.configure(await _json_body(request))
        except FaultRuleError as exc:
            raise KiteError(f"Invalid fault rules: {exc}") from None
    return web.json_response({"status": "success", "data": {"rules": [r.as_dict() for r in exchange.faults.rules]}})


async def control_state(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    state = exchange.engine.state()
    state["market"] = exchange.market
    state["ticker_connections"] = len(exchange.clients)
    state["ticker_subscriptions"] = [
        {str(token): mode for token, mode in client.modes.items()} for client in exchange.clients
    ]
    state["faults"] = [r.as_dict() for r in exchange.faults.rules]
    # Order writes refused for Kite's rate limits (429) since the start or the last reset.
    state["rate_limited"] = exchange.order_limits.refused
    # What slow_visibility still keeps out of GET answers, so a test can wait until the books show everything.
    state["hidden"] = sum(1 for kind, object_id in list(exchange.hidden) if not exchange.visible(kind, object_id))
    return web.Response(text=dumps({"status": "success", "data": state}), content_type="application/json")


async def control_timeline(request: web.Request) -> web.Response:
    """Order and GTT changes in the order they happened, each with a wall-clock `t` (seconds, sub-second);
    `?since=<n>` skips the first n (page on with `next`)."""
    timeline = _exchange(request).engine.timeline
    try:
        since = max(int(request.query.get("since", "0")), 0)
    except ValueError:
        raise KiteError("since must be a whole number.") from None
    data = {"events": timeline[since:], "next": len(timeline)}
    return web.Response(text=dumps({"status": "success", "data": data}), content_type="application/json")


async def control_reset(request: web.Request) -> web.Response:
    _exchange(request).reset()
    return web.json_response({"status": "success", "data": True})


async def control_session(request: web.Request) -> web.Response:
    """GET: how many sessions work; POST {"expire": true}: end them all (06:00 IST), until the next login."""
    exchange = _exchange(request)
    if request.method == "POST":
        body = await _json_body(request)
        if not isinstance(body, dict) or body.get("expire") is not True:
            raise KiteError('The body must be {"expire": true}.')
        exchange.end_sessions()
    return web.json_response({"status": "success", "data": {"sessions": len(exchange.access_tokens)}})


async def control_config(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise KiteError("The body must be a JSON object.")
    if "market" in body:
        if body["market"] not in {"manual", "walk"}:
            raise KiteError("market must be manual or walk.")
        exchange.market = body["market"]
    if "partial_fills" in body:
        exchange.engine.partial_fills = bool(body["partial_fills"])
    limits = exchange.order_limits
    fields = {"order_rate_per_second": "per_second", "order_rate_per_minute": "per_minute", "orders_per_day": "per_day"}
    for name, attribute in fields.items():
        if name in body:
            value = body[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise KiteError(f"{name} must be a whole number, 0 for no limit.")
            setattr(limits, attribute, value)
    data = {
        "market": exchange.market,
        "partial_fills": exchange.engine.partial_fills,
        "order_rate_per_second": limits.per_second,
        "order_rate_per_minute": limits.per_minute,
        "orders_per_day": limits.per_day,
    }
    return web.json_response({"status": "success", "data": data})


async def control_replay(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict) or not body.get("path"):
        raise KiteError('The body must be {"path": "<frames file>", "speed": 1.0}.')
    path = Path(str(body["path"]))
    if not path.is_file():
        raise KiteError(f"No frames file at {path}.")
    try:
        speed = float(body.get("speed", 1.0))
    except (TypeError, ValueError):
        raise KiteError("speed must be a number (0 plays as fast as possible).") from None
    count = await _exchange(request).replay(path, speed)
    return web.json_response({"status": "success", "data": {"messages": count}}, status=202)


def build_app(config: PaperConfig, instruments: InstrumentMaster | None = None) -> web.Application:
    exchange = PaperExchange(config, instruments)
    app = web.Application(middlewares=[kite_middleware])
    app[EXCHANGE_KEY] = exchange
    app.on_startup.append(exchange.start_background)
    app.on_shutdown.append(exchange.stop_background)
    app.add_routes(
        [
            web.get("/ws", ticker_socket),
            web.get("/", ticker_socket),
            web.get("/connect/login", connect_login_page),
            web.post("/connect/login", connect_login_submit),
            web.post("/session/token", session_token),
            web.delete("/session/token", delete_session),
            web.get("/user/profile", profile),
            web.get("/orders", list_orders),
            web.post("/orders/{variety}", place_order),
            web.put("/orders/{variety}/{order_id}", modify_order),
            web.delete("/orders/{variety}/{order_id}", cancel_order),
            web.get("/orders/{order_id}", order_history),
            web.get("/orders/{order_id}/trades", order_trades),
            web.get("/trades", list_trades),
            web.get("/portfolio/positions", positions),
            web.get("/portfolio/holdings", holdings),
            web.get("/quote", quote),
            web.get("/quote/ltp", ltp),
            web.get("/instruments", instrument_list),
            web.get("/instruments/{exchange}", instrument_list),
            web.post("/gtt/triggers", place_gtt),
            web.get("/gtt/triggers", list_gtts),
            web.get("/gtt/triggers/{trigger_id}", get_gtt),
            web.put("/gtt/triggers/{trigger_id}", modify_gtt),
            web.delete("/gtt/triggers/{trigger_id}", delete_gtt),
            web.post("/_paper/quotes", control_quotes),
            web.get("/_paper/quotes", control_quotes),
            web.post("/_paper/faults", control_faults),
            web.get("/_paper/faults", control_faults),
            web.get("/_paper/state", control_state),
            web.get("/_paper/timeline", control_timeline),
            web.post("/_paper/reset", control_reset),
            web.post("/_paper/config", control_config),
            web.get("/_paper/session", control_session),
            web.post("/_paper/session", control_session),
            web.post("/_paper/replay", control_replay),
        ]
    )
    return app


def exchange_of(app: web.Application) -> PaperExchange:
    return app[EXCHANGE_KEY]
