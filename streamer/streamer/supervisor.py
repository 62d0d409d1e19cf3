"""The ticker connection's lifecycle, and nothing else (docs/trailing.md).

    connect -> subscribe (+ mode full) for every watched token -> read until the socket fails, the feed goes
    silent for `watchdog_s`, or stop() -> wait a capped exponential backoff with full jitter -> connect again.

- Backoff: uniform(0, min(cap, base * 2**(n-1))) after the n-th consecutive failure (full jitter). The count resets
  only after a subscribe went out on an open socket, so a server that accepts and drops at once still backs off.
- Watchdog: Kite and the paper exchange send a heartbeat every second or so; no message of any kind for
  `watchdog_s` means the connection is dead even if TCP has not noticed, so it is closed and reopened.
- Resubscribe: the token set lives here, not in the socket; every new connection subscribes to all of it.
- Every message goes to `on_message(data, is_text)` on the supervisor's thread, which is the streamer's tick thread.

The socket, clock, wait and randomness are injected so tests drive it with a fake socket and a fake clock.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import websocket

from bracketflow.observability import logger

OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT
OPCODE_BINARY = websocket.ABNF.OPCODE_BINARY
OPCODE_CLOSE = websocket.ABNF.OPCODE_CLOSE
# How often the read loop wakes to check the watchdog and the stop flag when the feed is quiet.
READ_SLICE_S = 0.5


class TickerSocket(Protocol):
    def send(self, payload: str) -> Any: ...

    def recv_data(self) -> tuple[int, bytes]: ...

    def settimeout(self, timeout: float | None) -> None: ...

    def close(self) -> None: ...


class SocketTimeout(Exception):
    """A read that found nothing within the slice (the fake socket raises it; the real one raises
    websocket.WebSocketTimeoutException, which the supervisor also treats as a quiet slice)."""


def websocket_factory(url: str, timeout_s: float) -> TickerSocket:
    """A real websocket-client connection (multithread-safe sends: watch() subscribes from another thread)."""
    return websocket.create_connection(url, timeout=timeout_s, enable_multithread=True)


def subscribe_commands(tokens: Iterable[int]) -> list[str]:
    wanted = sorted(set(tokens))
    return [json.dumps({"a": "subscribe", "v": wanted}), json.dumps({"a": "mode", "v": ["full", wanted]})]


def unsubscribe_command(tokens: Iterable[int]) -> str:
    return json.dumps({"a": "unsubscribe", "v": sorted(set(tokens))})


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Full jitter: anywhere in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return ceiling * rand()


class ConnectionSupervisor:
    def __init__(
        self,
        url: Callable[[bool], str],
        on_message: Callable[[bytes, bool], None],
        *,
        socket_factory: Callable[[str, float], TickerSocket] = websocket_factory,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        watchdog_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        wait: Callable[[float], bool] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._url = url  # url(refresh) -> the ticker URL with credentials; refresh after a failed connect
        self._on_message = on_message
        self._factory = socket_factory
        self._base = backoff_base_s
        self._cap = backoff_cap_s
        self._watchdog_s = watchdog_s
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._rand = rand
        self._stopping = threading.Event()
        self._wait = wait or self._stopping.wait
        self._on_connected = on_connected
        self._lock = threading.Lock()
        self._sock: TickerSocket | None = None
        self._tokens: set[int] = set()
        self.attempt = 0  # consecutive failures since the last successful subscribe
        self.connects = 0
        self.reconnects = 0  # connections lost (errors, closes, watchdog) while running
        self.watchdog_trips = 0
        self.last_message_at: float | None = None
        self.delays: list[float] = []  # every backoff waited, for tests and logs

    # ---- the token set (any thread) -------------------------------------------------------------------------

    @property
    def tokens(self) -> set[int]:
        with self._lock:
            return set(self._tokens)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def subscribe(self, tokens: Iterable[int]) -> None:
        """Add tokens; sent now if connected, and on every reconnect."""
        new = set(tokens)
        with self._lock:
            new -= self._tokens
            if not new:
                return
            self._tokens |= new
            sock = self._sock
            if sock is not None:
                self._send_quietly(sock, subscribe_commands(new))

    def unsubscribe(self, tokens: Iterable[int]) -> None:
        gone = set(tokens)
        with self._lock:
            gone &= self._tokens
            if not gone:
                return
            self._tokens -= gone
            sock = self._sock
            if sock is not None:
                self._send_quietly(sock, [unsubscribe_command(gone)])

    def _send_quietly(self, sock: TickerSocket, commands: list[str]) -> None:
        try:
            for command in commands:
                sock.send(command)
        except Exception as exc:  # the read loop sees the dead socket and reconnects (resubscribing everything)
            logger.warning("could not send a subscription change", extra={"error": str(exc)})

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.close()
            except Exception:  # closing a broken socket may fail; we are leaving anyway
                logger.debug("closing the ticker socket failed", exc_info=True)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        """Connect, read, reconnect, until stop()."""
        while not self._stopping.is_set():
            if self.connects or self.attempt:
                # The n-th consecutive failure waits up to base * 2**(n-1); a drop after a good connection, up to base.
                delay = backoff_delay(max(0, self.attempt - 1), self._base, self._cap, self._rand)
                self.delays.append(delay)
                if self._wait(delay) or self._stopping.is_set():
                    break
            sock = self._connect()
            if sock is None:
                self.attempt += 1
                continue
            try:
                self._read(sock)
            finally:
                with self._lock:
                    self._sock = None
                try:
                    sock.close()
                except Exception:
                    logger.debug("closing the ticker socket failed", exc_info=True)
            if not self._stopping.is_set():
                self.reconnects += 1

    def _connect(self) -> TickerSocket | None:
        try:
            sock = self._factory(self._url(self.attempt > 0), self._connect_timeout_s)
        except Exception as exc:
            logger.warning("ticker connect failed", extra={"error": str(exc), "attempt": self.attempt})
            return None
        try:
            with self._lock:
                for command in subscribe_commands(self._tokens) if self._tokens else ():
                    sock.send(command)
                self._sock = sock
        except Exception as exc:
            logger.warning("ticker subscribe failed", extra={"error": str(exc), "attempt": self.attempt})
            try:
                sock.close()
            except Exception:
                logger.debug("closing the ticker socket failed", exc_info=True)
            return None
        # Subscribed on an open socket: this connection worked, so the next failure starts the backoff afresh.
        self.attempt = 0
        self.connects += 1
        self.last_message_at = self._clock()
        logger.info("ticker connected", extra={"tokens": len(self._tokens), "connects": self.connects})
        if self._on_connected is not None:
            self._on_connected()
        return sock

    def _read(self, sock: TickerSocket) -> None:
        sock.settimeout(min(READ_SLICE_S, self._watchdog_s))
        while not self._stopping.is_set():
            try:
                opcode, data = sock.recv_data()
            except (SocketTimeout, websocket.WebSocketTimeoutException):
                if self._clock() - (self.last_message_at or 0.0) >= self._watchdog_s:
                    self.watchdog_trips += 1
                    logger.warning("ticker feed is stale; reconnecting", extra={"silent_s": self._watchdog_s})
                    return
                continue
            except Exception as exc:
                if not self._stopping.is_set():
                    logger.warning("ticker connection lost", extra={"error": str(exc)})
                return
            if opcode == OPCODE_CLOSE:
                logger.warning("ticker closed the connection")
                return
            self.last_message_at = self._clock()
            if opcode in (OPCODE_BINARY, OPCODE_TEXT):
                try:
                    self._on_message(bytes(data), opcode == OPCODE_TEXT)
                except Exception:  # one bad message must not take the feed down
                    logger.exception("handling a ticker message failed")
