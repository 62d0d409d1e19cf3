"""Least privilege: each function's IAM statements name exactly the AWS actions its code can make, on our resources.

How it is checked, without an AWS account:
- What a function is ALLOWED: template.yaml translated by the SAM translator (the one `sam validate` and
  `sam deploy` use, run in .venv-sam as a subprocess) — policy templates expanded into the role CloudFormation would
  create. We read that role's inline statements.
- What a function NEEDS: read from the source. Starting at functions/<dir>/app.py, every def reachable by name
  (calls, decorators, callbacks passed by name; a method call reaches every method of that name, so this errs
  towards more) is scanned for boto3 operations (client, resource and Table calls, TransactWriteItems' Put /
  Update / ConditionCheck / Delete, Powertools' SecretsProvider). Each becomes its IAM action.
Then: no `*` action anywhere; needed ⊆ allowed (nothing fails with AccessDenied); allowed ⊆ needed (nothing spare);
resources are our table/queue/secret/state machine/API ARNs, `*` only for actions IAM cannot scope.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from bracketflow.settings import Settings
from local.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers/common/bracketflow"
ADAPTERS = PACKAGE / "adapters"
SAM_PYTHON = ROOT / ".venv-sam/bin/python"

# boto3 service -> IAM prefix
SERVICES = {
    "dynamodb": "dynamodb",
    "sqs": "sqs",
    "stepfunctions": "states",
    "secretsmanager": "secretsmanager",
    "ssm": "ssm",
    "apigatewaymanagementapi": "execute-api",
    "codebuild": "codebuild",
    "ecr": "ecr",
    "s3": "s3",
    "cloudwatch": "cloudwatch",
}
# boto3 operations whose IAM action is not the operation's own name
SPECIAL_ACTIONS = {
    "post_to_connection": {"execute-api:ManageConnections"},
    "get_connection": {"execute-api:ManageConnections"},
    "delete_connection": {"execute-api:ManageConnections"},
    "transact_get_items": {"dynamodb:GetItem"},
    "transact_write_items": set(),  # authorised per item: see TRANSACT_ITEM_ACTIONS
    "batch_writer": {"dynamodb:BatchWriteItem"},
    "invoke": {"lambda:InvokeFunction"},
}
TRANSACT_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Delete": "dynamodb:DeleteItem",
}
# IAM has no resource-level permission for these: `*` is the only resource they accept
UNSCOPABLE = {
    "states:SendTaskSuccess",
    "states:SendTaskFailure",
    "states:SendTaskHeartbeat",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}

# Calls the code can make but a deployed stack never does, each with the reason (checked below, so it stays true).
EXEMPT = {
    "secretsmanager:CreateSecret": "the API-key pepper is created on first use only under STAGE=local (secrets.py); "
    "a deployed stack's Stage is dev or prod and the template creates the secret",
    "ssm:GetParameter": "Telegram credentials come from SSM only when TELEGRAM_PARAMETER_NAME is set; the template "
    "gives notify the TelegramSecret instead",
}

TRANSLATE = r"""
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.public.translator import ManagedPolicyLoader
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies(ManagedPolicyLoader):
    def __init__(self):
        pass
    def load(self):
        return {}

doc = yaml_parse(open(sys.argv[1]).read())
overrides = json.loads(sys.argv[2])
for res in doc["Resources"].values():  # sam deploy uploads code; the translator only needs an S3 location
    props = res.get("Properties") or {}
    if res.get("Type") == "AWS::Serverless::Function":
        props["CodeUri"] = "s3://bucket/code.zip"
    elif res.get("Type") == "AWS::Serverless::LayerVersion":
        props["ContentUri"] = "s3://bucket/layer.zip"
    elif res.get("Type") == "AWS::Serverless::StateMachine" and "DefinitionUri" in props:
        props["DefinitionUri"] = "s3://bucket/definition.json"
params = {k: v.get("Default") for k, v in (doc.get("Parameters") or {}).items()}
params.update(overrides)
params.update({"AWS::Region": "ap-south-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
               "AWS::StackName": "bracketflow-dev", "AWS::StackId": "stack"})
