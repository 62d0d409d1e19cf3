"""A Lambda's import world, reproduced from this venv: only what the runtime and the layer would give a function.

Deployed, a function sees its own directory, the CommonLayer (bracketflow + layers/common/requirements.txt, built by
`sam build`) and the python3.11 runtime's boto3; nothing else. Our .venv holds much more (moto, test tools ...), so an
import that works in tests can crash every deployed function at init (it did: the Powertools Tracer needs the X-Ray
SDK, which only dev tools had pulled in). This module imports a handler in a fresh interpreter where any third-party
top-level module outside that world is refused, without network or a new venv:

- allowed distributions: the closure, through importlib.metadata `requires` (extras and environment markers honoured,
  markers evaluated for the Lambda's linux/arm64), of the runtime's boto3 and every requirement in the requirements
  file; their top-level import names come from importlib.metadata.packages_distributions();
- a meta-path finder raises ModuleNotFoundError (naming the distribution the module would have come from) for any
  other top-level module; the standard library, `bracketflow` and the function's own modules are allowed. Optional
  imports fail as they do in Lambda (botocore only loads urllib3.contrib.pyopenssl if pyOpenSSL imports: here it
  does not, so timings are representative);
- the child runs `python -I -S` (no site, no .pth files, no PYTHONPATH) with sys.path = function dir, layers/common,
  the standard library and this venv's site-packages, and cwd = the function dir, as the Lambda init does; its
  environment has the function's literal variables from template.yaml (Globals and its own, e.g.
  PYDANTIC_DISABLE_PLUGINS), as Lambda sets them (those given by !Ref and the like are deployment-specific: left out);
- code deployed without bytecode is compiled from source in every child, whatever __pycache__ the checkout has: a
  function's own directory (read-only in Lambda, so a cold start compiles it and cannot cache the result) and, for
  the streamer, bracketflow and the streamer package (its image sets PYTHONDONTWRITEBYTECODE). The CommonLayer ships
  bracketflow and its requirements compiled (layers/common/Makefile), as installed packages here have theirs.

CLI (stable; benchmarks/bench_webhook.py reads it for the cold-import number):

    python -m local.lambda_env <function dir> [--requirements FILE] [--times N] [--untraced]
    python -m local.lambda_env --streamer [--requirements FILE] [--times N]

prints one JSON object on stdout and exits 0 if every import succeeded and found its entry point, 1 otherwise:

    {"target": "functions/webhook", "module": "app", "entry_point": "lambda_handler",
     "requirements": "layers/common/requirements.txt", "runtime": ["boto3"], "traced": true,
     "ok": true, "entry_point_found": true, "error": null, "refused": ["OpenSSL"],
     "third_party": ["aws_lambda_powertools", "boto3", ...],
     "environment": {"PYDANTIC_DISABLE_PLUGINS": "__all__", ...},
     "import_ms": [412.3, ...], "import_ms_median": 412.3, "times": N,
     "distributions": {"aws-lambda-powertools": "3.37.0", ...}, "version_mismatches": []}

- import_ms: wall time of importing the module in each fresh interpreter (interpreter start-up not included);
- refused: top-level modules the finder refused during the import (caught optional imports included);
- third_party: the top-level third-party modules the import loaded (what the function pays for at cold start);
- environment: the template's literal variables the child was given (see above);
- traced (default true): the child gets LAMBDA_TASK_ROOT as in Lambda, so with the template's `Tracing: Active` the
  Powertools Tracer loads the X-Ray SDK and patches botocore as deployed; --untraced leaves it out (tracing
  off, as the local stack and the tests run; only the X-Ray SDK's top package loads, Powertools switches it off);
- version_mismatches: pinned (==) requirements whose installed version differs (the reproduction is then not exact);
- --streamer: the streamer container instead (streamer/Dockerfile): streamer/requirements.txt's closure, no runtime
  boto3 unless listed, code = bracketflow + the streamer package, module streamer.main (what `python -m streamer` runs
  first), entry point `main`.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import statistics
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LAYER_DIR = REPO / "layers" / "common"
LAYER_REQUIREMENTS = LAYER_DIR / "requirements.txt"
STREAMER_DIR = REPO / "streamer"
STREAMER_REQUIREMENTS = STREAMER_DIR / "requirements.txt"
# What the python3.11 Lambda runtime brings itself (boto3 and, through its requirements, botocore and the rest).
LAMBDA_RUNTIME = ("boto3",)
TEMPLATE = REPO / "template.yaml"
# Markers are evaluated for the machine the code runs on (Lambda and the Fargate streamer: Linux on arm64).
TARGET_PLATFORM = {
    "platform_machine": "aarch64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
}
CHILD_TIMEOUT_S = 120


class WorldError(Exception):
    """The import world cannot be reproduced from this venv (a required distribution is not installed here)."""


@dataclass(frozen=True)
class ImportWorld:
    """What one deployed process may import: its code directories and the third-party distributions it gets."""

    label: str
    code_dirs: tuple[Path, ...]  # sys.path head, in the deployed order
    own_modules: frozenset[str]  # our code's top-level modules (bracketflow, the handler's own files)
    distributions: dict[str, str]  # canonical distribution name -> installed version
    allowed_modules: frozenset[str]  # third-party top-level import names of those distributions
    origins: dict[str, tuple[str, ...]]  # any installed top-level module -> its distributions (for refusals)
    requirements: Path
    runtime: tuple[str, ...] = ()
    version_mismatches: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)  # what the deployed process finds set
    compiled_at_start: tuple[Path, ...] = ()  # code deployed without bytecode: compiled by every cold start


# ---------- requirements and their closure ----------


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of a pip requirements file (`-r` includes followed; other options ignored)."""
    found: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            found.extend(read_requirements(path.parent / line.split(None, 1)[1].strip()))
        elif not line.startswith("-"):
            found.append(Requirement(line))
    return found


