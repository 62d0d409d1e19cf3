"""A soak's state and its plumbing: the stack's API as a client calls it, the broker's Kite API as the trader's
app calls it, and the paper exchange's own routes and the stack's queues as the soak reads them."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests

from local.chaos import CrashAfterBroker
from local.soak.plan import SoakConfig
from local.stack import LocalStack

KITE_HEADERS = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}
SOAK_API_KEY = "soak-dev-key"
LIVE_ORDER = frozenset({"OPEN", "TRIGGER PENDING"})


@dataclass
class Send:
    index: int
    body: str
    status: int
    bracket_id: str | None
    duplicate: bool | None
    message: str
    shares: tuple[str, ...] = ()  # a scale-out's brackets, one per share, as its answer named them


@dataclass
class SignalSend:
    index: int
    body: str
    status: int
    duplicate: bool | None
    brackets: list[dict[str, Any]]  # what the answer says was done: bracket_id, status, action
    message: str


class SoakBase:
    """What a soak run keeps as it goes, and how it talks to the stack and the broker."""

    def __init__(self, cfg: SoakConfig, say: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.say = say
        self.rng = random.Random(cfg.seed * 7919 + 1)
        self.stack: LocalStack | None = None
        self.chaos = CrashAfterBroker(cfg.crash_rate, seed=cfg.seed) if cfg.crash_rate > 0 else None
        self.sends: list[Send] = []
        self.bodies: dict[int, str] = {}
        self.signal_sends: list[SignalSend] = []  # exit signals: they open no bracket, so they are checked apart
        self.signal_bodies: dict[int, str] = {}
        self.reversing: dict[int, list[str]] = {}  # a reverse alert's index -> the brackets its answer said it closes
        self.client_errors: list[dict[str, Any]] = []
        self.actions: Counter[str] = Counter()
        self.hand_order_ids: set[str] = set()  # the trader's unrelated orders: not bracketflow's to match
        self.hand_deleted_gtts: set[int] = set()  # GTTs the trader deleted: the gap until re-protection is theirs
        self.resting: list[tuple[float, str]] = []  # (cancel at, order id)
        self.notes: list[str] = []
        self.http = requests.Session()
        self.started = 0.0
        self.killed: tuple[float, int, Any] | None = None  # (restart deadline, pid killed, its Child)

    # ---- plumbing ----

    @property
    def api(self) -> str:
        assert self.stack is not None
        return self.stack.api_url

    @property
    def broker(self) -> str:
        assert self.stack is not None and self.stack.paper_url is not None
        return self.stack.paper_url

    def _client(self, method: str, path: str, **kwargs: Any) -> requests.Response | None:
        """A request to the stack's API as a client makes it; any 5xx (or no answer) is kept for the report."""
        try:
            answer = self.http.request(method, f"{self.api}{path}", timeout=30, **kwargs)
        except requests.RequestException as exc:
            self.client_errors.append({"method": method, "path": path, "status": None, "error": type(exc).__name__})
            return None
        if answer.status_code >= 500:
            self.client_errors.append(
                {"method": method, "path": path, "status": answer.status_code, "body": answer.text[:300]}
            )
        return answer

    def _kite(self, method: str, path: str, **kwargs: Any) -> Any:
        """The trader's app on the broker's Kite API; None when the broker refused (the trader shrugs)."""
        try:
            answer = self.http.request(method, f"{self.broker}{path}", headers=KITE_HEADERS, timeout=10, **kwargs)
        except requests.RequestException:
            return None
        if answer.status_code != 200:
            return None
        return answer.json().get("data")

    def _paper(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, f"{self.broker}/_paper/{path}", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()["data"]

    def _ltp(self, symbol: str) -> Decimal | None:
        """The last price, as TradingView's {{close}} or the trader's screen has it: read past the storm (a chart
        keeps its price while the broker's API fails)."""
        key = f"NSE:{symbol}"
        try:
            found = self.http.get(f"{self.broker}/_paper/quotes", params={"i": key}, timeout=30)
            found.raise_for_status()
            quote = found.json()["data"].get(key)
        except (requests.RequestException, ValueError):
            return None
        return Decimal(str(quote["ltp"])) if quote else None

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _queued(self, dead_letters: bool = False) -> dict[str, int]:
        """Messages (visible or in flight) on the stack's queues: the work still to do, or (dead_letters) given up."""
        assert self.stack is not None and self.stack.template is not None
        sqs = self.stack.client("sqs")
        found = {}
        for logical_id, queue in self.stack.template.queues.items():
            if ("DeadLetter" in logical_id) != dead_letters:
                continue
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue.url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            found[logical_id] = int(attrs["ApproximateNumberOfMessages"]) + int(
                attrs["ApproximateNumberOfMessagesNotVisible"]
            )
        return found
