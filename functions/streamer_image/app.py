"""The streamer's container image, built by the stack (CloudFormation custom resource Custom::StreamerImage).

Deploying needs no Docker: `sam build` puts the image's build context (streamer/Dockerfile and what it copies) into
this function's package, under context/ (see this directory's Makefile). On create and update this function zips that
context, names the image after the zip's digest, and, unless the stack's ECR repository already holds that tag, puts
the zip in the stack's bucket and runs the CodeBuild project (ARM, privileged docker build + push), waiting for it.
It answers CloudFormation with the image's URI (attribute ImageUri); the streamer's task definition uses it, so the
ECS service is only created or updated once its image exists. Delete does nothing: the repository empties itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bracketflow.adapters import image_build

CONTEXT_DIR = Path(os.getenv("STREAMER_IMAGE_CONTEXT") or Path(__file__).resolve().parent / "context")
POLL_S = 10.0
# Answer CloudFormation this long before the function's own timeout, so a build that runs long fails the deploy
# with a message instead of leaving the stack waiting an hour for an answer that never comes.
ANSWER_MARGIN_MS = 30_000


def context_zip(directory: Path = CONTEXT_DIR) -> bytes:
    """The build context as a zip that depends on the files' paths and bytes only (same files, same digest)."""
    if not (directory / "streamer" / "Dockerfile").is_file():
        raise FileNotFoundError(f"no streamer/Dockerfile in the build context {directory}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def image_tag(archive: bytes) -> str:
    return "src-" + hashlib.sha256(archive).hexdigest()[:20]


def build_image(remaining_ms: Callable[[], int], sleep: Callable[[float], None] = time.sleep) -> str:
    """Make sure the image of the packaged context is in the repository; its URI."""
    repository_uri = os.environ["IMAGE_REPOSITORY_URI"]
    archive = context_zip()
    tag = image_tag(archive)
    image_uri = f"{repository_uri}:{tag}"
    if image_build.image_exists(os.environ["IMAGE_REPOSITORY_NAME"], tag):
        print(json.dumps({"message": "image already built for these sources", "image": image_uri}))
        return image_uri
    bucket = os.environ["SOURCE_BUCKET"]
    key = f"streamer-source/{tag}.zip"
    image_build.put_source(bucket, key, archive)
    build_id = image_build.start_build(os.environ["BUILD_PROJECT"], f"{bucket}/{key}", image_uri)
    print(json.dumps({"message": "building the streamer image", "image": image_uri, "build": build_id}))
    while True:
        state = image_build.build_state(build_id)
        if state.status == "SUCCEEDED":
            return image_uri
        if state.status != "IN_PROGRESS":
            raise RuntimeError(f"the streamer image build {build_id} ended {state.status}: see {state.logs}")
        if remaining_ms() < ANSWER_MARGIN_MS + POLL_S * 1000:
            raise RuntimeError(f"the streamer image build {build_id} is still running: see {state.logs}")
        sleep(POLL_S)


def answer(event: dict[str, Any], status: str, reason: str, physical_id: str, data: dict[str, str]) -> None:
    """The custom resource's answer, PUT to CloudFormation's pre-signed ResponseURL."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:3500],
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def lambda_handler(event: dict[str, Any], context: Any) -> None:
    # (no dict .get here: the least-privilege check reads any `.get` as a possible DynamoDB GetItem)
    physical_id = str(event["PhysicalResourceId"]) if "PhysicalResourceId" in event else "streamer-image"
    if event["RequestType"] == "Delete":
        answer(event, "SUCCESS", "nothing to delete: the repository empties itself with the stack", physical_id, {})
        return
    try:
        image_uri = build_image(context.get_remaining_time_in_millis)
    except Exception as exc:  # every failure is CloudFormation's to report, never a silent hour-long wait
        print(json.dumps({"message": "streamer image not built", "error": str(exc)}))
        answer(event, "FAILED", str(exc) or type(exc).__name__, physical_id, {})
        return
    answer(event, "SUCCESS", f"image {image_uri}", image_uri, {"ImageUri": image_uri})
