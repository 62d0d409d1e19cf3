"""Child processes of the local stack (the paper exchange, the streamer): start, wait until ready, forward their
output line by line under their name, stop them (SIGTERM, then SIGKILL after a grace period), and supervise them:
a child that dies is reported at once and, if its policy says so, started again after a capped exponential backoff,
as ECS restarts a stopped task (Supervisor).

Children also die with us if we are killed outright: on Linux each child asks the kernel for SIGTERM when its parent
thread exits (PR_SET_PDEATHSIG), so start children from a thread that lives as long as the stack (the main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from local.components import DOWN, FAILED, UP

log = logging.getLogger("local.processes")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # not Linux: the stack's stop() still terminates its children
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class ChildSpec:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_port: int | None = None  # ready once this port on 127.0.0.1 accepts connections
    ready_timeout_s: float = 60.0
    settle_s: float = 1.0  # without a port: ready once it has stayed alive this long


class Child:
    def __init__(self, spec: ChildSpec, output: Callable[[str, str], None]):
        self.spec = spec
        self._output = output
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        """Start the process (again, after it has died: the last one's output reader is finished first)."""
        self._release()
        spec = self.spec
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            spec.args,
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
        )
        self._reader = threading.Thread(target=self._forward, name=f"out:{spec.name}", daemon=True)
        self._reader.start()

    def _forward(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._output(self.spec.name, line.rstrip("\n"))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self) -> None:
        spec = self.spec
        deadline = time.monotonic() + spec.ready_timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"{spec.name} exited with code {code} before it was ready")
            if spec.ready_port is not None:
                if port_open("127.0.0.1", spec.ready_port):
                    return
            elif time.monotonic() - started >= spec.settle_s:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{spec.name} was not ready within {spec.ready_timeout_s:.0f} s")

    def stop(self, grace_s: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.spec.name, grace_s)
                proc.kill()
                proc.wait(grace_s)
        self._release()

    def _release(self) -> None:
        """Finish forwarding a dead process's output and close its pipe."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass(frozen=True)
class RestartPolicy:
    """ECS-like: restart a dead child after a backoff that doubles per failure, capped; once it has stayed up for
    `reset_after_s`, the next failure starts from the first backoff again."""

    restart: bool = True
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    reset_after_s: float = 60.0

    def backoff_s(self, failures_in_a_row: int) -> float:
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** max(0, failures_in_a_row - 1))


# (state, detail) -> the stack's component registry (local.components' DOWN / UP / FAILED)
StateReport = Callable[[str, str], None]


class Supervisor:
    """Watches one started Child from its own thread: when the process dies, reports it down (with its exit code and
    when the restart comes) and restarts it by the policy; reports it up again once ready. Counts the restarts.

    The thread lives until stop(), so children it restarts keep PR_SET_PDEATHSIG tied to a thread that lasts as long
    as the stack."""

    def __init__(self, child: Child, policy: RestartPolicy, report: StateReport, *, poll_s: float = 0.2):
        self.child = child
        self.policy = policy
        self.restarts = 0
        self._report = report
        self._poll_s = poll_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"supervise:{child.spec.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.policy.max_backoff_s + self.child.spec.ready_timeout_s)

    def _run(self) -> None:
        failures = 0
        up_since = time.monotonic()
        while not self._stopping.wait(self._poll_s):
            if self.child.alive:
                if failures and time.monotonic() - up_since >= self.policy.reset_after_s:
                    failures = 0
                continue
            proc = self.child.proc
            code = proc.returncode if proc is not None else None
            if not self.policy.restart:
                self._report(FAILED, f"exited with code {code}")
                return
            failures += 1
            delay = self.policy.backoff_s(failures)
            log.warning("%s exited with code %s; restarting in %.1f s", self.child.spec.name, code, delay)
            self._report(DOWN, f"exited with code {code}; restart {self.restarts + 1} in {delay:g} s")
            if self._stopping.wait(delay):
                return
            try:
                self.child.start()
                self.child.wait_ready()
            except (OSError, RuntimeError) as exc:
                log.warning("%s did not come back: %s", self.child.spec.name, exc)
                if self.child.proc is not None and self.child.proc.poll() is None:
                    self.child.proc.kill()  # alive but never ready: treated as dead
                    self.child.proc.wait()
                continue  # the next turn of the loop backs off further
            self.restarts += 1
            up_since = time.monotonic()
            self._report(UP, f"restarted {self.restarts} time(s), last after exit code {code}")
