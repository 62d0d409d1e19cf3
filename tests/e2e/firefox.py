"""Debian's Firefox ESR driven over WebDriver BiDi, the W3C protocol Firefox speaks itself: no geckodriver, no
browser build of Playwright's own (neither is installable from the package registries this project uses; Playwright's
own BiDi channel needs commands this ESR does not have yet). Enough of the protocol for the console's test: open a
page, run a script in it and read its answer, wait for a condition.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import websocket

FIREFOX = "/usr/bin/firefox-esr"
# A profile for a test machine: no updates, telemetry, studies, remote settings or prefetching; nothing to fetch.
PREFS = {
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.search.update": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "extensions.update.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "toolkit.telemetry.enabled": False,
}
_LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")


class BidiError(RuntimeError):
    pass


class FirefoxPage:
    """One tab of a headless Firefox, over a WebDriver BiDi session."""

    def __init__(self, ws: websocket.WebSocket, context: str) -> None:
        self._ws = ws
        self._ids = itertools.count(100)
        self.context = context

    def command(self, method: str, params: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
        return _command(self._ws, self._ids, method, params, timeout_s)

    def goto(self, url: str) -> None:
        self.command("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def set_viewport(self, width: int, height: int) -> None:
        self.command(
            "browsingContext.setViewport", {"context": self.context, "viewport": {"width": width, "height": height}}
        )

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited), as JSON would carry it."""
        answer = self.command(
            "script.evaluate",
            {
                "expression": f"Promise.resolve({expression}).then((v) => JSON.stringify(v === undefined ? null : v))",
                "target": {"context": self.context},
                "awaitPromise": True,
                "resultOwnership": "none",
            },
        )
        if answer.get("type") == "exception":
            raise BidiError(f"{expression[:80]}: {answer['exceptionDetails'].get('text')}")
        return json.loads(answer["result"]["value"])

    def wait_for(self, what: str, expression: str, timeout_s: float = 90) -> Any:
        """Poll until the expression is truthy (a bound for a slow machine, never a timing assertion)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = self.evaluate(expression)
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    def fill(self, selector: str, value: str) -> None:
        self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.value = {json.dumps(value)};"
            " e.dispatchEvent(new Event('input', { bubbles: true }));"
            " e.dispatchEvent(new Event('change', { bubbles: true })); })()"
        )

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def text(self, selector: str) -> str | None:
        return self.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")


def _command(ws: websocket.WebSocket, ids: Iterator[int], method: str, params: dict[str, Any], timeout_s: float) -> Any:
    command_id = next(ids)
    ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        message = json.loads(ws.recv())
        if message.get("id") != command_id:
            continue  # an event, or an answer to an earlier command
        if message.get("type") == "error":
            raise BidiError(f"{method}: {message.get('error')}: {message.get('message')}")
        return message["result"]
    raise BidiError(f"{method}: no answer in {timeout_s} s")


@contextmanager
def firefox_page() -> Iterator[FirefoxPage]:
    """A headless Firefox ESR with a throwaway profile, and its first tab; the browser is ended afterwards."""
    with tempfile.TemporaryDirectory(prefix="bracketflow-firefox-") as profile:
        Path(profile, "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items()), encoding="utf-8"
        )
        process = subprocess.Popen(
            [FIREFOX, "--headless", "--no-remote", "--profile", profile, "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = _listening_url(process)
            ws = websocket.create_connection(f"{url}/session", timeout=60, suppress_origin=True)
            try:
                ids = itertools.count(1)
                _command(ws, ids, "session.new", {"capabilities": {}}, 60)
                tree = _command(ws, ids, "browsingContext.getTree", {"maxDepth": 0}, 60)
                yield FirefoxPage(ws, tree["contexts"][0]["context"])
                with contextlib.suppress(BidiError, websocket.WebSocketException, OSError):
                    _command(ws, ids, "session.end", {}, 10)  # the browser is ended below either way
            finally:
                ws.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def _listening_url(process: subprocess.Popen[str], timeout_s: float = 90) -> str:
    """The BiDi address Firefox prints on stderr once it listens (its port chosen by the system). stderr is read to
    its end on a thread of its own: a full pipe would stall the browser."""
    assert process.stderr is not None
    stderr = process.stderr
    found: list[str] = []
    seen: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in stderr:
            if not found:
                seen.append(line)
                match = _LISTENING.search(line)
                if match:
                    found.append(match.group(1))
                    ready.set()
        ready.set()  # the browser ended

    threading.Thread(target=drain, name="firefox-stderr", daemon=True).start()
    ready.wait(timeout_s)
    if not found:
        raise AssertionError(f"Firefox did not start its WebDriver BiDi listener: {''.join(seen[-10:])}")
    return found[0]
