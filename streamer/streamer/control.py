"""Watch/unwatch commands: the control queue's messages (StreamerControlQueue, bracketflow.contracts.WatchRequest and
UnwatchRequest) turned into the streamer's own Watch/Unwatch, and the thread that polls the queue.

A message that can never be applied (bad JSON, missing fields, a bracket the engine cannot trail) is logged and
deleted: retrying cannot fix it, and the periodic resync from DynamoDB still picks up every PROTECTED bracket.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bracketflow.adapters.aws import client
from bracketflow.contracts import UnwatchRequest, read_control_message
from bracketflow.domain.trailing import to_paise
from bracketflow.errors import ValidationFailed
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
    """One control message; ValidationFailed says what is wrong with it."""
    message = read_control_message(body)
    if isinstance(message, UnwatchRequest):
        return Unwatch(message.bracket_id)
    bracket = WatchedBracket.from_request(message)
    try:
        bracket.compile()  # refuse what the engine could not trail, here rather than on the tick thread
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from None
    return Watch(
        bracket=bracket,
        account_id=message.account_id,
        exchange=message.exchange,
        tradingsymbol=message.tradingsymbol,
        quantity=message.quantity,
        gtt_id=message.gtt_id,
        original_stop=to_paise(bracket.stop_price),
    )


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
            except ValidationFailed as exc:
                self.rejected += 1
                logger.error("dropping a bad control message", extra={"error": str(exc), "body": message["Body"][:500]})
            else:
                self._apply(command)
                self.applied += 1
            self._sqs().delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)
