"""DELETE /api/v1/brackets/{id}: cancel the entry, or exit the position (README, API). Nothing here calls
the broker.

The request is recorded first, as a CancelRequested event written with the bracket's version as its condition (so it
is ordered against every other change), then handed to whoever acts for that status:

  CREATED        the entry is not sent yet: PlaceEntry finds the request and ends the bracket CANCELLED (CREATED ->
                 CANCELLED, nothing sent). A workflow whose start failed does the same when it is resumed.
  ENTRY_PENDING  the WaitForEntryFill token (when stored) is completed with {"outcome": "CANCEL_REQUESTED"}; the
                 workflow's CancelEntryForTrader cancels the rest at the broker. Whatever filled before the cancel is
                 exited at market with reason MANUAL (ExitCancelledFill): a trader who cancels wants out, not a
                 smaller protected position. A token not stored yet: the waiting task sees the request itself.
  PROTECTED,     a MANUAL ExitRequest (bracketflow.contracts, no price) on the ExitQueue: the exit Lambda claims
  EXIT_FAILED    the bracket, deletes the GTT first (a GTT that already triggered means the broker closed it: no
                 second exit), places the MARKET exit; the watcher and Finalize close it with reason MANUAL.
  ENTRY_FILLED   409: protection is being placed this second; DELETE again once it is PROTECTED (seconds).
  EXITING        409: it is already exiting. NEEDS_REVIEW: 409, a human must look. Terminal: 409.

A race the request can lose: the entry fills (the watcher completes WaitForEntryFill) between our read and our
token send. The send then finds the token gone; we read the bracket again and answer for what it is now (the exit
intent when it is PROTECTED, the 409 above while protection is being placed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bracketflow.adapters import sfn
from bracketflow.adapters.dynamo import lifecycle as token_store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.sqs import send_json
from bracketflow.contracts import ExitRequest
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, ExitReason
from bracketflow.domain.states import is_terminal
from bracketflow.errors import ConcurrentModification, Conflict
from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import CANCEL_REQUESTED, CANCEL_REQUESTED_EVENT
from bracketflow.services.models import Caller
from bracketflow.services.register_bracket import get_caller_bracket
from bracketflow.settings import get_settings

_ATTEMPTS = 4

# What the answer says will happen, per action.
ENTRY_NOT_SENT = "ENTRY_NOT_SENT"
CANCEL_ENTRY = "CANCEL_ENTRY"
EXIT_POSITION = "EXIT_POSITION"
_MESSAGES = {
    ENTRY_NOT_SENT: "Cancel accepted: the entry order will not be placed; the bracket ends CANCELLED",
    CANCEL_ENTRY: "Cancel accepted: the entry order is being cancelled at the broker; anything already filled is "
    "exited at market (reason MANUAL)",
    EXIT_POSITION: "Exit accepted: the GTT is cancelled and the position exited at market (reason MANUAL)",
}


def _action_for(bracket: Bracket) -> str:
    """What a DELETE does for the bracket's status, or Conflict (409) naming why nothing can be done."""
    status = bracket.status
    if is_terminal(status):
        raise Conflict(f"bracket {bracket.id} is already {status.value}: nothing to cancel")
    if status is BracketStatus.CREATED:
        return ENTRY_NOT_SENT
    if status is BracketStatus.ENTRY_PENDING:
        return CANCEL_ENTRY
    if status in (BracketStatus.PROTECTED, BracketStatus.EXIT_FAILED):
        return EXIT_POSITION
    if status is BracketStatus.ENTRY_FILLED:
        raise Conflict(
            f"bracket {bracket.id} is ENTRY_FILLED: its protection is being placed now; "
            "send DELETE again in a few seconds to exit the position"
        )
    if status is BracketStatus.EXITING:
        reason = bracket.exit_reason.value if bracket.exit_reason else "an exit"
        raise Conflict(f"bracket {bracket.id} is already EXITING ({reason}): nothing more to do")
    raise Conflict(f"bracket {bracket.id} is {status.value}: it needs a human to review it at the broker")


def cancel_bracket(caller: Caller, bracket_id: str) -> dict[str, Any]:
    """Record the trader's cancel and hand it on (module doc); returns the 202 answer's data."""
    repo = BracketRepository()
    for _ in range(_ATTEMPTS):
        bracket = get_caller_bracket(caller, bracket_id)
        action = _action_for(bracket)
        request = {"type": CANCEL_REQUESTED_EVENT, "by": "user", "status": bracket.status.value, "action": action}
        try:
            recorded = repo.append_event(bracket, request)
            break
        except ConcurrentModification:
            continue  # it changed under us (a fill, a trailed stop): decide again on the new state
    else:
        raise Conflict(f"bracket {bracket_id} kept changing; send the request again")

    if action == CANCEL_ENTRY and not stop_entry_wait(recorded):
        # The wait is over: the entry filled (or timed out) just before our send. Answer for what it is now.
        current = get_caller_bracket(caller, bracket_id)
        if current.status is not BracketStatus.ENTRY_PENDING:
            action = _action_for(current)
            recorded = current
    if action == EXIT_POSITION:
        queue_exit(recorded, ExitReason.MANUAL)
    metrics.add_metric(name="CancelRequests", unit="Count", value=1)
    logger.info("cancel requested", extra={"bracket_id": bracket_id, "action": action})
    return {
        "bracket_id": recorded.id,
        "status": recorded.status.value,
        "cancel_requested": True,
        "action": action,
        "message": _MESSAGES[action],
    }


def stop_entry_wait(bracket: Bracket) -> bool:
    """Complete WaitForEntryFill with CANCEL_REQUESTED; True also when no token is stored yet (the task, storing
    it, finds the request recorded before); False when the token no longer waits."""
    token = token_store.get_task_token(bracket.id, token_store.ENTRY_TOKEN)
    if token is None:
        return True
    return sfn.send_task_success(token, {"outcome": CANCEL_REQUESTED})


def queue_exit(bracket: Bracket, reason: ExitReason) -> None:
    """The exit intent for the exit Lambda, in the ExitQueue's agreed shape: no price was seen (it exits at market)."""
    url = get_settings().exit_queue_url
    if not url:
        raise Conflict("exits cannot be queued: EXIT_QUEUE_URL is not configured for this function")
    intent = ExitRequest(
        bracket_id=bracket.id,
        reason=reason,
        ltp=None,
        stop_price=bracket.stop_price,
        detected_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    send_json(url, intent.to_dict())
