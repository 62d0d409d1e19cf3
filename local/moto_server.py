"""Moto in server mode on 127.0.0.1 with Lambda invokes routed to our handlers (local/provision.py fills it).

The server runs in this process (ThreadedMotoServer), so the streamer and the paper exchange processes can reach it
over HTTP while moto's Step Functions interpreter and Lambda backend stay patchable from here:
- `execute_state_machine` makes moto run the ASL for real (Wait waits, task tokens wait for SendTaskSuccess);
- the interpreter invokes Lambda tasks through a boto3 client aimed at localhost:$MOTO_PORT, so MOTO_PORT is set to
  our server's port;
- the no-Docker Lambda backend's `invoke` is replaced by one that calls the handler template.yaml names, in-process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config

from local.moto_patches import (
    MotoPatches,
    action_names_listed_once,
    items_sized_once,
    list_moto_modules_once,
    send_task_failure_with_cause,
    streams_kept_bounded,
    workflow_clients_made_once,
    workflows_parsed_once,
)
from local.runtime import FunctionError, LambdaRuntime

_MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


def _lambda_json(value: Any) -> Any:
    # The Python Lambda runtime serialises Decimal as a number; do the same.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class MotoServer(MotoPatches):
    """ThreadedMotoServer on 127.0.0.1 with the Step Functions interpreter on and Lambda dispatched in-process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000):
        self.host = host
        self.requested_port = port
        self.port = port
        self._server: Any = None
        self._saved_config: dict[str, Any] = {}
        self._saved_invoke: Any = None
        self._saved_send_task_failure: Any = None
        self._locked_handlers: list[tuple[Any, Any]] = []
        self._saved_transact: Any = None
        self._plain_json_handlers: list[tuple[Any, Any]] = []
        self._saved_query: Any = None
        self._saved_module_list: Any = None
        self._put_back_client_factory: Any = None
        self._saved_entrypoint: Any = None
        self._saved_moto_port: str | None = None
        self._put_back_item_init: Any = None
        self._put_back_method_names: Any = None
        self._put_back_streams: Any = None
        self._transport_session: Any = None
        self.runtime: LambdaRuntime | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend
        from moto.core.config import default_user_config
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
        from moto.stepfunctions.responses import StepFunctionResponse

        # werkzeug logs every request at INFO; the console wants our lines, not moto's access log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        for key, value in _MOTO_CONFIG.items():
            self._saved_config[key] = default_user_config.get(key)
            default_user_config[key] = dict(value)  # type: ignore[literal-required]

        _reset_moto_backends()  # start from empty backends whatever ran in this process before
        self._saved_invoke = LambdaSimpleBackend.__dict__.get("invoke")
        LambdaSimpleBackend.invoke = _make_invoke(self, self._saved_invoke)  # type: ignore[method-assign]
        self._saved_send_task_failure = StepFunctionResponse.__dict__.get("send_task_failure")
        StepFunctionResponse.send_task_failure = send_task_failure_with_cause  # type: ignore[method-assign]
        self._serialize_dynamodb()
        self._roll_back_transactions_by_key()
        self._answer_data_calls_as_plain_json()
        self._query_only_what_a_query_reads()
        self._saved_module_list = list_moto_modules_once()
        self._put_back_client_factory = workflow_clients_made_once()
        self._saved_entrypoint = workflows_parsed_once()
        self._put_back_item_init = items_sized_once()
        self._put_back_method_names = action_names_listed_once()
        self._put_back_streams = streams_kept_bounded()

        self._server = ThreadedMotoServer(ip_address=self.host, port=self.requested_port, verbose=False)
        try:
            self._server.start()
        except OSError as exc:
            self._restore()
            raise RuntimeError(f"moto server could not listen on {self.host}:{self.requested_port}: {exc}") from exc
        self.port = self._server.get_host_and_port()[1]
        self._saved_moto_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = str(self.port)  # where moto's ASL interpreter sends its Lambda invokes

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.stop()
            finally:
                self._server = None
                self._restore()

    def _restore(self) -> None:
        self._restore_config_and_handlers()
        self._restore_fast_paths()
        if self._saved_moto_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self._saved_moto_port
        # The backends are process-global: leave nothing behind for whatever runs in this process next.
        _reset_moto_backends()

    def _restore_config_and_handlers(self) -> None:
        """moto's config, its Lambda invoke, SendTaskFailure and the request handlers as they were before start()."""
        from moto.awslambda_simple.models import LambdaSimpleBackend
        from moto.core.config import default_user_config
        from moto.stepfunctions.responses import StepFunctionResponse

        for key, value in self._saved_config.items():
            if value is None:
                default_user_config.pop(key, None)  # type: ignore[misc]
            else:
                default_user_config[key] = value  # type: ignore[literal-required]
        self._saved_config = {}
        if self._saved_invoke is not None:
            LambdaSimpleBackend.invoke = self._saved_invoke  # type: ignore[method-assign]
        if self._saved_send_task_failure is not None:
            StepFunctionResponse.send_task_failure = self._saved_send_task_failure  # type: ignore[method-assign]
        for handler, own in reversed(self._locked_handlers):
            if own is None:
                del handler.call_action  # back to the inherited one
            else:
                handler.call_action = own
        self._locked_handlers = []
        for handler, own in reversed(self._plain_json_handlers):
            if own is None:
                del handler.serialized
            else:
                handler.serialized = own
        self._plain_json_handlers = []

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=os.environ.get("AWS_DEFAULT_REGION", "ap-south-1"),
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(retries={"max_attempts": 2}, read_timeout=30),
        )


def _reset_moto_backends() -> None:
    from moto.moto_api._internal import moto_api_backend

    moto_api_backend.reset()


def _make_invoke(server: MotoServer, original: Any):
    def invoke(
        backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
    ) -> bytes | str | None:
        runtime = server.runtime
        if runtime is None or not runtime.knows(function_name):
            return original(backend, function_name, qualifier, body, headers, response_headers)
        event = json.loads(body) if body else {}
        invocation_type = (headers or {}).get("X-Amz-Invocation-Type") or (headers or {}).get(
            "x-amz-invocation-type", "RequestResponse"
        )
        if invocation_type == "Event":
            threading.Thread(
                target=_invoke_quietly, args=(runtime, function_name, event), name=f"invoke-{function_name}"
            ).start()
            return b""
        try:
            result = runtime.invoke(function_name, event)
        except FunctionError as err:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(err.payload()).encode()
        return json.dumps(result, default=_lambda_json).encode()

    return invoke


def _invoke_quietly(runtime: LambdaRuntime, function_name: str, event: Any) -> None:
    # already logged by the runtime; async invokes have no caller to report to
    with contextlib.suppress(FunctionError):
        runtime.invoke(function_name, event)
