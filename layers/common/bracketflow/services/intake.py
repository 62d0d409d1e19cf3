"""The two ways a bracket comes in — the REST call and the TradingView alert — down to one registration.

Both: authenticate -> per-key placement limit -> register_bracket.place -> the answer; every authenticated
request and our answer (success or error) goes to the order log with the API key redacted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bracketflow.errors import BracketBlocked, BracketflowError, Unauthorized
from bracketflow.schemas.bracket import PlaceBracketOrderRequest, alert_to_spec, parse_alert_body, request_to_spec
from bracketflow.services import orderbook
from bracketflow.services.accounts import authenticate_api_key, authenticate_webhook_token, check_source_ip
from bracketflow.services.models import Caller
from bracketflow.services.register_bracket import Placement, check_placement_rate, place


def placement_response(p: Placement) -> dict[str, Any]:
    """The bracket note's success fields, plus bracket_id, bracket_status and duplicate."""
    b, s = p.bracket, p.bracket.spec
    if p.duplicate:
        message = "Duplicate request: this bracket was already registered; nothing new was placed"
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
        "quantity": s.quantity,
        "action": s.action.value,
        "strategy": s.strategy,
    }


def _error_payload(exc: BracketflowError) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "error", "message": exc.message}
    if isinstance(exc, BracketBlocked):
        out |= {"bracket_id": exc.bracket_id, "tag": exc.tag}
    return out


def _logged(
    caller: Caller, api_type: str, raw: Any, request_id: str | None, run: Callable[[], Placement]
) -> dict[str, Any]:
    try:
        payload = placement_response(run())
    except BracketflowError as exc:
        orderbook.log_request(caller, api_type, raw, _error_payload(exc), exc.status_code, request_id)
        raise
    orderbook.log_request(caller, api_type, raw, {"status": "success", **payload}, 200, request_id)
    return payload


def place_from_rest(
    req: PlaceBracketOrderRequest, header_key: str | None, raw: Any, request_id: str | None
) -> dict[str, Any]:
    caller = authenticate_api_key(header_key or req.apikey)

    def run() -> Placement:
        account = check_placement_rate(caller)
        return place(
            caller, request_to_spec(req, caller.account_id), round_to_tick=False, dedupe_alert=False, account=account
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
        caller = authenticate_webhook_token(token if isinstance(token, str) else None)
    elif data.get("apikey"):
        apikey = data.get("apikey")
        caller = authenticate_api_key(apikey if isinstance(apikey, str) else None)
    else:
        raise Unauthorized("Invalid API key or authentication failed: send a webhook token or the apikey")

    def run() -> Placement:
        account = check_placement_rate(caller)
        return place(
            caller, alert_to_spec(data, caller.account_id), round_to_tick=True, dedupe_alert=True, account=account
        )

    return _logged(caller, "tradingview_bracket", data, request_id, run)
