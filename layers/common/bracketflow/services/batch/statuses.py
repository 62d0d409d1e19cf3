"""A batch's statuses, its legs' statuses and a leg's compensation outcomes, as the batch records store them."""

# Batch statuses. IN_PROGRESS and ROLLING_BACK are on the way; the other four are final.
IN_PROGRESS = "IN_PROGRESS"
ROLLING_BACK = "ROLLING_BACK"
PLACED = "PLACED"  # every leg placed
PARTIAL = "PARTIAL"  # some legs placed, some not, and rollback was off
ROLLED_BACK = "ROLLED_BACK"  # a leg failed and every placed leg was cancelled or squared off
FAILED = "FAILED"  # nothing placed, or a compensation gave up (needs review: see the legs)
FINAL_STATUSES = frozenset({PLACED, PARTIAL, ROLLED_BACK, FAILED})

# Leg statuses.
LEG_CREATED = "CREATED"
LEG_PLACED = "PLACED"  # the broker accepted it (it may be open or filled: see broker_status, filled_quantity)
LEG_FAILED = "FAILED"  # rejected, or could not be placed
LEG_CANCELLED = "CANCELLED"  # rolled back: cancelled while open, nothing had filled
LEG_SQUARED_OFF = "SQUARED_OFF"  # rolled back: what had filled was closed with an opposite MARKET order

# A leg's compensation.
ROLLBACK_DONE = "DONE"
ROLLBACK_NOT_NEEDED = "NOT_NEEDED"  # the leg never reached the broker (or the broker rejected it)
ROLLBACK_GAVE_UP = "GAVE_UP"  # retried for the saga's whole budget and still failing: needs a human
