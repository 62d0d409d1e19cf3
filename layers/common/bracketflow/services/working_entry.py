"""The part of an entry that filled is protected at once; the rest of the order may go on working at the broker for
hours (a DAY limit, a thin book). This module is how the bracket workflow follows that rest (statemachine/
bracket.asl.json: WaitForEntryRest -> FollowEntry -> WatchResized, in a loop):

- The first fill, partial or whole, ends WaitForEntryFill (services/lifecycle.apply_entry_fact moves the bracket to
  ENTRY_FILLED and keeps the entry leg SENT_TO_BROKER while the order works); PlaceProtection protects what filled.
- While the entry works, WaitForEntryRest waits for its next change: the watcher records each later fill or the
  rest's end on the entry leg (a conditional write, no status change) and completes the wait; so does the watcher
  when the GTT's own fill takes the bracket out of PROTECTED. Its token is stored, then the entry and the GTT at the
  broker are looked at again, so nothing that happened before is missed (lifecycle.store_entry_rest_token).
- FollowEntry (follow_entry below): the GTT is resized to the filled quantity (Kite's GTT modify, a full replace as
  services/sync_stop.py does: same triggers and prices, new quantity), with a ProtectionResized event; WatchResized
  sends the streamer a fresh watch message with that quantity. When the bracket is no longer PROTECTED (it exits),
  or the entry's validity ran out (the wait's timeout, cancel_rest), the rest is cancelled first.
- Every exit cancels the rest before it acts (settle_before_exit: the exit Lambda, EmergencyExit), so a later fill
  cannot open a position nothing protects; the exit then uses the final filled quantity.

Only the workflow's FollowEntry changes the GTT's quantity, and the bracket's status changes only through the usual
owners (PlaceProtection, the exit paths), each a conditional write.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import BrokerPort, GttRequest
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus
from bracketflow.domain.events import ProtectionResized
from bracketflow.domain.instruments import default_master
from bracketflow.errors import ConcurrentModification
from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import FILLED, cancel_working_entry, event, load, rest_timeout_s, retrying
from bracketflow.services.protect import watch_request
from bracketflow.settings import get_settings

# A resize re-reads the bracket after the modify: a fill recorded meanwhile is resized to in the same run.
RESIZE_ROUNDS = 4


def settle_before_exit(bracket_id: str) -> Bracket:
    """Before any exit: cancel what still works of the entry, so the exit is for the final filled quantity and no
    later fill reopens a position. Returns the bracket as it is now (unchanged when the entry is not working)."""
    return cancel_working_entry(bracket_id, by="exit")


def follow_entry(bracket_id: str, *, cancel_rest: bool = False) -> dict[str, Any]:
    """FollowEntry: after a change of the working entry (or its validity ran out: cancel_rest), cancel the rest when
    the bracket no longer wants it, resize the GTT to what filled, and report for the workflow:
    {"outcome": "FILLED", "filled_quantity", "working", "rest_timeout_s"?, "protected", "gtt_id", "watch"?}."""
    bracket = load(bracket_id)
    if bracket.entry_working and (cancel_rest or bracket.status is not BracketStatus.PROTECTED):
        bracket = cancel_working_entry(bracket_id, by="timeout" if cancel_rest else "exit")
    bracket = resize_protection(bracket_id)
    out: dict[str, Any] = {
        "outcome": FILLED,
        "filled_quantity": bracket.entry.filled_quantity,
        "working": bracket.entry_working,
        "protected": bracket.status is BracketStatus.PROTECTED,
        "gtt_id": bracket.gtt_id,
    }
    if bracket.entry_working:
        out["rest_timeout_s"] = rest_timeout_s(bracket)
    if out["protected"]:
        out["watch"] = _watch(bracket)
    return out


def resize_protection(bracket_id: str, *, broker: BrokerPort | None = None) -> Bracket:
    """Make the PROTECTED bracket's GTT protect exactly its filled quantity; returns the bracket as last read.
    Nothing to do when the bracket is not PROTECTED or its GTT is no longer active (it fired, or an exit deleted it)."""
    broker = broker or get_broker()
    bracket = load(bracket_id)
    for _ in range(RESIZE_ROUNDS):
        if bracket.status is not BracketStatus.PROTECTED or not bracket.gtt_id:
            return bracket
        gtt_id = int(bracket.gtt_id)
        gtt = broker.gtt(gtt_id)
        want = bracket.entry.filled_quantity
        if gtt.status != "active" or all(leg.quantity == want for leg in gtt.orders):
            return bracket
        old = gtt.orders[0].quantity
        key = f"{gtt.exchange}:{gtt.tradingsymbol}"
        last = broker.ltp([key]).get(key) or gtt.last_price or bracket.entry.average_price or Decimal(0)
        request = GttRequest(
            exchange=gtt.exchange,
            tradingsymbol=gtt.tradingsymbol,
            trigger_values=tuple(Decimal(t) for t in gtt.trigger_values),
            last_price=last,
            orders=tuple(replace(leg, quantity=want) for leg in gtt.orders),
        )
        broker.modify_gtt(gtt_id, request)
        _record_resized(bracket_id, str(gtt_id), old, want)
        metrics.add_metric(name=metrics_names.PROTECTIONS_RESIZED, unit="Count", value=1)
        logger.info(
            "GTT resized to the filled quantity",
            extra={"bracket_id": bracket_id, "gtt_id": gtt_id, "old_quantity": old, "quantity": want},
        )
        bracket = load(bracket_id)  # a fill recorded while we modified: resize again
    raise ConcurrentModification(f"bracket {bracket_id}: its entry kept filling while its GTT was resized")


def _record_resized(bracket_id: str, gtt_id: str, old: int, new: int) -> None:
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.PROTECTED or b.gtt_id != gtt_id:
            return None  # it exits meanwhile: the exit path owns the GTT now; the broker's view is the record
        nxt = b.update()
        repo.save(b, nxt, [event(ProtectionResized, nxt, gtt_id=gtt_id, old_quantity=old, quantity=new)])
        return nxt

    retrying(bracket_id, step)


def _watch(bracket: Bracket) -> dict[str, Any]:
    """The streamer's watch message for the bracket as it is now (its new quantity)."""
    spec = bracket.spec
    instrument = default_master().get(spec.exchange.value, spec.symbol)
    tick = instrument.tick_size if instrument and instrument.tick_size > 0 else get_settings().default_tick_size
    token: int | None
    if instrument is not None:
        token = instrument.instrument_token
    else:
        key = f"{spec.exchange.value}:{spec.symbol}"
        quote = get_broker().quote([key]).get(key)
        token = quote.instrument_token if quote is not None else 0
    return watch_request(bracket, token or 0, tick).to_dict()
