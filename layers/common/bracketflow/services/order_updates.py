"""The watcher: broker order updates in, bracket facts recorded, waiting workflow tasks completed.

Sources (same path for both): the streamer's order-events queue (bracketflow.contracts.OrderEvent) and
Kite postbacks (POST JSON of the order, authenticated by checksum = sha256(order_id + order_timestamp + api_secret)).
Each update is claimed once on (order_id, status, filled_quantity) with a TTL'd conditional put, so the ticker and the
postback delivering the same update act once; a claim whose processing fails is released for the redelivery, and
a claim whose watcher died (no release ran) lapses after ORDER_UPDATE_LEASE_SECONDS, so the redelivery acts.

The broker order is mapped to its bracket by BROKERORDER#<id>/MAP, written with the order id once the placing Lambda
has it. An update can outrun that write (a MARKET exit fills in milliseconds), so every tagged order we place has a
TAG#<tag>/MAP written BEFORE it is placed, and the watcher falls back to it:
  1. BROKERORDER#<order_id> found: act on it (below).
  2. else TAG#<tag> found: record the order id on the bracket first, exactly as the placing Lambda would (entry:
     lifecycle.record_entry_seen; exit: execute_exit.record_exit_seen on a claimed EXITING bracket, or
     emergency_exit.record_exit_seen on an ENTRY_FILLED one), then act. Each of those writes only when the leg has no
     order yet (conditional on the bracket's version), and the placing Lambda's own write is skipped once the order
     is recorded, so either order of arrival ends in the same state; OrderUpdatesMatchedByTag counts these.
  3. else a bracket order tag (order_tag: "BF" + 16 + a leg letter) with neither map: not dropped. The claim is
     released and UpdateNotYetMatched raised, so the queue record fails (partial batch failure) and SQS delivers it
     again after the visibility timeout, up to maxReceiveCount, then the DLQ and its alarm (OrderUpdatesRetried
     counts each). A postback has no redelivery: it is answered 200 with outcome "retry" and its ticker copy on the
     queue carries it.
  4. else (a foreign tag: the trader's own orders, or a batch leg's 20-char tag the saga reads from the broker):
     acknowledged and ignored, counted as UnmatchedOrderUpdates.
Roles:
  ENTRY: COMPLETE -> ENTRY_FILLED; REJECTED -> FAILED with the broker's status_message; CANCELLED -> CANCELLED
         (or ENTRY_FILLED for what filled); a partial fill is recorded on the leg. The WaitForEntryFill token is
         completed with the outcome. With no token stored yet, the fact is still recorded: the waiting task looks at
         the bracket right after storing its token (services/lifecycle.store_entry_token), so nothing is lost.
  EXIT:  COMPLETE -> the exit leg filled, WaitForExit completed; REJECTED/CANCELLED -> EXIT_FAILED (what filled
         kept on the leg) and an exit intent queued to retry for the rest; WaitForExit keeps waiting for that fill.
GTT children carry no tag and no map: a COMPLETE untagged order is a bracket's GTT fill only when the broker names it
as that GTT's own order (GET /gtt/triggers/<id>: the order result of the leg that fired), asked of the open brackets
of the same instrument, exit side and product. Any other untagged fill (a close by hand in the Kite app, the broker's
square-off, another tool) is not the GTT's: it is left to reconciliation, which closes the bracket MANUAL and cancels
its GTT, so a GTT never outlives its position. Also matched: an EXITING bracket with no exit order whose ExitSkipped
event says the exit Lambda found the GTT fired and skipped its own exit; nothing else would record that fill. Such a
bracket without its ExitSkipped yet hands the update back for redelivery (UpdateNotYetMatched).
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

from bracketflow.adapters.aws import invoke_async
from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus
from bracketflow.domain.events import ExitFilled, ExitSkipped
from bracketflow.domain.ids import BRACKET_REF_PREFIX, BrokerOrderId, bracket_ref, order_tag
from bracketflow.observability import logger, metrics
from bracketflow.services import emergency_exit, execute_exit
from bracketflow.services.lifecycle import (
    OrderFact,
    apply_entry_fact,
    apply_exit_fact,
    complete_entry_rest_wait,
    complete_exit_wait,
    event,
    record_entry_seen,
    retrying,
)
from bracketflow.settings import get_settings

PAPER_API_SECRET = "paper-secret"  # the paper exchange's default api_secret (paper/config.py)
# Statuses that tell us nothing new (the order is on its way or resting untouched).
_QUIET = frozenset(
    {"PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "TRIGGER PENDING", "MODIFY PENDING"}
)


# A bracket leg's tag is bracket_ref + one leg letter (19 chars); batch legs add two characters (20), so they differ.
_BRACKET_TAG_LENGTH = len(bracket_ref("")) + 1
_LEG_LETTERS = frozenset(order_tag("", role.value)[-1] for role in LegRole)


def is_bracket_order_tag(tag: str | None) -> bool:
    """True for a tag order_tag() made for one of a bracket's orders (so some bracket will want its updates)."""
    return (
        tag is not None
        and len(tag) == _BRACKET_TAG_LENGTH
        and tag.startswith(BRACKET_REF_PREFIX)
        and tag[-1] in _LEG_LETTERS
    )


