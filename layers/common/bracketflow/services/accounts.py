"""Accounts, API keys and per-strategy webhook tokens.

Keys and tokens are random (secrets.token_urlsafe), shown once when made, and stored only as
HMAC-SHA256(pepper, key): the lookup is by that hash, and the stored hash is compared again in constant time.
Neither a key nor a token is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from datetime import UTC, datetime
from decimal import Decimal

from bracketflow.adapters.dynamo import accounts as store
from bracketflow.adapters.secrets import get_pepper
from bracketflow.domain.accounts import Account, Caller, RiskLimits, WebhookToken
from bracketflow.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from bracketflow.settings import get_settings

API_KEY_PREFIX = "bfk_"
WEBHOOK_TOKEN_PREFIX = "bfw_"
_MAX_SECRET_LEN = 256
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STRATEGY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hash_secret(value: str) -> str:
    return hmac.new(get_pepper(), value.encode(), hashlib.sha256).hexdigest()


def default_limits() -> RiskLimits:
    s = get_settings()
    return RiskLimits(
        max_open_brackets=s.default_max_open_brackets,
        daily_loss_limit=s.default_daily_loss_limit,
        max_order_value=s.default_max_order_value,
    )


def create_account(
    name: str, *, account_id: str | None = None, limits: RiskLimits | None = None
) -> tuple[Account, str]:
    """A new account and its API key; the key is returned once here and never again."""
    if not name.strip():
        raise ValidationFailed("name: an account needs a name")
    account_id = account_id or f"acc_{secrets.token_hex(6)}"
    if not _ACCOUNT_ID.match(account_id):
        raise ValidationFailed("account_id: 1-64 letters, digits, '_' or '-'")
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    account = Account(account_id=account_id, name=name.strip(), created_at=now_iso(), limits=limits or default_limits())
    if not store.create_account_with_key(account, hash_secret(api_key)):
        raise ValidationFailed(f"account_id: {account_id} already exists")
    return account, api_key


def ensure_account(account_id: str, name: str, api_key: str) -> None:
    """Idempotently make sure `account_id` exists and `api_key` opens it (the local stack seeds its dev account).

    Stores only the peppered hash of the key. Re-running with the same arguments changes nothing.
    """
    if not api_key:
        raise ValidationFailed("api_key: must not be empty")
    key_hash = hash_secret(api_key)
    if store.get_account(account_id) is None:
        account = Account(account_id=account_id, name=name, created_at=now_iso(), limits=default_limits())
        if store.create_account_with_key(account, key_hash):
            return
    existing = store.get_api_key(key_hash)
    if existing is None:
        store.put_api_key(key_hash, account_id, now_iso())
    elif existing["account_id"] != account_id:
        raise ValidationFailed("api_key: already belongs to another account")


def set_capital(account_id: str, capital: Decimal) -> None:
    """The trading capital risk_percent sizes from (rupees, > 0)."""
    if not capital > 0:
        raise ValidationFailed(f"capital must be greater than 0, got {capital}")
    if not store.set_capital(account_id, capital):
        raise NotFound(f"account {account_id} not found")


def get_account(account_id: str) -> Account:
    account = store.get_account(account_id)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    return account


def authenticate_api_key(api_key: str | None) -> Caller:
    """The caller behind an API key, or Unauthorized (missing, unknown or revoked: one message for all)."""
    if not api_key or not isinstance(api_key, str) or len(api_key) > _MAX_SECRET_LEN:
        raise Unauthorized("Invalid API key or authentication failed")
    key_hash = hash_secret(api_key)
    item = store.get_api_key(key_hash)
    if item is None or item.get("revoked") or not hmac.compare_digest(str(item.get("key_hash", "")), key_hash):
        raise Unauthorized("Invalid API key or authentication failed")
    return Caller(account_id=item["account_id"], key_hash=key_hash)


def create_webhook_token(account_id: str, strategy: str) -> tuple[WebhookToken, str]:
    """A webhook token that can place brackets only for `strategy`; the token is returned once."""
    if not _STRATEGY.match(strategy or ""):
        raise ValidationFailed("strategy: 1-64 letters, digits, '_', '.' or '-'")
    get_account(account_id)
    token = WEBHOOK_TOKEN_PREFIX + secrets.token_urlsafe(24)
    record = WebhookToken(token_hash=hash_secret(token), account_id=account_id, strategy=strategy, created_at=now_iso())
    store.put_webhook_token(record)
    return record, token


def revoke_webhook_token(account_id: str, token: str) -> None:
    if not token or len(token) > _MAX_SECRET_LEN or not store.revoke_webhook_token(hash_secret(token), account_id):
        raise NotFound("webhook token not found")


def authenticate_webhook_token(token: str | None) -> Caller:
    if not token or not isinstance(token, str) or len(token) > _MAX_SECRET_LEN:
        raise Unauthorized("Invalid webhook token")
    token_hash = hash_secret(token)
    found = store.get_webhook_token(token_hash)
    if found is None or found.revoked or not hmac.compare_digest(found.token_hash, token_hash):
        raise Unauthorized("Invalid or revoked webhook token")
    return Caller(account_id=found.account_id, key_hash=token_hash, strategy=found.strategy)


def check_source_ip(source_ip: str | None) -> None:
    """Refuse alerts from outside TRADINGVIEW_ALLOWED_IPS (when set); addresses or CIDR blocks, comma-separated."""
    allowed = [a.strip() for a in get_settings().tradingview_allowed_ips.split(",") if a.strip()]
    if not allowed:
        return
    try:
        ip = ipaddress.ip_address(source_ip or "")
    except ValueError:
        raise Forbidden("source address not allowed to send alerts") from None
    if not any(ip in ipaddress.ip_network(net, strict=False) for net in allowed):
        raise Forbidden(f"source address {ip} not allowed to send alerts")