def _environment(extra: str) -> dict[str, str]:
    env = {key: str(value) for key, value in default_environment().items()}
    env.update(TARGET_PLATFORM)
    env["extra"] = extra
    return env


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate(_environment(extra)) for extra in extras | {""})


def distribution_closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every installed distribution the requirements pull in (canonical name -> version), extras included."""
    extras_of: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    pending = [(req, "the requirements file") for req in requirements if _applies(req, set())]
    while pending:
        req, wanted_by = pending.pop()
        name = canonicalize_name(req.name)
        known = extras_of.get(name)
        if known is not None and set(req.extras) <= known:
            continue
        extras = extras_of.setdefault(name, set())
        extras.update(req.extras)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise WorldError(f"{req.name} (required by {wanted_by}) is not installed in {sys.prefix}") from None
        versions[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if _applies(sub, extras):
                pending.append((sub, f"{dist.metadata['Name']}{sorted(extras) or ''}"))
    return versions


def _pin_mismatches(requirements: list[Requirement], versions: dict[str, str]) -> list[str]:
    mismatches = []
    for req in requirements:
        pins = [spec.version for spec in req.specifier if spec.operator == "=="]
        installed = versions.get(canonicalize_name(req.name))
        if pins and installed is not None and installed != pins[0]:
            mismatches.append(f"{req.name}: pinned {pins[0]}, installed {installed}")
    return mismatches


def _top_level_modules(code_dir: Path) -> set[str]:
    names = set()
    for entry in code_dir.iterdir():
        if entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and (entry / "__init__.py").exists():
            names.add(entry.name)
    return names


def build_world(
    label: str,
    code_dirs: tuple[Path, ...],
    own_modules: set[str],
    requirements: Path,
    runtime: tuple[str, ...] = (),
    bundled: Path | None = None,
    environment: dict[str, str] | None = None,
    compiled_at_start: tuple[Path, ...] = (),
) -> ImportWorld:
    listed = read_requirements(requirements) + (read_requirements(bundled) if bundled else [])
    wanted = [Requirement(name) for name in runtime] + listed
    versions = distribution_closure(wanted)
    origins: dict[str, tuple[str, ...]] = {}
    allowed: set[str] = set()
    for module, dists in metadata.packages_distributions().items():
        origins[module] = tuple(sorted(set(dists)))
        if any(canonicalize_name(d) in versions for d in dists):
            allowed.add(module)
    return ImportWorld(
        label=label,
        code_dirs=code_dirs,
        own_modules=frozenset(own_modules),
        distributions=dict(sorted(versions.items())),
        allowed_modules=frozenset(allowed),
        origins=origins,
        requirements=requirements,
        runtime=runtime,
        version_mismatches=_pin_mismatches(listed, versions),
        environment=dict(environment or {}),
        compiled_at_start=compiled_at_start,
    )


def lambda_world(function_dir: Path, requirements: Path = LAYER_REQUIREMENTS) -> ImportWorld:
    """A function as deployed: its directory and the CommonLayer (bracketflow + requirements) + the runtime's boto3.

    A requirements.txt in the function's own directory is bundled into it by `sam build`, so it counts too."""
    function_dir = function_dir.resolve()
    own = _top_level_modules(function_dir) | {"bracketflow"}
    bundled = function_dir / "requirements.txt"
    return build_world(
        _shown(function_dir),
        (function_dir, LAYER_DIR),
        own,
        requirements,
        LAMBDA_RUNTIME,
        bundled if bundled.exists() else None,
        template_environment(function_dir),
        (function_dir,),  # the layer ships bytecode (layers/common/Makefile); the function's own files do not
    )


