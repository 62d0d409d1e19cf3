"""The streamer image's recipe, proven without Docker: streamer/Dockerfile's own steps (tests/support/image_recipe.py
reads them from the file) install the locked requirements and copy the code into a fresh directory; the streamer is
started from there exactly as the image's entrypoint starts it, on an interpreter that has nothing but its standard
library, and on the local stack it connects to the paper exchange's ticker, trails a bracket placed through the API
and exits it once, for TRAIL_STOP. The recipe refuses Dockerfile steps it does not know, so the two cannot drift."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from local.processes import Child, ChildSpec
from local.stack import LocalStack
from tests.support.image_recipe import DOCKERFILE, REPO, RecipeDrift, bare_python, parse, perform
from tests.support.stack import get_bracket, paper, quote, stack_fixture, wait_for

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "image-recipe-key"
BOUND_S = 90  # an upper bound for a slow, shared machine; never a timing assertion

stack = stack_fixture(API_KEY, relay=False)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, _, version = line.partition("==")
        pins[re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-")] = version.strip()
    return pins


def _output(name: str, line: str) -> None:
    print(f"[{name}] {line}")  # shown by pytest when the test fails


# ---------- the Dockerfile itself ----------


def test_the_image_is_built_for_linux_arm64_from_a_registry_aws_can_reach_without_docker_hub_limits():
    stages = parse(DOCKERFILE.read_text())
    assert len(stages) == 2, "a dependency stage and the image"
    assert all(s.platform == "linux/arm64" for s in stages)  # the Fargate task is ARM64
    assert all(s.base.startswith("public.ecr.aws/") for s in stages)


def test_the_image_installs_the_layers_pins_unchanged_and_nothing_unlocked():
    # Given the streamer's lock and the common layer's pins
    locked = _pins(REPO / "streamer" / "requirements.txt")
    layer = _pins(REPO / "layers" / "common" / "requirements.txt")
    # Then every layer pin is in the lock at the same version, with the ticker's client
    assert {name: locked.get(name) for name in layer} == layer
    assert "websocket-client" in locked
    # And the Dockerfile installs only the lock, with --no-deps (nothing unlisted comes in)
    runs = [step.args for stage in parse(DOCKERFILE.read_text()) for step in stage.steps if step.instruction == "RUN"]
    assert len(runs) == 1
    assert "--no-deps" in runs[0].split() and runs[0].endswith("-r /app/streamer/requirements.txt")
    # And no test or benchmark tool is locked into the image
    assert not {"pytest", "moto", "hypothesis", "ruff", "mypy", "kiteconnect", "aiohttp", "pyyaml"} & set(locked)


def test_the_image_holds_the_streamer_and_the_shared_package_only():
    sources = {
        args[0]
        for stage in parse(DOCKERFILE.read_text())
        for step in stage.steps
        if step.instruction == "COPY" and "from" not in step.flags
        for args in [step.args.split()]
    }
    assert sources == {"streamer/requirements.txt", "layers/common/bracketflow", "streamer/streamer"}


def test_a_dockerfile_step_the_recipe_does_not_know_is_refused(tmp_path):
    # Given the Dockerfile with one more step (a shell command the recipe cannot perform)
    drifted = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text().replace("USER 10001:10001", "RUN apt-get install -y curl\nUSER 10001:10001")
    drifted.write_text(text)
    # Then performing it fails, naming the step, instead of skipping it
    with pytest.raises(RecipeDrift, match="apt-get install"):
        perform(tmp_path / "work", drifted)


# ---------- the image, run ----------


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The Dockerfile performed into a fresh directory, and a bare interpreter standing in for the base image's."""
    work = tmp_path_factory.mktemp("streamer-image")
    built = perform(work / "image")
    return built, bare_python(work / "python")


