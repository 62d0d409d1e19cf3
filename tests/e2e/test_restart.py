"""`make run` stopped with Ctrl-C after some traffic comes up again at once, on the same ports, as often as wanted.

Each run is `python -m local` (what `make run` runs) in its own process on ports of its own, named through the
environment variables the stack reads. Traffic first, so the stopped run leaves its closed connections in TIME_WAIT
on those ports, as a trader's browser, TradingView and the stack's own clients do; then Ctrl-C (SIGINT) and, with
no pause, the next run on the same ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from local.stack import REPO_ROOT, free_port

BOUND_S = 180.0  # an upper bound for a loaded machine, never a timing assertion
API_KEY = "restart-dev-key"


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # urllib sends Connection: close
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _get_with_key(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"X-API-KEY": API_KEY})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, json.loads(answer.read() or b"{}")


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@contextmanager
def make_run(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "local"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def wait_healthy(proc: subprocess.Popen[bytes], api: str, log: Path) -> dict:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the local stack exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            status, body = _get(f"{api}/health")
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the local stack was not healthy within {BOUND_S:.0f} s:\n{log.read_text()[-3000:]}")


def ctrl_c(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(BOUND_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the local stack did not stop on Ctrl-C:\n{log.read_text()[-3000:]}") from None
    assert code == 0, log.read_text()[-3000:]


def test_make_run_stopped_after_traffic_starts_again_at_once_on_the_same_ports(tmp_path):
    ports = {name: free_port() for name in ("API_PORT", "WEBSOCKET_PORT", "MOTO_PORT", "PAPER_PORT")}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "LOCAL_API_KEY": API_KEY}
    env["PYTHONPATH"] = os.pathsep.join(str(REPO_ROOT / p) for p in ("layers/common", "streamer", "."))
    api = f"http://127.0.0.1:{ports['API_PORT']}"
    log = tmp_path / "make-run.log"
    alert = {"apikey": API_KEY, "symbol": "NSE:INFY", "action": "buy", "product": "MIS", "quantity": "1",
             "pricetype": "MARKET", "sl_percent": "1", "target_percent": "2", "entry_price": "1500"}  # fmt: skip

    for run in range(3):
        with make_run(env, log) as proc:
            # Given a healthy stack (the same ports every run, the last run stopped a moment ago)
            components = wait_healthy(proc, api, log)["components"]
            assert {"api", "aws", "paper", "streamer"} <= set(components), components
            # When it serves traffic (every connection closed by the server: TIME_WAIT on its ports)
            for n in range(2):  # within the key's placement burst
                status, body = _post(f"{api}/tradingview/webhook/bracket", {**alert, "strategy": f"restart-{run}-{n}"})
                assert status == 200, (run, body)
            for _ in range(5):
                status, book = _get_with_key(f"{api}/api/v1/orderbook")
                assert status == 200 and book["data"]["total"] == 2, book  # a fresh stack each run
            # Then Ctrl-C stops it cleanly, and the next run (at once, same ports) must come up: the loop does it
            ctrl_c(proc, log)
    assert log.read_text().count("ready in") == 3
