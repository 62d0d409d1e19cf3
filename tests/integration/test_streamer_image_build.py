"""The stack's own streamer image build (functions/streamer_image, custom resource Custom::StreamerImage): the
function's package carries every path streamer/Dockerfile copies; a create zips that context, puts it in the bucket,
runs the CodeBuild project and answers CloudFormation with the image's URI; the same sources are not built twice;
a failure is answered FAILED with its reason (never left for CloudFormation's hour-long timeout); delete answers at
once. AWS is moto; CloudFormation's pre-signed response URL is a local HTTP server that records what it is sent."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.image_recipe import DOCKERFILE, REPO, parse

FUNCTION_DIR = REPO / "functions" / "streamer_image"
REGION = "ap-south-1"
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": 1,
        "digest": "sha256:" + "0" * 64,
    },
    "layers": [],
}


def _load_app():
    spec = importlib.util.spec_from_file_location("streamer_image_app", FUNCTION_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The function's package as `sam build` makes it: its Makefile run from a scratch copy of its directory."""
    scratch = tmp_path_factory.mktemp("scratch")
    artifacts = tmp_path_factory.mktemp("artifacts")
    for item in FUNCTION_DIR.iterdir():
        if item.is_file():
            (scratch / item.name).write_bytes(item.read_bytes())
    subprocess.run(
        ["make", "-f", str(FUNCTION_DIR / "Makefile"), "build-StreamerImageFunction", f"ARTIFACTS_DIR={artifacts}"],
        cwd=scratch,
        check=True,
        capture_output=True,
    )
    return artifacts


class CloudFormation:
    """Records the answers PUT to the custom resource's ResponseURL."""

    def __init__(self) -> None:
        answers = self.answers = []

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                answers.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/answer"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event(self, request_type: str, physical_id: str | None = None) -> dict[str, Any]:
        event = {
            "RequestType": request_type,
            "ResponseURL": self.url,
            "StackId": "arn:aws:cloudformation:ap-south-1:123456789012:stack/bracketflow-dev/1",
            "RequestId": "req-1",
            "LogicalResourceId": "StreamerImage",
            "ResourceProperties": {},
        }
        if physical_id:
            event["PhysicalResourceId"] = physical_id
        return event


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def aws(monkeypatch, package):
    with mock_aws():
        repo = boto3.client("ecr", region_name=REGION).create_repository(repositoryName="bracketflow-dev/streamer")
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket="bf-sources", CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="cb", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        boto3.client("codebuild", region_name=REGION).create_project(
            name="bf-image",
            source={"type": "S3", "location": "bf-sources/streamer-source/"},
            artifacts={"type": "NO_ARTIFACTS"},
            environment={"type": "ARM_CONTAINER", "image": "x", "computeType": "BUILD_GENERAL1_SMALL"},
            serviceRole=role,
        )
        for key, value in {
            "IMAGE_REPOSITORY_NAME": "bracketflow-dev/streamer",
            "IMAGE_REPOSITORY_URI": repo["repository"]["repositoryUri"],
            "SOURCE_BUCKET": "bf-sources",
            "BUILD_PROJECT": "bf-image",
            "STREAMER_IMAGE_CONTEXT": str(package / "context"),
        }.items():
            monkeypatch.setenv(key, value)
        yield repo["repository"]["repositoryUri"]


def builds() -> list[str]:
    return boto3.client("codebuild", region_name=REGION).list_builds_for_project(projectName="bf-image")["ids"]


def test_the_package_holds_every_path_the_dockerfile_copies(package):
    copied = {
        step.args.split()[0]
        for stage in parse(DOCKERFILE.read_text())
        for step in stage.steps
        if step.instruction == "COPY" and "from" not in step.flags
    }
    for source in copied:
        assert (package / "context" / source).exists(), f"{source} is not in the packaged build context"
    assert (package / "context" / "streamer" / "Dockerfile").read_text() == DOCKERFILE.read_text()
    assert not list((package / "context").rglob("__pycache__"))


def test_a_create_builds_the_image_and_answers_with_its_uri(aws):
    app, cfn = _load_app(), CloudFormation()
    # When CloudFormation creates the image
    app.lambda_handler(cfn.event("Create"), Context())
    # Then the sources were put in the bucket, one build ran, and CloudFormation heard the image's URI
    (answer,) = cfn.answers
    assert answer["Status"] == "SUCCESS", answer
    uri = answer["Data"]["ImageUri"]
    tag = uri.rsplit(":", 1)[1]
    assert uri.startswith(aws + ":src-") and answer["PhysicalResourceId"] == uri
    body = boto3.client("s3", region_name=REGION).get_object(Bucket="bf-sources", Key=f"streamer-source/{tag}.zip")
    assert body["Body"].read() == app.context_zip()
    assert len(builds()) == 1


def test_the_same_sources_already_in_the_repository_are_not_built_again(aws):
    app, cfn = _load_app(), CloudFormation()
    tag = app.image_tag(app.context_zip())
    # Given the image for these sources already pushed
    boto3.client("ecr", region_name=REGION).put_image(
        repositoryName="bracketflow-dev/streamer", imageManifest=json.dumps(MANIFEST), imageTag=tag
    )
    # When the stack is updated
    app.lambda_handler(cfn.event("Update", physical_id=f"{aws}:{tag}"), Context())
    # Then no build ran and the same image is answered
    assert cfn.answers[0]["Status"] == "SUCCESS"
    assert cfn.answers[0]["Data"]["ImageUri"] == f"{aws}:{tag}"
    assert builds() == []


def test_the_digest_follows_the_sources(package, tmp_path):
    app = _load_app()
    first = app.image_tag(app.context_zip(package / "context"))
    again = app.image_tag(app.context_zip(package / "context"))
    changed = tmp_path / "context"
    subprocess.run(["cp", "-R", str(package / "context"), str(changed)], check=True)
    (changed / "streamer" / "streamer" / "main.py").write_text("# changed\n", encoding="utf-8")
    assert first == again != app.image_tag(app.context_zip(changed))


def test_a_build_that_cannot_start_is_answered_failed_with_its_reason(aws, monkeypatch):
    app, cfn = _load_app(), CloudFormation()
    monkeypatch.setenv("BUILD_PROJECT", "no-such-project")
    app.lambda_handler(cfn.event("Create"), Context())
    (answer,) = cfn.answers
    assert answer["Status"] == "FAILED"
    assert answer["Reason"]


def test_a_delete_is_answered_at_once(aws):
    app, cfn = _load_app(), CloudFormation()
    app.lambda_handler(cfn.event("Delete", physical_id="repo:src-1"), Context())
    assert cfn.answers[0]["Status"] == "SUCCESS" and cfn.answers[0]["PhysicalResourceId"] == "repo:src-1"
    assert builds() == []
