"""The two ways a bracket comes in — the REST call and the TradingView alert — down to one registration.

Both: authenticate -> register_bracket.place (validate, recognise a resend, then the per-key placement limit) -> the
answer; every authenticated request and our answer (success or error) goes to the order log with the API key
redacted.

A warm Lambda remembers a credential it has verified, with its account profile, for CREDENTIAL_CACHE_SECONDS
(default 30): an alert from the same key or token then costs no DynamoDB read for either. Consequence, by design: a
revoked key or token keeps working on an already-warm Lambda for at most that long, and changed account limits or
placement rate take effect within it. Unknown or refused credentials are never remembered. The cache holds only a
SHA-256 of the secret, never the secret.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bracketflow.adapters.dynamo import accounts as account_store
from bracketflow.domain.accounts import Account, Caller
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus
from bracketflow.errors import BracketflowError, BracketRefused, Unauthorized
from bracketflow.schemas.bracket import PlaceBracketOrderRequest, alert_to_spec, parse_alert_body, request_to_spec
from bracketflow.services import orderbook, signals
from bracketflow.services.accounts import authenticate_api_key, authenticate_webhook_token, check_source_ip
from bracketflow.services.register_bracket import Placement, check_alert_rate, check_placement_rate, place
from bracketflow.settings import get_settings

_CACHE_LIMIT = 1024  # distinct credentials remembered per Lambda instance; beyond that the cache starts over


@dataclass(frozen=True)
class _Verified:
    caller: Caller
    account: Account | None
    until: float  # time.monotonic()


_verified: dict[str, _Verified] = {}


def forget_verified_credentials() -> None:
    """Drop every remembered credential (tests; an operator after revoking a key can also just wait the TTL)."""
    _verified.clear()


def _verify(kind: str, secret: Any, authenticate: Callable[[Any], Caller]) -> tuple[Caller, Account | None]:
    """The caller (and account profile) behind a credential, from memory while fresh, else read and remembered."""
    ttl = get_settings().credential_cache_s
    if ttl <= 0 or not isinstance(secret, str) or not secret:
        caller = authenticate(secret)
        return caller, account_store.get_account(caller.account_id)
    key = kind + ":" + hashlib.sha256(secret.encode()).hexdigest()
    now = time.monotonic()
    hit = _verified.get(key)
    if hit is not None and hit.until > now:
        return hit.caller, hit.account
    caller = authenticate(secret)  # raises Unauthorized: nothing is remembered
    account = account_store.get_account(caller.account_id)
    if len(_verified) >= _CACHE_LIMIT:
        _verified.clear()
    _verified[key] = _Verified(caller, account, now + ttl)
    return caller, account


def placement_response(p: Placement) -> dict[str, Any]:
    """The bracket API's success fields, plus bracket_id, bracket_status and duplicate."""
    b, s = p.bracket, p.bracket.spec
    if p.duplicate:
        message = "Duplicate request: this bracket was already registered; nothing new was placed"
    elif p.shares:
        message = (
            f"Scale-out registered as {len(p.shares)} brackets, one per target - each share's entry will be placed,"
            " its GTT protection follows its fill"
        )
    elif p.workflow_started:
        message = "Bracket order registered - the entry order will be placed, GTT protection follows the fill"
    else:
        message = "Bracket order registered - its workflow start is pending and will be retried"
    return {
        "message": message,
        "bracket_id": b.id,
        "bracket_status": b.status.value,
        "duplicate": p.duplicate,
        "entry_order_id": b.entry.broker_order_id,
        "symbol": s.symbol,
        "exchange": s.exchange.value,
        "entry_price": s.entry_price,
        "sl_price": s.sl_price,
        "target_price": s.target_price,
        "quantity": sum(share.spec.quantity for share in p.shares) if p.shares else s.quantity,
        "action": s.action.value,
        "strategy": s.strategy,
        **({"sizing": p.sizing.to_dict()} if p.sizing is not None else {}),
        **({"exit_due_at": b.exit_due_at.isoformat()} if b.exit_due_at is not None else {}),
        **({"reverse_of": list(b.reverse_of)} if b.reverse_of else {}),
        **({"shares": [_share_view(share) for share in p.shares]} if p.shares else {}),
        **({"breakeven_after": s.breakeven_after} if s.breakeven_after is not None else {}),
        **({"breakeven_at": s.breakeven_at} if s.breakeven_at is not None else {}),
    }


