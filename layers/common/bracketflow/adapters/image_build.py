"""The streamer image's build in AWS (used by functions/streamer_image): the stack's ECR repository, the bucket the
build context is handed over in, and the CodeBuild project that builds and pushes the image."""

from __future__ import annotations

from typing import Any, NamedTuple

import boto3


def client(service: str) -> Any:
    # Plain clients, not adapters.aws's cached ones: this runs once per deploy, in AWS only (never on the local
    # stack), and needs none of their local endpoint handling.
    return boto3.client(service)


class BuildState(NamedTuple):
    status: str  # IN_PROGRESS, SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED
    logs: str  # where to read the build's log


def image_exists(repository: str, tag: str) -> bool:
    ecr = client("ecr")
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ecr.exceptions.ImageNotFoundException:
        return False
    return True


def put_source(bucket: str, key: str, body: bytes) -> None:
    client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def start_build(project: str, source_location: str, image_uri: str) -> str:
    """Start the project on the zip at `source_location` ("bucket/key"), to push `image_uri`; the build's id."""
    build = client("codebuild").start_build(
        projectName=project,
        sourceTypeOverride="S3",
        sourceLocationOverride=source_location,
        environmentVariablesOverride=[{"name": "IMAGE_URI", "value": image_uri, "type": "PLAINTEXT"}],
    )["build"]
    return str(build["id"])


def build_state(build_id: str) -> BuildState:
    build = client("codebuild").batch_get_builds(ids=[build_id])["builds"][0]
    logs = ""
    if "logs" in build and "deepLink" in build["logs"]:  # no dict .get: the IAM check would read it as GetItem
        logs = build["logs"]["deepLink"]
    return BuildState(str(build["buildStatus"]), logs or "the CodeBuild project's log")
