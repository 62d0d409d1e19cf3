"""MIS square-off: intraday (MIS) brackets still open at SQUARE_OFF_TIME_IST (default 15:15) are closed, reason EOD.

Fired by a schedule (template.yaml: 09:45 UTC on weekdays). It acts only between the square-off time and the close of
the day's session in the market calendar (none on an exchange holiday; a Muhurat session squares off 15 minutes before
its own close), so the local stack, which plays cron schedules every few seconds, squares off only when the clock says
so; {"force": true} in the event skips that check (tests, a manual run).

  PROTECTED / EXIT_FAILED MIS brackets -> an EOD ExitRequest (bracketflow.contracts) on the ExitQueue
      (EXIT_QUEUE_URL): no price, the bracket's stop kept. The exit Lambda (services/execute_exit) does the rest
      exactly as for a stop: the claim (PROTECTED -> EXITING), GTT cancelled first (no exit if it already fired),
      MARKET exit with market protection, lost answers found by tag — and the queue's retries and DLQ alarm when the
      broker refuses. Going through the queue rather than calling the exit directly is what gives the square-off
      those retries.
      A second run the same day places nothing: a bracket already EXITING is not queued again, and a second intent
      for one still waiting in the queue finds it claimed by the first and is acknowledged as a duplicate.
  ENTRY_PENDING MIS brackets -> the entry is cancelled (services/lifecycle.cancel_entry); a partial fill becomes
      ENTRY_FILLED and is protected, then exited by a later run or by the broker's own square-off.
  ENTRY_FILLED (protection being placed) -> left for a later run; reported.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.sqs import send_json
from bracketflow.contracts import ExitRequest
from bracketflow.domain import calendar
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, ExitReason, Product
from bracketflow.errors import BracketflowError
from bracketflow.observability import logger, metrics
from bracketflow.services import lifecycle
from bracketflow.settings import get_settings

IST = calendar.IST
MIS_SEGMENT = "NSE"  # intraday equity and F&O close together; the market calendar says when (and whether) that is
SPECIAL_SESSION_LEAD = timedelta(minutes=15)


def square_off_due(now: datetime) -> bool:
    """True between the configured square-off time and the close of today's session, on the IST clock. No session
    today (a holiday, a weekend): never. A special session (Muhurat) that does not span the configured time squares
    off 15 minutes before its own close."""
    session = calendar.market_calendar().session_at(MIS_SEGMENT, now)
    if session is None:
        return False
    hours, minutes = (int(x) for x in get_settings().square_off_time_ist.split(":"))
    starts = time(hours, minutes)
    if not session.opens <= starts < session.closes:
        starts = (session.closes_at - SPECIAL_SESSION_LEAD).time()
    return starts <= now.astimezone(IST).time() < session.closes


def square_off_mis(*, force: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Exit every open MIS bracket (EOD) and cancel unfilled MIS entries; returns what was done per bracket."""
    at = now or datetime.now(UTC)
    if not force and not square_off_due(at):
        return {"due": False, "exits": [], "cancelled": [], "skipped": []}
    exit_queue_url = get_settings().exit_queue_url
    if not exit_queue_url:
        # a deployment mistake, not a bracket's trouble: fail the run loudly (its error alarm) before touching anything
        raise RuntimeError("EXIT_QUEUE_URL is not set: the square-off has nowhere to send its EOD exits")
    exits, cancelled, skipped, failed = [], [], [], []
    for bracket in BracketRepository().list_open():
        if bracket.spec.product is not Product.MIS:
            continue
        try:
            if bracket.status in (BracketStatus.PROTECTED, BracketStatus.EXIT_FAILED):
                message_id = send_json(exit_queue_url, eod_exit_intent(bracket, at))
                exits.append({"bracket_id": bracket.id, "outcome": "QUEUED", "message_id": message_id})
            elif bracket.status is BracketStatus.ENTRY_PENDING:
                outcome = lifecycle.cancel_entry(bracket.id)
                cancelled.append({"bracket_id": bracket.id, **outcome})
            elif bracket.status is not BracketStatus.EXITING:
                skipped.append({"bracket_id": bracket.id, "status": bracket.status.value})
        except BracketflowError as exc:  # one bracket's trouble must not stop the others' square-off
            failed.append({"bracket_id": bracket.id, "error": type(exc).__name__, "message": exc.message})
            logger.error("square-off failed for a bracket", extra={"bracket_id": bracket.id, "error": str(exc)})
    if exits:
        metrics.add_metric(name="SquareOffExits", unit="Count", value=len(exits))  # queued, not yet placed
    if failed:
        metrics.add_metric(name="SquareOffFailures", unit="Count", value=len(failed))
    return {"due": True, "exits": exits, "cancelled": cancelled, "skipped": skipped, "failed": failed}


def eod_exit_intent(bracket: Bracket, at: datetime) -> dict[str, Any]:
    """The ExitQueue message for an EOD exit: no price was seen (the exit is at market) and the stop is kept as is."""
    return ExitRequest(
        bracket_id=bracket.id,
        reason=ExitReason.EOD,
        ltp=None,
        stop_price=bracket.stop_price,
        detected_at=at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    ).to_dict()
