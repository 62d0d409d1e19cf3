"""`python -m paper` as its own process: env configuration, the seeded random walk, order logs, a clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from paper.config import PaperConfig
from paper.exchange import RandomWalk

ROOT = Path(__file__).resolve().parents[2]
HEADERS = {"Authorization": "token walker:walk-token", "X-Kite-Version": "3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def paper_process():
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("layers/common", "streamer", ".")),
        "PAPER_PORT": str(port),
        "PAPER_MARKET": "walk",
        "PAPER_SEED": "11",
        "PAPER_API_KEY": "walker",
        "PAPER_ACCESS_TOKEN": "walk-token",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "paper"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # waiting for the port to open; nothing asserts how long it took
            try:
                requests.get(f"{base_url}/_paper/state", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def ltp(base_url: str) -> float:
    answer = requests.get(f"{base_url}/quote/ltp", params={"i": "NSE:INFY"}, headers=HEADERS, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["NSE:INFY"]["last_price"]


def test_the_process_walks_the_market_logs_orders_and_stops_cleanly_on_ctrl_c(paper_process) -> None:
    process, base_url = paper_process

    # Given the walk has started, the price moves on its own
    first = ltp(base_url)
    seen = {first}
    for _ in range(100):
        seen.add(ltp(base_url))
        if len(seen) > 2:
            break
        time.sleep(0.05)
    assert first > 0 and len(seen) > 2

    # When an order is placed with the configured credentials
    placed = requests.post(
        f"{base_url}/orders/regular",
        data={
            "exchange": "NSE",
            "tradingsymbol": "INFY",
            "transaction_type": "BUY",
            "quantity": 1,
            "product": "CNC",
            "order_type": "LIMIT",
            "price": 100,
        },
        headers=HEADERS,
        timeout=5,
    )
    assert placed.status_code == 200
    order_id = placed.json()["data"]["order_id"]
    default_credentials = requests.get(
        f"{base_url}/orders", headers={"Authorization": "token paper:paper-token"}, timeout=5
    )
    assert default_credentials.status_code == 403

    # Then Ctrl-C stops it with exit code 0, and the log has one line for the order event
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "market=walk, seed=11" in stderr
    assert f"order {order_id} OPEN BUY NSE:INFY" in stderr
    assert "Traceback" not in stderr


def test_the_walk_is_reproducible_from_its_seed() -> None:
    from bracketflow.domain.instruments import default_master

    master = default_master()
    first, second, other = RandomWalk(master, 7), RandomWalk(master, 7), RandomWalk(master, 8)

    steps = [(first.step(), second.step(), other.step()) for _ in range(5)]

    assert all(a == b for a, b, _ in steps)
    assert any(a != c for a, _, c in steps)
    for moves, _, _ in steps:
        for instrument, price, bid, ask in moves:
            tick = instrument.tick_size if instrument.tick_size > 0 else 0
            assert price > 0 and bid <= price <= ask
            if tick:
                assert price % tick == 0


def test_config_comes_from_the_environment_and_refuses_an_unknown_market() -> None:
    config = PaperConfig.from_env({"PAPER_PORT": "9123", "PAPER_MARKET": "MANUAL", "PAPER_SEED": "3"})
    assert (config.port, config.market, config.seed, config.api_key) == (9123, "manual", 3, "paper")
    with pytest.raises(ValueError, match="PAPER_MARKET"):
        PaperConfig.from_env({"PAPER_MARKET": "casino"})
