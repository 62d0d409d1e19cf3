"""template.yaml, read the way CloudFormation + SAM would, resolved to local names and ARNs.

The local stack has no CloudFormation: this module loads the template (its short-form intrinsic tags read by
local/cfn_yaml.py), applies SAM Globals, resolves Parameters/Conditions/Mappings and the intrinsic functions, and hands
back plain specs for the resources the local stack realises. Alarms are created in moto (which never evaluates them:
a test sets their state, and the console's status panel reads them). Anything else (IAM, dashboards, VPC, ECS
services ...) is listed in `skipped` and otherwise ignored.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.cfn_yaml import load_yaml

log = logging.getLogger("local.template")

ACCOUNT_ID = "123456789012"  # moto's default account: ARNs we compute must match the ones moto hands out
NO_VALUE = object()  # AWS::NoValue: the property is dropped


# ---------- resolved resource specs ----------


@dataclass
class EventSource:
    """One entry of a function's (or state machine's) Events."""

    name: str
    type: str  # Api, SQS, Schedule, ScheduleV2, DynamoDB, ...
    properties: dict[str, Any]


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # "app.lambda_handler" (module path inside code_dir, then the function)
    environment: dict[str, str]
    timeout: int
    memory_size: int
    layer_dirs: list[Path]
    events: list[EventSource]


@dataclass
class StateMachineSpec:
    logical_id: str
    name: str
    arn: str
    definition: dict[str, Any]
    type: str  # STANDARD | EXPRESS
    events: list[EventSource]


@dataclass
class TableSpec:
    logical_id: str
    name: str
    arn: str
    properties: dict[str, Any]

    @property
    def has_stream(self) -> bool:
        return bool(self.properties.get("StreamSpecification"))


@dataclass
class QueueSpec:
    logical_id: str
    name: str
    arn: str
    url: str
    properties: dict[str, Any]

    @property
    def dead_letter_arn(self) -> str | None:
        redrive = self.properties.get("RedrivePolicy") or {}
        if isinstance(redrive, str):
            redrive = json.loads(redrive)
        return redrive.get("deadLetterTargetArn")


@dataclass
class Template:
    path: Path
    parameters: dict[str, str]
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    state_machines: dict[str, StateMachineSpec] = field(default_factory=dict)
    tables: dict[str, TableSpec] = field(default_factory=dict)
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> resolved properties
    ssm_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> resolved properties
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> resolved properties (never evaluated)
    rest_apis: dict[str, dict[str, Any]] = field(default_factory=dict)  # logical id -> resolved properties
    container_environment: dict[str, dict[str, str]] = field(default_factory=dict)  # container name -> env
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> type

    def function_environment(self) -> dict[str, str]:
        """The union of every function's environment (they share names and values: TABLE_NAME ...)."""
        merged: dict[str, str] = {}
        for fn in self.functions.values():
            for key, value in fn.environment.items():
                if key in merged and merged[key] != value:
                    log.warning(
                        "%s sets %s=%r but another function set %r; the local stack keeps the first "
                        "(every function runs in one process here)",
                        fn.logical_id,
                        key,
                        value,
                        merged[key],
                    )
                    continue
                merged[key] = value
        return merged

    def queue_by_arn(self, arn: str) -> QueueSpec | None:
        return next((q for q in self.queues.values() if q.arn == arn), None)

    def table_by_stream_arn(self, arn: str) -> TableSpec | None:
        for table in self.tables.values():
            if arn in (table.arn, f"{table.arn}/stream/local") or arn.startswith(f"{table.arn}/stream/"):
                return table
        return None


# ---------- the resolver ----------

_SAM_FUNCTION = "AWS::Serverless::Function"
_SAM_STATE_MACHINE = "AWS::Serverless::StateMachine"
_REALISED = {
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    _SAM_FUNCTION,
    _SAM_STATE_MACHINE,
    "AWS::Serverless::Api",
    "AWS::SecretsManager::Secret",
    "AWS::SSM::Parameter",
    "AWS::Serverless::LayerVersion",
    "AWS::CloudWatch::Alarm",
}
_SCHEDULE_RESOURCES = {"AWS::Events::Rule", "AWS::Scheduler::Schedule"}


