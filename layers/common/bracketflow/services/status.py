"""What the trader's console shows in its status panel (GET /api/v1/status): is everything that keeps a stop alive
working right now?

- broker_session: the day's Kite session from the broker secret (valid until 06:00 IST, expired, none), and where to
  log in; no broker call.
- streamer / feed: from the streamer's heartbeat item (adapters/dynamo/streamer_health.py): "up" while it beats,
  "down" when its heartbeat is older than three intervals, "unknown" before its first; the feed "flowing" while the
  ticker socket is open and sent something over the last interval, "silent" when it sent nothing, "down" when the
  socket is closed or the streamer is down.
- reconciliation: the latest run (when, brackets checked, repairs by kind, errors, orphan GTTs) and the latest run
  that repaired something, each listing only the caller's own brackets it repaired.
- alarms: the stack's CloudWatch alarms (ALARM_NAMES) that are in ALARM.
A part that cannot be read says so in its own place ("error"); the rest of the answer still comes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bracketflow.adapters.cloudwatch import firing_alarms
from bracketflow.adapters.dynamo.reconcile import get_last_run
from bracketflow.adapters.dynamo.streamer_health import get_heartbeat
from bracketflow.domain.accounts import Caller
from bracketflow.errors import BrokerMisconfigured
from bracketflow.observability import logger
from bracketflow.services.broker_session import session_status
from bracketflow.settings import get_settings

STALE_AFTER_BEATS = 3  # the streamer is "down" once its heartbeat is this many intervals old
LOGIN_PATH = "/broker/login"


def status(caller: Caller, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    streamer, feed = _streamer_and_feed(now)
    return {
        "at": _iso(now),
        "broker_session": _broker_session(),
        "streamer": streamer,
        "feed": feed,
        "reconciliation": _reconciliation(caller),
        "alarms": _alarms(),
    }


def _broker_session() -> dict[str, Any]:
    try:
        return {**session_status().as_dict(), "login": LOGIN_PATH}
    except BrokerMisconfigured as exc:
        return {"state": "misconfigured", "error": exc.message, "login": LOGIN_PATH}


def _streamer_and_feed(now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        beat = get_heartbeat()
    except Exception:  # the panel shows what it cannot read, and the rest
        logger.exception("the streamer's heartbeat could not be read")
        return {"state": "unknown", "error": "the heartbeat could not be read"}, {"state": "unknown"}
    if not beat:
        return {"state": "unknown", "detail": "no heartbeat yet"}, {"state": "unknown"}
    at = datetime.fromisoformat(str(beat["at"]).replace("Z", "+00:00"))
    every_s = float(beat.get("every_s") or 60)
    age_s = max(0.0, (now - at).total_seconds())
    up = age_s <= STALE_AFTER_BEATS * every_s
    streamer = {
        "state": "up" if up else "down",
        "heartbeat_at": _iso(at),
        "heartbeat_age_s": round(age_s, 1),
        "watched": int(beat.get("watched") or 0),
        "reconnects": int(beat.get("reconnects") or 0),
    }
    rate = _number(beat.get("messages_per_s"))
    if not up or not beat.get("connected"):
        feed_state = "down"
    elif rate is None:
        feed_state = "connected"  # open, but no full interval measured yet
    else:
        feed_state = "flowing" if rate > 0 else "silent"
    feed = {"state": feed_state, "messages_per_s": rate, "lag_s": _number(beat.get("feed_lag_s"))}
    return streamer, feed


def _reconciliation(caller: Caller) -> dict[str, Any]:
    try:
        found = get_last_run()
    except Exception:
        logger.exception("the last reconciliation could not be read")
        return {"error": "the last reconciliation could not be read"}
    return {key: _own(found[key], caller) if key in found else None for key in ("last_run", "last_repair")}


def _own(run: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """A run as the caller may see it: counts for the whole run, bracket ids only of the caller's own brackets."""
    repaired = [
        {"bracket_id": r["bracket_id"], "repair": r["repair"]}
        for r in run.get("repaired") or []
        if r.get("account_id") == caller.account_id
    ]
    return {
        "run_id": run.get("run_id"),
        "at": run.get("at"),
        "brackets": int(run.get("brackets") or 0),
        "repairs": {k: int(v) for k, v in (run.get("repairs") or {}).items()},
        "errors": int(run.get("errors") or 0),
        "orphan_gtts": int(run.get("orphan_gtts") or 0),
        "repaired": repaired,
    }


def _alarms() -> dict[str, Any]:
    names = [n.strip() for n in get_settings().alarm_names.split(",") if n.strip()]
    try:
        return {"watched": len(names), "firing": firing_alarms(names) if names else []}
    except Exception:
        logger.exception("the stack's alarms could not be read")
        return {"watched": len(names), "firing": [], "error": "the alarms could not be read"}


def _number(value: Any) -> float | None:
    return None if value is None else float(Decimal(str(value)))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
