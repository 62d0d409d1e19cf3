"""DynamoDB single-table layout: every item shape, its keys, and the explicit mapping to and from our types.

Table (BracketsTable in template.yaml): string keys pk/sk; gsi1 (gsi1pk/gsi1sk) and gsi2 (gsi2pk/gsi2sk), both
projecting ALL; stream NEW_AND_OLD_IMAGES; TTL attribute `expires_at` (epoch seconds).

pk                                         sk                         what
ACCOUNT#<account_id>                       PROFILE                    name, created_at, risk limits, placement rate
APIKEY#<hmac_sha256(pepper, key)>          APIKEY                     account_id, created_at, revoked
WEBHOOKTOKEN#<hmac_sha256(pepper, token)>  TOKEN                      account_id, strategy, created_at, revoked
                                             gsi1pk=ACCOUNT#<id>, gsi1sk=TOKEN#<strategy>#<hash>
BRACKET#<bracket_id>                       STATE                      current state of the bracket (below)
BRACKET#<bracket_id>                       ORDER#<ROLE>               one leg: ENTRY, STOP, TARGET, later EXIT
BRACKET#<bracket_id>                       EVENT#<version:08d>        immutable audit event, written in the same
                                                                      transaction as the STATE change it explains
BROKERORDER#<broker_order_id>              MAP                        bracket_id, role (the watcher's lookup)
TAG#<order_tag>                            MAP                        bracket_id, account_id, role, expires_at:
                                                                      written BEFORE an order with that tag is
                                                                      placed, so an update that outruns the
                                                                      BROKERORDER map is still matched by its tag
DEDUPE#<account>#CLIENT#<client_order_id>  KEY                        bracket_id, request_hash, expires_at
DEDUPE#<account>#ALERT#<sha256(alert)>     KEY                        bracket_id, request_hash, expires_at
DEDUPE#<account>#BATCH#<client_batch_id>  KEY                        batch_id, request_hash, expires_at (the
                                                                      batch's idempotency key, adapters/dynamo/
                                                                      batches.py)
ORDERLOG#<account>#<yyyy-mm-dd>            <ts>#<request_id>          api_type, request (apikey redacted),
                                                                      response, status_code, expires_at
KEYLIMIT#<key hash>                        BUCKET                     tat_ms: the per-key placement limiter (GCRA)
GTT#<gtt_id>                               CLAIM                      bracket_id, account_id, claimed_at, expires_at:
                                                                      the one bracket a GTT protects, written in the
                                                                      transaction that records that bracket's
                                                                      gtt_id, on `attribute_not_exists(pk) OR
                                                                      bracket_id = :me` (adapters/dynamo/
                                                                      gtt_claims.py); not per account: all of a
                                                                      stack's accounts share its broker session

BRACKET STATE attributes: account_id, status, version (int; every write conditions on it), the spec (symbol,
exchange, action, product, quantity, entry_price, sl_price, target_price, price_type, validity,
disclosed_quantity, trail_type, trail_value, trail_activation_price, strategy, client_order_id, user_tag),
stop_price (the current, trailed stop), entry_order_id, filled_quantity, average_price, exit_reason,
exit_price, exit_order_id, realised_pnl, tags (list), created_at, updated_at, and later task tokens.
  gsi1pk=ACCOUNT#<account_id>, gsi1sk=<created_at ISO UTC>#<bracket_id>   the order book, by date
  gsi2pk=OPEN, gsi2sk=<account_id>#<bracket_id>   only while not terminal (sparse: REMOVEd on a terminal status);
                                                  open-bracket checks, the streamer's resync and reconciliation.
Money is stored as DynamoDB numbers (Decimal), never float.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from bracketflow.domain.accounts import Account, OrderLogEntry, RiskLimits, WebhookToken
from bracketflow.domain.bracket import Bracket, BracketSpec, LegOrder, TrailSpec
from bracketflow.domain.enums import (
    Action,
    BracketStatus,
    Exchange,
    ExitReason,
    LegRole,
    OrderStatus,
    PriceType,
    Product,
    TrailType,
    Validity,
)
from bracketflow.domain.ids import AccountId, BracketId, BrokerOrderId, ClientOrderId
from bracketflow.domain.states import is_terminal

PROFILE = "PROFILE"
APIKEY = "APIKEY"
TOKEN = "TOKEN"
STATE = "STATE"
KEY = "KEY"
BUCKET = "BUCKET"
MAP = "MAP"
CLAIM = "CLAIM"
OPEN = "OPEN"
ORDER_PREFIX = "ORDER#"
EVENT_PREFIX = "EVENT#"


# ---------- keys ----------
def account_pk(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def account_key(account_id: str) -> dict[str, str]:
    return {"pk": account_pk(account_id), "sk": PROFILE}


def api_key_key(key_hash: str) -> dict[str, str]:
    return {"pk": f"APIKEY#{key_hash}", "sk": APIKEY}


def webhook_token_key(token_hash: str) -> dict[str, str]:
    return {"pk": f"WEBHOOKTOKEN#{token_hash}", "sk": TOKEN}


def bracket_pk(bracket_id: str) -> str:
    return f"BRACKET#{bracket_id}"


def bracket_state_key(bracket_id: str) -> dict[str, str]:
    return {"pk": bracket_pk(bracket_id), "sk": STATE}


def bracket_leg_key(bracket_id: str, role: str) -> dict[str, str]:
    return {"pk": bracket_pk(bracket_id), "sk": f"{ORDER_PREFIX}{role}"}


def bracket_event_key(bracket_id: str, version: int) -> dict[str, str]:
    return {"pk": bracket_pk(bracket_id), "sk": f"{EVENT_PREFIX}{version:08d}"}


def broker_order_key(broker_order_id: str) -> dict[str, str]:
    return {"pk": f"BROKERORDER#{broker_order_id}", "sk": MAP}


def order_tag_key(tag: str) -> dict[str, str]:
    return {"pk": f"TAG#{tag}", "sk": MAP}


def dedupe_client_key(account_id: str, client_order_id: str) -> dict[str, str]:
    return {"pk": f"DEDUPE#{account_id}#CLIENT#{client_order_id}", "sk": KEY}


def dedupe_alert_key(account_id: str, alert_hash: str) -> dict[str, str]:
    return {"pk": f"DEDUPE#{account_id}#ALERT#{alert_hash}", "sk": KEY}


def dedupe_batch_key(account_id: str, client_batch_id: str) -> dict[str, str]:
    return {"pk": f"DEDUPE#{account_id}#BATCH#{client_batch_id}", "sk": KEY}


def order_log_pk(account_id: str, day: str) -> str:
    return f"ORDERLOG#{account_id}#{day}"


def key_limit_key(key_hash: str, scope: str = "") -> dict[str, str]:
    return {"pk": f"KEYLIMIT#{key_hash}" + (f"#{scope}" if scope else ""), "sk": BUCKET}


def gtt_claim_key(gtt_id: str) -> dict[str, str]:
    return {"pk": f"GTT#{gtt_id}", "sk": CLAIM}


def order_book_sk(created_at: str, bracket_id: str) -> str:
    return f"{created_at}#{bracket_id}"


def open_sk(account_id: str, bracket_id: str) -> str:
    return f"{account_id}#{bracket_id}"


# ---------- accounts, keys, tokens ----------
def account_to_item(account: Account) -> dict[str, Any]:
    item: dict[str, Any] = {
        **account_key(account.account_id),
        "type": "ACCOUNT",
        "account_id": account.account_id,
        "name": account.name,
        "created_at": account.created_at,
        "max_open_brackets": account.limits.max_open_brackets,
        "daily_loss_limit": account.limits.daily_loss_limit,
        "max_order_value": account.limits.max_order_value,
    }
    if account.placement_rate_per_second is not None:
        item["placement_rate_per_second"] = Decimal(str(account.placement_rate_per_second))
    if account.capital is not None:
        item["capital"] = account.capital
    return item


def account_from_item(item: dict[str, Any]) -> Account:
    rate = item.get("placement_rate_per_second")
    return Account(
        account_id=item["account_id"],
        name=item["name"],
        created_at=item["created_at"],
        limits=RiskLimits(
            max_open_brackets=int(item["max_open_brackets"]),
            daily_loss_limit=Decimal(item["daily_loss_limit"]),
            max_order_value=Decimal(item["max_order_value"]),
        ),
        placement_rate_per_second=float(rate) if rate is not None else None,
        capital=None if item.get("capital") is None else Decimal(item["capital"]),
    )


def api_key_to_item(key_hash: str, account_id: str, created_at: str) -> dict[str, Any]:
    return {
        **api_key_key(key_hash),
        "type": "APIKEY",
        "key_hash": key_hash,
        "account_id": account_id,
        "created_at": created_at,
        "revoked": False,
    }


def webhook_token_to_item(token: WebhookToken) -> dict[str, Any]:
    return {
        **webhook_token_key(token.token_hash),
        "type": "WEBHOOKTOKEN",
        "token_hash": token.token_hash,
        "account_id": token.account_id,
        "strategy": token.strategy,
        "created_at": token.created_at,
        "revoked": token.revoked,
        "gsi1pk": account_pk(token.account_id),
        "gsi1sk": f"TOKEN#{token.strategy}#{token.token_hash}",
    }


def webhook_token_from_item(item: dict[str, Any]) -> WebhookToken:
    return WebhookToken(
        token_hash=item["token_hash"],
        account_id=item["account_id"],
        strategy=item["strategy"],
        created_at=item["created_at"],
        revoked=bool(item.get("revoked", False)),
    )


# ---------- order logs ----------
def order_log_to_item(entry: OrderLogEntry, expires_at: int) -> dict[str, Any]:
    return {
        "pk": order_log_pk(entry.account_id, entry.at[:10]),
        "sk": f"{entry.at}#{entry.request_id}",
        "type": "ORDERLOG",
        "account_id": entry.account_id,
        "at": entry.at,
        "request_id": entry.request_id,
        "api_type": entry.api_type,
        # As JSON text, not maps: the request is the caller's arbitrary JSON (odd keys, deep nesting, huge numbers)
        # and must never make the log write fail. Capped well under DynamoDB's 400 KB item limit.
        "request": json.dumps(entry.request, default=str)[:_LOG_TEXT_MAX],
        "response": json.dumps(entry.response, default=str)[:_LOG_TEXT_MAX],
        "status_code": entry.status_code,
        "expires_at": expires_at,
    }


def order_log_from_item(item: dict[str, Any]) -> OrderLogEntry:
    return OrderLogEntry(
        account_id=item["account_id"],
        at=item["at"],
        request_id=item["request_id"],
        api_type=item["api_type"],
        request=_json_or_text(item.get("request")),
        response=_json_or_text(item.get("response")),
        status_code=int(item["status_code"]),
    )


_LOG_TEXT_MAX = 32_000


def _json_or_text(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {"raw": text}  # cut at the cap: show what there is
    return value if isinstance(value, dict) else {"raw": value}


def plain(value: Any) -> Any:
    """DynamoDB's Decimals back to JSON-friendly values: integers as int, other numbers as their exact string."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "E" not in str(value) else str(value)
    return value