def template_environment(function_dir: Path, template: Path = TEMPLATE) -> dict[str, str]:
    """The literal (plain string) environment variables template.yaml gives the function at `function_dir`: the
    Globals' and its own (its own win). Values from intrinsics (!Ref, !Sub, !GetAtt) differ per deployment: left out."""
    from local.template import load_yaml

    doc = load_yaml(template)
    found: dict[str, str] = {}
    layers = [((doc.get("Globals") or {}).get("Function") or {})]
    for resource in (doc.get("Resources") or {}).values():
        props = resource.get("Properties") or {}
        code = props.get("CodeUri")
        is_function = resource.get("Type") == "AWS::Serverless::Function"
        if is_function and isinstance(code, str) and (REPO / code).resolve() == function_dir.resolve():
            layers.append(props)
    for props in layers:
        variables = (props.get("Environment") or {}).get("Variables") or {}
        found.update({k: v for k, v in variables.items() if isinstance(v, str)})
    return found


def streamer_world(requirements: Path = STREAMER_REQUIREMENTS) -> ImportWorld:
    """The streamer container: streamer/Dockerfile installs the requirements and copies bracketflow + streamer."""
    code = (LAYER_DIR, STREAMER_DIR)  # copied as source into an image run with PYTHONDONTWRITEBYTECODE
    return build_world("streamer", code, {"bracketflow", "streamer"}, requirements, compiled_at_start=code)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---------- the child interpreter ----------