class _Resolver:
    def __init__(self, doc: dict[str, Any], parameters: dict[str, str], region: str, stack_name: str, aws_endpoint):
        self.doc = doc
        self.region = region
        self.stack_name = stack_name
        self.endpoint = aws_endpoint.rstrip("/")
        self.parameters = parameters
        self.mappings = doc.get("Mappings") or {}
        self.resources: dict[str, dict[str, Any]] = doc["Resources"]
        self.conditions: dict[str, bool] = {}
        self._condition_defs = doc.get("Conditions") or {}
        self.names = {lid: self._physical_name(lid, res) for lid, res in self.resources.items()}

    # -- names and ARNs (deterministic, so they can be computed before anything exists) --

    def _physical_name(self, logical_id: str, resource: dict[str, Any]) -> str:
        props = resource.get("Properties") or {}
        explicit_key = {
            "AWS::DynamoDB::Table": "TableName",
            "AWS::SQS::Queue": "QueueName",
            _SAM_FUNCTION: "FunctionName",
            _SAM_STATE_MACHINE: "Name",
            "AWS::SecretsManager::Secret": "Name",
            "AWS::SSM::Parameter": "Name",
        }.get(resource.get("Type", ""))
        if explicit_key and explicit_key in props:
            return str(self.resolve(props[explicit_key]))
        name = f"{self.stack_name}-{logical_id}"
        if resource.get("Type") == "AWS::SQS::Queue" and props.get("FifoQueue"):
            name += ".fifo"
        return name

    def arn(self, logical_id: str) -> str:
        kind = self.resources[logical_id].get("Type", "")
        name = self.names[logical_id]
        return {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{self.region}:{ACCOUNT_ID}:table/{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{name}",
            _SAM_FUNCTION: f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}",
            _SAM_STATE_MACHINE: f"arn:aws:states:{self.region}:{ACCOUNT_ID}:stateMachine:{name}",
            "AWS::SecretsManager::Secret": f"arn:aws:secretsmanager:{self.region}:{ACCOUNT_ID}:secret:{name}",
            "AWS::SSM::Parameter": f"arn:aws:ssm:{self.region}:{ACCOUNT_ID}:parameter/{name.lstrip('/')}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}",
            "AWS::SNS::Topic": f"arn:aws:sns:{self.region}:{ACCOUNT_ID}:{name}",
            "AWS::Serverless::LayerVersion": f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:layer:{name}:1",
        }.get(kind, f"arn:aws:local:{self.region}:{ACCOUNT_ID}:{logical_id}/{name}")

    def queue_url(self, logical_id: str) -> str:
        return f"{self.endpoint}/{ACCOUNT_ID}/{self.names[logical_id]}"

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/{self.stack_name}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.resources:
            raise ValueError(f"!Ref {name}: no such parameter or resource in the template")
        kind = self.resources[name].get("Type", "")
        if kind == "AWS::SQS::Queue":
            return self.queue_url(name)
        if kind in (_SAM_STATE_MACHINE, "AWS::Serverless::LayerVersion", "AWS::SNS::Topic"):
            return self.arn(name)
        if kind == "AWS::Serverless::Api":
            return "local"
        return self.names[name]

    def get_att(self, logical_id: str, attribute: str) -> Any:
        if logical_id not in self.resources:
            raise ValueError(f"!GetAtt {logical_id}.{attribute}: no such resource in the template")
        kind = self.resources[logical_id].get("Type", "")
        if attribute == "Arn":
            return self.arn(logical_id)
        if kind == "AWS::DynamoDB::Table" and attribute == "StreamArn":
            return f"{self.arn(logical_id)}/stream/local"
        if kind == "AWS::SQS::Queue":
            return {"QueueName": self.names[logical_id], "QueueUrl": self.queue_url(logical_id)}.get(
                attribute, self.arn(logical_id)
            )
        if attribute in ("Name", "QueueName", "TableName"):
            return self.names[logical_id]
        return f"{self.names[logical_id]}.{attribute}"

    # -- conditions and intrinsics --

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            if name not in self._condition_defs:
                raise ValueError(f"condition {name} is not defined in Conditions")
            self.conditions[name] = bool(self.resolve(self._condition_defs[name]))
        return self.conditions[name]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        out = {}
        for key, item in value.items():
            resolved = self.resolve(item)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out

    def _function(self, fn: str, arg: Any) -> Any:  # noqa: C901, PLR0912 - one branch per CloudFormation intrinsic
        if fn == "GetAtt":
            logical_id, attribute = (arg if isinstance(arg, list) else str(arg).split(".", 1))[:2]
            return self.get_att(self.resolve(logical_id), self.resolve(attribute))
        if fn == "Sub":
            return self._sub(arg)
        if fn == "Join":
            sep, items = arg
            return str(self.resolve(sep)).join(str(i) for i in self.resolve(items))
        if fn == "Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if fn == "Split":
            sep, text = self.resolve(arg)
            return str(text).split(sep)
        if fn == "If":
            name, when_true, when_false = arg
            return self.resolve(when_true if self.condition(name) else when_false)
        if fn == "Equals":
            left, right = self.resolve(arg)
            return str(left) == str(right)
        if fn == "Not":
            return not self.resolve(arg[0])
        if fn == "And":
            return all(self.resolve(a) for a in arg)
        if fn == "Or":
            return any(self.resolve(a) for a in arg)
        if fn == "FindInMap":
            m, k1, k2 = self.resolve(arg)
            return self.mappings[m][k1][k2]
        if fn == "GetAZs":
            return [f"{self.region}a", f"{self.region}b", f"{self.region}c"]
        if fn == "Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if fn == "ToJsonString":
            return json.dumps(self.resolve(arg))
        if fn == "Length":
            return len(self.resolve(arg))
        if fn == "ImportValue":
            return f"imported:{self.resolve(arg)}"  # no other stacks exist locally
        raise ValueError(f"Fn::{fn} is not supported by the local stack")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], self.resolve(arg[1])
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"  # ${!Literal} is an escaped literal
            if expr in variables:
                return str(variables[expr])
            if "." in expr and expr.split(".", 1)[0] in self.resources:
                return str(self.get_att(*expr.split(".", 1)))
            return str(self.ref(expr))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def active(self, resource: dict[str, Any]) -> bool:
        cond = resource.get("Condition")
        return cond is None or self.condition(cond)


