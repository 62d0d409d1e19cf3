"""Run the paper exchange inside a test or the local stack: a background thread with its own event loop.

with start_paper_exchange(market="manual") as paper:
    kite = KiteConnect(api_key=paper.api_key, root=paper.base_url)
    paper.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500.05}])
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from aiohttp import web

from paper.config import PaperConfig
from paper.server import PaperExchange, build_app, exchange_of

CONTROL_TIMEOUT_S = 10


class PaperExchangeHandle:
    def __init__(self, config: PaperConfig) -> None:
        self.config = config
        self.api_key = config.api_key
        self.access_token = config.access_token
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="paper-exchange", daemon=True)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._cleanup())
        self._loop.close()

    async def _start(self) -> None:
        app = build_app(self.config)
        self.exchange: PaperExchange = exchange_of(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> PaperExchangeHandle:
        self._thread.start()
        self._started.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"the paper exchange did not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)

    def __enter__(self) -> PaperExchangeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- addresses -----------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The ticker address without credentials; add `?api_key=..&access_token=..` as Kite's ticker wants."""
        return f"ws://{self.config.host}:{self.port}/ws"

    @property
    def ticker_url(self) -> str:
        return f"{self.ws_url}?api_key={self.api_key}&access_token={self.access_token}"

    # ---- test controls over HTTP (safe from any thread) ----------------------------------------------------------

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, f"{self.base_url}/_paper/{path}", json=body, timeout=CONTROL_TIMEOUT_S)
        payload = response.json()
        if response.status_code >= 400:
            raise RuntimeError(f"/_paper/{path} answered {response.status_code}: {payload.get('message')}")
        return payload["data"]

    def set_quotes(self, quotes: list[dict[str, Any]]) -> Any:
        return self._control("POST", "quotes", {"quotes": quotes})

    def set_faults(self, rules: list[dict[str, Any]]) -> Any:
        return self._control("POST", "faults", {"rules": rules})

    def configure(self, **settings: Any) -> Any:
        return self._control("POST", "config", settings)

    def replay(self, path: str, speed: float = 1.0) -> Any:
        return self._control("POST", "replay", {"path": path, "speed": speed})

    def state(self) -> Any:
        return self._control("GET", "state")

    def reset(self) -> Any:
        return self._control("POST", "reset")

    def expire_sessions(self) -> Any:
        """End every session, as 06:00 IST does: nothing works until the next login."""
        return self._control("POST", "session", {"expire": True})

    def login_request_token(self) -> str:
        """Press the login page's button as a browser would; the request_token of the redirect (not followed)."""
        return login_request_token(self.base_url, self.api_key)


def login_request_token(base_url: str, api_key: str = "paper") -> str:
    """The one-time request_token the paper exchange's login button hands to the app's redirect URL."""
    answer = requests.post(
        f"{base_url}/connect/login",
        params={"api_key": api_key, "v": "3"},
        allow_redirects=False,
        timeout=CONTROL_TIMEOUT_S,
    )
    if answer.status_code != 302:
        raise RuntimeError(f"the paper login answered {answer.status_code}, not a redirect")
    return parse_qs(urlsplit(answer.headers["Location"]).query)["request_token"][0]


def start_paper_exchange(market: str = "manual", port: int = 0, seed: int = 7, **overrides: Any) -> PaperExchangeHandle:
    """Start a paper exchange on 127.0.0.1 (port 0 = a free port); stop it with .stop() or a `with` block."""
    config = dataclasses.replace(PaperConfig(), market=market, port=port, seed=seed, **overrides)
    return PaperExchangeHandle(config).start()
