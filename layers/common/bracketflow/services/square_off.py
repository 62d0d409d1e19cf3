"""MIS square-off: intraday (MIS) brackets still open at SQUARE_OFF_TIME_IST (default 15:15) are closed, reason EOD.

Fired by a schedule (template.yaml: 09:45 UTC on weekdays). It acts only between the square-off time and the close
(15:30 IST), so the local stack, which plays cron schedules every few seconds, squares off only when the clock says so;
{"force": true} in the event skips that check (tests, a manual run).

  PROTECTED / EXIT_FAILED MIS brackets -> the exit path itself (services/execute_exit.execute_exit) with an EOD exit
      intent: the same claim (PROTECTED -> EXITING), GTT cancelled first (no exit if it already fired), MARKET exit with
      market protection, lost answers found by tag. The claim id is "eod-<IST date>-<bracket id>", so a second run the
      same day resumes its own claim instead of placing a second exit.
  ENTRY_PENDING MIS brackets -> the entry is cancelled (services/lifecycle.cancel_entry); a partial fill becomes
      ENTRY_FILLED and is protected, then exited by a later run or by the broker's own square-off.
  ENTRY_FILLED (protection being placed) -> left for a later run; reported.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.enums import BracketStatus, ExitReason, Product
from bracketflow.errors import BracketflowError
from bracketflow.observability import logger, metrics
from bracketflow.services import lifecycle
from bracketflow.services.execute_exit import ExitIntent, execute_exit
from bracketflow.settings import get_settings

IST = timezone(timedelta(hours=5, minutes=30), "IST")
MARKET_CLOSE_IST = time(15, 30)


def square_off_due(now: datetime) -> bool:
    """True between the configured square-off time and the close, on the IST clock."""
    hours, minutes = (int(x) for x in get_settings().square_off_time_ist.split(":"))
    local = now.astimezone(IST).time()
    return time(hours, minutes) <= local < MARKET_CLOSE_IST


def square_off_mis(*, force: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Exit every open MIS bracket (EOD) and cancel unfilled MIS entries; returns what was done per bracket."""
    at = now or datetime.now(UTC)
    if not force and not square_off_due(at):
        return {"due": False, "exits": [], "cancelled": [], "skipped": []}
    day = at.astimezone(IST).strftime("%Y%m%d")
    exits, cancelled, skipped, failed = [], [], [], []
    for bracket in BracketRepository().list_open():
        if bracket.spec.product is not Product.MIS:
            continue
        try:
            if bracket.status in (BracketStatus.PROTECTED, BracketStatus.EXIT_FAILED):
                intent = ExitIntent(
                    bracket_id=bracket.id,
                    reason=ExitReason.EOD,
                    ltp=bracket.stop_price,  # no tick here: the exit is at market; the stop is kept as it was
                    stop_price=bracket.stop_price,
                    detected_at=at.isoformat(),
                )
                result = execute_exit(intent, claim_id=f"eod-{day}-{bracket.id}")
                exits.append(
                    {"bracket_id": bracket.id, "outcome": result.outcome.value, "order_id": result.broker_order_id}
                )
            elif bracket.status is BracketStatus.ENTRY_PENDING:
                outcome = lifecycle.cancel_entry(bracket.id)
                cancelled.append({"bracket_id": bracket.id, **outcome})
            elif bracket.status is not BracketStatus.EXITING:
                skipped.append({"bracket_id": bracket.id, "status": bracket.status.value})
        except BracketflowError as exc:  # one bracket's trouble must not stop the others' square-off
            failed.append({"bracket_id": bracket.id, "error": type(exc).__name__, "message": exc.message})
            logger.error("square-off failed for a bracket", extra={"bracket_id": bracket.id, "error": str(exc)})
    if exits:
        metrics.add_metric(name="SquareOffExits", unit="Count", value=len(exits))
    if failed:
        metrics.add_metric(name="SquareOffFailures", unit="Count", value=len(failed))
    return {"due": True, "exits": exits, "cancelled": cancelled, "skipped": skipped, "failed": failed}
