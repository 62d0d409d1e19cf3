"""The trader's daily Kite login, the session's state for /health, and the pre-market check that someone logged in.

Kite access tokens end at 06:00 IST the morning after the login, whatever the login's time. The login itself:
GET /broker/login redirects to Kite's login page for the app's api_key; Kite sends the browser back to
GET /broker/callback with a one-time request_token, which session.exchange_request_token trades for the day's
access_token and stores in the stage's broker secret. Every Lambda and the streamer read that secret again when Kite
refuses the token they cached, so a new session needs no restart and no deploy.

The pre-market check (a schedule before the open) reads the stored session and asks Kite who it belongs to
(GET /user/profile). No session, an expired one or one Kite refuses: metric BrokerSessionMissing (its alarm goes to
the alarm topic) and a Telegram message with the login link, sent once per IST day however often the check runs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from botocore.exceptions import ClientError

from bracketflow import metrics_names
from bracketflow.adapters.broker import session
from bracketflow.adapters.broker.endpoints import check_paper_safety, login_url
from bracketflow.adapters.broker.kite_json import IST
from bracketflow.adapters.dynamo.alerts import first_session_alert_of_the_day
from bracketflow.domain import calendar
from bracketflow.errors import BrokerError, BrokerMisconfigured, SessionExpired, ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.services.telegram import send_notices
from bracketflow.settings import get_settings

SESSION_ENDS_AT = time(6, 0)  # IST: every Kite access token ends then
_ALERT_KEEP_S = 3 * 86400


@dataclass(frozen=True)
class SessionStatus:
    state: str  # "valid" | "expired" | "none"
    login_time: datetime | None = None
    expires_at: datetime | None = None
    user_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        """What /health shows: the state and the expiry, never the token (nor the user id: /health is public)."""
        return {
            "state": self.state,
            "login_time": self.login_time.isoformat() if self.login_time else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def session_expiry(login_time: datetime) -> datetime:
    """06:00 IST on the morning after the login (the same morning for a login before 06:00)."""
    local = login_time.astimezone(IST)
    ends = datetime.combine(local.date(), SESSION_ENDS_AT, tzinfo=IST)
    return ends if local < ends else ends + timedelta(days=1)


def _parse_login_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=IST)  # Kite's login_time is IST without an offset


def session_status(now: datetime | None = None) -> SessionStatus:
    """The stored session's state from the broker secret alone (no broker call): cheap enough for /health."""
    try:
        secret = session.read_secret_now()
    except (ClientError, BrokerError):
        return SessionStatus("none")
    if not secret.get("access_token"):
        return SessionStatus("none")
    login_time = _parse_login_time(secret.get("login_time"))
    if login_time is None:  # a token with no time: treat it as ended, the check will say so
        return SessionStatus("expired", user_id=str(secret.get("user_id") or ""))
    expires_at = session_expiry(login_time)
    state = "valid" if (now or datetime.now(IST)) < expires_at else "expired"
    return SessionStatus(state, login_time, expires_at, str(secret.get("user_id") or ""))


def broker_login_url() -> str:
    """Kite's login page for the stored api_key (the paper exchange's copy in paper mode)."""
    settings = get_settings()
    check_paper_safety(settings)
    try:
        secret = session.read_secret_now()
    except ClientError as exc:
        raise BrokerMisconfigured(
            f"the broker secret {settings.broker_secret!r} cannot be read: store the Kite app's api_key and "
            "api_secret in it first"
        ) from exc
    api_key = str(secret.get("api_key") or "")
    if not api_key:
        raise BrokerMisconfigured(
            f"the broker secret {settings.broker_secret!r} has no api_key: store the Kite app's api_key and "
            "api_secret in it first"
        )
    return login_url(settings, api_key)


def complete_login(request_token: str, status: str, now: datetime | None = None) -> SessionStatus:
    """The login redirect's answer: trade its request_token for the day's session and store it."""
    if status != "success":
        raise ValidationFailed(f"Kite's login did not succeed (status={status or 'missing'}); log in again")
    if not request_token or len(request_token) > 256 or not request_token.isprintable():
        raise ValidationFailed("the login redirect carried no usable request_token; log in again")
    started = session.exchange_request_token(request_token, now=now)
    login_time = _parse_login_time(started.get("login_time")) or (now or datetime.now(IST))
    return SessionStatus("valid", login_time, session_expiry(login_time), started.get("user_id") or "")


def premarket_check(login_link: str = "", now: datetime | None = None) -> dict[str, Any]:
    """Verify the stored session with the broker; alarm metric and Telegram (once a day) when it does not work."""
    now = now or datetime.now(IST)
    day = now.astimezone(IST).date()
    if get_settings().broker != "paper" and not calendar.market_calendar().trades_on(day):
        # An exchange holiday (the schedule is a weekday cron): no session opens, so no login is missing.
        metrics.add_metric(name=metrics_names.BROKER_SESSION_MISSING, unit="Count", value=0)
        logger.info("no session today: the pre-market check has nothing to check", extra={"day": day.isoformat()})
        return {"ok": True, "skipped": f"no exchange session on {day.isoformat()}", "telegram_sent": 0}
    status = session_status(now)
    problem: str | None = None
    if status.state == "none":
        problem = "nobody has logged in to Kite yet"
    elif status.state == "expired":
        ended = status.expires_at.strftime("%d %b %H:%M IST") if status.expires_at else "06:00 IST"
        problem = f"the Kite session ended at {ended} and nobody has logged in since"
    else:
        try:
            session.verify_session()
        except SessionExpired:
            problem = "Kite refused the stored session (logged out, or replaced by another login)"
        except BrokerMisconfigured:
            raise
        except BrokerError as exc:
            problem = f"the Kite session could not be verified: {exc.message}"
    metrics.add_metric(name=metrics_names.BROKER_SESSION_MISSING, unit="Count", value=1 if problem else 0)
    if problem is None:
        logger.info("Kite session verified before the open", extra={"expires_at": status.as_dict()["expires_at"]})
        return {"ok": True, "session": status.as_dict(), "telegram_sent": 0}
    logger.error("no working Kite session before the open", extra={"problem": problem})
    sent = 0
    if first_session_alert_of_the_day(now.astimezone(IST).date(), int(now.timestamp()) + _ALERT_KEEP_S):
        link = f' <a href="{html.escape(login_link)}">Log in to Kite</a>' if login_link else " Log in to Kite."
        sent = send_notices([f"⚠️ <b>No Kite session</b>: {html.escape(problem)}; no order can be placed.{link}"])
    return {"ok": False, "problem": problem, "session": status.as_dict(), "telegram_sent": sent}
