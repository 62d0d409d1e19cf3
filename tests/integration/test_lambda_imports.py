"""Every deployed process imports with only what it is deployed with (local.lambda_env), not with our dev venv.

A Lambda gets its own directory, the CommonLayer (bracketflow + layers/common/requirements.txt) and the runtime's boto3;
the streamer container gets what streamer/requirements.txt installs. The dev venv has far more, so these tests import
each handler in a fresh interpreter that refuses everything else: a missing layer requirement (the X-Ray SDK the
Powertools Tracer needs was one) fails here instead of crashing every function at init after a deploy.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from local.lambda_env import (
    LAYER_REQUIREMENTS,
    STREAMER_REQUIREMENTS,
    check_function,
    check_streamer,
    distribution_closure,
    read_requirements,
    template_environment,
)
from local.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
# The layer as it was before the fix: Powertools without its tracer extra.
LAYER_WITHOUT_TRACER = """\
aws-lambda-powertools==3.37.0
pydantic==2.14.3
requests==2.34.2
"""


def _template_function_dirs() -> list[str]:
    resources = load_yaml(ROOT / "template.yaml")["Resources"]
    return sorted(
        str(spec["Properties"]["CodeUri"]).rstrip("/")
        for spec in resources.values()
        if spec.get("Type") == "AWS::Serverless::Function"
    )


FUNCTION_DIRS = _template_function_dirs()


def _names(report: dict) -> set[str]:
    return set(report["distributions"])


def test_template_names_function_directories_that_exist():
    # Given the template's functions / Then each CodeUri is a directory with an app.py (what the import tests cover)
    assert FUNCTION_DIRS, "template.yaml names no AWS::Serverless::Function"
    missing = [d for d in FUNCTION_DIRS if not (ROOT / d / "app.py").is_file()]
    assert missing == []


@pytest.mark.parametrize("function_dir", FUNCTION_DIRS)
def test_function_imports_with_only_the_runtime_and_the_layer(function_dir):
    # Given a function as deployed (traced, as the template's Tracing: Active makes it)
    # When its app module is imported where only the runtime's boto3 and the layer's requirements exist
    report = check_function(ROOT / function_dir)

    # Then it imports, and its handler is there
    assert report["error"] is None
    assert report["ok"] is True
    assert report["entry_point_found"] is True
    assert report["traced"] is True
    assert len(report["import_ms"]) == 1


def test_the_webhook_loads_nothing_for_the_broker_at_cold_start():
    # Given the webhook as deployed (traced), which never calls the broker (nothing in the request
    # path does: docs/architecture.md) and whose cold start TradingView's first alert waits for
    report = check_function(ROOT / "functions" / "webhook")
    # Then its import loads AWS, Powertools and pydantic, and no HTTP client library (the X-Ray SDK patching
    # `requests`, Powertools' default, used to import it)
    assert report["ok"] is True
    assert {"boto3", "aws_lambda_powertools", "pydantic", "aws_xray_sdk"} <= set(report["third_party"])
    assert not {"requests", "charset_normalizer", "idna"} & set(report["third_party"])


def test_the_child_gets_the_literal_environment_the_template_gives_the_function():
    # Given template.yaml's Globals (plain values and intrinsics) / When the webhook's deployed environment is read
    env = template_environment(ROOT / "functions" / "webhook")
    # Then the plain values are there, as Lambda sets them, and the per-deployment ones (!Ref) are not
    assert env["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    assert env["POWERTOOLS_SERVICE_NAME"] == "bracketflow"
    assert "TABLE_NAME" not in env and "STAGE" not in env
    # And the import child is given them
    report = check_function(ROOT / "functions" / "webhook")
    assert report["environment"] == env


def test_a_layer_without_the_tracer_extra_is_refused_naming_the_xray_sdk(tmp_path):
    # Given the layer's requirements as they were before the fix (no tracer extra)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(LAYER_WITHOUT_TRACER)

    # When the webhook is imported with only those
    report = check_function(ROOT / "functions" / "webhook", requirements)

    # Then the import fails at the X-Ray SDK, naming the distribution that is missing
    assert report["ok"] is False
    assert report["error"].startswith("ModuleNotFoundError: No module named 'aws_xray_sdk'")
    assert "distribution aws-xray-sdk" in report["error"]
    assert "aws_xray_sdk" in report["refused"]
    assert "aws-xray-sdk" not in _names(report)


def test_a_package_only_the_dev_venv_has_is_refused(tmp_path):
    # Given a function that imports moto (installed in the dev venv, never in a Lambda)
    function_dir = tmp_path / "uses_moto"
    function_dir.mkdir()
    (function_dir / "app.py").write_text("import moto\n\n\ndef lambda_handler(event, context):\n    return None\n")
    assert metadata.version("moto")  # precondition: the dev venv really has it

    # When it is imported as a Lambda
    report = check_function(function_dir)

    # Then moto is refused, naming its distribution
    assert report["ok"] is False
    assert "No module named 'moto'" in report["error"]
    assert "distribution moto" in report["error"]


def test_a_function_needs_its_lambda_handler(tmp_path):
    # Given a function module that imports fine but has no lambda_handler
    function_dir = tmp_path / "no_handler"
    function_dir.mkdir()
    (function_dir / "app.py").write_text("import boto3\n\nHANDLER = None\n")

    # When it is checked
    report = check_function(function_dir)

    # Then the import itself succeeded but the check fails for the missing entry point
    assert report["error"] is None
    assert report["entry_point_found"] is False
    assert report["ok"] is False


def test_optional_pyopenssl_is_refused_as_in_lambda_and_botocore_carries_on():
    # Given pyOpenSSL in the dev venv (moto pulls it in), which botocore would pick up if it imported
    assert metadata.version("pyOpenSSL")

    # When the webhook (boto3/botocore) is imported as a Lambda
    report = check_function(ROOT / "functions" / "webhook")

    # Then botocore's optional `import OpenSSL` failed as in Lambda, and the import still succeeded
    assert "OpenSSL" in report["refused"]
    assert report["ok"] is True


def test_the_streamer_entry_module_imports_with_its_container_requirements():
    # Given the streamer container (streamer/requirements.txt, bracketflow + the streamer package, no Lambda runtime)
    # When python -m streamer's entry module is imported with only that
    report = check_streamer()

    # Then it imports and main is there
    assert report["error"] is None
    assert report["ok"] is True
    assert report["runtime"] == []
    assert {"boto3", "websocket-client", "aws-xray-sdk"} <= _names(report)


def test_a_streamer_image_without_the_websocket_client_is_refused(tmp_path):
    # Given the streamer's requirements minus websocket-client
    lines = [line for line in STREAMER_REQUIREMENTS.read_text().splitlines() if not line.startswith("websocket-client")]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(lines) + "\n")

    # When the streamer is imported with those
    report = check_streamer(requirements)

    # Then the websocket module is refused, naming its distribution
    assert report["ok"] is False
    assert "No module named 'websocket'" in report["error"]
    assert "websocket-client" in report["error"]


def test_closure_follows_requested_extras_only():
    # Given Powertools with and without its tracer extra
    plain = distribution_closure([Requirement("aws-lambda-powertools==3.37.0")])
    traced = distribution_closure([Requirement("aws-lambda-powertools[tracer]==3.37.0")])

    # Then only the extra brings in the X-Ray SDK and its own requirements (wrapt, botocore)
    assert "aws-xray-sdk" not in plain
    assert {"aws-xray-sdk", "wrapt", "botocore", "jmespath"} <= set(traced)
    # and other extras (e.g. validation's fastjsonschema, all's pydantic) are not followed
    assert "pydantic" not in traced


def test_closure_evaluates_markers_for_lambdas_linux_arm64():
    # Given requirements that only apply on one machine
    x86_only = Requirement('pyyaml==6.0.3; platform_machine == "x86_64"')
    arm_only = Requirement('pyyaml==6.0.3; platform_machine == "aarch64"')

    # Then they count for Lambda (arm64) whatever machine the tests run on
    assert "pyyaml" not in distribution_closure([x86_only])
    assert "pyyaml" in distribution_closure([arm_only])


@pytest.mark.parametrize("requirements", [LAYER_REQUIREMENTS, STREAMER_REQUIREMENTS], ids=["layer", "streamer"])
def test_pins_are_what_the_venv_tests_with(requirements):
    # Given a deploy's pinned requirements / Then the dev venv has exactly those versions (else the check is not exact)
    for requirement in read_requirements(requirements):
        pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        assert pins, f"{requirement} is not pinned in {requirements.name}"
        assert metadata.version(requirement.name) == pins[0], requirement.name


def test_the_streamer_pins_the_layers_packages_at_the_layers_versions():
    # Given the packages both the layer and the streamer image install
    layer = {canonicalize_name(r.name): str(r.specifier) for r in read_requirements(LAYER_REQUIREMENTS)}
    streamer = {canonicalize_name(r.name): str(r.specifier) for r in read_requirements(STREAMER_REQUIREMENTS)}

    # Then bracketflow runs on the same versions in both (the streamer adds websocket-client)
    shared = set(layer) & set(streamer)
    assert {"aws-lambda-powertools", "aws-xray-sdk", "pydantic", "requests", "boto3", "botocore"} <= shared
    assert {name: streamer[name] for name in shared} == {name: layer[name] for name in shared}
    assert set(layer) == shared


def test_cli_prints_one_json_report_and_fails_with_exit_1(tmp_path):
    # Given the layer without the tracer extra
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(LAYER_WITHOUT_TRACER)

    # When the CLI checks the health function twice as deployed, and the webhook with the broken layer
    good = subprocess.run(
        [sys.executable, "-m", "local.lambda_env", "functions/health", "--times", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    bad = subprocess.run(
        [sys.executable, "-m", "local.lambda_env", "functions/webhook", "--requirements", str(requirements)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then each prints one JSON object: two timed imports and exit 0; the refusal and exit 1
    report = json.loads(good.stdout)
    assert good.returncode == 0, good.stderr
    assert report["target"] == "functions/health"
    assert report["times"] == 2
    assert len(report["import_ms"]) == 2
    assert all(ms > 0 for ms in report["import_ms"])
    assert min(report["import_ms"]) <= report["import_ms_median"] <= max(report["import_ms"])
    failed = json.loads(bad.stdout)
    assert bad.returncode == 1
    assert failed["ok"] is False
    assert "aws_xray_sdk" in failed["error"]
