"""The live streamer (one Fargate task; `python -m streamer`): ticker in, exits and trailed stops out.

Threads, and what each may touch:
  tick      ConnectionSupervisor.run: reads the websocket; binary messages -> engine.feed() under the engine lock;
            exits -> the exit publisher's deque; text order updates -> the order-events publisher's deque. Nothing
            on this thread waits on the network or the disk (the socket read aside).
  control   long-polls StreamerControlQueue: watch/unwatch.
  store     every STREAMER_PERSIST_INTERVAL_S: coalesced stop writes + stop-sync intents; every
            STREAMER_RESYNC_INTERVAL_S: resync with the OPEN index; every STREAMER_PRICE_INTERVAL_S: the last
            prices of watched instruments for the console's chart (parsed here from the latest binary messages,
            which the tick thread only appends to a bounded deque). The only thread that uses DynamoDB for trading.
  publish:* one per SQS queue (exits, order events, stop sync).
  metrics   EMF every STREAMER_METRICS_INTERVAL_S, and the heartbeat item the console's status panel reads.
SIGTERM/SIGINT: stop reading, stop the control poller, write the last stops, flush the publishers, exit 0.

Exit request (ExitQueue -> functions/exit), one per bracket whose stop was crossed: bracketflow.contracts.ExitRequest,
  TRAIL_STOP when the stop that was hit had trailed past the bracket's stop-loss (trailing.stop_has_trailed).
Order update (OrderEventsQueue -> functions/watcher): bracketflow.contracts.OrderEvent, the Kite order update's "data"
  object verbatim.
"""

from __future__ import annotations

import json
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bracketflow.adapters.dynamo import prices as price_store
from bracketflow.adapters.dynamo import streamer_health
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.contracts import ExitRequest, OrderEvent, wire_time
from bracketflow.domain.enums import ExitReason
from bracketflow.domain.instruments import CompactMaster, InstrumentMaster
from bracketflow.domain.trailing import stop_has_trailed, to_paise, to_rupees
from bracketflow.observability import logger
from bracketflow.settings import Settings, get_settings
from streamer.control import ControlPoller, Unwatch, Watch
from streamer.engine import ExitIntent, TrailingEngine
from streamer.metrics import Counters, MetricsFlusher
from streamer.parser import FULL_PACKET_LEN, TEXT_FIRST_BYTES, parse_message
from streamer.publishers import QueuePublisher
from streamer.record import ticker_url
from streamer.resync import protected_watches
from streamer.stops import StopKeeper
from streamer.supervisor import ConnectionSupervisor, TickerSocket, websocket_factory

# A bracket that just exited is not watched again for this long (resync may still see it PROTECTED until the exit
# Lambda claims it); after that, a bracket still PROTECTED is watched again, so a lost exit gets another chance.
EXIT_QUIET_S = 120.0
# Exchange time (uint32 epoch seconds) inside a full packet, after the 2-byte count and 2-byte length.
_EXCHANGE_TIME_AT = 4 + 60
_UINT32 = struct.Struct(">I")
LAG_SAMPLE_EVERY_S = 1.0
# Binary messages kept for the console's price recording between two rounds (Kite sends about one a second).
PRICE_MESSAGES_KEPT = 64
FIRST_HEARTBEAT_S = 5.0  # the first metrics flush (and heartbeat) after the start


@dataclass
class Watched:
    watch: Watch
    token: int
    original_stop: int
    tick: int
    watched_at: float


def credentialed_ticker_url(settings: Settings, refresh: bool = False) -> str:
    """BROKER_TICKER_URL with api_key/access_token added: the day's stored session (paper: the paper exchange's own
    until someone logs in there). refresh=True (after a failed connect) reads the secret again, so a new login
    reaches the ticker without a restart. Paper mode never gets a real broker's URL or credentials."""
    from bracketflow.adapters.broker import credentials_provider
    from bracketflow.adapters.broker.endpoints import check_paper_safety

    check_paper_safety(settings)
    base = settings.broker_ticker_url
    query = parse_qs(urlsplit(base).query)
    if "api_key" in query and "access_token" in query:
        return base
    creds = credentials_provider(settings)(refresh)
    return ticker_url(base, creds.api_key, creds.access_token)


