"""`python -m local` on the app's own template.yaml: it comes up, says so, answers /health, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from local.stack import free_port

pytestmark = pytest.mark.xdist_group(name="stack")

REPO = Path(__file__).resolve().parents[2]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


def _python_m_local(api: int, websocket: int, moto: int, paper: int, **popen: Any) -> subprocess.Popen[str]:
    """`python -m local` in the foreground on the given ports, its output (stderr too) on a pipe."""
    env = {
        **os.environ,
        "API_PORT": str(api),
        "WEBSOCKET_PORT": str(websocket),
        "MOTO_PORT": str(moto),
        "PAPER_PORT": str(paper),
        "LOCAL_API_KEY": "console-test-key",
        "PYTHONPATH": os.pathsep.join([str(REPO / "layers" / "common"), str(REPO / "streamer"), str(REPO)]),
    }
    return subprocess.Popen(  # preexec_fn, when given, makes only signal calls before the exec
        [sys.executable, "-m", "local"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def test_python_m_local_comes_up_reports_health_and_ctrl_c_stops_every_process():
    # Given free ports for the API, its WebSocket API, moto and the paper exchange (the WebSocket API is told its own
    # port: its default, API_PORT + 1, may already be taken by another test's server)
    api, websocket, moto, paper = free_port(), free_port(), free_port(), free_port()

    # When `python -m local` starts in the foreground
    proc = _python_m_local(api, websocket, moto, paper)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("ready in"):
                break
        ready = [line for line in lines if line.startswith("ready in")]
        assert ready, "no ready line:\n" + "\n".join(lines)

        # Then it printed one line per component, and the ready line has the URLs and the dev key
        assert any(line.strip().startswith("✓ aws") and f":{moto}" in line for line in lines)
        assert any(line.strip().startswith("✓ api") and f":{api}" in line for line in lines)
        assert f"http://127.0.0.1:{api}" in ready[0]
        assert "console-test-key" in ready[0], "\n".join(lines)

        # And /health answers 200 naming each component
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=10) as response:
            assert response.status == 200
            health = json.loads(response.read())
        assert health["status"] == "ok"
        assert set(health["components"]) >= {"api", "aws", "functions", "events"}
        assert set(health["components"].values()) == {"up"}

        children = [
            int(pid)
            for pid in subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
        ]
    finally:
        # When Ctrl-C arrives
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines.extend(out.splitlines())

    # Then it stops cleanly, with every process it started (the paper exchange, once paper/ can run)
    assert proc.returncode == 0, "\n".join(lines)
    if (REPO / "paper" / "__main__.py").is_file():
        assert health["components"]["paper"] == "up"
        assert children, "the paper exchange was not a child of the local stack"
    assert lines[-1] == "stopped."
    assert not [pid for pid in children if _pid_alive(pid)]


@pytest.mark.parametrize("inherited", ["ignored", "blocked"])
def test_ctrl_c_stops_the_stack_even_when_the_launcher_ignored_or_blocked_it(inherited):
    # Given a launcher that ignores or blocks SIGINT for itself, which its children inherit (a test runner, a tool
    # that shields its own children from the terminal's Ctrl-C)
    def shielded() -> None:
        if inherited == "ignored":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    proc = _python_m_local(free_port(), free_port(), free_port(), free_port(), preexec_fn=shielded)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ready in"):
                break
        assert any(line.startswith("ready in") for line in lines), "".join(lines)
        # When Ctrl-C reaches the stack
        proc.send_signal(signal.SIGINT)
        # Then it stops cleanly, as it does from a terminal
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "stopped." in out, out
