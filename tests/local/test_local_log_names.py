"""Every function runs in the local stack's one process at once; each log line must name the function that wrote it.

Powertools keeps the function's name in keys the whole process shares (inject_lambda_context): on AWS an instance runs
one invocation at a time, here one invocation's lines were stamped with another function's name.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

from local.runtime import LambdaRuntime
from local.template import FunctionSpec

HANDLER = """
import threading
from bracketflow.observability import logger

both_started = threading.Barrier(2, timeout=10)


@logger.inject_lambda_context
def lambda_handler(event, context):
    both_started.wait()  # the other function has started (and set Powertools' shared keys) before this one logs
    logger.info("working", extra={"who": event["who"]})
    return event["who"]
"""


def _spec(tmp_path: Path, logical_id: str) -> FunctionSpec:
    code = tmp_path / "fn"
    code.mkdir(exist_ok=True)
    (code / "app.py").write_text(HANDLER)
    return FunctionSpec(
        logical_id=logical_id,
        name=f"bracketflow-{logical_id}",
        arn=f"arn:aws:lambda:ap-south-1:000000000000:function:bracketflow-{logical_id}",
        code_dir=code,
        handler="app.lambda_handler",
        environment={},
        timeout=10,
        memory_size=256,
        layer_dirs=[],
        events=[],
    )


def test_each_line_names_the_function_that_wrote_it(tmp_path):
    from bracketflow.observability import logger

    # Given two functions of the local stack sharing one handler module (one Powertools logger, as the layer's is)
    runtime = LambdaRuntime({n: _spec(tmp_path, n) for n in ("PlaceEntryFunction", "ExitFunction")})
    runtime.handler("PlaceEntryFunction")
    runtime._handlers["ExitFunction"] = runtime._handlers["PlaceEntryFunction"]
    out = io.StringIO()
    capture = logging.StreamHandler(out)
    capture.setFormatter(logger.registered_formatter)
    logger.addHandler(capture)
    try:
        # When both are invoked at the same moment, each in its own thread
        threads = [
            threading.Thread(target=runtime.invoke, args=(n, {"who": n}))
            for n in ("PlaceEntryFunction", "ExitFunction")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        logger.removeHandler(capture)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if '"working"' in line]
    # Then each line names its own function, whichever started last
    assert sorted((line["who"], line["function_name"]) for line in lines) == [
        ("ExitFunction", "bracketflow-ExitFunction"),
        ("PlaceEntryFunction", "bracketflow-PlaceEntryFunction"),
    ]
    # and nothing of an invocation stays behind in this thread's keys
    assert "function_name" not in logger.thread_safe_get_current_keys()
