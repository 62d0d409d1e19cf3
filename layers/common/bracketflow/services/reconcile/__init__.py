"""Reconciliation with the broker (statemachine/reconcile.asl.json): one snapshot, then each open bracket repaired.

TakeSnapshot: the broker's orders, positions and GTTs, stored for the run (adapters/dynamo/reconcile.py); returns the
run id and the open brackets (the sparse OPEN index). ReconcileBracket compares one bracket with that view:

  CREATED, older than RECONCILE_RESUME_AFTER_S       its workflow never started -> start it (WORKFLOW_RESUMED)
  ENTRY_PENDING, entry final at the broker           a missed order update -> recorded as the watcher would
                                                     (fill/reject/cancel; the waiting task is completed)
  ENTRY_PENDING / EXITING, order still open or       SENT_TO_BROKER for over RECONCILE_FROZEN_AFTER_S ("frozen",
  missing from the book for that long                the order lifecycle) -> NEEDS_REVIEW
  ENTRY_FILLED for RECONCILE_RESUME_AFTER_S, its    a filled position without a stop -> protected here as
  workflow ended (Step Functions: not RUNNING)       PlaceProtection would (PROTECTION_RESUMED; the streamer told to
                                                     watch it), flattened at market when no GTT is possible
                                                     (FLATTENED), NEEDS_REVIEW when the broker shows no position
  PROTECTED, GTT triggered and its order COMPLETE    closed by the broker -> exit recorded (reason TARGET, STOP or
                                                     TRAIL_STOP by the fill price), then WaitForExit completed (or,
                                                     with no workflow waiting, Finalize run here) -> CLOSED
  PROTECTED, position flat at the broker             closed by hand -> the GTT (if still active) cancelled first, exit
                                                     recorded from the broker's closing order, reason MANUAL -> CLOSED
  PROTECTED, GTT gone but position open              re-protected with a new GTT (RECONCILE_REPROTECT, default) or
                                                     NEEDS_REVIEW; with the market already through the stop, a STOP
                                                     exit intent on the ExitQueue (STOP_EXIT_QUEUED)
  EXITING, no exit order, ExitSkipped recorded      the exit Lambda found the GTT triggered and placed nothing;
                                                     the GTT's child order (its orders/result ids, else the one
                                                     untagged fill in the order book) COMPLETE -> exit recorded
                                                     (TARGET, STOP or TRAIL_STOP by the fill price) -> CLOSED; the
                                                     child REJECTED/CANCELLED, or none for RECONCILE_FROZEN_AFTER_S
                                                     -> NEEDS_REVIEW (the position may be open, unprotected)
  EXITING, exit order final at the broker            a missed order update -> recorded (fill completes WaitForExit)
  EXITING, exit filled but never finalised           WaitForExit completed again, or Finalize run here

Every repair is a conditional write with its audit events (the helpers' own events plus a Reconciled event naming the
repair); a bracket that changed since it was read is left for the next run. Summarize reports GTTs that no open
bracket owns (cancelled only with RECONCILE_CANCEL_ORPHAN_GTTS, and only when still unowned on a fresh look and
older than ORPHAN_MIN_AGE_S) and emits the drift metrics (ReconcileDrift, ReconcileFlagged, OrphanGtts).

Known limit: positions are netted per instrument and product at the broker; with two open brackets on one
instrument, "flat" means both were closed, and a partial manual close is not told apart (the bracket stays open).

Each job has its module here: snapshot (the broker's view), checks (one bracket), repairs, summary; this package
re-exports the names the handlers and tests use.
"""

from bracketflow.services.reconcile.checks import reconcile_bracket, reconcile_bracket_now
from bracketflow.services.reconcile.snapshot import BrokerView, live_view, load_view, take_snapshot, trading_day
from bracketflow.services.reconcile.summary import summarize

__all__ = [
    "BrokerView",
    "live_view",
    "load_view",
    "reconcile_bracket",
    "reconcile_bracket_now",
    "summarize",
    "take_snapshot",
    "trading_day",
]