def test_the_performed_image_holds_what_the_dockerfile_says(image):
    built, _python = image
    assert built.argv == ["python", "-m", "streamer"]
    assert built.user == "10001:10001" and built.stop_signal == "SIGTERM"
    deps = built.root / "app" / "deps"
    installed = {p.name.split("-")[0].lower().replace("_", "-") for p in deps.glob("*.dist-info")}
    assert installed == set(_pins(REPO / "streamer" / "requirements.txt"))
    assert (built.root / "app" / "streamer" / "streamer" / "__main__.py").is_file()
    assert (built.root / "app" / "layers" / "common" / "bracketflow" / "data" / "instruments.csv").is_file()
    assert not (built.root / "app" / "paper").exists() and not (built.root / "app" / "tests").exists()


def test_the_image_streamer_trails_a_bracket_on_the_local_stack_and_exits_it_once(stack: LocalStack, image):
    built, python = image
    assert stack.template is not None
    # Given the stack's streamer container environment (the task definition's), pointed at the local paper ticker,
    container_env: dict[str, str] = {}
    for env in stack.template.container_environment.values():
        container_env.update(env)
    container_env.update(
        {
            "BROKER_TICKER_URL": f"{stack.paper_url.replace('http://', 'ws://')}/ws",  # type: ignore[union-attr]
            "STAGE": "local",
            "STREAMER_RESYNC_INTERVAL_S": "0.5",
            "STREAMER_PERSIST_INTERVAL_S": "0.2",
            "STREAMER_CONTROL_WAIT_S": "1",
            **built.env,  # the image's own ENV (PYTHONPATH into the performed image) wins
        }
    )
    # And the streamer started as the image's entrypoint starts it, from the performed image only
    # (a Child of the stack's, so the stack stops it; not _start_child, which would put the checkout on PYTHONPATH)
    child = Child(ChildSpec("image-streamer", built.command(python), env=container_env, cwd=built.workdir), _output)
    stack.children.append(child)
    child.start()
    child.wait_ready()
    paper(stack, "config", {"market": "manual"})
    quote(stack, "1500", "1499.95", "1500")

    # When a long MIS bracket with a 1% trail is placed through the API, filled and protected
    placed = requests.post(
        f"{stack.api_url}/api/v1/placebracketorder",
        json={
            "symbol": "INFY",
            "exchange": "NSE",
            "product": "MIS",
            "action": "BUY",
            "quantity": 1,
            "entry_price": "1500",
            "sl_price": "1480",
            "target_price": "1600",
            "trail": {"type": "percent", "value": "1"},
            "strategy": "image-recipe",
        },
        headers={"X-API-KEY": API_KEY},
        timeout=30,
    )
    assert placed.status_code == 200, placed.text
    bracket_id = placed.json()["bracket_id"]
    wait_for("PROTECTED", lambda: get_bracket(stack, API_KEY, bracket_id)["status"] == "PROTECTED", BOUND_S)

    # Then the image's streamer trails the stop as the price rises (1% under the best bid, down to the tick)
    quote(stack, "1530", "1530", "1530.05")
    wait_for(
        "the image's streamer to trail the stop to 1514.70",
        lambda: Decimal(str(get_bracket(stack, API_KEY, bracket_id)["stop_price"])) == Decimal("1514.70"),
        BOUND_S,
    )
    # And when the price falls through it, the bracket is exited once, for TRAIL_STOP
    quote(stack, "1512", "1511.95", "1512")
    quote(stack, "1508", "1507.95", "1508")
    view = wait_for(
        "the exit recorded on the bracket",
        lambda: (v := get_bracket(stack, API_KEY, bracket_id))["exit"] and v["exit"]["order_id"] and v,
        BOUND_S,
    )
    assert view["exit"]["reason"] == "TRAIL_STOP"
    from bracketflow.domain.ids import order_tag

    tag = order_tag(bracket_id, "EXIT")
    exits = [o for o in paper(stack, "state", method="GET")["orders"] if o.get("tag") == tag]
    assert len(exits) == 1
    assert child.alive, "the image's streamer keeps running"
