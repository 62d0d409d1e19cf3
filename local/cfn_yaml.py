"""YAML with CloudFormation's short-form intrinsic tags: `!Ref X` read as {"Ref": "X"}, `!Sub s` as
{"Fn::Sub": s} and so on, as CloudFormation itself reads template.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref X` into `{"Ref": "X"}`, `!Sub s` into `{"Fn::Sub": s}` and so on."""


def _construct(tag: str):
    def construct(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        else:  # YAML has no fourth kind of node
            raise yaml.constructor.ConstructorError(None, None, f"!{tag} on a {type(node).__name__}", node.start_mark)
        if tag == "Ref":
            return {"Ref": value}
        if tag == "Condition":
            return {"Condition": value}
        if tag == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{tag}": value}

    return construct


for _tag in (
    "Ref",
    "Condition",
    "GetAtt",
    "Sub",
    "Join",
    "Select",
    "Split",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "FindInMap",
    "GetAZs",
    "ImportValue",
    "Base64",
    "Cidr",
    "Length",
    "ToJsonString",
):
    _CfnLoader.add_constructor(f"!{_tag}", _construct(_tag))


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_CfnLoader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise ValueError(f"{path} is not a CloudFormation template (no Resources)")
    return data
