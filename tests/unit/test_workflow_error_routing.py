"""Every error a workflow task can raise is retried or routed on purpose, read from the files themselves.

The three state machines (statemachine/*.asl.json), template.yaml (which function each task runs, its Timeout) and the
functions' code: a function can raise the project's named errors (bracketflow.errors and their subclasses anywhere
in the layer) that the modules it reaches by import raise, build or hand on. A Lambda reports an error by its class
name, and Step Functions matches names exactly (no subclasses), so each of those names must appear in a Retry or a
Catch of every state that runs the function — a catch-all States.ALL is the net for the unforeseen, not a plan.
The Lambda's own failures (its timeout, "Sandbox.Timedout" or "Lambda.Unknown", and the Lambda service's errors)
must be retried or routed too, and each function's Timeout must be below its state's TimeoutSeconds: then the
function's own timeout error is what Retry sees, while the state's timer is only a backstop.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from local.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "common"
ASL_FILES = sorted((ROOT / "statemachine").glob("*.asl.json"))
# What Lambda itself reports: a function that ran out of time or memory, a sandbox that crashed, and the service's
# transient errors.
LAMBDA_OWN_ERRORS = (
    "Sandbox.Timedout",
    "Runtime.ExitError",
    "Lambda.Unknown",
    "Lambda.ServiceException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
EMERGENCY_BUDGET_S = 5.0
# What boto3 raises, by class name, when AWS itself is briefly unavailable after its own three attempts: the network
# (a DynamoDB or SQS call that timed out or lost its connection) and throttling or a service-side fault. Such a
# failure in a task that also talks to the broker may come after the broker acted, so it is retried like a broker
# outage: every Retry or Catch that names BrokerUnavailable names these too.
AWS_TRANSIENT_ERRORS = (
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
)


# ---------- the template ----------


@cache
def template() -> dict[str, Any]:
    return load_yaml(ROOT / "template.yaml")


def function_of_substitution(tpl: dict[str, Any]) -> dict[str, str]:
    """DefinitionSubstitutions name -> the function's logical id (XFunctionArn: !GetAtt XFunction.Arn)."""
    out: dict[str, str] = {}
    for resource in tpl["Resources"].values():
        if resource["Type"] != "AWS::Serverless::StateMachine":
            continue
        for name, value in (resource["Properties"].get("DefinitionSubstitutions") or {}).items():
            if isinstance(value, dict) and "Fn::GetAtt" in value:
                out[name] = value["Fn::GetAtt"][0]
    return out


def function_timeout(tpl: dict[str, Any], logical_id: str) -> int:
    props = tpl["Resources"][logical_id]["Properties"]
    return int(props.get("Timeout") or tpl["Globals"]["Function"]["Timeout"])


def function_code(tpl: dict[str, Any], logical_id: str) -> Path:
    props = tpl["Resources"][logical_id]["Properties"]
    module = props["Handler"].rpartition(".")[0].replace(".", "/")
    return ROOT / props["CodeUri"] / f"{module}.py"


def parameter_default(tpl: dict[str, Any], name: str) -> str:
    return str(tpl["Parameters"][name]["Default"])


# ---------- the state machines ----------


def load_asl(path: Path, tpl: dict[str, Any]) -> dict[str, Any]:
    """The definition with its numeric substitutions (unquoted ${X}) at their template defaults."""
    text = path.read_text()
    text = re.sub(r'(?<!")\$\{(\w+)\}', lambda m: parameter_default(tpl, _parameter_of(tpl, m.group(1))), text)
    return dict(json.loads(text))


def _parameter_of(tpl: dict[str, Any], substitution: str) -> str:
    for resource in tpl["Resources"].values():
        subs = (resource.get("Properties") or {}).get("DefinitionSubstitutions") or {}
        value = subs.get(substitution)
        if isinstance(value, dict) and "Ref" in value:
            return str(value["Ref"])
    raise AssertionError(f"no template parameter behind ${{{substitution}}}")


