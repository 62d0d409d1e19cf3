"""The local stack's supervisor restarts a dead child as ECS restarts a stopped task: at once reported down, started
again after a backoff that doubles per failure in a row (capped), reported up once ready, its restarts counted."""

from __future__ import annotations

import sys
import threading

from local.components import DOWN, FAILED, UP
from local.processes import Child, ChildSpec, RestartPolicy, Supervisor
from tests.support.stack import wait_for


class Reports:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, state: str, detail: str) -> None:
        with self.lock:
            self.seen.append((state, detail))

    def states(self) -> list[str]:
        with self.lock:
            return [state for state, _ in self.seen]


def child(code: str, settle_s: float = 0.2) -> Child:
    return Child(ChildSpec("worker", [sys.executable, "-c", code], settle_s=settle_s), lambda _name, _line: None)


def test_backoff_doubles_per_failure_and_stays_capped():
    policy = RestartPolicy(first_backoff_s=1.0, max_backoff_s=30.0)
    assert [policy.backoff_s(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_killed_child_is_reported_down_restarted_and_counted(tmp_path):
    worker = child("import time; time.sleep(600)")
    worker.start()
    worker.wait_ready()
    reports = Reports()
    supervisor = Supervisor(worker, RestartPolicy(first_backoff_s=0.1), reports, poll_s=0.05)
    supervisor.start()
    try:
        first_pid = worker.proc.pid
        worker.proc.kill()
        wait_for("the worker restarted", lambda: UP in reports.states())
        assert reports.states() == [DOWN, UP]
        assert "exited with code -9" in reports.seen[0][1] and "restart 1 in 0.1 s" in reports.seen[0][1]
        assert worker.alive and worker.proc.pid != first_pid and supervisor.restarts == 1
        worker.proc.kill()  # and again: still restarted
        wait_for("the second restart", lambda: supervisor.restarts == 2)
    finally:
        supervisor.stop()
        worker.stop()
    assert not worker.alive


def test_a_child_that_keeps_dying_backs_off_further_each_time():
    # A worker that dies before it is ready, every time
    worker = child("import sys; sys.exit(3)", settle_s=5.0)
    worker.start()
    reports = Reports()
    supervisor = Supervisor(worker, RestartPolicy(first_backoff_s=0.05, max_backoff_s=0.2), reports, poll_s=0.02)
    supervisor.start()
    try:
        wait_for("four failed restarts", lambda: reports.states().count(DOWN) >= 4)
    finally:
        supervisor.stop()
        worker.stop()
    waits = [detail.rsplit(" in ", 1)[1] for state, detail in reports.seen if state == DOWN][:4]
    assert waits == ["0.05 s", "0.1 s", "0.2 s", "0.2 s"]  # doubling, capped at 0.2
    assert UP not in reports.states() and supervisor.restarts == 0


def test_a_child_without_restarts_is_only_reported_failed():
    worker = child("import time; time.sleep(600)")
    worker.start()
    worker.wait_ready()
    reports = Reports()
    supervisor = Supervisor(worker, RestartPolicy(restart=False), reports, poll_s=0.05)
    supervisor.start()
    worker.proc.kill()
    wait_for("the failure reported", lambda: FAILED in reports.states())
    supervisor.stop()
    assert reports.states() == [FAILED] and not worker.alive and supervisor.restarts == 0
