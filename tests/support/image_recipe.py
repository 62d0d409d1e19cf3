"""streamer/Dockerfile, performed without Docker: each stage's COPY and RUN steps are carried out in a directory of
its own (the stage's "/"), and the final stage's ENTRYPOINT is started from there with the image's ENV and WORKDIR.

No container registry is reachable from the machines this project is tested on, so the image itself cannot be built
here; this reads the Dockerfile and does what it says, so what the test runs is what the image would run. It knows
only the instructions and RUN commands the Dockerfile uses today: anything else is refused (RecipeDrift), so a new
step in the Dockerfile cannot be skipped silently by the test.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "streamer" / "Dockerfile"


class RecipeDrift(AssertionError):
    """The Dockerfile asks for something this recipe does not know how to perform."""


@dataclass
class Step:
    instruction: str  # FROM, COPY, RUN, ENV, WORKDIR, USER, STOPSIGNAL, ENTRYPOINT, CMD, ARG
    args: str
    flags: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    name: str
    base: str
    platform: str | None
    steps: list[Step] = field(default_factory=list)


def parse(text: str) -> list[Stage]:
    """The Dockerfile's stages and their steps (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        flags: dict[str, str] = {}
        words = rest.split()
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            flags[key] = value
        rest = " ".join(words)
        if instruction == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
            continue
        if instruction == "FROM":
            base, _, name = rest.partition(" AS ")
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            stages.append(Stage(name.strip() or str(len(stages)), base.strip(), flags.get("platform")))
            continue
        if not stages:
            raise RecipeDrift(f"{instruction} before any FROM")
        stages[-1].steps.append(Step(instruction, rest, flags))
    return stages


def env_of(step: Step) -> dict[str, str]:
    out = {}
    for word in shlex.split(step.args):
        key, _, value = word.partition("=")
        out[key] = value
    return out


@dataclass
class Image:
    """The final stage, performed: its root directory and how its entrypoint starts."""

    root: Path
    env: dict[str, str]  # ENV, with the image's absolute paths mapped into root
    workdir: Path
    argv: list[str]  # ENTRYPOINT + CMD, as in the Dockerfile
    user: str | None
    stop_signal: str | None

    def command(self, python: str) -> list[str]:
        """argv with the image's `python` replaced by `python` (the interpreter standing in for the base image's)."""
        if not self.argv or self.argv[0] not in ("python", "python3"):
            raise RecipeDrift(f"the entrypoint {self.argv} does not start with the base image's python")
        return [python, *self.argv[1:]]


def _inside(root: Path, path: str) -> Path:
    if not path.startswith("/"):
        raise RecipeDrift(f"{path!r}: the recipe maps only absolute image paths")
    return root / path.lstrip("/")


def _map_paths(root: Path, value: str) -> str:
    return os.pathsep.join(str(_inside(root, p)) if p.startswith("/") else p for p in value.split(":"))


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _run(root: Path, command: str, pip_python: str) -> None:
    """The one kind of RUN the Dockerfile has: `python -m pip install ...` with image paths (mapped into root)."""
    argv = shlex.split(command)
    if argv[:4] != ["python", "-m", "pip", "install"]:
        raise RecipeDrift(f"RUN {command!r}: the recipe performs only `python -m pip install`")
    mapped = [str(_inside(root, a)) if a.startswith("/") else a for a in argv[4:]]
    subprocess.run([pip_python, "-m", "pip", "install", "--quiet", *mapped], check=True, cwd=root)


def _perform_stage(stage: Stage, root: Path, roots: dict[str, Path], pip_python: str) -> Image:
    """One stage's steps under `root` (earlier stages' roots by name, for COPY --from); the image it leaves."""
    env: dict[str, str] = {}
    workdir = root
    argv: list[str] = []
    user = stop_signal = None
    for step in stage.steps:
        kind = step.instruction
        if kind == "COPY":
            if set(step.flags) - {"from"}:
                raise RecipeDrift(f"COPY flags {step.flags} are not performed by the recipe")
            source, target = step.args.split()
            origin = _inside(roots[step.flags["from"]], source) if "from" in step.flags else REPO / source
            if not origin.exists():
                raise RecipeDrift(f"COPY {source}: nothing there")
            _copy(origin, _inside(root, target))
        elif kind == "RUN":
            _run(root, step.args, pip_python)
        elif kind == "ENV":
            env.update(env_of(step))
        elif kind == "WORKDIR":
            workdir = _inside(root, step.args)
            workdir.mkdir(parents=True, exist_ok=True)
        elif kind in ("ENTRYPOINT", "CMD"):
            argv += json.loads(step.args)  # exec form only: no shell in between
        elif kind == "USER":
            user = step.args
        elif kind == "STOPSIGNAL":
            stop_signal = step.args
        else:
            raise RecipeDrift(f"{kind} {step.args!r} is not performed by the recipe")
    mapped = {k: _map_paths(root, v) if k == "PYTHONPATH" else v for k, v in env.items()}
    return Image(root, mapped, workdir, argv, user, stop_signal)


def perform(workspace: Path, dockerfile: Path = DOCKERFILE, pip_python: str = sys.executable) -> Image:
    """Carry out every stage of `dockerfile` under `workspace`; the last stage is the image."""
    stages = parse(dockerfile.read_text(encoding="utf-8"))
    roots: dict[str, Path] = {}
    image: Image | None = None
    for stage in stages:
        root = workspace / f"stage-{stage.name}"
        root.mkdir(parents=True)
        roots[stage.name] = root
        image = _perform_stage(stage, root, roots, pip_python)
    if image is None:
        raise RecipeDrift("no stage in the Dockerfile")
    return image


def bare_python(where: Path) -> str:
    """A Python 3.11 with nothing but its standard library (no pip, no site-packages of this machine): what the
    base image's interpreter offers the streamer once PYTHONPATH is set."""
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(where)
    return str(where / "bin" / "python")