def _merge_globals(props: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """SAM Globals: maps merge (the resource wins), lists append, scalars are overridden by the resource."""
    merged = copy.deepcopy(defaults)
    for key, value in props.items():
        if key in merged and isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _merge_globals(value, merged[key])
        elif key in merged and isinstance(merged[key], list) and isinstance(value, list):
            merged[key] = merged[key] + value
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _as_env(variables: dict[str, Any]) -> dict[str, str]:
    return {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in variables.items()}


def load_template(  # noqa: C901, PLR0912, PLR0915 - one pass over the template's resources, by type
    path: str | Path,
    *,
    parameter_overrides: dict[str, str] | None = None,
    region: str = "ap-south-1",
    stack_name: str = "bracketflow-local",
    aws_endpoint: str = "http://127.0.0.1:5000",
) -> Template:
    """Read `path` and resolve it for a local stack whose AWS endpoint is `aws_endpoint`."""
    path = Path(path).resolve()
    doc = load_yaml(path)
    base = path.parent

    params: dict[str, str] = {}
    for name, spec in (doc.get("Parameters") or {}).items():
        if "Default" in spec:
            params[name] = str(spec["Default"])
    unknown = set(parameter_overrides or {}) - set(doc.get("Parameters") or {})
    if unknown:
        log.debug("parameter overrides not in the template, ignored: %s", sorted(unknown))
    params.update({k: str(v) for k, v in (parameter_overrides or {}).items() if k not in unknown})
    missing = [n for n in (doc.get("Parameters") or {}) if n not in params]
    if missing:
        raise ValueError(f"template parameters without a default need a value: {missing}")

    r = _Resolver(doc, params, region, stack_name, aws_endpoint)
    tpl = Template(path=path, parameters=params)
    globals_ = doc.get("Globals") or {}
    function_globals = globals_.get("Function") or {}

    schedule_resources: list[tuple[str, dict[str, Any]]] = []
    for logical_id, resource in r.resources.items():
        kind = resource.get("Type", "")
        if not r.active(resource):
            tpl.skipped[logical_id] = f"{kind} (condition false)"
            continue
        raw_props = resource.get("Properties") or {}
        if kind in _SCHEDULE_RESOURCES and "ScheduleExpression" in raw_props:
            schedule_resources.append((logical_id, r.resolve(raw_props)))
            continue
        if kind == "AWS::ECS::TaskDefinition":
            # Not realised, but the streamer's container environment is read from it (template = source of truth).
            for container in r.resolve(raw_props.get("ContainerDefinitions") or []):
                env = {e["Name"]: str(e.get("Value", "")) for e in container.get("Environment") or []}
                tpl.container_environment[container.get("Name", logical_id)] = env
            tpl.skipped[logical_id] = kind
            continue
        if kind not in _REALISED:
            tpl.skipped[logical_id] = kind
            log.debug("not realised locally: %s (%s)", logical_id, kind)
            continue
        name, arn = r.names[logical_id], r.arn(logical_id)

        if kind == _SAM_FUNCTION:
            props = r.resolve(_merge_globals(raw_props, function_globals))
            layer_dirs = []
            for layer in raw_props.get("Layers", []) + function_globals.get("Layers", []):
                if isinstance(layer, dict) and "Ref" in layer and layer["Ref"] in r.resources:
                    content = (r.resources[layer["Ref"]].get("Properties") or {}).get("ContentUri")
                    if isinstance(content, str):
                        layer_dirs.append((base / content).resolve())
            events = [
                EventSource(ev_name, ev.get("Type", ""), ev.get("Properties") or {})
                for ev_name, ev in (props.get("Events") or {}).items()
            ]
            tpl.functions[logical_id] = FunctionSpec(
                logical_id=logical_id,
                name=name,
                arn=arn,
                code_dir=(base / str(props.get("CodeUri", "."))).resolve(),
                handler=str(props["Handler"]),
                environment=_as_env((props.get("Environment") or {}).get("Variables") or {}),
                timeout=int(props.get("Timeout", 3)),
                memory_size=int(props.get("MemorySize", 128)),
                layer_dirs=list(dict.fromkeys(layer_dirs)),
                events=events,
            )
        elif kind == _SAM_STATE_MACHINE:
            props = r.resolve(_merge_globals(raw_props, globals_.get("StateMachine") or {}))
            if "Definition" in props:
                text = json.dumps(props["Definition"])
            else:
                text = (base / str(props["DefinitionUri"])).read_text(encoding="utf-8")
            for key, value in (props.get("DefinitionSubstitutions") or {}).items():
                text = text.replace("${" + key + "}", str(value))
            events = [
                EventSource(ev_name, ev.get("Type", ""), ev.get("Properties") or {})
                for ev_name, ev in (props.get("Events") or {}).items()
            ]
            tpl.state_machines[logical_id] = StateMachineSpec(
                logical_id, name, arn, json.loads(text), str(props.get("Type", "STANDARD")), events
            )
        elif kind == "AWS::DynamoDB::Table":
            tpl.tables[logical_id] = TableSpec(logical_id, name, arn, r.resolve(raw_props))
        elif kind == "AWS::SQS::Queue":
            tpl.queues[logical_id] = QueueSpec(logical_id, name, arn, r.queue_url(logical_id), r.resolve(raw_props))
        elif kind == "AWS::SecretsManager::Secret":
            tpl.secrets[name] = r.resolve(raw_props)
        elif kind == "AWS::SSM::Parameter":
            tpl.ssm_parameters[name] = r.resolve(raw_props)
        elif kind == "AWS::CloudWatch::Alarm":
            tpl.alarms[name] = r.resolve(raw_props)
        elif kind == "AWS::Serverless::Api":
            tpl.rest_apis[logical_id] = r.resolve(_merge_globals(raw_props, globals_.get("Api") or {}))
    _attach_schedules(tpl, schedule_resources)
    return tpl


def _attach_schedules(tpl: Template, schedule_resources: list[tuple[str, dict[str, Any]]]) -> None:
    """EventBridge rules and Scheduler schedules that target a function or a state machine become that target's
    Schedule event, so they are played like the SAM `Events: Schedule` form."""
    targets: dict[str, FunctionSpec | StateMachineSpec] = {f.arn: f for f in tpl.functions.values()}
    targets.update({sm.arn: sm for sm in tpl.state_machines.values()})
    for logical_id, props in schedule_resources:
        listed = props.get("Targets") or ([props["Target"]] if "Target" in props else [])
        enabled = str(props.get("State", "ENABLED")).upper() == "ENABLED"
        for target in listed:
            spec = targets.get(str(target.get("Arn")))
            if spec is None:
                tpl.skipped[logical_id] = f"schedule of a target not realised locally ({target.get('Arn')})"
                continue
            spec.events.append(
                EventSource(
                    logical_id,
                    "Schedule",
                    {"Schedule": props["ScheduleExpression"], "Input": target.get("Input"), "Enabled": enabled},
                )
            )
