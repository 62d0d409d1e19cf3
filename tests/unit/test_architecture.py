"""Which way the arrows point, read from the code: the domain knows nothing of AWS, HTTP or the services; adapters
implement what services use and never reach back into them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "common" / "bracketflow"


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((PACKAGE / folder).rglob("*.py"))
    assert files, f"no modules under {folder} (the scan is broken)"
    return [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        (
            "domain",
            (
                "boto3",
                "botocore",
                "requests",
                "aws_lambda_powertools",
                "bracketflow.adapters",
                "bracketflow.services",
                "bracketflow.settings",
            ),
        ),
        ("adapters", ("bracketflow.services",)),
    ],
)
def test_imports_point_inwards(folder, forbidden):
    assert offenders(folder, forbidden) == []


def test_the_scan_sees_an_import():
    assert "bracketflow.domain.accounts" in imported_modules(PACKAGE / "adapters" / "dynamo" / "accounts.py")
