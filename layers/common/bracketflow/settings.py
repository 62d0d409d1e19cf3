"""Settings, read from the environment in this one place, built once and lazily.

Small mixins compose the settings each component needs; nothing else in the code reads os.environ.
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class AwsSettings(_Base):
    region: str = Field("ap-south-1", alias="AWS_DEFAULT_REGION")
    # Set only on the local stack: every AWS client goes to the moto server there.
    aws_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")
    # The stack's CloudWatch alarms, comma-separated: GET /api/v1/status lists those in ALARM.
    alarm_names: str = Field("", alias="ALARM_NAMES")


class StoreSettings(_Base):
    table_name: str = Field("bracketflow-brackets", alias="TABLE_NAME")
    idempotency_table_name: str = Field("bracketflow-idempotency", alias="IDEMPOTENCY_TABLE_NAME")


class BrokerSettings(_Base):
    broker: str = Field("paper", alias="BROKER")
    broker_base_url: str = Field("http://127.0.0.1:8700", alias="BROKER_BASE_URL")
    broker_ticker_url: str = Field("ws://127.0.0.1:8700/ws", alias="BROKER_TICKER_URL")
    # Empty: bracketflow/<stage>/<broker> (Settings.broker_secret), so paper and each stage have their own secret.
    broker_secret_name: str = Field("", alias="BROKER_SECRET_NAME")
    broker_timeout_s: float = Field(5.0, alias="BROKER_TIMEOUT_S")
    order_rate_per_second: int = Field(8, alias="ORDER_RATE_LIMIT_PER_SECOND")
    order_rate_per_minute: int = Field(350, alias="ORDER_RATE_LIMIT_PER_MINUTE")
    # The broker's own order limit per second (Kite: 10; 0: none) and how late after its slot an order may still
    # leave: together they keep the orders that reach the broker in any 1 s within its limit (see ratelimit.py).
    broker_order_rate_per_second: int = Field(10, ge=0, alias="BROKER_ORDER_RATE_LIMIT_PER_SECOND")
    order_send_within_s: float = Field(0.125, gt=0, le=1, alias="ORDER_SEND_WITHIN_S")
    # broker_timeout_s is the read timeout; connecting should be quick or not at all.
    broker_connect_timeout_s: float = Field(3.05, alias="BROKER_CONNECT_TIMEOUT_S")
    broker_max_attempts: int = Field(4, alias="BROKER_MAX_ATTEMPTS")
    # Percent band Kite applies to MARKET / SL-M orders (required from April 2026); -1 lets Kite choose.
    broker_market_protection: Decimal = Field(Decimal("5"), alias="BROKER_MARKET_PROTECTION")
    # Pause before re-checking the order book for a placement whose answer was lost.
    broker_lookup_pause_s: float = Field(0.5, alias="BROKER_LOOKUP_PAUSE_S")
    # How long after a lost answer the broker's book is searched for the order or GTT before the outcome is called
    # unknown (a broker may show a new one seconds late); the request is never repeated inside this window.
    broker_lookup_window_s: float = Field(3.0, alias="BROKER_LOOKUP_WINDOW_S")
    # PlaceProtection looks this long for a GTT whose create answer was lost (the position is naked meanwhile), then
    # the workflow flattens; the flatten sweeps again after BROKER_LOOKUP_WINDOW_S, so a GTT shown late is deleted.
    protection_lookup_window_s: float = Field(1.0, alias="PROTECTION_LOOKUP_WINDOW_S")
    # Name of the account-wide order rate bucket every order-placing Lambda shares.
    broker_account: str = Field("primary", alias="BROKER_ACCOUNT")
    order_rate_wait_s: float = Field(5.0, alias="ORDER_RATE_LIMIT_WAIT_S")
    broker_credentials_cache_s: int = Field(300, alias="BROKER_CREDENTIALS_CACHE_S")
    # The pre-market session check: Telegram at most once per IST day (the metric and its alarm every run).
    # <ApiUrl>/broker/login, for the pre-market check's Telegram message (empty: the message has no link).
    broker_login_link: str = Field("", alias="LOGIN_URL")
    # Kite mode: the stack's bucket holding Kite's full instrument list (adapters/instrument_store.py); empty: the
    # master shipped with the package (paper mode, the local stack).
    instruments_bucket: str = Field("", alias="INSTRUMENTS_BUCKET")
    instruments_refresh_s: float = Field(900.0, alias="INSTRUMENTS_REFRESH_S")


class BracketSettings(_Base):
    placement_rate_per_second: float = Field(2.0, alias="PLACEMENT_RATE_LIMIT_PER_SECOND")
    placement_burst: int = Field(0, ge=0, alias="PLACEMENT_BURST")  # 0: the rate rounded up
    # TradingView alerts have their own, looser bucket per key: an anti-abuse limit, not a pacing one.
    alert_rate_per_second: float = Field(10.0, gt=0, alias="ALERT_RATE_LIMIT_PER_SECOND")
    alert_burst: int = Field(200, ge=0, alias="ALERT_BURST")
    default_tick_size: Decimal = Field(Decimal("0.05"), alias="DEFAULT_TICK_SIZE")


class IntakeSettings(_Base):
    """REST/TradingView intake: workflow start, API-key pepper, duplicate windows, source-IP allow-list."""

    # How long a warm placement Lambda trusts a credential (API key / webhook token) and its account profile without
    # reading them again: a revoked key or changed limits take effect within this many seconds (0: read every time).
    credential_cache_s: float = Field(30.0, alias="CREDENTIAL_CACHE_SECONDS")

    # Empty until the bracket workflow is wired; registration then records the start as pending (recoverable).
    bracket_state_machine_arn: str = Field("", alias="BRACKET_STATE_MACHINE_ARN")
    api_key_pepper_secret_name: str = Field("bracketflow/api-key-pepper", alias="API_KEY_PEPPER_SECRET_NAME")
    alert_dedupe_window_s: int = Field(300, alias="ALERT_DEDUPE_WINDOW_SECONDS")
    client_order_id_window_s: int = Field(86400, alias="CLIENT_ORDER_ID_WINDOW_SECONDS")
    order_log_retention_days: int = Field(30, alias="ORDER_LOG_RETENTION_DAYS")
    # Comma-separated; empty = accept alerts from any source address.
    tradingview_allowed_ips: str = Field("", alias="TRADINGVIEW_ALLOWED_IPS")
    default_max_open_brackets: int = Field(10, alias="DEFAULT_MAX_OPEN_BRACKETS")
    default_daily_loss_limit: Decimal = Field(Decimal("5000"), alias="DEFAULT_DAILY_LOSS_LIMIT")
    default_max_order_value: Decimal = Field(Decimal("500000"), alias="DEFAULT_MAX_ORDER_VALUE")
    default_capital: Decimal | None = Field(None, alias="DEFAULT_CAPITAL")  # risk_percent's base for accounts with none


class StreamerSettings(_Base):
    """The live streamer and the queues between it and the exit/sync-stop/watcher Lambdas (docs/reliability.md)."""

    exit_queue_url: str = Field("", alias="EXIT_QUEUE_URL")
    stop_sync_queue_url: str = Field("", alias="STOP_SYNC_QUEUE_URL")
    order_events_queue_url: str = Field("", alias="ORDER_EVENTS_QUEUE_URL")
    streamer_control_queue_url: str = Field("", alias="STREAMER_CONTROL_QUEUE_URL")
    # Reconnect backoff: base * 2**attempt, capped, with full jitter; reset after a successful subscribe.
    streamer_backoff_base_s: float = Field(0.5, alias="STREAMER_BACKOFF_BASE_S")
    streamer_backoff_cap_s: float = Field(30.0, alias="STREAMER_BACKOFF_CAP_S")
    # No message at all (ticks or heartbeats) for this long: the feed is stale, reconnect.
    streamer_watchdog_s: float = Field(10.0, alias="STREAMER_WATCHDOG_S")
    streamer_resync_interval_s: float = Field(30.0, alias="STREAMER_RESYNC_INTERVAL_S")
    # At most one stop write per bracket per interval (coalesced: only the latest stop is written).
    streamer_persist_interval_s: float = Field(2.0, alias="STREAMER_PERSIST_INTERVAL_S")
    # The console's price chart: the last price of each watched instrument is recorded this often (0: never).
    streamer_price_interval_s: float = Field(2.0, alias="STREAMER_PRICE_INTERVAL_S")
    # Broker-side stop (the GTT's stop leg) follows when improved by >= step percent, at most once per interval.
    streamer_stop_sync_interval_s: float = Field(60.0, alias="STREAMER_STOP_SYNC_INTERVAL_S")
    streamer_stop_sync_step_percent: Decimal = Field(Decimal("0.25"), alias="STREAMER_STOP_SYNC_STEP_PERCENT")
    streamer_metrics_interval_s: float = Field(60.0, alias="STREAMER_METRICS_INTERVAL_S")
    # Long poll of the control queue; also how long a SIGTERM may wait for that thread.
    streamer_control_wait_s: int = Field(2, alias="STREAMER_CONTROL_WAIT_S")


class BatchSettings(_Base):
    """Batch orders (issue 7): the saga's state machine and how long POST {"wait": true} may hold the answer."""

    batch_state_machine_arn: str = Field("", alias="BATCH_STATE_MACHINE_ARN")
    batch_wait_s: float = Field(5.0, alias="BATCH_WAIT_SECONDS")
    # How long a client_batch_id (or Idempotency-Key) names one batch per account: a resend inside it gets that batch.
    client_batch_id_window_s: int = Field(86400, alias="CLIENT_BATCH_ID_WINDOW_SECONDS")


