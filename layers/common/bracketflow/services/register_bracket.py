"""Register a bracket (REST or TradingView), check it, and start its workflow. Nothing here calls the broker.

1. The caller is authenticated (before this).
2. The request becomes a validated BracketSpec (instrument tick/lot) -> 400; nothing is written for bad input.
3. A resend is recognised next, by its live dedupe keys, and answered 200 "duplicate": true with the original id.
   Only then is one placement token spent (per key, PLACEMENT_RATE_LIMIT_PER_SECOND) -> 429: neither a resend nor
   a request refused for bad input or bad credentials uses up the key's placements.
4. The bracket, its three legs (ENTRY, STOP, TARGET) and its BracketRegistered event are written as CREATED in
   ONE transaction, together with its dedupe keys (client_order_id for 24 h, a webhook alert's hash for 5 min).
   A dedupe key already taken by the same request means a resend: 200 "duplicate": true with the original id,
   and nothing new is written, so concurrent resends still make exactly one bracket (docs/reliability.md).
   A scale-out (targets with shares, domain/scale_out.py) writes one bracket per share in that one transaction, each
   knowing all of them (`group`); its dedupe keys name the first share, and its resend answers every share.
5. Risk, guard and duplicate checks (services/risk.py) -> FAILED with the block tag + BracketBlocked event,
   answered 403 (risk) or 409 (guard, duplicate) with the bracket id and tag. Blocked brackets stay in the book.
   A scale-out is checked once, as the one position it is (its whole quantity), and blocked or started whole.
6. StartExecution(name=bracket_id). If it fails for our reasons the bracket stays CREATED with a
   WorkflowStartFailed event and resume_unstarted_brackets() (reconciliation, or by hand) starts it later;
   the execution name makes that start safe to repeat.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo import accounts as account_store
from bracketflow.adapters.dynamo import halts, keylimit
from bracketflow.adapters.dynamo import intake as intake_store
from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import BracketRepository, ConditionalPut, ExtraConditionFailed
from bracketflow.adapters.instrument_store import current_master
from bracketflow.adapters.sfn import WorkflowNotStarted, start_bracket_workflow
from bracketflow.domain.accounts import Account, Caller
from bracketflow.domain.bracket import Bracket, BracketSpec
from bracketflow.domain.calendar import IST
from bracketflow.domain.enums import BlockKind, BracketStatus, Exchange, LegRole, OrderStatus
from bracketflow.domain.events import BracketBlocked as BracketBlockedEvent
from bracketflow.domain.events import BracketRegistered
from bracketflow.domain.ids import BracketId, new_bracket_id
from bracketflow.domain.instruments import index_called
from bracketflow.domain.scale_out import share_specs
from bracketflow.domain.sizing import Sizing, size_from_risk
from bracketflow.domain.validation import parse_exchange, split_symbol, validate_bracket
from bracketflow.errors import BracketRefused, Forbidden, NotFound, RateLimited, ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.services import risk
from bracketflow.services.accounts import default_limits
from bracketflow.settings import get_settings

DEFAULT_STRATEGY = "default"
_BLOCK_STATUS = {BlockKind.RISK_BLOCKED: 403, BlockKind.GUARD_BLOCKED: 409, BlockKind.DUPLICATE_BLOCKED: 409}


def now_ms() -> int:
    """The clock the placement limiter reads (tests replace it to stay independent of machine speed)."""
    return int(time.time() * 1000)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Placement:
    bracket: Bracket
    duplicate: bool = False
    workflow_started: bool = True
    sizing: Sizing | None = None  # the quantity worked out from risk, and why
    shares: tuple[Bracket, ...] = ()  # a scale-out: every share's bracket in share order (`bracket` is the first)


def check_placement_rate(
    caller: Caller, account: Account | None = None, *, what: str = "bracket orders"
) -> Account | None:
    """Spend one placement token for the caller's key (429 when none is left); returns the account it read.

    One bucket per key for every REST placing request (a bracket, a batch): `what` only names them in the 429.
    The account's own placement rate, if set, overrides PLACEMENT_RATE_LIMIT_PER_SECOND; PLACEMENT_BURST sizes it.
    """
    account = account or account_store.get_account(caller.account_id)
    settings = get_settings()
    rate = (account.placement_rate_per_second if account else None) or settings.placement_rate_per_second
    if not keylimit.try_acquire(caller.key_hash, rate, now_ms(), burst=settings.placement_burst or None):
        raise RateLimited(f"rate limit exceeded: at most {_shown(rate)} {what} per second for this API key")
    return account


def check_alert_rate(caller: Caller, account: Account | None = None) -> Account | None:
    """Spend one token of the key's TradingView bucket (ALERT_RATE_LIMIT_PER_SECOND, ALERT_BURST): 429 past it.

    Sized so a burst of alerts on one candle close (a screener over 100 symbols) is all accepted and registered,
    while a runaway alert loop is still stopped; the entries reach the broker paced by the account-wide limiter."""
    settings = get_settings()
    rate, burst = settings.alert_rate_per_second, settings.alert_burst
    if not keylimit.try_acquire(caller.key_hash, rate, now_ms(), burst=burst or None, scope="ALERT"):
        raise RateLimited(
            f"rate limit exceeded: at most {burst or _shown(rate)} alerts at once and {_shown(rate)} per second after"
            " that for this API key"
        )
    return account or account_store.get_account(caller.account_id)


def _shown(rate: float) -> str:
    return str(int(rate)) if float(rate).is_integer() else str(rate)


def normalise(spec: BracketSpec, caller: Caller, *, round_to_tick: bool) -> BracketSpec:
    """Apply the caller's strategy rules, then validate against the instrument (tick size and lot size)."""
    return normalise_sized(spec, caller, round_to_tick=round_to_tick)[0]


