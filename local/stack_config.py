"""What a LocalStack is started with (StackConfig, from the environment `make run` uses too), and the ports it
takes."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from local.chaos import CrashAfterBroker
from local.processes import RestartPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int, what: str, variable: str) -> None:
    """Fail clearly now rather than hang or talk to a stranger: something else already listening on a port we need.

    SO_REUSEADDR, as every server of the stack binds: the connections of a run stopped a moment ago linger in
    TIME_WAIT for a minute and must not count as "in use" (only a listening socket does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RuntimeError(
                f"{what} needs {host}:{port}, which is in use ({exc.strerror}); stop what holds it or set {variable}"
            ) from None


def _env_flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class StackConfig:
    template_path: Path = REPO_ROOT / "template.yaml"
    host: str = "127.0.0.1"
    api_port: int = 3000  # 0: any free port
    websocket_port: int | None = None  # the WebSocket API; None: api_port + 1 (any free port when api_port is 0)
    moto_port: int = 5000
    paper_port: int = 8700
    region: str = "ap-south-1"
    stack_name: str = "bracketflow-local"
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    local_api_key: str = "local-dev-key"
    cron_every_s: float = 15.0  # cron(...) schedules (market-hours reconcile) run this often locally
    schedule_every_s: float | None = None  # if set, every schedule runs this often (tests, demos)
    schedules: bool = True
    activity_log: bool = False  # console lines for table changes and workflow executions (python -m local)
    seed_dev_account: bool = True  # the app's dev account (needs the app's template, not a test fixture's)
    paper: bool | None = None  # None: start it when paper/__main__.py exists
    # The paper exchange POSTs every order update to this stack's /broker/postback too, as Kite does to the app's
    # postback URL: a second channel beside the ticker's order updates (off for tests that play the ticker's part).
    paper_postbacks: bool = False
    streamer: bool | None = None  # None: start it when streamer/streamer/__main__.py exists
    streamer_restart: RestartPolicy = field(default_factory=RestartPolicy)  # LOCAL_RESTART_BACKOFF_S: the first wait
    extra_env: dict[str, str] = field(default_factory=dict)  # set for the handlers and the children
    # Local chaos: invocations that die right after the broker acted (local/chaos.py); None: never.
    crash_after_broker: CrashAfterBroker | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StackConfig:
        env = dict(os.environ if environ is None else environ)
        cron = env.get("LOCAL_CRON_EVERY_S") or env.get("RECONCILE_EVERY_S")
        every = env.get("LOCAL_SCHEDULE_EVERY_S")
        return cls(
            template_path=Path(env.get("LOCAL_TEMPLATE") or REPO_ROOT / "template.yaml"),
            api_port=int(env.get("API_PORT") or 3000),
            websocket_port=int(env["WEBSOCKET_PORT"]) if env.get("WEBSOCKET_PORT") else None,
            moto_port=int(env.get("MOTO_PORT") or 5000),
            paper_port=int(env.get("PAPER_PORT") or 8700),
            region=env.get("AWS_DEFAULT_REGION") or "ap-south-1",
            local_api_key=env.get("LOCAL_API_KEY") or "local-dev-key",
            cron_every_s=float(cron) if cron else 15.0,  # RECONCILE_EVERY_S defaults to 15 s
            schedule_every_s=float(every) if every else None,
            paper=_env_flag(env.get("LOCAL_PAPER")),
            paper_postbacks=_env_flag(env.get("LOCAL_PAPER_POSTBACKS")) is True,
            streamer=_env_flag(env.get("LOCAL_STREAMER")),
            streamer_restart=RestartPolicy(first_backoff_s=float(env.get("LOCAL_RESTART_BACKOFF_S") or 1.0)),
            crash_after_broker=CrashAfterBroker.from_env(env),
        )