print(json.dumps(transform(doc, params, NoManagedPolicies())))
"""


@cache
def translated(static_egress_ip: str = "false") -> dict[str, Any]:
    """template.yaml as CloudFormation sees it after the SAM transform."""
    assert SAM_PYTHON.exists(), "the SAM CLI virtualenv is missing: run `make sam-venv`"
    overrides = json.dumps({"StaticEgressIp": static_egress_ip})
    out = subprocess.run(
        [str(SAM_PYTHON), "-c", TRANSLATE, str(ROOT / "template.yaml"), overrides],
        env={"AWS_DEFAULT_REGION": "ap-south-1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def sam_functions() -> dict[str, str]:
    """Logical id -> code directory of every SAM function in template.yaml."""
    doc = load_yaml(ROOT / "template.yaml")
    return {
        lid: str(res["Properties"]["CodeUri"]).rstrip("/")
        for lid, res in doc["Resources"].items()
        if res.get("Type") == "AWS::Serverless::Function"
    }


# ---------- what the code needs ----------


@cache
def _operation_actions() -> dict[str, set[str]]:
    """snake_case boto3 operation -> IAM actions, for the services bracketflow talks to."""
    session = botocore.session.get_session()
    table: dict[str, set[str]] = {}
    for service, prefix in SERVICES.items():
        for op in session.get_service_model(service).operation_names:
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
            table.setdefault(snake, set()).add(f"{prefix}:{op}")
    table.update(SPECIAL_ACTIONS)
    return table


class _Module:
    """One parsed module: its top-level defs and classes, and what its names are imported from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.defs: dict[str, ast.AST] = {}
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (module, name in it | None = module)
        self.dicts: set[str] = set()  # module-level names bound to a dict: `name.get(...)` is a mapping lookup
        # names declared as fields in a class body (`legs: tuple[int, ...]`): `self.legs` there reads data
        self.fields: set[str] = {
            item.target.id
            for node in ast.walk(self.tree)
            if isinstance(node, ast.ClassDef)
            for item in node.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
        }
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.defs[node.name] = node
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(node.value, ast.Dict)
            ):
                self.dicts.add(node.target.id)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                self.dicts.update(t.id for t in node.targets if isinstance(t, ast.Name))
        self.self_dicts: set[str] = set()  # `self.name = {}` anywhere: `self.name.get(...)` is a mapping lookup
        for node in ast.walk(self.tree):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if isinstance(getattr(node, "value", None), ast.Dict):
                self.self_dicts.update(
                    t.attr
                    for t in targets
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
                )
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    self.imports[alias.asname or alias.name.split(".")[0]] = (alias.name, None)


@cache
def _module(dotted: str) -> _Module | None:
    """A bracketflow module by dotted name (None for third-party and standard library modules)."""
    if dotted != "bracketflow" and not dotted.startswith("bracketflow."):
        return None
    base = PACKAGE.parent.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return _module_at(path)
    return None


@cache
def _module_at(path: Path) -> _Module:
    return _Module(path)