# Runs in `python -I -S`: nothing but the frozen import machinery is loaded before the finder is installed, so no
# module reaches sys.modules around it. The configuration is pasted in as Python literals (no json before the import).
_CHILD = r"""
import sys, time
_CODE_DIRS = {code_dirs!r}
_SITE_DIRS = {site_dirs!r}
_ALLOWED = {allowed!r}
_STDLIB_FILES = {stdlib_files!r}
_ORIGINS = {origins!r}
_SOURCE = {source!r}
_MODULE = {module!r}
_ENTRY = {entry!r}
_OWN = {own!r}
_COMPILED_AT_START = {compiled_at_start!r}
sys.path[:0] = _CODE_DIRS
sys.path.extend(p for p in _SITE_DIRS if p not in sys.path)
_STDLIB = sys.stdlib_module_names | set(sys.builtin_module_names) | _STDLIB_FILES
_refused = []
_path_finder = sys.modules["_frozen_importlib_external"].PathFinder


class DeployedImportsOnly:
    # Only top-level names are judged: a submodule is as reachable as its package.
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if "." in fullname or fullname in _ALLOWED or fullname in _STDLIB:
            return None
        dists = _ORIGINS.get(fullname)
        if not dists and _path_finder.find_spec(fullname) is None:
            return None  # absent here as in Lambda (e.g. the stdlib probing for Jython's `org`): the usual error
        if fullname not in _refused:
            _refused.append(fullname)
        where = "distribution " + ", ".join(dists) if dists else "no installed distribution"
        raise ModuleNotFoundError(
            f"No module named {{fullname!r}} where this runs: it comes from {{where}}, which is not in " + _SOURCE,
            name=fullname,
        )

    @staticmethod
    def invalidate_caches():
        return None


sys.meta_path.insert(0, DeployedImportsOnly)
# Code deployed as source on a read-only filesystem is compiled by every cold start, which cannot cache the bytecode:
# so it is compiled here too, whatever __pycache__ this checkout holds.
_source_loader = sys.modules["_frozen_importlib_external"].SourceFileLoader
_cached_get_code = _source_loader.get_code
_CODE_PREFIXES = tuple(d.rstrip("/") + "/" for d in _COMPILED_AT_START)
def _compiled_from_source(self, fullname):
    path = self.get_filename(fullname)
    if path.startswith(_CODE_PREFIXES):
        return self.source_to_code(self.get_data(path), path)
    return _cached_get_code(self, fullname)
_source_loader.get_code = _compiled_from_source
_error = None
_found = False
_start = time.perf_counter()
try:
    __import__(_MODULE)
except BaseException as exc:
    _error = f"{{type(exc).__name__}}: {{exc}}"
_elapsed_ms = (time.perf_counter() - _start) * 1000
if _error is None:
    _found = callable(getattr(sys.modules[_MODULE], _ENTRY, None))
import json
_third_party = {{n.split(".", 1)[0] for n in list(sys.modules)}} - _STDLIB - set(_OWN)
_third_party = sorted(_third_party - {{"__main__", "__mp_main__"}})
print(json.dumps({{"ok": _error is None and _found, "entry_point_found": _found, "error": _error,
                  "refused": _refused, "import_ms": round(_elapsed_ms, 1), "third_party": _third_party}}))
"""


def _stdlib_modules() -> frozenset[str]:
    """Standard-library modules sys.stdlib_module_names leaves out (e.g. _sysconfigdata_*): what its dirs hold."""
    paths = sysconfig.get_paths()
    site = {Path(paths["purelib"]), Path(paths["platlib"])}
    dirs = {Path(paths["stdlib"]), Path(paths["platstdlib"]), Path(paths["platstdlib"]) / "lib-dynload"}
    names = set()
    for directory in dirs - site:
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.suffix in (".py", ".so") or (entry / "__init__.py").exists():
                    names.add(entry.name.split(".", 1)[0])
    return frozenset(names)


def _child_source(world: ImportWorld, module: str, entry_point: str) -> str:
    paths = sysconfig.get_paths()
    site_dirs = list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    refused_origins = {m: d for m, d in world.origins.items() if m not in world.allowed_modules}
    source = f"{_shown(world.requirements)}"
    if world.runtime:
        source = f"the Lambda runtime ({', '.join(world.runtime)}) or {source}"
    return _CHILD.format(
        code_dirs=[str(p) for p in world.code_dirs],
        site_dirs=site_dirs,
        allowed=frozenset(world.allowed_modules | world.own_modules),
        stdlib_files=_stdlib_modules(),
        origins=refused_origins,
        source=source,
        module=module,
        entry=entry_point,
        own=sorted(world.own_modules),
        compiled_at_start=[str(p) for p in world.compiled_at_start],
    )


