"""SQS publishers off the tick thread: the tick thread only appends to a deque; a publisher thread sends batches.

Used for exit intents (ExitQueue), order updates (OrderEventsQueue) and stop-sync intents (StopSyncQueue). A message
is only dropped from memory once SQS accepted it: failed sends are retried with a capped backoff, and stop()
flushes what is left (within a deadline) so a SIGTERM loses nothing that could still be sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bracketflow.adapters.aws import client
from bracketflow.observability import logger

SQS_BATCH_MAX = 10


class QueuePublisher:
    def __init__(
        self,
        name: str,
        queue_url: str,
        *,
        sqs: Callable[[], Any] = lambda: client("sqs"),
        linger_s: float = 0.0,
        retry_cap_s: float = 5.0,
    ) -> None:
        self.name = name
        self.queue_url = queue_url
        self._sqs = sqs
        self._linger_s = linger_s  # wait this long after the first message for more to batch (0: send at once)
        self._retry_cap_s = retry_cap_s
        self._pending: deque[str] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"publish:{name}", daemon=True)
        self.sent = 0
        self.failures = 0

    def put(self, body: dict[str, Any]) -> None:
        """Queue one message (cheap: a JSON dump and a deque append); any thread."""
        self._pending.append(json.dumps(body, separators=(",", ":")))
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def start(self) -> QueuePublisher:
        if not self.queue_url:
            logger.warning("no queue URL; messages are kept in memory only", extra={"publisher": self.name})
        self._thread.start()
        return self

    def stop(self, flush_deadline_s: float = 10.0) -> None:
        """Stop and send what is left, giving up after the deadline (what is left is logged)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=flush_deadline_s + 1)
        deadline = time.monotonic() + flush_deadline_s
        while self._pending and self.queue_url and time.monotonic() < deadline:
            if not self._send_some():
                time.sleep(0.2)
        if self._pending:
            logger.error("messages not sent at shutdown", extra={"publisher": self.name, "left": len(self._pending)})

    def flush(self, deadline_s: float = 10.0) -> bool:
        """Wait until everything queued so far was sent (tests); False on timeout."""
        end = time.monotonic() + deadline_s
        while self._pending and time.monotonic() < end:
            self._wake.set()
            time.sleep(0.01)
        return not self._pending

    def _loop(self) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._linger_s and self._pending:
                time.sleep(self._linger_s)
            while self._pending and self.queue_url and not self._stopping.is_set():
                if self._send_some():
                    delay = 0.0
                    continue
                delay = min(self._retry_cap_s, max(0.1, delay * 2))
                self._stopping.wait(delay)

    def _send_some(self) -> bool:
        """Send up to one batch from the front; True if SQS took all of it."""
        batch = [self._pending[i] for i in range(min(SQS_BATCH_MAX, len(self._pending)))]
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)]
        try:
            answer = self._sqs().send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            self.failures += 1
            logger.warning("SQS send failed; will retry", extra={"publisher": self.name, "error": str(exc)})
            return False
        failed = {int(f["Id"]) for f in answer.get("Failed") or []}
        # Drop the accepted ones from the front; failed ones go back in front, in order, for the next try.
        for _ in batch:
            self._pending.popleft()
        for i in sorted(failed, reverse=True):
            self._pending.appendleft(batch[i])
        self.sent += len(batch) - len(failed)
        if failed:
            self.failures += 1
            logger.warning("SQS refused some messages", extra={"publisher": self.name, "failed": len(failed)})
        return not failed
