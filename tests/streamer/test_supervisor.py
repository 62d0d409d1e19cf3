"""The connection supervisor with a fake socket and a fake clock: backoff caps and jitter, reset after a successful
subscribe, the stale-feed watchdog, resubscribe on reconnect, message dispatch and a clean stop."""

from __future__ import annotations

import json
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.supervisor import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_TEXT,
    ConnectionSupervisor,
    SocketTimeout,
    backoff_delay,
)
from tests.streamer.packets import HEARTBEAT, ltp_packet, message

BASE, CAP, WATCHDOG = 0.5, 8.0, 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSocket:
    """Plays a script: ("bin", bytes) | ("text", str) | ("quiet", seconds) | ("close",) | ("drop",)."""

    def __init__(self, clock: FakeClock, script: list[tuple], *, fail_send: bool = False) -> None:
        self.clock = clock
        self.script = deque(script)
        self.sent: list[dict] = []
        self.closed = False
        self.fail_send = fail_send

    def send(self, payload: str) -> None:
        if self.fail_send:
            raise ConnectionResetError("peer went away")
        self.sent.append(json.loads(payload))

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def recv_data(self) -> tuple[int, bytes]:
        if not self.script:
            raise ConnectionResetError("connection lost")
        step = self.script.popleft()
        kind = step[0]
        if kind == "bin":
            return OPCODE_BINARY, step[1]
        if kind == "text":
            return OPCODE_TEXT, step[1].encode()
        if kind == "quiet":
            self.clock.now += step[1]
            raise SocketTimeout()
        if kind == "close":
            return OPCODE_CLOSE, b""
        raise ConnectionResetError("dropped")

    def close(self) -> None:
        self.closed = True


class Harness:
    """Connect outcomes in order (an exception or a FakeSocket); when they run out, the supervisor is stopped."""

    def __init__(self, outcomes: list, *, rand: float = 1.0, tokens: list[int] | None = None) -> None:
        self.clock = FakeClock()
        self.outcomes = deque(outcomes)
        self.received: list[tuple[bytes, bool]] = []
        self.urls: list[tuple[str, bool]] = []
        self.sockets: list[FakeSocket] = []
        self.sup = ConnectionSupervisor(
            self.url,
            lambda data, is_text: self.received.append((data, is_text)),
            socket_factory=self.connect,
            backoff_base_s=BASE,
            backoff_cap_s=CAP,
            watchdog_s=WATCHDOG,
            clock=self.clock,
            rand=lambda: rand,
            wait=self.wait,
        )
        if tokens:
            self.sup.subscribe(tokens)

    def url(self, refresh: bool) -> str:
        self.urls.append(("ws://paper/ws", refresh))
        return "ws://paper/ws"

    def wait(self, seconds: float) -> bool:
        self.clock.now += seconds
        return self.sup.stopping

    def connect(self, url: str, timeout: float):
        if not self.outcomes:
            self.sup.stop()
            raise ConnectionRefusedError("no more connections in this test")
        outcome = self.outcomes.popleft()
        if isinstance(outcome, Exception):
            raise outcome
        self.sockets.append(outcome)
        return outcome

    def run(self) -> ConnectionSupervisor:
        self.sup.run()
        return self.sup


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError("refused")


# ---- backoff ----------------------------------------------------------------------------------------------------


@given(attempt=st.integers(0, 200), r=st.floats(0, 1))
def test_backoff_stays_within_zero_and_the_cap(attempt, r):
    # Given any attempt number and any jitter draw / When the delay is computed
    delay = backoff_delay(attempt, BASE, CAP, lambda: r)
    # Then it never exceeds the cap nor the exponential ceiling, and is never negative
    assert 0 <= delay <= min(CAP, BASE * 2**attempt)


