"""Where the broker lives, following from BROKER, and the rule that paper mode never touches real money.

BROKER=kite talks to Kite Connect (api.kite.trade, ws.kite.trade, the login at kite.zerodha.com) with the stage's
Kite secret. BROKER=paper talks to the paper exchange on the local stack only, with its own secret
(bracketflow/local/paper): `check_paper_safety` refuses, before anything is sent or read, paper mode outside the local
stack, a paper broker URL on a Kite or Zerodha host, and a paper secret named like a Kite one. The template refuses
Broker=paper at deploy time for the same reason (its Rules), so this is the second lock on the same door.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from bracketflow.errors import BrokerMisconfigured
from bracketflow.settings import Settings

KITE_API_URL = "https://api.kite.trade"
KITE_TICKER_URL = "wss://ws.kite.trade"
KITE_LOGIN_URL = "https://kite.zerodha.com/connect/login"
# Hosts of the real broker: paper mode may reach none of them (nor any of their subdomains).
REAL_BROKER_DOMAINS = ("kite.trade", "zerodha.com")
LOCAL_STAGE = "local"


def is_real_broker_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in REAL_BROKER_DOMAINS)


def check_paper_safety(settings: Settings) -> None:
    """Raise BrokerMisconfigured when paper mode could reach a real broker or real credentials; kite mode passes."""
    if settings.broker == "kite":
        return
    if settings.broker != "paper":
        raise BrokerMisconfigured(f"BROKER must be 'kite' or 'paper', got {settings.broker!r}")
    if settings.stage != LOCAL_STAGE:
        raise BrokerMisconfigured(
            f"BROKER=paper runs only on the local stack (make run), not on stage {settings.stage!r}: "
            "a deployed stack trades through Kite (Broker=kite)"
        )
    for what, url in (("BROKER_BASE_URL", settings.broker_base_url), ("BROKER_TICKER_URL", settings.broker_ticker_url)):
        if is_real_broker_url(url):
            raise BrokerMisconfigured(f"BROKER=paper refuses {what}={url}: that is the real broker, not the paper one")
    secret = settings.broker_secret
    if "kite" in secret.rsplit(":", 1)[-1].lower():
        raise BrokerMisconfigured(f"BROKER=paper refuses the broker secret {secret!r}: it names Kite credentials")


def login_url(settings: Settings, api_key: str) -> str:
    """Where the trader logs in: Kite's login page for the app's api_key, or the paper exchange's copy of it."""
    check_paper_safety(settings)
    base = KITE_LOGIN_URL if settings.broker == "kite" else settings.broker_base_url.rstrip("/") + "/connect/login"
    return f"{base}?{urlencode({'api_key': api_key, 'v': '3'})}"
