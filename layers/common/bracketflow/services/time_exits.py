"""Time exits: a bracket asked to leave at a time (exit_at, IST) or after so many minutes (exit_after, counted from
its registration) is ended with reason TIME when that moment comes, unless it closed earlier.

The risk watch runs exit_due_brackets() every minute (the local stack plays that schedule on its own), so a time exit
happens within a minute of its moment. A bracket already ending is left to that end; a second run finds the exit
claimed (EXITING) or the cancel already asked for, and does nothing more. What is done per status is the signals'
(services/signals.end_bracket): an entry still working (or not sent) is cancelled, a position exited at market.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.enums import ExitReason
from bracketflow.observability import logger, metrics
from bracketflow.services import signals


def exit_due_brackets(now: datetime | None = None) -> list[dict[str, Any]]:
    """End every open bracket whose time exit is due; what was done for each."""
    at = now or datetime.now(UTC)
    repo = BracketRepository()
    due = [b for b in repo.list_open() if b.exit_due_at is not None and b.exit_due_at <= at]
    if not due:
        return []
    done = signals.end_brackets(repo, due, ExitReason.TIME, by="time", ref={})
    acted = [d for d in done if d["action"] in (signals.ENTRY_NOT_SENT, signals.CANCEL_ENTRY, signals.EXIT_POSITION)]
    if acted:
        metrics.add_metric(name=metrics_names.TIME_EXITS, unit="Count", value=len(acted))
        logger.info("time exits", extra={"brackets": acted})
    return done