class UpdateNotYetMatched(Exception):
    """An update of one of our bracket orders that no map names yet: fail it so the queue delivers it again."""


class BadPostback(ValueError):
    """A postback that is not a Kite order update, or whose checksum does not verify."""


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    return hashlib.sha256(f"{order_id}{order_timestamp}{api_secret}".encode()).hexdigest()


def api_secret() -> str:
    """The Kite app's api_secret from the stage's broker secret; paper mode (local stack only) falls back to the
    paper exchange's. Kite mode never accepts that public default, nor verifies anything without a real secret."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    from bracketflow.adapters.broker.session import read_secret

    paper = get_settings().broker == "paper"
    try:
        value = read_secret().get("api_secret")
    except GetParameterError as exc:
        if not paper:
            raise BadPostback("the broker secret cannot be read, so no postback can be verified") from exc
        value = None
    if not value and paper:
        return PAPER_API_SECRET
    if not value:
        raise BadPostback("no api_secret configured to verify postbacks with")
    if not paper and value == PAPER_API_SECRET:
        raise BadPostback("the broker secret holds the paper exchange's public api_secret, not the Kite app's")
    return str(value)


def verify_postback(body: Any) -> dict[str, Any]:
    """The order of a genuine postback; BadPostback otherwise (the caller answers 401)."""
    if not isinstance(body, dict) or not body.get("order_id") or not body.get("checksum"):
        raise BadPostback("a postback needs order_id, order_timestamp and checksum")
    expected = postback_checksum(str(body["order_id"]), str(body.get("order_timestamp") or ""), api_secret())
    if not hmac.compare_digest(expected, str(body["checksum"])):
        raise BadPostback("postback checksum does not match")
    return body


def ingest(order: dict[str, Any], source: str) -> str:
    """Act on one order update once; returns what happened (for logs and tests)."""
    fact = OrderFact.from_kite(order)
    if fact.status in _QUIET or (fact.status in ("OPEN", "UPDATE") and fact.filled_quantity == 0):
        return "ignored"
    settings = get_settings()
    keep_s, lease_s = settings.order_update_dedupe_s, settings.order_update_lease_s
    if not store.claim_order_update(fact.order_id, fact.status, fact.filled_quantity, keep_s, lease_s):
        metrics.add_metric(name="OrderUpdateDuplicates", unit="Count", value=1)
        return "duplicate"
    try:
        outcome = _apply(fact)
    except Exception:
        # Released so the redelivery (or the same update from the other source) is acted on, not deduplicated away.
        store.release_order_update(fact.order_id, fact.status, fact.filled_quantity)
        raise
    store.finish_order_update(fact.order_id, fact.status, fact.filled_quantity)
    logger.info(
        "order update",
        extra={"order_id": fact.order_id, "status": fact.status, "source": source, "outcome": outcome},
    )
    return outcome


def _apply(fact: OrderFact) -> str:
    mapping = store.get_broker_order_map(fact.order_id)
    if mapping is not None:
        return _apply_to(mapping["role"], mapping["bracket_id"], fact)
    if fact.tag:
        tag_map = store.get_order_tag_map(fact.tag)
        if tag_map is not None:
            return _apply_by_tag(tag_map, fact)
        if is_bracket_order_tag(fact.tag):
            metrics.add_metric(name="OrderUpdatesRetried", unit="Count", value=1)
            logger.warning(
                "update of a bracket order that nothing maps yet; handed back for redelivery",
                extra={"order_id": fact.order_id, "tag": fact.tag, "status": fact.status},
            )
            raise UpdateNotYetMatched(f"order {fact.order_id} (tag {fact.tag}) is not mapped to a bracket yet")
    if not fact.tag and fact.status == "COMPLETE":
        return _gtt_child_filled(fact)
    if not fact.tag and fact.status in ("REJECTED", "CANCELLED") and fact.filled_quantity == 0:
        return _gtt_child_dead(fact)
    metrics.add_metric(name="UnmatchedOrderUpdates", unit="Count", value=1)
    return "unmatched"


def _apply_to(role: str, bracket_id: str, fact: OrderFact) -> str:
    if role == LegRole.ENTRY.value:
        bracket = apply_entry_fact(bracket_id, fact)
        return f"entry:{bracket.status.value}"
    if role == LegRole.EXIT.value:
        bracket = apply_exit_fact(bracket_id, fact)
        return f"exit:{bracket.status.value}"
    return "unmapped-role"


def _apply_by_tag(tag_map: dict[str, Any], fact: OrderFact) -> str:
    """The order's id is not recorded yet: record it as its placing Lambda would, then act on the update."""
    bracket_id, role = str(tag_map["bracket_id"]), str(tag_map["role"])
    bracket = BracketRepository().get(bracket_id)
    if bracket is None:
        metrics.add_metric(name="UnmatchedOrderUpdates", unit="Count", value=1)
        return "unmatched"
    metrics.add_metric(name="OrderUpdatesMatchedByTag", unit="Count", value=1)
    logger.info(
        "order update matched by its tag before its order id was recorded",
        extra={"order_id": fact.order_id, "bracket_id": bracket_id, "role": role, "status": bracket.status.value},
    )
    if role == LegRole.ENTRY.value and bracket.status is BracketStatus.CREATED:
        record_entry_seen(bracket_id, fact.order_id)
    elif role == LegRole.EXIT.value and bracket.exit is None:
        if bracket.status is BracketStatus.EXITING:
            execute_exit.record_exit_seen(bracket_id, fact.order_id, fact.quantity or None)
        elif bracket.status is BracketStatus.ENTRY_FILLED and tag_map.get("exit_reason") and tag_map.get("quantity"):
            emergency_exit.record_exit_seen(bracket_id, fact.order_id, tag_map)
    # The facts below act only when the bracket's leg now carries this order id; a stray order changes nothing.
    return _apply_to(role, bracket_id, fact)


