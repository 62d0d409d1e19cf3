"""The metric names bracketflow publishes (Powertools EMF, namespace `bracketflow`, dimension service=bracketflow).

One place for the names the code emits and the template's dashboard and alarms read. A metric renamed in code but
not in template.yaml would leave an alarm silently watching nothing, so tests/integration/test_template_metrics.py
holds the three together: every name here is emitted by the code (or listed in PENDING), every `add_metric` name in
the code is here, and every bracketflow metric the template reads is here.
"""

from __future__ import annotations

NAMESPACE = "bracketflow"
SERVICE_DIMENSION = ("service", "bracketflow")  # Powertools' default dimension from Metrics(service=...)

# ---- intake ----
BRACKETS_REGISTERED = "BracketsRegistered"
BRACKETS_BLOCKED = "BracketsBlocked"
DUPLICATE_ALERTS = "DuplicateAlerts"
WORKFLOW_START_FAILURES = "WorkflowStartFailures"

# ---- the bracket lifecycle ----
ENTRIES_PLACED = "EntriesPlaced"
ENTRIES_REJECTED = "EntriesRejected"
PROTECTIONS_PLACED = "ProtectionsPlaced"
PROTECTIONS_RESIZED = "ProtectionsResized"  # a partly filled entry's GTT grown to the next fill
ENTRY_TO_PROTECTION_SECONDS = "EntryToProtectionSeconds"  # entry fill recorded -> GTT recorded (includes the delay)
EMERGENCY_EXITS = "EmergencyExits"
BRACKETS_CLOSED = "BracketsClosed"
BRACKET_WORKFLOW_ERRORS = "BracketWorkflowErrors"
CANCEL_REQUESTS = "CancelRequests"  # DELETE of a bracket that acted (cancel the entry or exit the position)
KILL_SWITCH_TRIPPED = "KillSwitchTripped"  # an account flattened and halted for the day (loss limit or by hand)
TIME_EXITS = "TimeExits"  # brackets whose exit_after / exit_at came, handed to the exit (or their entry cancelled)
EXIT_SIGNALS = "ExitSignals"  # a strategy's exit/close/closeall alert or REST close acted on (resends not counted)
BREAKEVEN_STOPS_SET = "BreakevenStopsSet"  # a scale-out share's stop moved to breakeven after the named target
ORDER_UPDATE_DUPLICATES = "OrderUpdateDuplicates"
UNMATCHED_ORDER_UPDATES = "UnmatchedOrderUpdates"
ORDER_UPDATES_MATCHED_BY_TAG = "OrderUpdatesMatchedByTag"  # an update that outran its order id: matched by tag
ORDER_UPDATES_RETRIED = "OrderUpdatesRetried"  # one of our orders nothing maps yet: handed back to SQS to retry

# ---- exits and the broker-side stop ----
EXITS_PLACED = "ExitsPlaced"
EXIT_REJECTED = "ExitRejected"
EXIT_FAILURES = "ExitFailures"
EXIT_SKIPPED_GTT_TRIGGERED = "ExitSkippedGttTriggered"
BROKER_STOP_SYNCED = "BrokerStopSynced"
GTT_ORDERS_CANCELLED = "GttOrdersCancelled"  # a fired GTT's unfilled order cancelled before an exit at market
EXIT_RETRIES = "ExitRetries"  # an exit attempt failed and another was queued (its alarm: exits are failing)

# ---- the broker and its shared order rate limit ----
BROKER_ERRORS = "BrokerErrors"  # every failed broker HTTP attempt (retries count); no extra dimension
ORDER_RATE_LIMIT_WAIT = "OrderRateLimitWait"  # milliseconds a placement waited for the account-wide limiter
ORDER_RATE_LIMITED = "OrderRateLimited"
ORDER_RATE_SLOT_MISSED = "OrderRateSlotMissed"  # an order still unsent past its slot's send-by took another

BROKER_SESSION_MISSING = "BrokerSessionMissing"  # pre-market check: 1 = no working Kite session, 0 = verified

# ---- batch orders ----
BATCHES_REGISTERED = "BatchesRegistered"
DUPLICATE_BATCHES = "DuplicateBatches"  # a resent batch (same client_batch_id) answered with the first one
BATCH_LEGS_FAILED = "BatchLegsFailed"
BATCH_ROLLBACKS = "BatchRollbacks"
BATCH_ROLLBACK_INCOMPLETE = "BatchRollbackIncomplete"
BATCHES_PLACED = "BatchesPlaced"  # Batches<final status>: one per finished batch
BATCHES_ROLLED_BACK = "BatchesRolledBack"
BATCHES_PARTIAL = "BatchesPartial"
BATCHES_FAILED = "BatchesFailed"

# ---- reconciliation ----
RECONCILE_DRIFT = "ReconcileDrift"  # brackets whose broker view disagreed with ours in one run
RECONCILE_FLAGGED = "ReconcileFlagged"  # brackets reconciliation could not repair: NEEDS_REVIEW
ORPHAN_GTTS = "OrphanGtts"  # active GTTs at the broker that no open bracket owns
FINISHED_GTTS_CANCELLED = "FinishedGttsCancelled"  # live GTTs of our finished brackets, cancelled by reconciliation
SQUARE_OFF_EXITS = "SquareOffExits"
SQUARE_OFF_FAILURES = "SquareOffFailures"

# ---- live updates ----
WEBSOCKET_CONNECTS = "WebSocketConnects"
WEBSOCKET_PUSHES = "WebSocketPushes"
WEBSOCKET_PUSH_FAILURES = "WebSocketPushFailures"
TELEGRAM_SENT = "TelegramSent"
TELEGRAM_FAILED = "TelegramFailed"

# ---- the streamer (flushed on a timer, never per tick) ----
STREAMER_HEARTBEAT = "Heartbeat"
STREAMER_WATCHED_BRACKETS = "WatchedBrackets"
STREAMER_EXITS = "Exits"
STREAMER_RECONNECTS = "Reconnects"
STREAMER_TICKS_PER_SECOND = "TicksPerSecond"
STREAMER_MESSAGES_PER_SECOND = "MessagesPerSecond"
STREAMER_FEED_LAG_SECONDS = "FeedLagSeconds"

_NOT_METRICS = {"NAMESPACE"}
ALL: frozenset[str] = frozenset(
    value
    for name, value in dict(globals()).items()
    if name.isupper() and isinstance(value, str) and name not in _NOT_METRICS
)

# Named for the dashboard and alarms but not emitted by any code yet (the test fails once one is, so it moves out).
PENDING: frozenset[str] = frozenset()
