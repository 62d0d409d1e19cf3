"""The paper exchange's state behind its HTTP and websocket routes: the engine with its fault gates, the ticker
connections, sessions, the walking market and replays, order updates and postbacks, and Kite's order rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from bracketflow.domain.instruments import Instrument, InstrumentMaster, default_master
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
    parse_market_hours,
)
from paper.faults import FaultRule, Faults
from paper.kite import dumps

log = logging.getLogger("paper")

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
