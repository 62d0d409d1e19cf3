"""The template's default parameter set deploys as it is, in Kite mode too: cfn-lint clean (sam validate --lint), no
placeholder defaults, everything a live stack needs present after the SAM transform (the streamer's image built by
the stack, each function's log group with a retention, the outputs a trader clicks), every parameter grouped for the
console, and `make deploy ENV=dev|prod` backed by samconfig.toml sections that name only real parameters."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from functools import cache
from typing import Any

import pytest

from local.template import load_yaml
from tests.integration.test_iam_policies import ROOT, SAM_PYTHON, TRANSLATE

TEMPLATE = ROOT / "template.yaml"
PLACEHOLDERS = re.compile(r"placeholder|changeme|change-me|example|todo|xxx|python:3\.\d+-slim|<[^>]+>", re.I)


@cache
def doc() -> dict[str, Any]:
    return load_yaml(TEMPLATE)


@cache
def translated(overrides: str = "{}") -> dict[str, Any]:
    out = subprocess.run(
        [str(SAM_PYTHON), "-c", TRANSLATE, str(TEMPLATE), overrides],
        env={"AWS_DEFAULT_REGION": "ap-south-1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_the_template_is_cfn_lint_clean():
    assert (ROOT / ".venv-sam" / "bin" / "sam").exists(), "the SAM CLI virtualenv is missing: run `make sam-venv`"
    out = subprocess.run(
        [str(ROOT / ".venv-sam" / "bin" / "sam"), "validate", "--lint", "--template", str(TEMPLATE)],
        env={"AWS_DEFAULT_REGION": "ap-south-1", "PATH": "/usr/bin:/bin", "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_no_parameter_defaults_to_a_placeholder():
    for name, spec in doc()["Parameters"].items():
        default = str(spec.get("Default", ""))
        assert not PLACEHOLDERS.search(default), f"{name} defaults to a placeholder: {default!r}"


def test_by_default_the_stack_builds_the_streamer_image_it_runs():
    # Given the defaults (the streamer runs: DesiredCount 1)
    params = doc()["Parameters"]
    assert str(params["StreamerDesiredCount"]["Default"]) == "1"
    assert params["StreamerImageUri"]["Default"] == ""
    # Then the task's image is the stack's own build, which the service waits for through the task definition
    resources = translated()["Resources"]
    (container,) = resources["StreamerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    image = container["Image"]
    assert image == {
        "Fn::If": ["BuildsStreamerImage", {"Fn::GetAtt": ["StreamerImage", "ImageUri"]}, {"Ref": "StreamerImageUri"}]
    }
    for needed in ("StreamerImage", "StreamerImageFunction", "StreamerImageBuildProject", "StreamerImageRepository"):
        assert needed in resources, needed
    project = resources["StreamerImageBuildProject"]["Properties"]
    assert project["Environment"]["Type"] == "ARM_CONTAINER" and project["Environment"]["PrivilegedMode"] is True
    assert "--platform linux/arm64" in project["Source"]["BuildSpec"]
    assert resources["StreamerTaskDefinition"]["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "ARM64"


@pytest.mark.parametrize("broker", ["paper", "kite"])
def test_every_function_logs_to_a_group_of_its_own_with_the_stacks_retention(broker):
    resources = translated(json.dumps({"Broker": broker}))["Resources"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"}
    assert len(functions) >= 20
    for name, function in functions.items():
        group = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
        assert group and "Ref" in group, f"{name} has no declared log group"
        declared = resources[group["Ref"]]
        assert declared["Type"] == "AWS::Logs::LogGroup"
        assert declared["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    for name, resource in resources.items():
        if resource["Type"] == "AWS::Logs::LogGroup":
            assert "RetentionInDays" in resource["Properties"], name


def test_kite_mode_has_what_a_live_stack_needs():
    params = doc()["Parameters"]
    assert params["BrokerTickerUrl"]["Default"].startswith("wss://")
    assert "BrokerSecretName" in doc()["Outputs"]  # the stage's broker secret, made by the stack for the trader
    resources = translated(json.dumps({"Broker": "kite"}))["Resources"]
    env = resources["StreamerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]
    assert {e["Name"] for e in env} >= {
        "BROKER",
        "BROKER_TICKER_URL",
        "BROKER_SECRET_NAME",
        "TABLE_NAME",
        "EXIT_QUEUE_URL",
    }
    assert resources["StreamerService"]["Properties"]["DesiredCount"] == {"Ref": "StreamerDesiredCount"}
    # Kite's instrument list: downloaded each morning, and every reader is pointed at it
    assert "InstrumentsBucket" in resources and "InstrumentsFunction" in resources
    rules = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert any(
        "InstrumentsFunction" in json.dumps(r["Properties"]["Targets"]) and r["Properties"]["ScheduleExpression"]
        for r in rules
    )
    assert "INSTRUMENTS_BUCKET" in {e["Name"] for e in env}
    webhook_env = resources["WebhookFunction"]["Properties"]["Environment"]["Variables"]
    assert webhook_env["INSTRUMENTS_BUCKET"] == {"Ref": "InstrumentsBucket"}


def test_the_outputs_a_trader_clicks_are_there():
    outputs = doc()["Outputs"]
    assert {"ApiUrl", "WebhookUrl", "PostbackUrl", "SwaggerUrl", "DashboardUrl", "WebSocketUrl"} <= set(outputs)
    assert outputs["WebhookUrl"]["Value"]["Fn::Sub"].endswith("/tradingview/webhook/bracket")
    assert outputs["PostbackUrl"]["Value"]["Fn::Sub"].endswith("/broker/postback")
    assert outputs["SwaggerUrl"]["Value"]["Fn::Sub"].endswith("/swagger")


def test_every_parameter_is_grouped_for_the_console_once():
    groups = doc()["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [p for group in groups for p in group["Parameters"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(doc()["Parameters"])


def test_samconfig_has_dev_and_prod_and_overrides_only_real_parameters():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert {"default", "prod"} <= set(config)
    for env in ("default", "prod"):
        overrides = config[env]["deploy"]["parameters"]["parameter_overrides"]
        names = set(re.findall(r'(\w+)="', overrides))
        assert names and names <= set(doc()["Parameters"]), (env, names - set(doc()["Parameters"]))
        assert config[env]["global"]["parameters"]["stack_name"]
