"""Starting a bracket's workflow (Step Functions). The execution is named by the bracket id, so a repeated
start of the same bracket is refused by Step Functions instead of running the bracket twice."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from bracketflow.adapters.aws import client
from bracketflow.settings import get_settings


class WorkflowNotStarted(Exception):
    """The execution could not be started (not configured, throttled, AWS unavailable)."""


def bracket_workflow_status(bracket_id: str) -> str | None:
    """The status of the bracket's execution (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED), None if none exists.

    The execution ARN is the state machine's with `:execution:` for `:stateMachine:` and the bracket id appended,
    because executions are named by their bracket id.
    """
    machine = get_settings().bracket_state_machine_arn
    if not machine:
        raise WorkflowNotStarted("BRACKET_STATE_MACHINE_ARN is not set")
    arn = machine.replace(":stateMachine:", ":execution:", 1) + ":" + bracket_id
    try:
        return str(client("stepfunctions").describe_execution(executionArn=arn)["status"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ExecutionDoesNotExist":
            return None
        raise


def start_bracket_workflow(bracket_id: str, payload: dict[str, Any]) -> str | None:
    """Start the bracket state machine; returns the execution ARN, or None when it was already started."""
    return _start_named(get_settings().bracket_state_machine_arn, "BRACKET_STATE_MACHINE_ARN", bracket_id, payload)


def start_batch_workflow(batch_id: str, payload: dict[str, Any]) -> str | None:
    """Start the batch saga (BATCH_STATE_MACHINE_ARN), named by the batch id; None when it was already started."""
    return _start_named(get_settings().batch_state_machine_arn, "BATCH_STATE_MACHINE_ARN", batch_id, payload)


def _start_named(arn: str | None, setting: str, name: str, payload: dict[str, Any]) -> str | None:
    """One execution per name: a second start of the same name is Step Functions' ExecutionAlreadyExists -> None."""
    if not arn:
        raise WorkflowNotStarted(f"{setting} is not set")
    try:
        out = client("stepfunctions").start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
            return None
        raise WorkflowNotStarted(
            f"{exc.response['Error']['Code']}: {exc.response['Error'].get('Message', '')}"
        ) from exc
    except Exception as exc:  # endpoint/connection errors: the caller records them and retries; never a 5xx
        raise WorkflowNotStarted(type(exc).__name__) from exc
    return str(out["executionArn"])


# ---------- task tokens (the bracket workflow's WaitForEntryFill / WaitForExit) ----------

# A token that is already completed, timed out or from a stopped execution: the wait it stood for is over, so
# completing it again is not an error for the caller (the watcher and the waiting task may both try).
_TOKEN_GONE = ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken", "ExecutionDoesNotExist")


def send_task_success(token: str, output: dict[str, Any]) -> bool:
    """Complete a waiting task with `output`; False when the token no longer waits (already done or timed out)."""
    try:
        client("stepfunctions").send_task_success(taskToken=token, output=json.dumps(output))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in _TOKEN_GONE:
            return False
        raise
    return True


def send_task_failure(token: str, error: str, cause: str) -> bool:
    """Fail a waiting task with a named error (ASL Catch matches `error`); False when the token no longer waits."""
    try:
        client("stepfunctions").send_task_failure(taskToken=token, error=error[:256], cause=cause[:32768])
    except ClientError as exc:
        if exc.response["Error"]["Code"] in _TOKEN_GONE:
            return False
        raise
    return True