class LifecycleSettings(_Base):
    """The bracket workflow's task Lambdas and the order-update watcher (issue 5)."""

    # How long an unfilled entry may wait when the market never closes (paper) or its validity has no clock.
    entry_timeout_s: int = Field(6 * 3600, alias="ENTRY_TIMEOUT_S")
    # A reverse's new entry waits at most this long for the old position to be flat, then is cancelled unsent.
    reverse_wait_s: int = Field(600, alias="REVERSE_WAIT_S")
    # The GTT stop leg is a LIMIT order (Kite requires it): its price sits this percent beyond the trigger, so a
    # fast market still fills it. At least one tick.
    stop_limit_buffer_percent: Decimal = Field(Decimal("0.5"), alias="STOP_LIMIT_BUFFER_PERCENT")
    # How long an order update's dedupe key (order_id, status, filled_quantity) is kept.
    order_update_dedupe_s: int = Field(2 * 86400, alias="ORDER_UPDATE_DEDUPE_SECONDS")
    # How long a watcher's claim on an order update holds before another delivery may act on it: longer than the
    # watcher's timeout (20 s in template.yaml), so only a watcher that died loses its claim.
    order_update_lease_s: int = Field(30, alias="ORDER_UPDATE_LEASE_SECONDS")
    # A GTT that fired but whose LIMIT child has not filled this long after (the market gapped past its price) is
    # exited at market by the exit Lambda, the child cancelled first.
    gtt_child_grace_s: float = Field(3.0, alias="GTT_CHILD_GRACE_S")
    # A GTT the broker answered with its id but does not list yet is not "missing" until the bracket has been
    # unchanged this long: a broker whose GTT book shows a new GTT late would otherwise get a second GTT from
    # reconciliation, and both would fire. A GTT shown deleted, cancelled or rejected is re-made at once.
    gtt_visibility_grace_s: float = Field(10.0, alias="GTT_VISIBILITY_GRACE_S")
    # An exit is watched: this long after it is claimed, a delayed copy of its message checks that an exit order was
    # placed, and resumes the exit if the invocation that claimed it died (after deleting the GTT, say) instead of
    # leaving the position to the queue's visibility timeout.
    exit_watchdog_s: int = Field(3, alias="EXIT_WATCHDOG_S")
    # A fill that no order of ours made on an open bracket's position (a close by hand in the Kite app) has the
    # watcher start that bracket's reconciliation at once (RECONCILE_BRACKET_FUNCTION, asynchronously), which looks
    # this long after the fill, so a trader's quick round trip is seen whole.
    reconcile_bracket_function: str = Field("", alias="RECONCILE_BRACKET_FUNCTION")
    hand_fill_settle_s: float = Field(1.0, alias="HAND_FILL_SETTLE_S")
    # After an exit placement whose outcome is unknown (no answer, and the broker's book did not show it within the
    # lookup window), no other attempt places for this much longer: a broker that lists new orders late still shows
    # the first one before a second is sent.
    exit_unknown_hold_s: float = Field(1.5, alias="EXIT_UNKNOWN_HOLD_S")