def normalise_sized(
    spec: BracketSpec, caller: Caller, *, round_to_tick: bool, account: Account | None = None
) -> tuple[BracketSpec, Sizing | None]:
    """normalise(), and the quantity worked out from risk_amount / risk_percent when the request sized by risk."""
    checked, sizing, _tick, _lot = _normalise(spec, caller, round_to_tick=round_to_tick, account=account)
    return checked, sizing


def _normalise(
    spec: BracketSpec, caller: Caller, *, round_to_tick: bool, account: Account | None = None
) -> tuple[BracketSpec, Sizing | None, Decimal, int]:
    """normalise_sized(), and the instrument's tick and lot size."""
    if caller.strategy is not None:
        if spec.strategy not in (None, "", caller.strategy):
            raise Forbidden(f"this webhook token places brackets only for strategy {caller.strategy!r}")
        spec = replace(spec, strategy=caller.strategy)
    settings = get_settings()
    tick, lot = settings.default_tick_size, 1
    # The exchange and symbol first (with the validator's own messages), so the instrument can be looked up.
    in_symbol, symbol = split_symbol(spec.symbol)
    exchange = parse_exchange(spec.exchange) if spec.exchange else in_symbol
    if exchange is None:
        raise ValidationFailed("exchange is required: one of " + ", ".join(Exchange.values()))
    index = index_called(exchange.value, symbol)
    if index is not None:  # the broker would refuse it, and the streamer skips index packets: never protected
        raise ValidationFailed(f"{index} is an index and cannot be traded: place the bracket on its futures or options")
    # Kite mode: Kite's own list of the day; paper: the paper exchange's. A symbol in neither is refused by name,
    # never given a guessed tick or lot size.
    instrument = current_master().get(exchange.value, symbol)
    if instrument is None:
        raise ValidationFailed(f"unknown instrument {exchange}:{symbol}: not in the instrument master")
    if not instrument.tradable:
        raise ValidationFailed(f"{exchange}:{symbol} is an index and cannot be traded")
    if instrument.expiry is not None and instrument.expiry < utc_now().astimezone(IST).date():
        raise ValidationFailed(f"{exchange}:{symbol} expired on {instrument.expiry.isoformat()}")
    tick = instrument.tick_size if instrument.tick_size > 0 else tick
    lot = instrument.lot_size if instrument.lot_size > 0 else lot
    by_risk = spec.risk_amount is not None or spec.risk_percent is not None
    if by_risk:
        spec = replace(spec, quantity=lot)  # checked first as one lot; sized below from the checked levels
    checked = validate_bracket(spec, tick_size=tick, lot_size=lot, round_to_tick=round_to_tick)
    checked = replace(checked, strategy=checked.strategy or DEFAULT_STRATEGY)
    if checked.exit_at is not None and utc_now().astimezone(IST).strftime("%H:%M") >= checked.exit_at:
        raise ValidationFailed(f"exit_at {checked.exit_at} IST has already passed today")
    if not by_risk:
        return checked, None, tick, lot
    entry = checked.entry_price or checked.trigger_price
    if entry is None:
        raise ValidationFailed("risk sizing needs entry_price (send {{close}} with a MARKET entry)")
    account = account or account_store.get_account(caller.account_id)
    limits = account.limits if account else default_limits()
    sizing = size_from_risk(
        risk_amount=checked.risk_amount,
        risk_percent=checked.risk_percent,
        capital=(account.capital if account else None) or get_settings().default_capital,
        entry=entry,
        stop=checked.sl_price,
        lot_size=lot,
        max_order_value=limits.max_order_value,
    )
    return replace(checked, quantity=sizing.quantity), sizing, tick, lot


