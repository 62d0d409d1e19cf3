"""The in-process Lambda runtime: every function of the template runs as a plain Python call in this process.

Each function's handler module is imported by file path under a unique module name (every function directory has an
app.py), with the layer directories importable as Lambda's /opt/python would make them. A handler that raises becomes a
`FunctionError` carrying the exception's class name, which is what Lambda reports and what ASL Retry/Catch match on.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from local.template import FunctionSpec

log = logging.getLogger("local.lambda")


class FunctionError(Exception):
    """A handler raised: the Lambda error payload (errorType = the exception's class name)."""

    def __init__(self, function: str, error_type: str, message: str, stack: list[str]):
        super().__init__(f"{function}: {error_type}: {message}")
        self.function = function
        self.error_type = error_type
        self.message = message
        self.stack = stack

    def payload(self) -> dict[str, Any]:
        return {"errorType": self.error_type, "errorMessage": self.message, "stackTrace": self.stack}


class InvocationDied(BaseException):
    """The invocation ended from outside, as a Lambda timeout or a crashed sandbox ends one: not an Exception, so no
    handler's `except Exception` sees it. The local chaos (local/chaos.py) raises it; the runtime reports the
    invocation failed with `error_type`, as Lambda reports "Sandbox.Timedout" or "Runtime.ExitError"."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


_invocation = threading.local()


def current_function() -> FunctionSpec | None:
    """The function whose invocation this thread is running (None outside one)."""
    return getattr(_invocation, "spec", None)


def past_timeout() -> FunctionSpec | None:
    """The function whose invocation this thread runs, when that invocation is past its timeout (None otherwise)."""
    spec = current_function()
    deadline = getattr(_invocation, "deadline", None)
    return spec if spec is not None and deadline is not None and time.monotonic() > deadline else None


def refuse_broker_calls_past_timeout(broker_url: str) -> Callable[[], None]:
    """Lambda ends an invocation at its timeout; a Python thread cannot be stopped. So that an invocation that stalled
    past its timeout (a loaded machine) cannot still act at the broker after the workflow or the queue has retried it,
    any request it then makes to the broker ends it as Lambda would ("Sandbox.Timedout"). Returns the undo."""
    import requests

    base = broker_url.rstrip("/")
    original = requests.Session.request

    def request(session: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        late = past_timeout()
        if late is not None and str(url).startswith(base):
            raise InvocationDied("Sandbox.Timedout", f"{late.logical_id} ran past its {late.timeout} s timeout")
        return original(session, method, url, *args, **kwargs)

    requests.Session.request = request  # type: ignore[method-assign,assignment]  # a pass-through wrapper

    def undo() -> None:
        requests.Session.request = original  # type: ignore[method-assign]

    return undo


class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    def __init__(self, spec: FunctionSpec):
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory_size
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _function_name_from(name_or_arn: str) -> str:
    """`fn`, `fn:qualifier` or `arn:aws:lambda:region:acct:function:fn[:qualifier]` -> `fn`."""
    if name_or_arn.startswith("arn:"):
        return name_or_arn.split(":")[6]
    return name_or_arn.split(":", 1)[0]


class _PerThread(MutableMapping[str, Any]):
    """A dict of its own for each thread: one Lambda invocation runs start to end in one thread here."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _own(self) -> dict[str, Any]:
        own = getattr(self._local, "items", None)
        if own is None:
            own = self._local.items = {}
        return own

    def __getitem__(self, key: str) -> Any:
        return self._own()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._own()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._own()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._own())

    def __len__(self) -> int:
        return len(self._own())

    def clear(self) -> None:
        self._own().clear()


_METRIC_SETS = ("metric_set", "dimension_set", "metadata_set")


def metrics_per_invocation() -> Callable[[], None]:
    """Give each thread its own Powertools metric, dimension and metadata sets; returns the undo.

    On AWS one Lambda instance runs one invocation at a time, so Powertools keeps a function's pending metrics in one
    process-wide set (shared by every Metrics object) that log_metrics prints and clears at the end. Here every
    function runs in this process at once: one invocation's flush printed and cleared what another had just added,
    so a metric could vanish (the EmergencyExits a workflow test waits for did, under the full suite's load).
    """
    from bracketflow.observability import metrics

    holders = [metrics, metrics.provider]
    saved = [(holder, name, getattr(holder, name)) for holder in holders for name in _METRIC_SETS]
    per_thread = {name: _PerThread() for name in _METRIC_SETS}
    for holder in holders:
        for name in _METRIC_SETS:
            setattr(holder, name, per_thread[name])

    def undo() -> None:
        for holder, name, value in saved:
            setattr(holder, name, value)

    return undo