def to_dynamo(value: Any) -> Any:
    """JSON-ish values into what DynamoDB stores: floats become exact Decimals (via their repr), empty strings kept."""
    if isinstance(value, dict):
        return {str(k): to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and value not in (float("inf"), float("-inf")) else str(value)
    return value


# ---------- brackets ----------
# Attributes of the STATE item that the mapping owns; save() REMOVEs those of them a bracket no longer has.
_OPTIONAL_STATE_ATTRS = (
    "entry_price",
    "trigger_price",
    "trail_type",
    "trail_value",
    "trail_activation_price",
    "user_tag",
    "client_order_id",
    "exit",
    "gtt_id",
    "exit_reason",
    "earlier_exits",
    "exit_after",
    "exit_at",
    "reverse",
    "risk_amount",
    "risk_percent",
    "reverse_of",
    "share_index",
    "breakeven_after",
    "breakeven_buffer",
    "breakeven_at",
    "share_group",
    "gsi2pk",
    "gsi2sk",
)


def iso(at: datetime) -> str:
    """UTC ISO-8601 with microseconds and a Z: sorts as a string, so the order book's range key orders by time."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _leg_to_map(leg: LegOrder) -> dict[str, Any]:
    out: dict[str, Any] = {
        "role": leg.role.value,
        "status": leg.status.value,
        "quantity": leg.quantity,
        "filled_quantity": leg.filled_quantity,
    }
    if leg.broker_order_id is not None:
        out["broker_order_id"] = str(leg.broker_order_id)
    if leg.average_price is not None:
        out["average_price"] = leg.average_price
    if leg.message:
        out["message"] = leg.message
    return out


def _leg_from_map(data: dict[str, Any]) -> LegOrder:
    oid = data.get("broker_order_id")
    avg = data.get("average_price")
    return LegOrder(
        role=LegRole(data["role"]),
        status=OrderStatus(data["status"]),
        broker_order_id=None if oid is None else BrokerOrderId(oid),
        quantity=int(data.get("quantity") or 0),
        filled_quantity=int(data.get("filled_quantity") or 0),
        average_price=None if avg is None else Decimal(avg),
        message=data.get("message"),
    )


def bracket_to_item(b: Bracket) -> dict[str, Any]:
    """The STATE item of a bracket: its spec flat (so the order book can filter on it) plus the live state."""
    s = b.spec
    item: dict[str, Any] = {
        **bracket_state_key(b.id),
        "type": "BRACKET",
        "bracket_id": b.id,
        "account_id": b.account_id,
        "status": b.status.value,
        "version": b.version,
        "symbol": s.symbol,
        "exchange": s.exchange.value,
        "product": s.product.value,
        "action": s.action.value,
        "quantity": s.quantity,
        "sl_price": s.sl_price,
        "target_price": s.target_price,
        "price_type": s.price_type.value,
        "validity": s.validity.value,
        "disclosed_quantity": s.disclosed_quantity,
        "strategy": s.strategy or "",
        "stop_price": b.stop_price,
        "created_at": iso(b.created_at),
        "updated_at": iso(b.updated_at),
        "entry": _leg_to_map(b.entry),
        "tags": list(b.tags),
        "gsi1pk": account_pk(b.account_id),
        "gsi1sk": order_book_sk(iso(b.created_at), b.id),
    }
    optional: dict[str, Any] = {
        "entry_price": s.entry_price,
        "trigger_price": s.trigger_price,
        "trail_type": None if s.trail is None else s.trail.type.value,
        "trail_value": None if s.trail is None else s.trail.value,
        "trail_activation_price": s.trail_activation_price,
        "user_tag": s.tag,
        "client_order_id": s.client_order_id,
        "exit": None if b.exit is None else _leg_to_map(b.exit),
        "gtt_id": b.gtt_id,
        "exit_reason": None if b.exit_reason is None else b.exit_reason.value,
        "earlier_exits": [_leg_to_map(leg) for leg in b.earlier_exits] or None,
        "exit_after": s.exit_after,
        "exit_at": s.exit_at,
        "reverse": True if s.reverse else None,
        "risk_amount": s.risk_amount,
        "risk_percent": s.risk_percent,
        "reverse_of": list(b.reverse_of) or None,
        "share_index": s.share_index,
        "breakeven_after": s.breakeven_after,
        "breakeven_buffer": s.breakeven_buffer,
        "breakeven_at": s.breakeven_at,
        "share_group": list(b.group) or None,
    }
    item.update({k: v for k, v in optional.items() if v is not None})
    if not is_terminal(b.status):
        item["gsi2pk"] = OPEN
        item["gsi2sk"] = open_sk(b.account_id, b.id)
    return item


def bracket_from_item(item: dict[str, Any]) -> Bracket:
    def dec(name: str) -> Decimal | None:
        value = item.get(name)
        return None if value is None else Decimal(value)

    trail = None
    if item.get("trail_type"):
        trail = TrailSpec(type=TrailType(item["trail_type"]), value=Decimal(item["trail_value"]))
    cid = item.get("client_order_id")
    spec = BracketSpec(
        account_id=AccountId(item["account_id"]),
        symbol=item["symbol"],
        exchange=Exchange(item["exchange"]),
        product=Product(item["product"]),
        action=Action(item["action"]),
        quantity=int(item["quantity"]),
        entry_price=dec("entry_price"),
        sl_price=Decimal(item["sl_price"]),
        target_price=Decimal(item["target_price"]),
        price_type=PriceType(item["price_type"]),
        trigger_price=dec("trigger_price"),
        trail=trail,
        trail_activation_price=dec("trail_activation_price"),
        validity=Validity(item["validity"]),
        disclosed_quantity=int(item.get("disclosed_quantity") or 0),
        tag=item.get("user_tag"),
        strategy=item.get("strategy") or None,
        client_order_id=None if cid is None else ClientOrderId(cid),
        exit_after=None if item.get("exit_after") is None else int(item["exit_after"]),
        exit_at=item.get("exit_at"),
        reverse=bool(item.get("reverse")),
        risk_amount=dec("risk_amount"),
        risk_percent=dec("risk_percent"),
        share_index=None if item.get("share_index") is None else int(item["share_index"]),
        breakeven_after=None if item.get("breakeven_after") is None else int(item["breakeven_after"]),
        breakeven_buffer=dec("breakeven_buffer"),
        breakeven_at=dec("breakeven_at"),
    )
    return Bracket(
        id=BracketId(item["bracket_id"]),
        account_id=AccountId(item["account_id"]),
        spec=spec,
        status=BracketStatus(item["status"]),
        version=int(item["version"]),
        stop_price=Decimal(item["stop_price"]),
        created_at=datetime.fromisoformat(item["created_at"]),
        updated_at=datetime.fromisoformat(item["updated_at"]),
        entry=_leg_from_map(item["entry"]),
        exit=None if not item.get("exit") else _leg_from_map(item["exit"]),
        gtt_id=item.get("gtt_id"),
        exit_reason=None if not item.get("exit_reason") else ExitReason(item["exit_reason"]),
        tags=tuple(item.get("tags") or ()),
        earlier_exits=tuple(_leg_from_map(leg) for leg in item.get("earlier_exits") or ()),
        reverse_of=tuple(BracketId(i) for i in item.get("reverse_of") or ()),
        group=tuple(BracketId(i) for i in item.get("share_group") or ()),
    )


def removable_state_attrs(item: dict[str, Any]) -> list[str]:
    """Mapped attributes this bracket does not have (anymore): save() REMOVEs them, leaving others' attributes."""
    return [name for name in _OPTIONAL_STATE_ATTRS if name not in item]


def leg_item(bracket_id: str, account_id: str, role: str, status: str, at: str, **fields: Any) -> dict[str, Any]:
    """One leg (ORDER#<ROLE>): OrderStatus, and later the broker's order id; tag holds a block tag when FAILED."""
    item = {
        **bracket_leg_key(bracket_id, role),
        "type": "ORDER",
        "bracket_id": bracket_id,
        "account_id": account_id,
        "role": role,
        "status": status,
        "updated_at": at,
    }
    item.update({k: v for k, v in fields.items() if v is not None})
    return item


def event_item(bracket_id: str, account_id: str, version: int, seq: int, payload: dict[str, Any]) -> dict[str, Any]:
    """An immutable audit event; `data` holds the event's own fields."""
    key = bracket_event_key(bracket_id, version)
    if seq:
        key["sk"] = f"{key['sk']}.{seq}"
    return {
        **key,
        "type": "EVENT",
        "event_type": payload["type"],
        "at": payload["at"],
        "bracket_id": bracket_id,
        "account_id": account_id,
        "version": version,
        "data": to_dynamo({k: v for k, v in payload.items() if k not in ("type", "at")}),
    }


def event_from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": item["event_type"],
        "at": item["at"],
        "version": int(item["version"]),
        **plain(item.get("data") or {}),
    }
