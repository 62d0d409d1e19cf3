"""Child processes of the local stack (the paper exchange, the streamer): start, wait until ready, forward their
output line by line under their name, and stop them (SIGTERM, then SIGKILL after a grace period).

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
        if self._reader is not None:
            self._reader.join(timeout=2)
        if proc.stdout is not None:
            proc.stdout.close()