class LiveUpdateSettings(_Base):
    """Live updates (issue 8): the WebSocket API's @connections endpoint and Telegram."""

    # https://<api-id>.execute-api.<region>.amazonaws.com/<stage> (the local stack points it at its own server);
    # empty: no WebSocket pushes.
    websocket_management_url: str = Field("", alias="WEBSOCKET_MANAGEMENT_URL")
    # A connection item outlives API Gateway's 2-hour connection limit only by this much (then TTL removes it).
    websocket_connection_ttl_s: int = Field(3 * 3600, alias="WEBSOCKET_CONNECTION_TTL_S")
    # Telegram credentials: a Secrets Manager secret or an SSM SecureString holding {"bot_token", "chat_id"};
    # neither set: Telegram is off.
    telegram_secret_name: str = Field("", alias="TELEGRAM_SECRET_NAME")
    telegram_parameter_name: str = Field("", alias="TELEGRAM_PARAMETER_NAME")
    telegram_api_base_url: str = Field("https://api.telegram.org", alias="TELEGRAM_API_BASE_URL")
    telegram_timeout_s: float = Field(3.0, alias="TELEGRAM_TIMEOUT_S")
    # Telegram allows about one message a second per chat.
    telegram_min_interval_s: float = Field(1.0, alias="TELEGRAM_MIN_INTERVAL_S")
    # A 429 asking to wait longer than this drops the message (counted) rather than hold the stream.
    telegram_max_wait_s: float = Field(5.0, alias="TELEGRAM_MAX_WAIT_S")