class Streamer:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        repo: BracketRepository | None = None,
        master: InstrumentMaster | CompactMaster | None = None,
        socket_factory: Callable[[str, float], TickerSocket] = websocket_factory,
        url: Callable[[bool], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = settings or get_settings()
        self.settings = s
        self._clock = clock
        self._repo = repo or BracketRepository()
        # None: the stack's current master at each resync (Kite's list of the day, re-read when it changes)
        self._master = master
        self.engine = TrailingEngine()
        self._lock = threading.Lock()  # the engine and the watched map
        self._watched: dict[str, Watched] = {}
        self._recently_exited: dict[str, float] = {}
        self._stopping = threading.Event()
        self.messages = 0
        self.exits_detected = 0
        self.feed_lag_s: float | None = None
        self._lag_sampled_at = 0.0
        # The console's prices: the latest binary messages, appended by the tick thread (a reference, no copy; the
        # deque drops the oldest) and parsed by the store thread; the last price seen per token, and what was
        # last written.
        self._recent_messages: deque[bytes] = deque(maxlen=PRICE_MESSAGES_KEPT)
        self._last_prices: dict[int, int] = {}
        self._written_prices: dict[int, int] = {}

        self.exit_publisher = QueuePublisher("exits", s.exit_queue_url)
        self.order_publisher = QueuePublisher("order-events", s.order_events_queue_url, linger_s=0.01)
        self.sync_publisher = QueuePublisher("stop-sync", s.stop_sync_queue_url)
        self.keeper = StopKeeper(
            self._repo,
            self.sync_publisher.put,
            step_percent=s.streamer_stop_sync_step_percent,
            sync_interval_s=s.streamer_stop_sync_interval_s,
            clock=clock,
        )
        self.supervisor = ConnectionSupervisor(
            url or (lambda refresh: credentialed_ticker_url(s, refresh)),
            self.on_message,
            socket_factory=socket_factory,
            backoff_base_s=s.streamer_backoff_base_s,
            backoff_cap_s=s.streamer_backoff_cap_s,
            watchdog_s=s.streamer_watchdog_s,
            clock=clock,
        )
        self.control = (
            ControlPoller(s.streamer_control_queue_url, self.apply, wait_s=s.streamer_control_wait_s)
            if s.streamer_control_queue_url
            else None
        )
        self._metrics = MetricsFlusher()
        self._threads: list[threading.Thread] = []

    # ---- watch / unwatch (control, store threads) -------------------------------------------------------------

    def apply(self, command: Watch | Unwatch) -> None:
        if isinstance(command, Watch):
            self.watch(command)
        else:
            self.unwatch(command.bracket_id)

    def watch(self, command: Watch) -> bool:
        """Start trailing; False when already watched, just exited, or not trailable. A watch for a bracket already
        watched updates what it holds (the quantity and GTT of a partly filled entry that grew, a tighter stop such as
        a breakeven), keeping its trail."""
        bracket = command.bracket
        bid = bracket.bracket_id
        with self._lock:
            if bid in self.engine:
                held = self._watched.get(bid)
                if held is not None and command.quantity is not None:
                    gtt_id = command.gtt_id or held.watch.gtt_id
                    self._watched[bid] = replace(
                        held, watch=replace(held.watch, quantity=command.quantity, gtt_id=gtt_id)
                    )
                # A stop set elsewhere (a scale-out share's breakeven) is taken when it is tighter, never looser.
                self.engine.tighten(bid, to_paise(bracket.stop_price))
                return False
            exited_at = self._recently_exited.get(bid)
            if exited_at is not None and self._clock() - exited_at < EXIT_QUIET_S:
                return False
            try:
                self.engine.watch(bracket, activated=command.activated)
            except ValueError as exc:
                logger.error("cannot watch bracket", extra={"bracket_id": bid, "error": str(exc)})
                return False
            stop = self.engine.stop_of(bid)
            self._watched[bid] = Watched(
                command,
                bracket.instrument_token,
                command.original_stop if command.original_stop is not None else stop,
                to_paise(bracket.tick_size),
                self._clock(),
            )
        self.keeper.track(bid, is_long=bracket.side.upper() == "LONG", broker_stop=stop)
        self.supervisor.subscribe([bracket.instrument_token])
        logger.info("watching bracket", extra={"bracket_id": bid, "stop_price": str(to_rupees(stop))})
        return True

    def unwatch(self, bracket_id: str) -> bool:
        with self._lock:
            found = self.engine.unwatch(bracket_id)
            watched = self._watched.pop(bracket_id, None)
            still_needed = watched is not None and any(w.token == watched.token for w in self._watched.values())
        self.keeper.forget(bracket_id)
        if watched is not None and not still_needed:
            self.supervisor.unsubscribe([watched.token])
        if found:
            logger.info("unwatched bracket", extra={"bracket_id": bracket_id})
        return found

    def watched_ids(self) -> set[str]:
        with self._lock:
            return set(self._watched)

    def quantity_of(self, bracket_id: str) -> int | None:
        """The quantity the last watch message for this bracket named (None when not watched)."""
        with self._lock:
            held = self._watched.get(bracket_id)
            return None if held is None else held.watch.quantity

    def stop_of(self, bracket_id: str) -> int | None:
        with self._lock:
            return self.engine.stop_of(bracket_id) if bracket_id in self.engine else None

    # ---- the tick thread ---------------------------------------------------------------------------------------

    def on_message(self, data: bytes, is_text: bool) -> None:
        self.messages += 1
        if is_text or (len(data) > 1 and data[0] in TEXT_FIRST_BYTES):
            self._forward_text(data)
            return
        with self._lock:
            exits = self.engine.feed(data)
            if exits:
                self._on_exits(exits)
        self._recent_messages.append(data)
        if len(data) >= _EXCHANGE_TIME_AT + 4 and self._clock() - self._lag_sampled_at >= LAG_SAMPLE_EVERY_S:
            self._sample_lag(data)

    def _on_exits(self, exits: list[ExitIntent]) -> None:
        """Under the engine lock: publish each exit (a deque append) and forget the bracket."""
        now = self._clock()
        detected_at = wire_time(datetime.now(UTC))
        for e in exits:
            watched = self._watched.pop(e.bracket_id, None)
            trailed = watched is not None and stop_has_trailed(
                watched.watch.bracket.side, watched.original_stop, e.stop_price
            )
            request = ExitRequest(
                bracket_id=e.bracket_id,
                reason=ExitReason.TRAIL_STOP if trailed else ExitReason.STOP,
                ltp=to_rupees(e.ltp),
                stop_price=to_rupees(e.stop_price),
                detected_at=detected_at,
                message_index=e.message_index,
                packet_index=e.packet_index,
            )
            self.exit_publisher.put(request.to_dict())
            self._recently_exited[e.bracket_id] = now
            self.keeper.forget(e.bracket_id)
            self.exits_detected += 1

    def _sample_lag(self, data: bytes) -> None:
        self._lag_sampled_at = self._clock()
        if (data[2] << 8 | data[3]) != FULL_PACKET_LEN:
            return
        exchange_time = _UINT32.unpack_from(data, _EXCHANGE_TIME_AT)[0]
        if exchange_time:
            self.feed_lag_s = max(0.0, time.time() - exchange_time)

    def _forward_text(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            logger.warning("ticker sent text that is not JSON", extra={"text": data[:200].decode(errors="replace")})
            return
        if isinstance(message, dict) and message.get("type") == "order" and isinstance(message.get("data"), dict):
            event = OrderEvent(order=message["data"], received_at=wire_time(datetime.now(UTC)))
            self.order_publisher.put(event.to_dict())
        elif isinstance(message, dict) and message.get("type") == "error":
            logger.warning("ticker error message", extra={"ticker_message": str(message.get("data"))[:500]})

    # ---- the store thread ---------------------------------------------------------------------------------------

    def resync(self) -> tuple[int, int]:
        """Watch every PROTECTED bracket not yet watched; drop watched ones no longer PROTECTED. (added, dropped)"""
        started = self._clock()
        watches = protected_watches(self._repo.list_open(), self._master)
        wanted = {w.bracket_id for w in watches}
        added = sum(1 for w in watches if self.watch(w))
        # A bracket watched just now (by a control message) may not show in the eventually consistent index yet.
        grace = self.settings.streamer_resync_interval_s
        with self._lock:
            stale = [b for b, w in self._watched.items() if b not in wanted and w.watched_at < started - grace]
            for b, at in list(self._recently_exited.items()):
                if started - at >= EXIT_QUIET_S:
                    del self._recently_exited[b]
        dropped = sum(1 for b in stale if self.unwatch(b))
        if added or dropped:
            logger.info("resynced open brackets", extra={"added": added, "dropped": dropped, "open": len(wanted)})
        return added, dropped

    def persist_round(self) -> None:
        with self._lock:
            breakevens = self.engine.take_breakevens()
            changes = self.engine.take_stop_changes()
            stops = self.engine.stops()
            ticks = {b: w.tick for b, w in self._watched.items()}
        if breakevens:  # first: the stop they set is stored with its own event, then the trail's write finds it there
            self.keeper.persist_breakevens(breakevens, stops)
        if changes:
            self.keeper.persist(changes)
        self.keeper.sync(stops, lambda b: ticks.get(b, 5))

    def record_prices(self) -> int:
        """Append the last price of each watched instrument that moved since the last write (the console's chart)."""
        while self._recent_messages:
            for tick in parse_message(self._recent_messages.popleft()).ticks:
                if tick.ltp > 0:
                    self._last_prices[tick.token] = tick.ltp
        with self._lock:
            instruments = {
                w.token: f"{w.watch.exchange}:{w.watch.tradingsymbol}"
                for w in self._watched.values()
                if w.watch.exchange and w.watch.tradingsymbol
            }
        now = datetime.now(UTC)
        points = [
            (name, now, to_rupees(self._last_prices[token]))
            for token, name in instruments.items()
            if token in self._last_prices and self._written_prices.get(token) != self._last_prices[token]
        ]
        if points:
            price_store.append_prices(points)
            for token in instruments:
                if token in self._last_prices:
                    self._written_prices[token] = self._last_prices[token]
        return len(points)

    def _store_loop(self) -> None:
        s = self.settings
        next_resync = self._clock() + s.streamer_resync_interval_s
        next_persist = self._clock() + s.streamer_persist_interval_s
        price_every = s.streamer_price_interval_s
        next_prices = self._clock() + price_every if price_every > 0 else float("inf")
        while not self._stopping.is_set():
            now = self._clock()
            if now >= next_persist:
                self._guarded(self.persist_round, "stop persistence")
                next_persist = now + s.streamer_persist_interval_s
            if now >= next_prices:
                self._guarded(self.record_prices, "price recording")
                next_prices = now + price_every
            if now >= next_resync:
                self._guarded(self.resync, "resync")
                next_resync = now + s.streamer_resync_interval_s
            self._stopping.wait(max(0.01, min(next_persist, next_resync, next_prices) - self._clock()))

    def _metrics_loop(self) -> None:
        # The first flush soon after the start, so the console's status panel sees a new streamer within seconds.
        every = self.settings.streamer_metrics_interval_s
        wait = min(FIRST_HEARTBEAT_S, every)
        while not self._stopping.wait(wait):
            self.flush_metrics()
            wait = every

    def flush_metrics(self) -> dict[str, float]:
        values = self._metrics.flush(
            self._clock(),
            Counters(
                packets=self.engine.packets_seen,
                messages=self.messages,
                exits=self.exits_detected,
                reconnects=self.supervisor.reconnects,
                breakevens=self.keeper.breakevens_stored,
                watched=len(self.engine),
                feed_lag_s=self.feed_lag_s,
            ),
        )
        self._guarded(lambda: self._beat(values), "heartbeat")
        return values

    def _beat(self, values: dict[str, float]) -> None:
        """The console's view of the streamer and its feed (one small write per metrics interval)."""
        streamer_health.put_heartbeat(
            at=datetime.now(UTC),
            every_s=self.settings.streamer_metrics_interval_s,
            connected=self.supervisor.connected,
            messages_per_s=values.get("MessagesPerSecond"),
            watched=len(self.engine),
            reconnects=self.supervisor.reconnects,
            feed_lag_s=self.feed_lag_s,
        )

    @staticmethod
    def _guarded(step: Callable[[], Any], what: str) -> None:
        try:
            step()
        except Exception as exc:  # DynamoDB/SQS trouble: the next round tries again
            logger.warning(f"{what} failed", extra={"error": str(exc)})

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> Streamer:
        for publisher in (self.exit_publisher, self.order_publisher, self.sync_publisher):
            publisher.start()
        self._guarded(self.resync, "initial resync")  # subscribe to what is open before the first connect
        if self.control is not None:
            self.control.start()
        self._metrics.last_at = self._clock()  # rates over the first interval count from here
        for name, target in (
            ("tick", self.supervisor.run),
            ("store", self._store_loop),
            ("metrics", self._metrics_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("streamer started", extra={"watched": len(self.engine)})
        return self

    def stop(self) -> None:
        """Stop reading, stop taking commands, write the last stops, send what is queued."""
        self.supervisor.stop()
        if self.control is not None:
            self.control.stop()
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        if self.control is not None:
            self.control.join(timeout=30)
        self._guarded(self.persist_round, "final stop persistence")
        for publisher in (self.exit_publisher, self.order_publisher, self.sync_publisher):
            publisher.stop()
        self.flush_metrics()
        logger.info("streamer stopped", extra={"exits": self.exits_detected, "messages": self.messages})


def main() -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    streamer = Streamer().start()
    while not stop.wait(1.0):
        pass
    streamer.stop()
    return 0