@cache
def _methods() -> dict[str, list[tuple[_Module, ast.AST]]]:
    """Every method of every class in the shared package, by name (`x.name(...)` may be any of them)."""
    methods: dict[str, list[tuple[_Module, ast.AST]]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module_at(path)
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        methods.setdefault(item.name, []).append((module, item))
    return methods


def _lookup(module: _Module, name: str, depth: int = 0) -> list[tuple[_Module, ast.AST]]:
    """What `name` means at the top level of `module`: its own def/class, or the one it imports (re-exports too)."""
    if name in module.defs:
        return [(module, module.defs[name])]
    if name in module.imports and depth < 10:
        source, attr = module.imports[name]
        if attr is None:
            return []
        target = _module(source)
        if target is not None:
            return _lookup(target, attr, depth + 1)
        submodule = _module(f"{source}.{attr}")
        if submodule is not None:
            return [(submodule, submodule.tree)]
    return []


def _module_alias(module: _Module, name: str) -> _Module | None:
    if name not in module.imports:
        return None
    source, attr = module.imports[name]
    return _module(source if attr is None else f"{source}.{attr}")


def _body_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """A def's own body, not the bodies of defs nested in it (those are reached by name like any other)."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        sub = stack.pop()
        yield sub
        if not isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(ast.iter_child_nodes(sub))


def reachable(code_dir: str) -> list[tuple[_Module, ast.AST]]:
    """Every def (and the handler module itself) reachable from functions/<dir>/app.py.

    A plain name resolves through the module's own defs and imports; `module.name` through that module; any other
    `x.name` to every method called `name` in the package (we cannot know x's type, so we take them all) — except
    `x.get("literal", ...)` and `d.get(...)` on a module-level dict: mapping lookups (no repository's get is called
    with a literal, nor on a dict), and `self.name` where a class of the module declares `name` as a field."""
    app = _Module(ROOT / code_dir / "app.py")
    pending: list[tuple[_Module, ast.AST]] = [(app, app.tree)]
    pending.extend(
        (app, node) for node in ast.walk(app.tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )
    seen: set[int] = set()
    out: list[tuple[_Module, ast.AST]] = []
    while pending:
        module, node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        out.append((module, node))
        if isinstance(node, ast.ClassDef):  # using a class runs its constructor and protocol methods
            pending.extend(
                (module, item) for item in node.body if isinstance(item, ast.FunctionDef) and item.name.startswith("__")
            )
        body = list(_body_nodes(node))
        mapping_gets = {
            id(sub.func)
            for sub in body
            if isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and sub.func.attr == "get"
            and (
                (sub.args and isinstance(sub.args[0], ast.Constant) and isinstance(sub.args[0].value, str))
                or (isinstance(sub.func.value, ast.Name) and sub.func.value.id in module.dicts)
                or (
                    isinstance(sub.func.value, ast.Attribute)
                    and isinstance(sub.func.value.value, ast.Name)
                    and sub.func.value.value.id == "self"
                    and sub.func.value.attr in module.self_dicts
                )
            )
        }
        nested = {n.name: n for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
        for sub in body:
            if isinstance(sub, ast.Name):
                if sub.id in nested:
                    pending.append((module, nested[sub.id]))
                else:
                    pending.extend(_lookup(module, sub.id))
            elif isinstance(sub, ast.Attribute):
                alias = _module_alias(module, sub.value.id) if isinstance(sub.value, ast.Name) else None
                if alias is not None:
                    pending.extend(_lookup(alias, sub.attr))
                elif isinstance(sub.value, ast.Name) and sub.value.id == "self" and sub.attr in module.fields:
                    continue  # a field of this module's own class, read as data
                elif id(sub) not in mapping_gets:
                    pending.extend(_methods().get(sub.attr, []))
    return out


def needed_actions(code_dir: str) -> set[str]:
    """IAM actions the code reachable from functions/<dir>/app.py can call."""
    ops = _operation_actions()
    actions: set[str] = set()
    for module, node in reachable(code_dir):
        if ADAPTERS not in module.path.parents:
            continue  # AWS is called only from the adapters (team rule); elsewhere a `send_message` is Telegram's
        for sub in _body_nodes(node):
            if isinstance(sub, ast.Call):
                if isinstance(sub.func, ast.Attribute) and sub.func.attr in ops:
                    actions |= ops[sub.func.attr]
                if isinstance(sub.func, ast.Name) and sub.func.id == "SecretsProvider":
                    actions.add("secretsmanager:GetSecretValue")
            if isinstance(sub, ast.Dict):
                for key in sub.keys:
                    if isinstance(key, ast.Constant) and key.value in TRANSACT_ITEM_ACTIONS:
                        actions.add(TRANSACT_ITEM_ACTIONS[key.value])
    return actions


# ---------- what the role allows ----------


def role_statements(template: dict[str, Any], function_id: str) -> list[dict[str, Any]]:
    role = template["Resources"][f"{function_id}Role"]["Properties"]
    statements = []
    for policy in role.get("Policies", []):
        document = policy["PolicyDocument"]
        statements.extend(document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]])
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowed_actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements if s.get("Effect") == "Allow" for a in _as_list(s.get("Action", []))}


# ---------- the tests ----------


FUNCTIONS = sam_functions()


def test_every_function_is_checked() -> None:
    # Given the template's functions, Then there are some and each has a handler this test can read
    assert len(FUNCTIONS) >= 10
    for code_dir in FUNCTIONS.values():
        assert (ROOT / code_dir / "app.py").exists(), code_dir


def test_no_statement_in_the_stack_allows_every_action() -> None:
    # Given every IAM policy the stack creates (function roles, state machine roles, the streamer's task role)
    template = translated()
    offenders = []
    for lid, res in template["Resources"].items():
        props = res.get("Properties") or {}
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        for document in documents:
            for statement in _as_list(document["Statement"]):
                for action in _as_list(statement.get("Action", [])):
                    if not isinstance(action, str) or "*" in action:
                        offenders.append((lid, action))
    # Then none names `*`, `service:*` or a wildcard like `sqs:SendMessage*`
    assert offenders == [], offenders


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_is_allowed_exactly_what_its_code_calls(function_id: str) -> None:
    # Given what the function's code can call and what its role allows
    needed = needed_actions(FUNCTIONS[function_id]) - set(EXEMPT)
    allowed = allowed_actions(role_statements(translated(), function_id))
    # Then every call is allowed, and nothing is allowed that no code calls
    assert {"missing": needed - allowed, "unused": allowed - needed} == {"missing": set(), "unused": set()}


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_resources_are_ours_not_everything(function_id: str) -> None:
    # Given the function's statements
    statements = role_statements(translated(), function_id)
    for statement in statements:
        actions = set(_as_list(statement["Action"]))
        for resource in _as_list(statement["Resource"]):
            # Then `*` appears only for actions IAM cannot scope to a resource
            if resource == "*":
                assert actions <= UNSCOPABLE, (function_id, actions)
            else:
                text = json.dumps(resource)
                ours = text.replace("/index/*", "").replace("@connections/*", "")
                ours = ours.replace(":execution:${BracketStateMachine.Name}:*", "")  # its executions, by bracket id
                ours = ours.replace("${StreamerImageSourceBucket.Arn}/streamer-source/*", "")  # the image's sources
                ours = ours.replace("${InstrumentsBucket.Arn}/instruments/*", "")  # Kite's instrument list
                ours = ours.replace(":alarm:${AWS::StackName}-*", "")  # the stack's own alarms, read by name
                assert "*" not in ours, (function_id, text)


def test_order_placing_functions_leave_through_the_static_ip_when_asked() -> None:
    # Given the functions that can reach the broker, and the stack as CloudFormation gets it
    template = translated()
    broker_callers = {f for f, d in FUNCTIONS.items() if calls_the_broker(d)}
    assert broker_callers
    private = {
        "SecurityGroupIds": [{"Ref": "EgressOnlySecurityGroup"}],
        "SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
    }
    for function_id in FUNCTIONS:
        config = template["Resources"][function_id]["Properties"].get("VpcConfig")
        # Then every broker caller runs in the private subnets (out through the NAT's Elastic IP) exactly when
        # StaticEgressIp is true, and no other function is put in a VPC
        if function_id in broker_callers:
            assert config == {"Fn::If": ["UseStaticEgressIp", private, {"Ref": "AWS::NoValue"}]}, function_id
        else:
            assert config is None, function_id
    assert template["Conditions"]["UseStaticEgressIp"] == {"Fn::Equals": [{"Ref": "StaticEgressIp"}, "true"]}
    # And the private subnets only route out through the NAT gateway
    route = template["Resources"]["PrivateDefaultRoute"]["Properties"]
    assert route["NatGatewayId"] == {"Ref": "NatGateway"} and route["DestinationCidrBlock"] == "0.0.0.0/0"


def calls_the_broker(code_dir: str) -> bool:
    """Whether the function can reach get_broker() (the only door to the broker)."""
    return any(getattr(node, "name", None) == "get_broker" for _, node in reachable(code_dir))


def test_exempt_calls_cannot_happen_in_a_deployed_stack() -> None:
    # Given the template's parameters and every function's environment
    doc = load_yaml(ROOT / "template.yaml")
    variables = [
        name
        for res in doc["Resources"].values()
        if res.get("Type") == "AWS::Serverless::Function"
        for name in ((res["Properties"].get("Environment") or {}).get("Variables") or {})
    ] + list(doc["Globals"]["Function"]["Environment"]["Variables"])
    # Then the stage can never be "local" and no function reads Telegram from SSM
    assert "local" not in doc["Parameters"]["Stage"]["AllowedValues"]
    assert "TELEGRAM_PARAMETER_NAME" not in variables


# Settings naming another resource of the stack: a function whose code reads one needs it in its environment, or
# the call is skipped (a queue message not sent) or fails on a deployed stack while the local one, which gives every
# function every variable, works.
RESOURCE_SETTINGS = {
    name: field.alias
    for name, field in Settings.model_fields.items()
    if field.alias and field.alias.endswith(("_QUEUE_URL", "_STATE_MACHINE_ARN", "_BRACKET_FUNCTION"))
}


def test_resource_settings_are_the_ones_checked() -> None:
    # Given the settings that name the stack's queues, state machines and functions, Then the check below sees them
    assert {"STOP_SYNC_QUEUE_URL", "EXIT_QUEUE_URL", "BRACKET_STATE_MACHINE_ARN", "RECONCILE_BRACKET_FUNCTION"} <= set(
        RESOURCE_SETTINGS.values()
    )


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_has_the_resource_variables_its_code_reads(function_id: str) -> None:
    # Given the settings naming the stack's resources that the function's code can read
    doc = load_yaml(ROOT / "template.yaml")
    env = set((doc["Resources"][function_id]["Properties"].get("Environment") or {}).get("Variables") or {})
    env |= set(doc["Globals"]["Function"]["Environment"]["Variables"])
    read = {
        RESOURCE_SETTINGS[sub.attr]
        for _, node in reachable(FUNCTIONS[function_id])
        for sub in _body_nodes(node)
        if isinstance(sub, ast.Attribute) and sub.attr in RESOURCE_SETTINGS
    }
    # Then the template sets each of them for it
    assert read - env == set()
