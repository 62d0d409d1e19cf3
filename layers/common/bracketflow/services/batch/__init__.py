"""Batch orders (docs/state-machines.md): 1..10 orders placed together, all-or-nothing when asked.

The use cases, in the order the saga (statemachine/batch.asl.json) runs them:
  register_batch   validate every leg like a single order, record the batch + legs + event, start the saga
  place_leg        place one leg (Map, bounded concurrency, under the account-wide order rate limiter)
  settle_placements  after the Map: record legs the Map gave up on, decide PLACED / PARTIAL / FAILED, or start a
                   rollback and hand back the legs to undo in REVERSE order
  rollback_leg     compensate one leg: cancel it while open, square off what filled (MARKET, market protection)
  finish_batch     after the rollback Map: ROLLED_BACK, or FAILED with an alarm metric when a compensation gave up
and the reads: get_batch (the API's response shape + each leg + the batch status) and wait_for_batch.
Each job has its module here: legs (validation, broker tags), registration (the POST, idempotency), saga (the
steps), views (the reads), statuses; this package re-exports their public names.

Quantity: `quantity` is in UNITS, as Kite takes it and as the API's example sends it (50 = one NIFTY lot then);
it must be a positive multiple of the instrument's lot size (NIFTY options: 75), or the leg is refused.

A resent POST (a client timeout, a retry) is made safe by an optional client_batch_id (or the Idempotency-Key
header, the same thing): its key DEDUPE#<account>#BATCH#<id> is written in the SAME transaction as the batch, so of
any number of concurrent sends exactly one records a batch and starts its saga. A resend with the same legs and
rollback_on_failure inside CLIENT_BATCH_ID_WINDOW_SECONDS (default 24 h) answers that batch as it is now, with
"duplicate": true; the same id with a different batch is refused 409 and nothing is written.

Idempotency, because Step Functions retries and a Lambda may run twice:
- every leg's order carries a deterministic tag (leg_tag), and place_leg looks the tag up at the broker before
  placing, so a rerun adopts the order instead of placing another;
- a square-off carries its own deterministic tag (square_off_tag) and is looked up the same way;
- every leg change is a conditional write with its audit event in one transaction: a second run writes nothing
  and returns what the first recorded, without calling the broker.
"""

from bracketflow.services.batch.legs import (
    MAX_LEGS,
    MAX_PRICE,
    MAX_QUANTITY,
    BatchLeg,
    leg_tag,
    square_off_tag,
    validate_leg,
    validate_legs,
)
from bracketflow.services.batch.registration import (
    batch_request_hash,
    parse_client_batch_id,
    place_batch,
    register_batch,
)
from bracketflow.services.batch.saga import (
    LegStillOpen,
    SquareOffRejected,
    finish_batch,
    place_leg,
    rollback_leg,
    settle_placements,
)
from bracketflow.services.batch.statuses import (
    FAILED,
    FINAL_STATUSES,
    IN_PROGRESS,
    LEG_CANCELLED,
    LEG_CREATED,
    LEG_FAILED,
    LEG_PLACED,
    LEG_SQUARED_OFF,
    PARTIAL,
    PLACED,
    ROLLBACK_DONE,
    ROLLBACK_GAVE_UP,
    ROLLBACK_NOT_NEEDED,
    ROLLED_BACK,
    ROLLING_BACK,
)
from bracketflow.services.batch.views import batch_view, get_batch, is_final, wait_for_batch

__all__ = [
    "FAILED",
    "FINAL_STATUSES",
    "IN_PROGRESS",
    "LEG_CANCELLED",
    "LEG_CREATED",
    "LEG_FAILED",
    "LEG_PLACED",
    "LEG_SQUARED_OFF",
    "MAX_LEGS",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "PARTIAL",
    "PLACED",
    "ROLLBACK_DONE",
    "ROLLBACK_GAVE_UP",
    "ROLLBACK_NOT_NEEDED",
    "ROLLED_BACK",
    "ROLLING_BACK",
    "BatchLeg",
    "LegStillOpen",
    "SquareOffRejected",
    "batch_request_hash",
    "batch_view",
    "finish_batch",
    "get_batch",
    "is_final",
    "leg_tag",
    "parse_client_batch_id",
    "place_batch",
    "place_leg",
    "register_batch",
    "rollback_leg",
    "settle_placements",
    "square_off_tag",
    "validate_leg",
    "validate_legs",
    "wait_for_batch",
]