def task_states(states: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state["Type"] == "Task":
            yield prefix + name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from task_states(processor["States"], f"{prefix}{name}/")


def lambda_of(state: dict[str, Any], functions: dict[str, str]) -> tuple[str | None, bool]:
    """(the function's logical id, whether the state waits for a task token) for a state that runs one of ours."""
    resource = str(state["Resource"])
    name = resource
    if resource.startswith("arn:aws:states:::lambda:invoke"):
        name = str(state["Parameters"]["FunctionName"])
    found = re.fullmatch(r"\$\{(\w+)\}", name)
    return (functions.get(found.group(1)) if found else None), resource.endswith(".waitForTaskToken")


def handled(state: dict[str, Any]) -> tuple[set[str], set[str], bool]:
    """(names retried, names caught, whether a States.ALL Retry retries everything)."""
    retried = {e for r in state.get("Retry") or [] for e in r["ErrorEquals"]}
    caught = {e for c in state.get("Catch") or [] for e in c["ErrorEquals"]}
    return retried - {"States.ALL"}, caught - {"States.ALL"}, "States.ALL" in retried


# ---------- the code ----------


def _module_file(name: str) -> Path | None:
    base = LAYER / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bracketflow"):
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("bracketflow"))
    return {m for m in out if _module_file(m) is not None}


@cache
def _layer_trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text()) for path in (LAYER / "bracketflow").rglob("*.py")}


def named_errors(trees: dict[Path, ast.Module]) -> dict[str, str]:
    """Every name that denotes one of our errors -> the class name Lambda reports: bracketflow.errors' classes, their
    subclasses anywhere in the layer, and module-level aliases of them (`_NeverSent = BrokerUnreachable`)."""
    classes: dict[str, str] = {"BracketflowError": "BracketflowError"}
    changed = True
    while changed:
        changed = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in classes:
                    bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                    if bases & classes.keys():
                        classes[node.name] = node.name
                        changed = True
                elif (
                    isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in classes
                    and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id not in classes
                ):
                    classes[node.targets[0].id] = classes[node.value.id]
                    changed = True
    return classes


