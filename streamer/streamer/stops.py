"""Trailed stops leave the streamer two ways, both coalesced and both off the tick thread:

1. Persistence (DynamoDB): every `persist_interval_s` the stops that moved since the last round are written, one
   write per bracket per round, latest value only. The write reads the bracket and saves it through the repository
   (conditional on the version it read, with a StopTrailed audit event in the same transaction) only while it is
   PROTECTED and only when the new stop is tighter than the stored one — a stored stop never loosens, even when
   a stale streamer (say, the one being replaced) writes late. Audit events are per write, not per tick.
2. Broker-side stop sync (StopSyncQueue -> functions/sync_stop, which modifies the GTT's stop leg): when a stop
   has improved on the last synced one by at least `step_percent` of its price (and at least a tick), and at
   most once per `sync_interval_s` per bracket, so an outage of the streamer still leaves a recent stop at the
   broker without spending Kite's modification budget on every tick.
Message: contracts.StopSyncRequest.

A price breakeven (breakeven_at reached) is stored with its own audit event (BreakevenStopSet) and synced to the
broker at once, without waiting for the step or the interval: the trader asked for that stop at that price.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.contracts import StopSyncRequest, wire_time
from bracketflow.domain.enums import BracketStatus
from bracketflow.domain.events import BreakevenStopSet, StopTrailed
from bracketflow.domain.trailing import to_rupees
from bracketflow.errors import ConcurrentModification
from bracketflow.observability import logger

WRITTEN = "written"
NOT_TIGHTER = "not_tighter"
NOT_PROTECTED = "not_protected"
MISSING = "missing"
CONFLICT = "conflict"
_ATTEMPTS = 3


def persist_stop(repo: BracketRepository, bracket_id: str, stop: Decimal, *, is_long: bool) -> str:
    """Store a trailed stop if it is tighter than the stored one and the bracket is still PROTECTED."""
    for _ in range(_ATTEMPTS):
        bracket = repo.get(bracket_id)
        if bracket is None:
            return MISSING
        if bracket.status is not BracketStatus.PROTECTED:
            return NOT_PROTECTED
        if (stop <= bracket.stop_price) if is_long else (stop >= bracket.stop_price):
            return NOT_TIGHTER
        event = StopTrailed(
            bracket_id,
            data={"old_stop": bracket.stop_price, "new_stop": stop},
            bracket_version=bracket.version + 1,
        )
        try:
            repo.append_event(bracket, event, stop_price=stop)
            return WRITTEN
        except ConcurrentModification:
            continue  # someone else wrote it (the workflow, the exit Lambda): read again and decide again
    return CONFLICT


def persist_breakeven(repo: BracketRepository, bracket_id: str, stop: Decimal, price: Decimal, *, is_long: bool) -> str:
    """Store the stop a price breakeven set (`price`: what reached breakeven_at), on the terms of persist_stop."""
    for _ in range(_ATTEMPTS):
        bracket = repo.get(bracket_id)
        if bracket is None:
            return MISSING
        if bracket.status is not BracketStatus.PROTECTED:
            return NOT_PROTECTED
        if (stop <= bracket.stop_price) if is_long else (stop >= bracket.stop_price):
            return NOT_TIGHTER
        spec = bracket.spec
        event = BreakevenStopSet(
            bracket_id,
            data={
                "old_stop": bracket.stop_price,
                "new_stop": stop,
                "entry_price": bracket.entry.average_price or spec.entry_price,
                "buffer": spec.breakeven_buffer or 0,
                "breakeven_at": spec.breakeven_at,
                "price": price,
            },
            bracket_version=bracket.version + 1,
        )
        try:
            repo.append_event(bracket, event, stop_price=stop)
            return WRITTEN
        except ConcurrentModification:
            continue
    return CONFLICT


@dataclass
class SyncState:
    """Per bracket: the stop last sent to the broker (or the GTT's own, at watch time) and when."""

    is_long: bool
    synced_stop: int  # paise
    synced_at: float | None = None


class StopKeeper:
    def __init__(
        self,
        repo: BracketRepository,
        sync_publish: Callable[[dict[str, Any]], None],
        *,
        step_percent: Decimal,
        sync_interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._repo = repo
        self._sync_publish = sync_publish
        self._step_bps = int(step_percent * 100)
        self._sync_interval_s = sync_interval_s
        self._clock = clock
        self._sync: dict[str, SyncState] = {}
        self.writes: dict[str, int] = {}  # outcome -> count
        self.syncs_sent = 0
        self.breakevens_stored = 0  # price breakevens this streamer stored (its BreakevenStopsSet metric)

    def track(self, bracket_id: str, *, is_long: bool, broker_stop: int) -> None:
        """A newly watched bracket; broker_stop is the stop its GTT holds now (paise). The GTT was placed (or last
        synced, by a streamer before a restart) recently as far as we know, so the first sync waits an interval too:
        the GTT stays a backstop a little behind the streamer's stop, and the streamer's exit normally comes first."""
        self._sync.setdefault(bracket_id, SyncState(is_long, broker_stop, self._clock()))

    def forget(self, bracket_id: str) -> None:
        self._sync.pop(bracket_id, None)

    def persist(self, changes: dict[str, int]) -> dict[str, str]:
        """Write each changed stop once (the engine already coalesced them to the latest value)."""
        outcomes: dict[str, str] = {}
        for bracket_id, stop in changes.items():
            state = self._sync.get(bracket_id)
            if state is None:
                continue  # unwatched since
            try:
                outcome = persist_stop(self._repo, bracket_id, to_rupees(stop), is_long=state.is_long)
            except Exception as exc:  # DynamoDB trouble: the next round writes the then-latest stop
                logger.warning("stop write failed", extra={"bracket_id": bracket_id, "error": str(exc)})
                outcome = "error"
            outcomes[bracket_id] = outcome
            self.writes[outcome] = self.writes.get(outcome, 0) + 1
            logger.info(
                "trailed stop", extra={"bracket_id": bracket_id, "stop_price": str(to_rupees(stop)), "write": outcome}
            )
        return outcomes

    def persist_breakevens(self, fired: dict[str, tuple[int, int]], stops: dict[str, int]) -> dict[str, str]:
        """Store each price breakeven (bracket_id -> (its stop, the price that reached the trigger)) and, once stored,
        send its bracket's current stop to the broker at once."""
        outcomes: dict[str, str] = {}
        for bracket_id, (stop, price) in fired.items():
            state = self._sync.get(bracket_id)
            if state is None:
                continue  # unwatched since
            try:
                outcome = persist_breakeven(
                    self._repo, bracket_id, to_rupees(stop), to_rupees(price), is_long=state.is_long
                )
            except Exception as exc:  # DynamoDB trouble: the trail's write and sync still carry the stop
                logger.warning("breakeven write failed", extra={"bracket_id": bracket_id, "error": str(exc)})
                outcome = "error"
            outcomes[bracket_id] = outcome
            self.writes[outcome] = self.writes.get(outcome, 0) + 1
            logger.info(
                "breakeven stop", extra={"bracket_id": bracket_id, "stop_price": str(to_rupees(stop)), "write": outcome}
            )
            if outcome == WRITTEN:
                self.breakevens_stored += 1
                self._send(bracket_id, state, stops.get(bracket_id, stop))
        return outcomes

    def _send(self, bracket_id: str, state: SyncState, stop: int) -> None:
        self._sync_publish(StopSyncRequest(bracket_id, to_rupees(stop), wire_time(datetime.now(UTC))).to_dict())
        state.synced_stop, state.synced_at = stop, self._clock()
        self.syncs_sent += 1

    def sync(self, stops: dict[str, int], tick_of: Callable[[str], int]) -> list[str]:
        """Send stop-sync intents for brackets whose stop improved enough, at most once per interval."""
        now = self._clock()
        sent = []
        for bracket_id, stop in stops.items():
            state = self._sync.get(bracket_id)
            if state is None:
                continue
            gain = stop - state.synced_stop if state.is_long else state.synced_stop - stop
            step = max(tick_of(bracket_id), abs(state.synced_stop) * self._step_bps // 10000)
            if gain < step:
                continue
            if state.synced_at is not None and now - state.synced_at < self._sync_interval_s:
                continue
            self._send(bracket_id, state, stop)
            sent.append(bracket_id)
        return sent