def _share_view(share: Bracket) -> dict[str, Any]:
    """One share of a scale-out in the answer: its own bracket, quantity and target under the common stop."""
    return {
        "bracket_id": share.id,
        "share_index": share.spec.share_index,
        "bracket_status": share.status.value,
        "quantity": share.spec.quantity,
        "target_price": share.spec.target_price,
    }


def _error_payload(exc: BracketflowError) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "error", "message": exc.message}
    if isinstance(exc, BracketRefused):
        out |= exc.body()
    return out


def _logged(
    caller: Caller, api_type: str, raw: Any, request_id: str | None, run: Callable[[], Placement]
) -> dict[str, Any]:
    try:
        placement = run()
        if placement.bracket.reverse_of and placement.bracket.status is BracketStatus.CREATED:
            signals.end_reversed(placement.bracket)
        payload = placement_response(placement)
    except BracketflowError as exc:
        orderbook.log_request(caller, api_type, raw, _error_payload(exc), exc.status_code, request_id)
        raise
    orderbook.log_request(caller, api_type, raw, {"status": "success", **payload}, 200, request_id)
    return payload


def place_from_rest(
    req: PlaceBracketOrderRequest, header_key: str | None, raw: Any, request_id: str | None
) -> dict[str, Any]:
    caller, profile = _verify("apikey", header_key or req.apikey, authenticate_api_key)

    def run() -> Placement:
        return place(
            caller,
            request_to_spec(req, caller.account_id),
            round_to_tick=False,
            dedupe_alert=False,
            account=profile,
            spend_placement_token=lambda: check_placement_rate(caller, profile),
        )

    return _logged(caller, "placebracketorder", raw, request_id, run)


def place_from_alert(
    body: str | None, path_token: str | None, source_ip: str | None, request_id: str | None
) -> dict[str, Any]:
    """A TradingView alert. Auth: a webhook token (path or body "token"), or the account apikey in the body.

    Alerts are rounded onto the tick (TradingView computes levels like close*0.99) and deduplicated by their
    content for ALERT_DEDUPE_WINDOW_SECONDS, since TradingView resends an alert it thinks failed.
    """
    check_source_ip(source_ip)
    data = parse_alert_body(body)
    token = path_token or data.get("token")
    if token:
        caller, profile = _verify("token", token if isinstance(token, str) else None, authenticate_webhook_token)
    elif data.get("apikey"):
        apikey = data.get("apikey")
        caller, profile = _verify("apikey", apikey if isinstance(apikey, str) else None, authenticate_api_key)
    else:
        raise Unauthorized("Invalid API key or authentication failed: send a webhook token or the apikey")

    if signals.is_exit_signal(data):
        return _logged_signal(
            caller, "tradingview_signal", data, request_id, lambda: signals.parse_exit_signal(data, caller), True
        )

    def run() -> Placement:
        return place(
            caller,
            alert_to_spec(data, caller.account_id),
            round_to_tick=True,
            dedupe_alert=True,
            account=profile,
            spend_placement_token=lambda: check_alert_rate(caller, profile),
        )

    return _logged(caller, "tradingview_bracket", data, request_id, run)


def _logged_signal(
    caller: Caller,
    api_type: str,
    raw: Any,
    request_id: str | None,
    parse: Callable[[], signals.ExitSignal],
    dedupe_content: bool,
) -> dict[str, Any]:
    try:
        payload = signals.act_on_signal(parse(), dedupe_content=dedupe_content)
    except BracketflowError as exc:
        orderbook.log_request(caller, api_type, raw, _error_payload(exc), exc.status_code, request_id)
        raise
    orderbook.log_request(caller, api_type, raw, {"status": "success", **payload}, 200, request_id)
    return payload


def exit_from_rest(body: dict[str, Any], header_key: str | None, request_id: str | None) -> dict[str, Any]:
    """POST /api/v1/closeposition: the same signal as an exit alert, by API key. A resend is recognised by its
    client_order_id (a REST caller may close the same symbol twice on purpose, so the content alone is no resend)."""
    apikey = header_key or body.get("apikey")
    caller, _profile = _verify("apikey", apikey if isinstance(apikey, str) else None, authenticate_api_key)
    return _logged_signal(
        caller, "closeposition", body, request_id, lambda: signals.parse_exit_signal(body, caller), False
    )