def errors_made_in(tree: ast.AST, errors: dict[str, str]) -> set[str]:
    """The error classes a module raises, builds (X(...), returned or raised later) or picks (`kind = X`)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        target: ast.expr | None = None
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        elif isinstance(node, ast.Call):
            target = node.func
        elif isinstance(node, ast.Assign):
            target = node.value
        if isinstance(target, ast.Name) and target.id in errors:
            out.add(errors[target.id])
        elif isinstance(target, ast.Attribute) and target.attr in errors:
            out.add(errors[target.attr])
    return out - {"BracketflowError"}


def errors_of_function(code: Path, trees: dict[Path, ast.Module], errors: dict[str, str]) -> set[str]:
    """Every named error the modules reachable from the handler by import make (a generous, never a short list)."""
    seen: set[Path] = set()
    todo = [code]
    found: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = trees.get(path) or ast.parse(path.read_text())
        found |= errors_made_in(tree, errors)
        todo.extend(p for m in _imports(tree) if (p := _module_file(m)) is not None)
    return found


@cache
def errors_of(function: str) -> frozenset[str]:
    trees = _layer_trees()
    return frozenset(errors_of_function(function_code(template(), function), trees, named_errors(trees)))


# ---------- the checks ----------


def lambda_tasks() -> list[tuple[str, dict[str, Any], str, bool]]:
    tpl = template()
    functions = function_of_substitution(tpl)
    out = []
    for path in ASL_FILES:
        for name, state in task_states(load_asl(path, tpl)["States"]):
            logical_id, callback = lambda_of(state, functions)
            if logical_id is not None:
                out.append((f"{path.name}:{name}", state, logical_id, callback))
    return out


TASKS = lambda_tasks()


def test_every_workflow_runs_lambda_tasks():
    assert {t[0].split(":")[0] for t in TASKS} == {p.name for p in ASL_FILES}


@pytest.mark.parametrize(("where", "state", "function", "callback"), TASKS, ids=[t[0] for t in TASKS])
def test_every_error_a_task_can_raise_is_retried_or_caught_by_name(where, state, function, callback):
    raisable = errors_of(function)
    assert raisable, f"{function}: no named error found in its code (the scan is broken)"
    retried, caught, retries_all = handled(state)
    if retries_all:
        return  # a bounded retry of anything, on purpose (compensations, bookkeeping)
    missing = sorted(raisable - retried - caught)
    assert not missing, f"{where} ({function}) can raise {missing}, neither retried nor caught by name"
    lambda_missing = sorted(set(LAMBDA_OWN_ERRORS) - retried - caught)
    assert not lambda_missing, f"{where} ({function}): Lambda's own errors {lambda_missing} neither retried nor caught"


@pytest.mark.parametrize(("where", "state", "function", "callback"), TASKS, ids=[t[0] for t in TASKS])
def test_a_functions_timeout_is_below_its_states_timeout(where, state, function, callback):
    if callback:
        # The state's timer is the wait for the token (hours for an entry); the function only stores the token.
        return
    timeout_s = state.get("TimeoutSeconds")
    assert timeout_s is not None, f"{where} has no TimeoutSeconds: a hung invoke would hold the workflow"
    assert function_timeout(template(), function) < timeout_s, (
        f"{where}: {function} Timeout {function_timeout(template(), function)} s is not below the state's "
        f"{timeout_s} s, so the state's own timer, not the function's timeout, decides what Retry sees"
    )


@pytest.mark.parametrize(("where", "state", "function", "callback"), TASKS, ids=[t[0] for t in TASKS])
def test_no_retrier_is_shadowed_by_an_earlier_one(where, state, function, callback):
    # Step Functions applies the first retrier that names the error: a later one naming it too never runs (PlaceEntry's
    # own patient RateLimited retrier did not, behind the general one)
    first: dict[str, int] = {}
    for index, retrier in enumerate(state.get("Retry") or []):
        for error in retrier["ErrorEquals"]:
            assert error not in first, f"{where}: {error} in retrier {index} is shadowed by retrier {first[error]}"
            first[error] = index


def test_the_scan_sees_the_errors_that_bit_us():
    # the account-wide order limiter's error, raised in adapters/dynamo/ratelimit.py
    assert "RateLimited" in errors_of("EmergencyExitFunction")
    # the adapter's "never connected" error, known by an alias where it is raised
    assert "BrokerUnreachable" in errors_of("PlaceEntryFunction")


def _retry_waits(retrier: dict[str, Any]) -> float:
    interval = float(retrier.get("IntervalSeconds", 1))
    rate = float(retrier.get("BackoffRate", 2.0))
    cap = float(retrier.get("MaxDelaySeconds", 1e9))
    return sum(min(cap, interval * rate**k) for k in range(int(retrier.get("MaxAttempts", 3))))


def test_a_failing_protection_reaches_the_flatten_within_the_budget():
    tpl = template()
    states = load_asl(ROOT / "statemachine" / "bracket.asl.json", tpl)["States"]
    delay = float(states["DelayProtection"]["Seconds"])
    protection = states["PlaceProtection"]
    # What a broker that keeps failing, or levels the market crossed, produce at PlaceProtection
    for error in ("BrokerUnavailable", "BrokerTimeout", "BrokerUnreachable", "ProtectionNotPossible"):
        waits = sum(_retry_waits(r) for r in protection.get("Retry") or [] if error in r["ErrorEquals"])
        assert delay + waits < EMERGENCY_BUDGET_S, f"{error}: {delay} s delay + {waits} s of retries"
        target = next(c["Next"] for c in protection["Catch"] if error in c["ErrorEquals"])
        assert target == "EmergencyExit", f"{error} goes to {target}"
    # and the errors refused before anything happened get no more than one short second try
    for retrier in protection.get("Retry") or []:
        assert delay + _retry_waits(retrier) < EMERGENCY_BUDGET_S, retrier


@pytest.mark.parametrize("path", ASL_FILES, ids=[p.name for p in ASL_FILES])
def test_a_brief_aws_outage_is_handled_like_a_broker_outage(path):
    # PlaceEntry's DynamoDB write after the broker answered timed out: without a retry, the bracket went to review
    # with its entry working at the broker
    lists = 0
    for where, state in task_states(load_asl(path, template())["States"]):
        for handler in (state.get("Retry") or []) + (state.get("Catch") or []):
            names = set(handler["ErrorEquals"])
            if "BrokerUnavailable" in names:
                lists += 1
                missing = sorted(set(AWS_TRANSIENT_ERRORS) - names)
                assert not missing, f"{path.name}:{where} handles BrokerUnavailable but not {missing}"
    assert lists, f"{path.name}: no handler of a broker outage found (the scan is broken)"


def test_the_aws_error_names_are_the_ones_boto3_raises():
    import boto3
    import botocore.exceptions

    dynamodb = boto3.client("dynamodb", region_name="ap-south-1", aws_access_key_id="x", aws_secret_access_key="x")
    for name in AWS_TRANSIENT_ERRORS:
        raised = getattr(botocore.exceptions, name, None) or getattr(dynamodb.exceptions, name, None)
        assert raised is not None and raised.__name__ == name, f"boto3 raises no error named {name}"
