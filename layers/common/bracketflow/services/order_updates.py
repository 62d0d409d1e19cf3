"""The watcher: broker order updates in, bracket facts recorded, waiting workflow tasks completed.

Sources (same path for both): the streamer's order-events queue ({"source":"ticker","received_at","order":{...}}) and
Kite postbacks (POST JSON of the order, authenticated by checksum = sha256(order_id + order_timestamp + api_secret)).
Each update is claimed once on (order_id, status, filled_quantity) with a TTL'd conditional put, so the ticker and the
postback delivering the same update act once; a claim whose processing fails is released for the redelivery.

The broker order is mapped to its bracket by BROKERORDER#<id>/MAP (written when we place an order):
  ENTRY: COMPLETE -> ENTRY_FILLED; REJECTED -> FAILED with the broker's status_message; CANCELLED -> CANCELLED
         (or ENTRY_FILLED for what filled); a partial fill is recorded on the leg. The WaitForEntryFill token is
         completed with the outcome. With no token stored yet, the fact is still recorded: the waiting task looks at
         the bracket right after storing its token (services/lifecycle.store_entry_token), so nothing is lost.
  EXIT:  COMPLETE -> the exit leg filled, WaitForExit completed; REJECTED/CANCELLED -> EXIT_FAILED, WaitForExit
         failed with ExitOrderFailed.
GTT children carry no tag and no map: a COMPLETE untagged order is matched to the one open PROTECTED bracket with
the same instrument, exit side, product and quantity; anything ambiguous is left to reconciliation (a later issue).
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus, PositionSide
from bracketflow.domain.events import ExitFilled
from bracketflow.domain.ids import BrokerOrderId
from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import (
    OrderFact,
    apply_entry_fact,
    apply_exit_fact,
    complete_exit_wait,
    event,
    retrying,
)
from bracketflow.settings import get_settings

PAPER_API_SECRET = "paper-secret"  # the paper exchange's default api_secret (paper/config.py)
# Statuses that tell us nothing new (the order is on its way or resting untouched).
_QUIET = frozenset(
    {"PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "TRIGGER PENDING", "MODIFY PENDING"}
)


class BadPostback(ValueError):
    """A postback that is not a Kite order update, or whose checksum does not verify."""


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    return hashlib.sha256(f"{order_id}{order_timestamp}{api_secret}".encode()).hexdigest()


def api_secret() -> str:
    """The Kite app's api_secret from the broker secret; the paper exchange's default when paper has no secret."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    from bracketflow.adapters.broker.session import read_secret

    try:
        value = read_secret().get("api_secret")
    except GetParameterError:
        if get_settings().broker != "paper":
            raise
        value = None
    if not value and get_settings().broker == "paper":
        return PAPER_API_SECRET
    if not value:
        raise BadPostback("no api_secret configured to verify postbacks with")
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
    if not store.claim_order_update(fact.order_id, fact.status, fact.filled_quantity, settings.order_update_dedupe_s):
        metrics.add_metric(name="OrderUpdateDuplicates", unit="Count", value=1)
        return "duplicate"
    try:
        outcome = _apply(fact)
    except Exception:
        store.release_order_update(fact.order_id, fact.status, fact.filled_quantity)
        raise
    logger.info(
        "order update",
        extra={"order_id": fact.order_id, "status": fact.status, "source": source, "outcome": outcome},
    )
    return outcome


def _apply(fact: OrderFact) -> str:
    mapping = store.get_broker_order_map(fact.order_id)
    if mapping is not None:
        if mapping["role"] == LegRole.ENTRY.value:
            bracket = apply_entry_fact(mapping["bracket_id"], fact)
            return f"entry:{bracket.status.value}"
        if mapping["role"] == LegRole.EXIT.value:
            bracket = apply_exit_fact(mapping["bracket_id"], fact)
            return f"exit:{bracket.status.value}"
        return "unmapped-role"
    if not fact.tag and fact.status == "COMPLETE":
        return _gtt_child_filled(fact)
    metrics.add_metric(name="UnmatchedOrderUpdates", unit="Count", value=1)
    return "unmatched"


def _gtt_child_filled(fact: OrderFact) -> str:
    candidates = [
        b
        for b in BracketRepository().list_open()
        if b.status is BracketStatus.PROTECTED
        and b.spec.exchange.value == fact.exchange
        and b.spec.symbol == fact.tradingsymbol
        and b.spec.exit_action.value == fact.transaction_type
        and b.spec.product.value == fact.product
        and b.entry.filled_quantity == fact.filled_quantity
    ]
    if len(candidates) != 1:
        logger.warning(
            "untagged fill not matched to one protected bracket; left to reconciliation",
            extra={"order_id": fact.order_id, "candidates": [b.id for b in candidates]},
        )
        metrics.add_metric(name="UnmatchedOrderUpdates", unit="Count", value=1)
        return "unmatched"
    bracket = _record_gtt_exit(candidates[0].id, fact)
    complete_exit_wait(bracket)
    return f"gtt:{bracket.status.value}"


def gtt_exit_reason(bracket: Bracket, price: Decimal) -> ExitReason:
    """Which GTT leg filled: the one whose level the fill is nearer to."""
    target, stop = bracket.spec.target_price, bracket.stop_price
    if abs(price - target) < abs(price - stop):
        return ExitReason.TARGET
    trailed = (
        stop > bracket.spec.sl_price if bracket.position_side is PositionSide.LONG else stop < bracket.spec.sl_price
    )
    return ExitReason.TRAIL_STOP if trailed else ExitReason.STOP


def _record_gtt_exit(bracket_id: str, fact: OrderFact) -> Bracket:
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.PROTECTED:
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
        nxt = b.transition(BracketStatus.EXITING, exit=leg, exit_reason=gtt_exit_reason(b, price))
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