class ReconcileSettings(_Base):
    """Reconciliation with the broker and the MIS square-off (issue 8)."""

    # Local stack only: how often the reconcile schedule fires (AWS runs it every minute in market hours).
    reconcile_every_s: float = Field(15.0, alias="RECONCILE_EVERY_S")
    # Position still open but its GTT is gone at the broker: place a new GTT (true) or flag it for review (false).
    reconcile_reprotect: bool = Field(True, alias="RECONCILE_REPROTECT")
    # GTTs at the broker that no open bracket owns: cancel them (true) or only report them (false).
    reconcile_cancel_orphan_gtts: bool = Field(False, alias="RECONCILE_CANCEL_ORPHAN_GTTS")
    # A live GTT that one of our brackets claimed but no longer protects (the bracket finished, or it records another
    # GTT) can only fire into a position that is not there any more: cancelled by default.
    reconcile_cancel_finished_gtts: bool = Field(True, alias="RECONCILE_CANCEL_FINISHED_GTTS")
    # An order SENT_TO_BROKER without a final answer for longer than this is flagged for review ("frozen").
    reconcile_frozen_after_s: int = Field(3600, alias="RECONCILE_FROZEN_AFTER_S")
    # Brackets CREATED longer ago than this whose workflow never started are started again.
    reconcile_resume_after_s: int = Field(60, alias="RECONCILE_RESUME_AFTER_S")
    # MIS square-off time (IST, HH:MM); the schedule in template.yaml fires at it.
    square_off_time_ist: str = Field("15:15", alias="SQUARE_OFF_TIME_IST")


class Settings(
    BatchSettings,
    AwsSettings,
    StoreSettings,
    BrokerSettings,
    BracketSettings,
    IntakeSettings,
    StreamerSettings,
    LifecycleSettings,
    LiveUpdateSettings,
    ReconcileSettings,
):
    stage: str = Field("local", alias="STAGE")

    @model_validator(mode="before")
    @classmethod
    def _broker_urls_follow_the_broker(cls, data: object) -> object:
        """Unset broker URLs follow from BROKER: Kite's own for kite, the local paper exchange's for paper."""
        if not isinstance(data, dict):
            return data
        kite = str(data.get("BROKER") or "paper").strip().lower() == "kite"
        defaults = {
            "BROKER_BASE_URL": "https://api.kite.trade" if kite else "http://127.0.0.1:8700",
            "BROKER_TICKER_URL": "wss://ws.kite.trade" if kite else "ws://127.0.0.1:8700/ws",
        }
        return {**data, **{key: value for key, value in defaults.items() if not data.get(key)}}

    @property
    def broker_secret(self) -> str:
        """The broker secret's name (or ARN): BROKER_SECRET_NAME, else bracketflow/<stage>/<broker>."""
        return self.broker_secret_name or f"bracketflow/{self.stage}/{self.broker}"


def tracing_wanted() -> bool:
    """Whether X-Ray tracing can happen here, by Powertools' own rule: inside Lambda (LAMBDA_TASK_ROOT), not under
    SAM local or Chalice, and not POWERTOOLS_TRACE_DISABLED. Read once, when observability builds the tracer."""
    env = os.environ
    disabled = env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in ("1", "y", "yes", "t", "true", "on")
    emulated = bool(env.get("AWS_SAM_LOCAL") or env.get("AWS_CHALICE_CLI_MODE"))
    return bool(env.get("LAMBDA_TASK_ROOT")) and not emulated and not disabled


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