def request_hash(spec: BracketSpec) -> str:
    """What makes two requests "the same": the normalised spec (so NSE:INFY == INFY on NSE, "10" == 10)."""
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()


def place(
    caller: Caller,
    spec: BracketSpec,
    *,
    round_to_tick: bool,
    dedupe_alert: bool,
    account: Account | None = None,
    spend_placement_token: Callable[[], Account | None] | None = None,
) -> Placement:
    """Register, check and start one bracket (steps 2-6 of the module doc); raises the 4xx errors.

    spend_placement_token (check_placement_rate for the caller) runs once the request is known valid and new."""
    spec, sizing, tick, lot = _normalise(spec, caller, round_to_tick=round_to_tick, account=account)
    repo = BracketRepository()
    now = utc_now()
    now_s = int(now.timestamp())
    digest = request_hash(spec)
    brackets = _register(caller, spec, now, tick=tick, lot=lot, round_to_tick=round_to_tick)
    keys = _dedupe_keys(caller, spec, digest, dedupe_alert=dedupe_alert)

    resent = _original_of_resend(repo, keys, digest, now_s)
    if resent is not None:
        return resent
    if spend_placement_token is not None:
        account = spend_placement_token() or account

    reused_client_id = False
    for _attempt in range(3):
        extra = [intake_store.dedupe_put(k, brackets[0].id, digest, now_s, w) for k, w in keys]
        try:
            _create(repo, brackets, extra, sizing)
            break
        except ExtraConditionFailed as lost:
            key = keys[lost.index][0]
            existing = intake_store.get_dedupe(key, now_s)
            if existing is None:
                continue  # it expired in between: try again
            if existing["request_hash"] == digest:
                original = _resend_answer(repo, existing)
                if original is not None:
                    return original
                continue
            # Same client_order_id, different request: record it, then refuse it (below), keeping the key's owner.
            reused_client_id = True
            keys = [k for k in keys if k[0] != key]
    else:
        raise ValidationFailed("the request collided with a concurrent one; send it again")

    if reused_client_id:
        block: risk.Block | None = risk.Block(BlockKind.DUPLICATE_BLOCKED, "CLIENT_ORDER_ID_REUSED")
    else:
        block = _run_checks(repo, spec, brackets, account or account_store.get_account(caller.account_id), now)
    if block is not None:
        _refuse(repo, brackets, block)
    started = [start_workflow(repo, b) for b in brackets]
    metrics.add_metric(name="BracketsRegistered", unit="Count", value=len(brackets))
    shares = tuple(brackets) if spec.targets else ()
    return Placement(bracket=brackets[0], workflow_started=all(started), sizing=sizing, shares=shares)


def _dedupe_keys(
    caller: Caller, spec: BracketSpec, digest: str, *, dedupe_alert: bool
) -> list[tuple[dict[str, str], int]]:
    """The request's dedupe keys and their windows: its client_order_id, and a webhook alert's content hash."""
    settings = get_settings()
    keys: list[tuple[dict[str, str], int]] = []
    if spec.client_order_id:
        keys.append((r.dedupe_client_key(caller.account_id, spec.client_order_id), settings.client_order_id_window_s))
    if dedupe_alert:
        keys.append((r.dedupe_alert_key(caller.account_id, digest), settings.alert_dedupe_window_s))
    return keys