def test_backoff_is_full_jitter_of_the_exponential_ceiling():
    # Given the largest and smallest jitter draws / Then the delay spans [0, min(cap, base * 2**n)]
    assert [backoff_delay(n, BASE, CAP, lambda: 1.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(3, BASE, CAP, lambda: 0.0) == 0.0
    assert backoff_delay(3, BASE, CAP, lambda: 0.25) == 1.0


def test_consecutive_connect_failures_back_off_exponentially_up_to_the_cap():
    # Given a server that refuses six connections in a row, then the test stops
    h = Harness([refused() for _ in range(6)])
    # When the supervisor runs
    sup = h.run()
    # Then it waited base, 2base, 4base, ... capped, between attempts, and asked for fresh credentials on retries
    assert sup.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert h.urls[0] == ("ws://paper/ws", False)
    assert all(refresh for _, refresh in h.urls[1:])
    assert sup.connects == 0


def test_jitter_draws_scale_every_delay():
    # Given jitter that always draws 0.5 / When three connects fail
    h = Harness([refused(), refused(), refused()], rand=0.5)
    # Then every delay is half its ceiling
    assert h.run().delays == [0.25, 0.5, 1.0]


def test_backoff_resets_only_after_a_successful_subscribe():
    # Given three refused connects, then one that subscribes and drops, then a refused one
    h = Harness([refused(), refused(), refused(), None, refused()], tokens=[408065])
    h.outcomes[3] = FakeSocket(h.clock, [("bin", HEARTBEAT)])
    # When the supervisor runs
    sup = h.run()
    # Then after the good connection the next waits start again from the base
    assert sup.delays[:3] == [0.5, 1.0, 2.0]
    assert sup.delays[3:5] == [0.5, 0.5]
    assert sup.connects == 1 and sup.reconnects == 1


def test_a_socket_that_dies_during_subscribe_does_not_reset_the_backoff():
    # Given two refusals, then a socket whose subscribe fails, then a refusal
    h = Harness([refused(), refused(), None, refused()], tokens=[408065])
    h.outcomes[2] = FakeSocket(h.clock, [], fail_send=True)
    # When it runs
    sup = h.run()
    # Then the failed subscribe counted as the third failure in a row
    assert sup.delays == [0.5, 1.0, 2.0, 4.0]
    assert sup.connects == 0
    assert h.sockets[0].closed


# ---- watchdog ---------------------------------------------------------------------------------------------------


def test_a_silent_feed_trips_the_watchdog_and_reconnects():
    # Given a connection that delivers one tick and then only quiet read slices, then a healthy one
    silent = [("bin", message(ltp_packet(408065, 150000)))] + [("quiet", 1.0)] * 20
    h = Harness([None, None], tokens=[408065])
    h.outcomes[0] = FakeSocket(h.clock, silent)
    h.outcomes[1] = FakeSocket(h.clock, [("bin", HEARTBEAT)])
    # When it runs
    sup = h.run()
    # Then the first connection was closed after WATCHDOG seconds of silence (not after all 20), and a second opened
    assert sup.watchdog_trips == 1
    assert h.sockets[0].closed
    assert len(h.sockets[0].script) == 20 - int(WATCHDOG)
    assert sup.connects == 2


def test_heartbeats_keep_the_watchdog_quiet():
    # Given a connection with a heartbeat after every 4 quiet seconds (less than the watchdog)
    script = [("quiet", 1.0)] * 4 + [("bin", HEARTBEAT)]
    h = Harness([None], tokens=[408065])
    h.outcomes[0] = FakeSocket(h.clock, script * 5)
    # When it runs to the end of the script
    sup = h.run()
    # Then the watchdog never tripped and every heartbeat was handed on
    assert sup.watchdog_trips == 0
    assert [d for d, _ in h.received] == [HEARTBEAT] * 5


# ---- subscriptions and dispatch ----------------------------------------------------------------------------------


def test_every_connection_subscribes_in_full_mode_to_every_watched_token():
    # Given tokens watched before connecting, and a connection that drops
    h = Harness([None, None], tokens=[738561, 408065])
    h.outcomes[0] = FakeSocket(h.clock, [("drop",)])
    h.outcomes[1] = FakeSocket(h.clock, [("bin", HEARTBEAT)])
    # When it runs
    h.run()
    # Then both connections asked for exactly those tokens, subscribe then mode full
    expected = [{"a": "subscribe", "v": [408065, 738561]}, {"a": "mode", "v": ["full", [408065, 738561]]}]
    assert h.sockets[0].sent == expected
    assert h.sockets[1].sent == expected


def test_tokens_watched_while_connected_are_subscribed_at_once_and_on_reconnect():
    # Given a connection open and a token added while it is (from a watch command)
    h = Harness([None, None])
    first = FakeSocket(h.clock, [("bin", HEARTBEAT), ("drop",)])
    h.outcomes[0] = first
    h.outcomes[1] = FakeSocket(h.clock, [])

    def on_message(data: bytes, is_text: bool) -> None:
        h.sup.subscribe([884737])
        h.sup.unsubscribe([999])  # never subscribed: nothing sent

    h.sup._on_message = on_message
    # When it runs
    h.run()
    # Then the first socket got the subscription immediately and the second one at connect
    assert first.sent == [{"a": "subscribe", "v": [884737]}, {"a": "mode", "v": ["full", [884737]]}]
    assert h.sockets[1].sent[0] == {"a": "subscribe", "v": [884737]}


def test_unsubscribed_tokens_are_not_resubscribed():
    # Given two tokens, one unsubscribed while connected
    h = Harness([None, None], tokens=[408065, 738561])
    first = FakeSocket(h.clock, [("bin", HEARTBEAT), ("drop",)])
    h.outcomes[0] = first
    h.outcomes[1] = FakeSocket(h.clock, [])
    h.sup._on_message = lambda data, is_text: h.sup.unsubscribe([738561])
    # When it runs
    h.run()
    # Then the unsubscribe was sent and the next connection asked only for the remaining token
    assert first.sent[-1] == {"a": "unsubscribe", "v": [738561]}
    assert h.sockets[1].sent[0] == {"a": "subscribe", "v": [408065]}


def test_binary_and_text_messages_reach_the_handler_in_order_and_a_close_reconnects():
    # Given a connection with a tick, an order update and then a close frame
    tick = message(ltp_packet(408065, 150000))
    update = json.dumps({"type": "order", "data": {"order_id": "1"}})
    h = Harness([None], tokens=[408065])
    h.outcomes[0] = FakeSocket(h.clock, [("bin", tick), ("text", update), ("close",)])
    # When it runs
    sup = h.run()
    # Then the handler saw both, flagged correctly, and the close counted as a lost connection
    assert h.received == [(tick, False), (update.encode(), True)]
    assert sup.reconnects == 1


def test_a_handler_error_does_not_drop_the_connection():
    # Given a handler that fails on the first message
    h = Harness([None], tokens=[408065])
    h.outcomes[0] = FakeSocket(h.clock, [("bin", b"\x01\x02"), ("bin", HEARTBEAT)])
    seen = []

    def flaky(data: bytes, is_text: bool) -> None:
        seen.append(data)
        if len(seen) == 1:
            raise RuntimeError("boom")

    h.sup._on_message = flaky
    # When it runs
    sup = h.run()
    # Then the second message was still read on the same connection
    assert seen == [b"\x01\x02", HEARTBEAT]
    assert sup.connects == 1


def test_stop_during_backoff_ends_the_run_without_another_connect():
    # Given a refused connect and a stop requested while waiting
    h = Harness([refused(), FakeSocket(FakeClock(), [])])

    def wait(seconds: float) -> bool:
        h.sup.stop()
        return True

    h.sup._wait = wait
    # When it runs
    sup = h.run()
    # Then it gave up at the first wait: the second connection was never opened
    assert len(h.outcomes) == 1
    assert sup.connects == 0


@pytest.mark.parametrize("tokens", [[], [408065]])
def test_stop_closes_the_open_socket(tokens):
    # Given a connection open
    h = Harness([None], tokens=tokens)
    sock = FakeSocket(h.clock, [("quiet", 0.1)] * 3)
    h.outcomes[0] = sock
    h.sup._on_message = lambda *a: None
    # When stop() is called while it is open
    orig = sock.recv_data

    def recv_then_stop():
        h.sup.stop()
        return orig()

    sock.recv_data = recv_then_stop
    sup = h.run()
    # Then the socket was closed and the run ended without a reconnect
    assert sock.closed
    assert sup.reconnects == 0
