"""Which instrument master the system looks symbols up in.

Kite mode (BROKER=kite with INSTRUMENTS_BUCKET): Kite's full list, downloaded each morning by the instruments
function (functions/instruments) into the stack's bucket as the compact master (domain/instruments.to_compact).
It is read on the first lookup, not at import (the webhook's cold start does not pay for it), and read again at most
every INSTRUMENTS_REFRESH_S seconds, only when the object has changed (its ETag). Paper mode, and the local stack:
the master shipped with the package, which is the paper exchange's own.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bracketflow.adapters.aws import client
from bracketflow.domain.instruments import CompactMaster, InstrumentMaster, default_master, to_compact
from bracketflow.errors import BracketflowError
from bracketflow.settings import get_settings

MASTER_KEY = "instruments/master.tsv.gz"
MIN_ROWS = 10_000  # Kite lists ~100k instruments: a much shorter list is a broken download, never the new master

_lock = threading.Lock()
_cached: dict[str, Any] = {"master": None, "etag": None, "checked": 0.0}


class InstrumentMasterMissing(BracketflowError):
    """Kite mode, but the day's instrument list has never been downloaded into the stack."""

    status_code = 503


def current_master() -> InstrumentMaster | CompactMaster:
    settings = get_settings()
    if settings.broker != "kite" or not settings.instruments_bucket:
        return default_master()
    now = time.monotonic()
    with _lock:
        cached = _cached["master"]
        if cached is not None and now - _cached["checked"] < settings.instruments_refresh_s:
            return cached
        s3 = client("s3")
        request = {"Bucket": settings.instruments_bucket, "Key": MASTER_KEY}
        if cached is not None and _cached["etag"]:
            request["IfNoneMatch"] = _cached["etag"]
        try:
            answer = s3.get_object(**request)
        except s3.exceptions.NoSuchKey:
            raise InstrumentMasterMissing(
                "the instrument master has not been downloaded yet: run the stack's instruments function once"
            ) from None
        except s3.exceptions.ClientError as exc:
            if cached is not None and exc.response["Error"]["Code"] in ("304", "NotModified"):
                _cached["checked"] = now
                return cached
            raise
        master = CompactMaster(answer["Body"].read())
        _cached.update(master=master, etag=answer["ETag"], checked=now)
        return master


def forget_master() -> None:
    """Drop the cached master (tests; a new stack)."""
    with _lock:
        _cached.update(master=None, etag=None, checked=0.0)


def store_master(csv_text: str, bucket: str) -> int:
    """Kite's /instruments CSV -> the stack's compact master; the number of rows stored. A list too short to be
    Kite's is refused, keeping yesterday's (a truncated download must not make every symbol unknown)."""
    data = to_compact(csv_text)
    rows = len(CompactMaster(data))
    if rows < MIN_ROWS:
        raise ValueError(f"the instrument list has only {rows} rows (Kite lists ~100k): kept the stored master")
    client("s3").put_object(Bucket=bucket, Key=MASTER_KEY, Body=data, ContentType="application/gzip")
    return rows