def _register(
    caller: Caller, spec: BracketSpec, now: datetime, *, tick: Decimal, lot: int, round_to_tick: bool
) -> list[Bracket]:
    """The request's new bracket, or one per share of a scale-out (linked by `group`), in CREATED."""
    specs = share_specs(spec, tick_size=tick, lot_size=lot, round_to_tick=round_to_tick) if spec.targets else [spec]
    ids = [new_bracket_id() for _ in specs]
    group: tuple[BracketId, ...] = tuple(ids) if spec.targets else ()
    reverse_of: tuple[BracketId, ...] = ()
    if spec.reverse:
        reverse_of = tuple(b.id for b in BracketRepository().list_open(caller.account_id) if _reversed_by(b, spec))
    return [
        replace(Bracket.register(s, bracket_id=i, now=now), group=group, reverse_of=reverse_of)
        for s, i in zip(specs, ids, strict=True)
    ]


def _refuse(repo: BracketRepository, brackets: list[Bracket], block: risk.Block) -> None:
    """Block every bracket of the request (each share of a scale-out) and answer with the first one's id and, for a
    scale-out, every share's: each is a FAILED record the trader finds in the order book."""
    blocked = [_block(repo, b, block) for b in brackets]
    raise BracketRefused(
        f"bracket {blocked[0].id} blocked: {block.tag}",
        bracket_id=blocked[0].id,
        tag=block.tag,
        status_code=_BLOCK_STATUS[block.kind],
        shares=tuple(
            {"bracket_id": b.id, "share_index": b.spec.share_index, "bracket_status": b.status.value} for b in blocked
        )
        if len(blocked) > 1
        else (),
    )


def _reversed_by(other: Bracket, spec: BracketSpec) -> bool:
    """An open bracket of the same strategy on the same instrument the other way: what a reverse closes first."""
    o = other.spec
    return (
        o.symbol == spec.symbol
        and o.exchange is spec.exchange
        and (o.strategy or DEFAULT_STRATEGY) == spec.strategy
        and o.action is not spec.action
    )


def _original_of_resend(
    repo: BracketRepository, keys: list[tuple[dict[str, str], int]], digest: str, now_s: int
) -> Placement | None:
    """The original bracket when a live dedupe key already holds this very request (a resend), else None.

    A read before any token is spent; the conditional write below still settles resends that race each other."""
    for key, _window in keys:
        existing = intake_store.get_dedupe(key, now_s)
        if existing is not None and existing["request_hash"] == digest:
            return _resend_answer(repo, existing)
    return None


def _resend_answer(repo: BracketRepository, dedupe: dict[str, Any]) -> Placement | None:
    original = repo.get(dedupe["bracket_id"])
    if original is None:
        return None
    metrics.add_metric(name="DuplicateAlerts", unit="Count", value=1)
    logger.info("resent request answered with the original bracket", extra={"bracket_id": original.id})
    shares = tuple(b for b in (repo.get(i) for i in original.group) if b is not None) if original.group else ()
    for bracket in shares or (original,):
        if bracket.status is BracketStatus.CREATED:
            # The first attempt may have died between writing the bracket and starting its workflow (a timeout, a
            # crash); start it now rather than at the next resume sweep. One execution per bracket id: a workflow
            # already running makes this a no-op.
            start_workflow(repo, bracket)
    return Placement(bracket=original, duplicate=True, shares=shares)


def _create(
    repo: BracketRepository, brackets: list[Bracket], extra: list[ConditionalPut], sizing: Sizing | None
) -> None:
    """Every bracket of the request (one, or a scale-out's shares) with its legs and event, in one transaction."""
    writes = []
    for bracket in brackets:
        at = r.iso(bracket.created_at)
        legs = [
            r.leg_item(
                bracket.id,
                bracket.account_id,
                role.value,
                OrderStatus.CREATED.value,
                at,
                quantity=bracket.spec.quantity,
            )
            for role in (LegRole.ENTRY, LegRole.STOP, LegRole.TARGET)
        ]
        data = bracket.spec.to_dict() | ({"sizing": sizing.to_dict()} if sizing is not None else {})
        if bracket.reverse_of:
            data["reverse_of"] = list(bracket.reverse_of)
        if bracket.group:
            data["group"] = list(bracket.group)
        event = BracketRegistered(bracket_id=bracket.id, data=data, at=bracket.created_at, bracket_version=1)
        writes.append((bracket, [event], legs))
    repo.create_many(writes, extra=extra)