def _child_env(world: ImportWorld, traced: bool) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE", "POWERTOOLS_TRACE_DISABLED", "LAMBDA_TASK_ROOT"):
        env.pop(name, None)
    env.update(world.environment)
    if traced:  # what Lambda sets: with the template's Tracing: Active, observability builds the X-Ray tracer
        env["LAMBDA_TASK_ROOT"] = str(world.code_dirs[0])
    env.setdefault("AWS_DEFAULT_REGION", "ap-south-1")
    env.setdefault("AWS_REGION", env["AWS_DEFAULT_REGION"])
    return env


def import_once(world: ImportWorld, module: str, entry_point: str, traced: bool = True) -> dict[str, Any]:
    """Import `module` in one fresh interpreter inside `world`; the child's verdict as a dict."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _child_source(world, module, entry_point)],
        cwd=world.code_dirs[0],
        env=_child_env(world, traced),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        # The import printed or crashed past our try (e.g. os._exit): report what the child said.
        return {
            "ok": False,
            "entry_point_found": False,
            "error": f"child exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-2000:]}",
            "refused": [],
            "import_ms": None,
            "third_party": [],
        }
    return json.loads(lines[-1])


def check_imports(
    world: ImportWorld, module: str, entry_point: str, times: int = 1, traced: bool = True
) -> dict[str, Any]:
    """Import `module` `times` times, each in a fresh interpreter; the JSON report described in the module docstring."""
    runs = [import_once(world, module, entry_point, traced) for _ in range(max(1, times))]
    failed = next((run for run in runs if not run["ok"]), None)
    timings = [run["import_ms"] for run in runs if run["import_ms"] is not None]
    return {
        "target": world.label,
        "module": module,
        "entry_point": entry_point,
        "requirements": _shown(world.requirements),
        "runtime": list(world.runtime),
        "traced": traced,
        "ok": failed is None,
        "entry_point_found": all(run["entry_point_found"] for run in runs),
        "error": failed["error"] if failed else None,
        "refused": sorted({name for run in runs for name in run["refused"]}),
        "third_party": sorted({name for run in runs for name in run["third_party"]}),
        "environment": world.environment,
        "import_ms": timings,
        "import_ms_median": round(statistics.median(timings), 1) if timings else None,
        "times": len(runs),
        "distributions": world.distributions,
        "version_mismatches": world.version_mismatches,
    }


def check_function(
    function_dir: Path, requirements: Path = LAYER_REQUIREMENTS, times: int = 1, traced: bool = True
) -> dict[str, Any]:
    """Does functions/<name>/app.py import, and define lambda_handler, with only the runtime + the layer?"""
    return check_imports(lambda_world(function_dir, requirements), "app", "lambda_handler", times, traced)


def check_streamer(requirements: Path = STREAMER_REQUIREMENTS, times: int = 1) -> dict[str, Any]:
    """Does the streamer's entry module import with only what its container installs?"""
    return check_imports(streamer_world(requirements), "streamer.main", "main", times, traced=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.lambda_env", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("function_dir", nargs="?", type=Path, help="a function directory, e.g. functions/webhook")
    target.add_argument("--streamer", action="store_true", help="the streamer container instead of a Lambda")
    parser.add_argument("--requirements", type=Path, help="requirements file (default: the layer's / the streamer's)")
    parser.add_argument("--times", type=int, default=1, help="fresh interpreters to import in (default 1)")
    parser.add_argument("--untraced", action="store_true", help="tracing disabled (as the local stack runs)")
    args = parser.parse_args(argv)
    try:
        if args.streamer:
            report = check_streamer(args.requirements or STREAMER_REQUIREMENTS, args.times)
        else:
            report = check_function(
                args.function_dir, args.requirements or LAYER_REQUIREMENTS, args.times, not args.untraced
            )
    except WorldError as exc:
        report = {"ok": False, "error": f"WorldError: {exc}"}
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
