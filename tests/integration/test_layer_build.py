"""The CommonLayer's build (layers/common/Makefile, run by `sam build`) ships bytecode a Lambda can use as it is.

A layer is extracted read-only, so a cold start can neither write .pyc nor trust timestamp-checked ones (a zip keeps
mtimes to 2 s); bytecode compiled with --invalidation-mode unchecked-hash is used without looking at the source.
The build is run here as sam runs it (`make build-CommonLayer` with ARTIFACTS_DIR) in a copy of layers/common, with
an empty requirements file (the pinned wheels are what `sam build` in `make test` fetches; here only bracketflow).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLAG_HASH_BASED = 0b01
FLAG_CHECK_SOURCE = 0b10


def _build(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    shutil.copytree(ROOT / "layers" / "common", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "empty.txt").write_text("")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    subprocess.run(
        ["make", "--no-print-directory", "build-CommonLayer", f"ARTIFACTS_DIR={artifacts}", "REQUIREMENTS=empty.txt",
         f"PYTHON311={sys.executable}"],
        cwd=source, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return artifacts / "python"


def test_the_layer_ships_bracketflow_with_bytecode_used_without_checking_the_source(tmp_path):
    # Given the layer built as sam builds it
    layer = _build(tmp_path)
    # Then every bracketflow module has bytecode beside it, hash-based and never checked against its source
    sources = sorted(layer.glob("bracketflow/**/*.py"))
    assert len(sources) > 20
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc"
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        assert flags & FLAG_HASH_BASED and not flags & FLAG_CHECK_SOURCE, compiled
    # And Python runs that bytecode as it is: a source changed after the build (as a Lambda's extraction may seem to
    # change a file's mtime) is not recompiled, so a cold start compiles nothing of the layer
    errors = layer / "bracketflow" / "errors.py"
    errors.write_text(errors.read_text() + "\nCHANGED_AFTER_THE_BUILD = True\n")
    probe = "import bracketflow.errors as e; print(hasattr(e, 'CHANGED_AFTER_THE_BUILD'))"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", f"import sys; sys.path.insert(0, {str(layer)!r}); {probe}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == "False"