def _run_checks(
    repo: BracketRepository, spec: BracketSpec, brackets: list[Bracket], account: Account | None, now: datetime
) -> risk.Block | None:
    """The risk, guard and duplicate checks for the request as a whole (a scale-out's shares are one position)."""
    bracket = brackets[0]
    account_id = bracket.account_id
    limits = account.limits if account else default_limits()
    halted = halts.halt_reason(account_id, now)
    if halted is not None:  # the kill switch (loss limit or a hand flatten) holds until the next session
        return risk.Block(BlockKind.RISK_BLOCKED, halted)
    # What a reverse closes is neither a guard conflict nor a duplicate, nor counted against the open limit.
    skip = {*(b.id for b in brackets), *bracket.reverse_of}
    open_brackets = [b for b in repo.list_open(account_id) if b.id not in skip]
    start, end = risk.trading_day_bounds(now)
    pnl = repo.realised_pnl_between(account_id, r.iso(start), r.iso(end))
    return (
        risk.check_risk(
            spec,
            limits=limits,
            open_count=open_positions(open_brackets),
            realised_pnl_today=pnl,
            now=now,
            market_always_open=get_settings().broker == "paper",
        )
        or risk.check_guard(spec, open_brackets)
        or risk.check_duplicate(spec, open_brackets)
    )


def open_positions(open_brackets: list[Bracket]) -> int:
    """What max_open_brackets counts: a scale-out's shares (one bracket each, one group) are one position, as the
    alert that opens them is admitted as one."""
    return len({b.group[0] if b.group else b.id for b in open_brackets})


def _block(repo: BracketRepository, bracket: Bracket, block: risk.Block) -> Bracket:
    blocked = bracket.block(block.kind, block.reason)
    at = r.iso(blocked.updated_at)
    legs = [
        r.leg_item(
            bracket.id,
            bracket.account_id,
            role.value,
            OrderStatus.FAILED.value,
            at,
            quantity=bracket.spec.quantity,
            tag=block.tag,
        )
        for role in (LegRole.ENTRY, LegRole.STOP, LegRole.TARGET)
    ]
    event = BracketBlockedEvent(
        bracket_id=bracket.id,
        data={"kind": block.kind.value, "reason": block.reason, "tag": block.tag},
        at=blocked.updated_at,
        bracket_version=blocked.version,
    )
    repo.save(bracket, blocked, [event], legs=legs)
    metrics.add_metric(name="BracketsBlocked", unit="Count", value=1)
    logger.info("bracket blocked", extra={"bracket_id": bracket.id, "tag": block.tag})
    return blocked


def start_workflow(repo: BracketRepository, bracket: Bracket) -> bool:
    """Start the bracket's execution; on failure record WorkflowStartFailed and leave it for resume."""
    try:
        start_bracket_workflow(bracket.id, {"bracket_id": bracket.id, "account_id": bracket.account_id})
        return True
    except WorkflowNotStarted as exc:
        logger.warning(
            "bracket workflow not started; it stays CREATED for resume",
            extra={"bracket_id": bracket.id, "reason": str(exc)},
        )
        metrics.add_metric(name="WorkflowStartFailures", unit="Count", value=1)
        try:
            current = repo.get(bracket.id) or bracket
            repo.append_event(current, {"type": "WorkflowStartFailed", "reason": str(exc)})
        except Exception:  # the bracket is CREATED and in the OPEN index either way: resume finds it
            logger.exception("could not record WorkflowStartFailed", extra={"bracket_id": bracket.id})
        return False


def resume_unstarted_brackets(older_than_s: int = 60) -> list[str]:
    """Start the workflow of every bracket still CREATED after `older_than_s` (a start that failed or was lost).

    Safe to run any time: an execution already running under the bracket id makes the start a no-op.
    Returns the ids started.
    """
    repo = BracketRepository()
    cutoff = utc_now() - timedelta(seconds=older_than_s)
    started: list[str] = []
    for bracket in repo.list_open():
        if bracket.status is BracketStatus.CREATED and bracket.created_at <= cutoff and start_workflow(repo, bracket):
            started.append(bracket.id)
    return started


def get_caller_bracket(caller: Caller, bracket_id: str) -> Bracket:
    """Another account's bracket answers 404 exactly like a missing one, so ids never leak between accounts."""
    found = BracketRepository().get_for_account(caller.account_id, bracket_id)
    if found is None:
        raise NotFound(f"bracket {bracket_id} not found")
    return found
