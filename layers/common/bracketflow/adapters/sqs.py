"""Sending JSON messages to SQS: the streamer's control queue (watch/unwatch) and any other queue by URL."""

from __future__ import annotations

import json
from typing import Any

from bracketflow.adapters.aws import client
from bracketflow.settings import get_settings


def send_json(queue_url: str, body: dict[str, Any], delay_s: int = 0) -> str:
    """Send one JSON message (delivered no sooner than `delay_s` seconds, at most 900); returns its MessageId."""
    kwargs: dict[str, Any] = {"DelaySeconds": min(max(int(delay_s), 0), 900)} if delay_s else {}
    out = client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(body, separators=(",", ":")), **kwargs)
    return str(out["MessageId"])


def send_control(message: dict[str, Any]) -> str | None:
    """A watch/unwatch message for the streamer (STREAMER_CONTROL_QUEUE_URL): a WatchRequest's or UnwatchRequest's
    to_dict() (bracketflow.contracts). None when no queue is configured."""
    url = get_settings().streamer_control_queue_url
    if not url:
        return None
    return send_json(url, message)


def retry_in(queue_url: str, receipt_handle: str, seconds: int) -> None:
    """Make a received message visible again in `seconds` (ChangeMessageVisibility): a failed message comes back when
    its handler says, not after the queue's whole visibility timeout."""
    client("sqs").change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=max(0, int(seconds))
    )
