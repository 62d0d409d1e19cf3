"""`python -m local` (what `make run` runs): the local stack in the foreground until Ctrl-C.

Prints one line per component as it comes up, a ready line with the URLs and the dev API key, then one readable line
per thing that happens (requests, messages, schedules, the children's output). Ctrl-C or SIGTERM stops everything.
Ports and options come from the environment: API_PORT, MOTO_PORT, PAPER_PORT, LOCAL_API_KEY, LOCAL_TEMPLATE,
LOCAL_CRON_EVERY_S, LOCAL_SCHEDULE_EVERY_S, LOCAL_PAPER=0/1, LOCAL_STREAMER=0/1, LOCAL_RESTART_BACKOFF_S,
LOCAL_VERBOSE=1.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from local.components import DOWN, FAILED, UP, ComponentState
from local.demo import ready_banner
from local.stack import DEV_ACCOUNT_ID, LocalStack, StackConfig

_STANDARD_RECORD_KEYS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ReadableFormatter(logging.Formatter):
    """`17:45:01 api       POST /api/v1/... -> 200` — component name from the logger, extra fields as k=v."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("local.")
        if record.name == "bracketflow" or record.name.startswith("bracketflow."):
            name = _invocation_name() or "app"
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_KEYS and not k.startswith("_")}
        extras.pop("function_name", None)
        tail = " ".join(f"{k}={_short(v)}" for k, v in extras.items())
        line = f"{clock} {name:<10} {level}{record.getMessage()}" + (f"  {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _invocation_name() -> str | None:
    """The function whose invocation wrote the line (the local runtime names each invocation in its thread)."""
    from bracketflow.observability import logger

    name = logger.thread_safe_get_current_keys().get("function_name")  # "<stack>-PlaceEntryFunction"
    return str(name).rsplit("-", 1)[-1].removesuffix("Function") if name else None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _readable_app_logs(handler: logging.Handler) -> None:
    """Powertools logs JSON for CloudWatch; on a terminal the same records read better as one short line."""
    app = logging.getLogger("bracketflow")
    for existing in list(app.handlers):
        app.removeHandler(existing)
    app.addHandler(handler)
    app.propagate = False


def _announce(change: ComponentState) -> None:
    if change.state == UP:
        print(f"  ✓ {change.name:<10} {change.detail}", flush=True)
    elif change.state in (FAILED, DOWN):
        print(f"  ✗ {change.name:<10} {change.detail}", flush=True)


def main() -> int:
    verbose = os.environ.get("LOCAL_VERBOSE", "") not in ("", "0")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ReadableFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    config = StackConfig.from_env()
    config.activity_log = True
    # EMF metric blobs are for CloudWatch; locally they would drown the readable lines.
    config.extra_env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    stack = LocalStack(config)
    stack.components.subscribe(_announce)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C stops the stack whatever the launching process left behind: a SIGINT ignored or blocked there is
    # inherited (a test runner or a tool that shields its own children), and the stack would then never stop on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    print(f"bracketflow local stack — {config.template_path.name}, paper mode, no AWS account", flush=True)
    started = time.monotonic()
    try:
        stack.start()
        _readable_app_logs(handler)
        took = time.monotonic() - started
        paper = f"  paper {stack.paper_url}" if stack.children else ""
        key = (
            f"dev API key: {config.local_api_key} (account {DEV_ACCOUNT_ID})"
            if stack.dev_account_seeded
            else "dev account NOT seeded (see above)"
        )
        print(
            f"ready in {took:.1f} s — API {stack.api_url}  health {stack.api_url}/health  "
            f"AWS {stack.aws_endpoint}{paper}  {key}  (Ctrl-C stops)",
            flush=True,
        )
        if stack.dev_account_seeded:
            ws_url = stack.websocket_url if stack.websocket is not None else None
            print(ready_banner(stack.api_url, config.local_api_key, stack.paper_url, ws_url), flush=True)
        while True:  # the stack's supervisors watch the children (a dead streamer is restarted, and said so)
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return_code = 0
    except Exception as exc:
        logging.getLogger("local.stack").error("the local stack could not start: %s", exc, exc_info=verbose)
        return_code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        stack.stop()
    print("stopped.", flush=True)
    return return_code


if __name__ == "__main__":
    sys.exit(main())