def _fired_into(bracket: Bracket, fact: OrderFact) -> bool:
    """A bracket the exit Lambda claimed (EXITING, no exit order) whose GTT fired first, so the Lambda skipped its own
    exit (ExitSkipped). Claimed but no ExitSkipped yet (the Lambda is between its claim and its look at the GTT's
    order): hand it back."""
    if bracket.status is not BracketStatus.EXITING or bracket.exit is not None:
        return False
    skipped = [e for e in BracketRepository().events(bracket.id) if e.get("type") == ExitSkipped.type]
    if not skipped:
        metrics.add_metric(name="OrderUpdatesRetried", unit="Count", value=1)
        raise UpdateNotYetMatched(f"order {fact.order_id} may be the GTT fill of {bracket.id}, whose exit is undecided")
    return True


def _placed_by_its_gtt(bracket: Bracket, order_id: str) -> bool:
    """The broker names this order as one the bracket's GTT placed when it fired."""
    report = get_broker().gtt(int(str(bracket.gtt_id)))
    return order_id in {str(i) for i in report.triggered_order_ids}


def _on_the_position_of(fact: OrderFact) -> list[Bracket]:
    """Open brackets with a GTT whose exit this untagged order could be: same instrument, product and exit side."""
    return [
        b
        for b in BracketRepository().list_open()
        if b.status in (BracketStatus.PROTECTED, BracketStatus.EXITING)
        and b.gtt_id
        and b.spec.exchange.value == fact.exchange
        and b.spec.symbol == fact.tradingsymbol
        and b.spec.exit_action.value == fact.transaction_type
        and b.spec.product.value == fact.product
    ]


