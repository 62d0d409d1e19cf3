"""Watch/unwatch commands: the control queue's messages (StreamerControlQueue) and the thread that polls it.

Message bodies (JSON, agreed between the bracket workflow and the streamer):
    {"type": "watch", "bracket_id", "account_id", "instrument_token": int, "exchange", "tradingsymbol",
     "side": "LONG|SHORT", "product", "quantity": int, "entry_price": "<decimal>", "stop_price": "<decimal>",
     "target_price": "<decimal>", "tick_size": "0.05", "trail": null | {"type": "percent|points", "value": "<dec>"},
     "activation_price": null | "<decimal>", "gtt_id": str | null,
     "breakeven_at": null | "<decimal>", "breakeven_stop": null | "<decimal>"}
    {"type": "unwatch", "bracket_id"}
A watch's stop_price is the stop to start from: the bracket's current (possibly already trailed) stop.
breakeven_at / breakeven_stop (both or neither): once the price reaches breakeven_at, the stop moves to
breakeven_stop (the entry plus the cost buffer, worked out by the sender), once, if that tightens it.
A message that can never be applied (bad JSON, missing fields) is logged and deleted: retrying cannot fix it, and the
periodic resync from DynamoDB still picks up every PROTECTED bracket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bracketflow.adapters.aws import client
from bracketflow.domain.trailing import to_paise
from bracketflow.observability import logger
from streamer.watchlist import WatchedBracket


@dataclass(frozen=True)
class Watch:
    """Start trailing one bracket. original_stop: the bracket's stop-loss as placed (tells STOP from TRAIL_STOP)."""

    bracket: WatchedBracket
    account_id: str | None = None
    exchange: str | None = None
    tradingsymbol: str | None = None
    quantity: int | None = None
    gtt_id: str | None = None
    original_stop: int | None = None  # paise; None: the stop it starts from
    activated: bool = False  # the trail was already active (the stop had moved before a restart)

    @property
    def bracket_id(self) -> str:
        return self.bracket.bracket_id


@dataclass(frozen=True)
class Unwatch:
    bracket_id: str


def parse_command(body: str | bytes) -> Watch | Unwatch:
    """One control message; ValueError says what is wrong with it."""
    try:
        raw = json.loads(body, parse_float=Decimal)
    except ValueError as exc:
        raise ValueError(f"control message is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("control message must be a JSON object")
    kind = raw.get("type")
    if not raw.get("bracket_id"):
        raise ValueError("control message lacks bracket_id")
    if kind == "unwatch":
        return Unwatch(str(raw["bracket_id"]))
    if kind != "watch":
        raise ValueError(f"control message type must be watch or unwatch, got {kind!r}")
    bracket = WatchedBracket.from_dict(raw)
    bracket.compile()  # refuse what the engine could not trail, here rather than on the tick thread
    quantity = raw.get("quantity")
    gtt = raw.get("gtt_id")
    return Watch(
        bracket=bracket,
        account_id=raw.get("account_id"),
        exchange=raw.get("exchange"),
        tradingsymbol=raw.get("tradingsymbol"),
        quantity=None if quantity is None else int(quantity),
        gtt_id=None if gtt is None else str(gtt),
        original_stop=to_paise(bracket.stop_price),
    )


def watch_message(watch: Watch) -> dict[str, Any]:
    """The control-queue body for a Watch (what the bracket workflow sends; tests and tools use it too)."""
    b = watch.bracket
    return {
        "type": "watch",
        "bracket_id": b.bracket_id,
        "account_id": watch.account_id,
        "instrument_token": b.instrument_token,
        "exchange": watch.exchange,
        "tradingsymbol": watch.tradingsymbol,
        "side": b.side,
        "product": b.product,
        "quantity": watch.quantity,
        "entry_price": None if b.entry_price is None else str(b.entry_price),
        "stop_price": str(b.stop_price),
        "target_price": None,
        "tick_size": str(b.tick_size),
        "trail": None if b.trail is None else {"type": str(b.trail["type"]), "value": str(b.trail["value"])},
        "activation_price": None if b.activation_price is None else str(b.activation_price),
        "gtt_id": watch.gtt_id,
        "breakeven_at": None if b.breakeven_at is None else str(b.breakeven_at),
        "breakeven_stop": None if b.breakeven_stop is None else str(b.breakeven_stop),
    }


class ControlPoller:
    """Long-polls the control queue on its own thread and hands each command to `apply`, then deletes it."""

    def __init__(
        self,
        queue_url: str,
        apply: Callable[[Watch | Unwatch], None],
        *,
        wait_s: int = 5,
        sqs: Callable[[], Any] = lambda: client("sqs"),
    ) -> None:
        self.queue_url = queue_url
        self._apply = apply
        self._wait_s = wait_s  # also bounds how long a SIGTERM waits for this thread
        self._sqs = sqs
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)
        self.applied = 0
        self.rejected = 0

    def start(self) -> ControlPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception as exc:
                logger.warning("control queue poll failed", extra={"error": str(exc)})
                self._stopping.wait(1.0)

    def poll_once(self) -> int:
        answer = self._sqs().receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=self._wait_s
        )
        messages = answer.get("Messages") or []
        for message in messages:
            try:
                command = parse_command(message["Body"])
            except ValueError as exc:
                self.rejected += 1
                logger.error("dropping a bad control message", extra={"error": str(exc), "body": message["Body"][:500]})
            else:
                self._apply(command)
                self.applied += 1
            self._sqs().delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)