def _log_as(context: LambdaContext) -> Callable[[], None]:
    """Name this thread's invocation in each log line it writes; returns the undo (a nested invoke restores the outer).

    Powertools' inject_lambda_context keeps the function's name and request id in keys shared by the whole process:
    right on AWS, where an instance runs one invocation at a time, but here every function runs at once and one
    invocation's lines were stamped with whichever function had started last. Keys appended this way live in the
    thread's own context and win over the shared ones."""
    from bracketflow.observability import logger

    outer = dict(logger.thread_safe_get_current_keys())
    logger.thread_safe_append_keys(
        function_name=context.function_name,
        function_request_id=context.aws_request_id,
        function_arn=context.invoked_function_arn,
        function_memory_size=context.memory_limit_in_mb,
    )

    def undo() -> None:
        logger.thread_safe_clear_keys()
        if outer:
            logger.thread_safe_append_keys(**outer)

    return undo


class LambdaRuntime:
    """Resolves a function (by logical id, name or ARN) to its handler and calls it."""

    def __init__(self, functions: dict[str, FunctionSpec]):
        self._specs = dict(functions)
        self._by_name = {spec.name: spec for spec in functions.values()}
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._import_lock = threading.Lock()

    def knows(self, name_or_arn: str) -> bool:
        return name_or_arn in self._specs or _function_name_from(name_or_arn) in self._by_name

    def spec(self, name_or_arn: str) -> FunctionSpec:
        if name_or_arn in self._specs:
            return self._specs[name_or_arn]
        return self._by_name[_function_name_from(name_or_arn)]

    def handler(self, name_or_arn: str) -> Callable[[Any, Any], Any]:
        spec = self.spec(name_or_arn)
        found = self._handlers.get(spec.logical_id)
        if found is None:
            with self._import_lock:
                if spec.logical_id not in self._handlers:
                    self._handlers[spec.logical_id] = self._import(spec)
                found = self._handlers[spec.logical_id]
        return found

    def preload(self) -> None:
        """Import every handler now, so a broken import shows at start-up rather than on the first request."""
        for logical_id in self._specs:
            self.handler(logical_id)

    def add_layers(self) -> None:
        """Make the functions' layers importable, as Lambda does with /opt/python (pytest and make already do)."""
        for spec in self._specs.values():
            for layer in spec.layer_dirs:
                if str(layer) not in sys.path:
                    sys.path.append(str(layer))

    def _import(self, spec: FunctionSpec) -> Callable[[Any, Any], Any]:
        self.add_layers()
        module_path, _, attr = spec.handler.rpartition(".")
        file = spec.code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
        if not file.is_file():
            raise FileNotFoundError(f"{spec.logical_id}: handler module {file} does not exist")
        module_name = "local_fn_" + re.sub(r"\W", "_", f"{spec.logical_id}_{module_path}")
        loader_spec = importlib.util.spec_from_file_location(module_name, file)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        handler = getattr(module, attr, None)
        if not callable(handler):
            raise AttributeError(f"{spec.logical_id}: {file} has no handler function {attr!r}")
        return handler

    def invoke(self, name_or_arn: str, event: Any) -> Any:
        """Call the function's handler with `event`; a raised exception comes back as FunctionError."""
        spec = self.spec(name_or_arn)
        outer = current_function()
        outer_deadline = getattr(_invocation, "deadline", None)
        _invocation.spec = spec
        _invocation.deadline = time.monotonic() + spec.timeout
        context = LambdaContext(spec)
        restore_log_keys = _log_as(context)
        try:
            handler = self.handler(spec.logical_id)
            return handler(event, context)
        except InvocationDied as died:
            log.warning("%s died mid-invocation: %s: %s", spec.logical_id, died.error_type, died.message)
            raise FunctionError(spec.logical_id, died.error_type, died.message, []) from None
        except Exception as exc:  # the handler's failure is the function's result, as in Lambda
            stack = traceback.format_exception(exc)
            log.error("%s raised %s: %s\n%s", spec.logical_id, type(exc).__name__, exc, "".join(stack).rstrip())
            raise FunctionError(spec.logical_id, type(exc).__name__, str(exc), stack) from exc
        finally:
            restore_log_keys()
            _invocation.spec = outer
            _invocation.deadline = outer_deadline
