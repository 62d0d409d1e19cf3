"""A deployed stack's outputs (CloudFormation DescribeStacks): what `make account STACK=...` needs to reach it."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
from botocore.exceptions import ClientError

from bracketflow.settings import get_settings

# The outputs an account or a webhook token needs (template.yaml declares them).
TABLE_OUTPUT = "BracketsTableName"
PEPPER_OUTPUT = "ApiKeyPepperSecretName"


class StackNotReady(Exception):
    """The stack is missing, or lacks an output the admin commands need; the message says what to do."""


@dataclass(frozen=True)
class DeployedStack:
    name: str
    region: str
    stage: str
    table_name: str
    pepper_secret: str


def describe(stack_name: str, region: str) -> DeployedStack:
    """The stack's region (from its id), stage, table and pepper secret, read from DescribeStacks."""
    cfn = boto3.client("cloudformation", region_name=region, endpoint_url=get_settings().aws_endpoint_url)
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise StackNotReady(
            f"no stack {stack_name!r} in {region} ({exc.response['Error']['Message']}); deploy it first "
            "(make deploy) or set AWS_DEFAULT_REGION to the stack's region"
        ) from None
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}
    missing = [key for key in (TABLE_OUTPUT, PEPPER_OUTPUT) if not outputs.get(key)]
    if missing:
        raise StackNotReady(
            f"stack {stack_name!r} has no output {', '.join(missing)}: deploy this version of the template first"
        )
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters") or []}
    return DeployedStack(
        name=stack_name,
        region=str(stack["StackId"]).split(":")[3] or region,
        stage=parameters.get("Stage") or "dev",
        table_name=outputs[TABLE_OUTPUT],
        pepper_secret=outputs[PEPPER_OUTPUT],
    )


def pepper_exists(stack: DeployedStack) -> bool:
    """Whether the stack's pepper secret is there (read, never created: a new pepper would make every key fail)."""
    sm = boto3.client("secretsmanager", region_name=stack.region, endpoint_url=get_settings().aws_endpoint_url)
    try:
        sm.describe_secret(SecretId=stack.pepper_secret)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True