def _gtt_child_dead(fact: OrderFact) -> str:
    """An untagged order refused or cancelled with nothing filled. When a PROTECTED bracket's GTT placed it (the GTT
    fired and the exchange refused its order), nothing protects that position any more, and the streamer dropped
    the bracket when its GTT fired: its reconciliation starts now, not at the next scheduled run, and exits what is
    open at market."""
    owners = [
        b
        for b in _on_the_position_of(fact)
        if b.status is BracketStatus.PROTECTED and _placed_by_its_gtt(b, fact.order_id)
    ]
    if not owners:
        metrics.add_metric(name="UnmatchedOrderUpdates", unit="Count", value=1)
        return "unmatched"
    logger.warning(
        "a GTT's order was refused or cancelled: reconciling its bracket now",
        extra={"order_id": fact.order_id, "status": fact.status, "bracket_ids": [b.id for b in owners]},
    )
    reconcile_at_once([b.id for b in owners], settle_s=0.0)
    return f"gtt-order:{fact.status}"


def _gtt_child_filled(fact: OrderFact) -> str:
    same_position = _on_the_position_of(fact)
    owners = [b for b in same_position if _placed_by_its_gtt(b, fact.order_id)]
    candidates = [b for b in owners if b.status is BracketStatus.PROTECTED or _fired_into(b, fact)]
    if len(candidates) != 1:
        logger.warning(
            "untagged fill that no open bracket's GTT placed; left to reconciliation",
            extra={"order_id": fact.order_id, "candidates": [b.id for b in candidates]},
        )
        metrics.add_metric(name="UnmatchedOrderUpdates", unit="Count", value=1)
        if not owners:  # nothing of ours made this fill on an open bracket's position: a hand close, say
            reconcile_at_once([b.id for b in same_position if b.status is BracketStatus.PROTECTED])
        return "unmatched"
    bracket = _record_gtt_exit(candidates[0].id, fact)
    complete_exit_wait(bracket)
    complete_entry_rest_wait(bracket, changed=True)  # a partly filled entry's rest is cancelled by the workflow
    return f"gtt:{bracket.status.value}"


def reconcile_at_once(bracket_ids: list[str], settle_s: float | None = None) -> None:
    """Start each bracket's reconciliation now (asynchronously), not at the next scheduled run: a position closed by
    hand keeps its GTT until then, and the GTT would fire into the flat account. Best effort: the schedule remains.
    `settle_s`: how long it waits before reading the broker (None: HAND_FILL_SETTLE_S)."""
    name = get_settings().reconcile_bracket_function
    if not name:
        return
    payload: dict[str, Any] = {"now": True} if settle_s is None else {"now": True, "settle_s": settle_s}
    for bracket_id in bracket_ids:
        try:
            invoke_async(name, {"bracket_id": bracket_id, **payload})
        except Exception:
            logger.exception("could not start a bracket's reconciliation", extra={"bracket_id": bracket_id})


def gtt_exit_reason(bracket: Bracket, price: Decimal) -> ExitReason:
    """Which GTT leg filled: the one whose level the fill is nearer to."""
    target, stop = bracket.spec.target_price, bracket.stop_price
    if abs(price - target) < abs(price - stop):
        return ExitReason.TARGET
    return ExitReason.TRAIL_STOP if bracket.stop_has_trailed else ExitReason.STOP


def _record_gtt_exit(bracket_id: str, fact: OrderFact) -> Bracket:
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        claimed = b.status is BracketStatus.EXITING and b.exit is None  # the GTT fired under the exit Lambda's claim
        if b.status is not BracketStatus.PROTECTED and not claimed:
            return None
        price = fact.average_price or Decimal(0)
        leg = LegOrder(
            role=LegRole.EXIT,
            status=OrderStatus.EXECUTED,
            broker_order_id=BrokerOrderId(fact.order_id),
            quantity=fact.quantity,
            filled_quantity=fact.filled_quantity,
            average_price=price,
        )
        reason = gtt_exit_reason(b, price)
        nxt = (
            b.update(exit=leg, exit_reason=reason)
            if claimed
            else b.transition(BracketStatus.EXITING, exit=leg, exit_reason=reason)
        )
        ev = event(
            ExitFilled,
            nxt,
            filled_quantity=fact.filled_quantity,
            average_price=price,
            broker_order_id=fact.order_id,
            gtt_id=b.gtt_id,
            reason=nxt.exit_reason,
        )
        repo.save(
            b,
            nxt,
            [ev],
            legs=[store.leg_put(nxt, leg), store.broker_order_map_item(fact.order_id, nxt, LegRole.EXIT.value)],
        )
        return nxt

    return retrying(bracket_id, step)
