"""Local-only chaos: a Lambda invocation that dies right after the broker acted, as a timeout or a crashed sandbox
would end it on AWS. Never part of the deployed code: only the local stack installs it, and only when asked.

While installed, every broker call that changes something (POST/PUT/DELETE to the broker's base URL) made inside an
invocation of one of `functions` is, at `rate` (a seeded roll), answered to nobody: the broker has acted (2xx), and the
invocation ends there with `InvocationDied`, which no handler's `except Exception` catches. The runtime reports it as
Lambda does ("Sandbox.Timedout" or "Runtime.ExitError"), so Step Functions' Retry/Catch, SQS redelivery and the
stream pollers see what they would on AWS.

Environment (read by `StackConfig.from_env`, so `make run` can use it too): LOCAL_CHAOS_CRASH_RATE (0..1; unset or 0:
off), LOCAL_CHAOS_CRASH_FUNCTIONS (comma-separated logical ids; default: every function that calls the broker),
LOCAL_CHAOS_SEED (default 7).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from local.runtime import InvocationDied, current_function

log = logging.getLogger("local.chaos")

# The template's functions that call the broker (and the watcher, whose claims a crash must not strand).
BROKER_FUNCTIONS = (
    "PlaceEntryFunction",
    "CancelEntryFunction",
    "PlaceProtectionFunction",
    "EmergencyExitFunction",
    "ExitFunction",
    "SyncStopFunction",
    "ReconcileBracketFunction",
    "SquareOffFunction",
    "PlaceBatchLegFunction",
    "RollbackBatchLegFunction",
    "WatcherFunction",
)
MUTATING = frozenset({"POST", "PUT", "DELETE"})
ERROR_TYPES = ("Sandbox.Timedout", "Runtime.ExitError")


class CrashAfterBroker:
    """Kills invocations right after a broker call that changed something was answered 2xx. `rate` may be changed
    while installed (0 stops it); `fired` counts the deaths per function."""

    def __init__(self, rate: float, *, seed: int = 7, functions: Iterable[str] | None = None) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"the crash rate must be between 0 and 1; got {rate}")
        self.rate = rate
        self.functions = frozenset(functions) if functions is not None else frozenset(BROKER_FUNCTIONS)
        self.broker_url = ""
        self.fired: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CrashAfterBroker | None:
        raw = (env.get("LOCAL_CHAOS_CRASH_RATE") or "").strip()
        if not raw or float(raw) == 0:
            return None
        names = [n.strip() for n in (env.get("LOCAL_CHAOS_CRASH_FUNCTIONS") or "").split(",") if n.strip()]
        return cls(float(raw), seed=int(env.get("LOCAL_CHAOS_SEED") or 7), functions=names or None)

    def install(self, broker_url: str) -> Callable[[], None]:
        """Wrap requests.Session.request for this process; returns the undo."""
        self.broker_url = broker_url.rstrip("/")
        original = requests.Session.request
        chaos = self

        def request(session: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            response = original(session, method, url, *args, **kwargs)
            chaos._maybe_die(str(method).upper(), str(url), response.status_code)
            return response

        requests.Session.request = request  # type: ignore[method-assign,assignment]  # a pass-through wrapper

        def undo() -> None:
            requests.Session.request = original  # type: ignore[method-assign]

        return undo

    def _maybe_die(self, method: str, url: str, status: int) -> None:
        spec = current_function()
        if spec is None or spec.logical_id not in self.functions or method not in MUTATING or not 200 <= status < 300:
            return
        if not self.broker_url or not url.startswith(self.broker_url):
            return
        with self._lock:
            if self.rate <= 0 or self._rng.random() >= self.rate:
                return
            error_type = self._rng.choice(ERROR_TYPES)
            self.fired[spec.logical_id] += 1
        path = urlsplit(url).path
        log.warning("chaos: %s dies after %s %s was answered %d", spec.logical_id, method, path, status)
        raise InvocationDied(error_type, f"{spec.logical_id} died after the broker answered {method} {path} {status}")
