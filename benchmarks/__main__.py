"""The benchmark harness: `python -m benchmarks` runs them all, `python -m benchmarks bench_replay` one.

Every benchmarks/bench_*.py module's run() is called; the dict it returns is written to
benchmarks/results/<name>.json, and a summary table goes to stdout and benchmarks/results/summary.md with
the machine (CPU model, cores, Python) and the date. A benchmark that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def result_name(module: str) -> str:
    return module.removeprefix("bench_")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
    }


def headline(result: dict[str, Any]) -> str:
    """The one line a benchmark wants in the table; else its first few numbers."""
    if isinstance(result.get("headline"), str):
        return result["headline"]
    numbers = [f"{k}={v}" for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return ", ".join(numbers[:4])


def run_one(module_name: str) -> tuple[dict[str, Any] | None, float, str | None]:
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{module_name}")
        result = module.run()
        if not isinstance(result, dict):
            raise TypeError(f"{module_name}.run() returned {type(result).__name__}, not a dict")
    except ModuleNotFoundError as e:
        hint = f"{e}: run `make bench`, or set PYTHONPATH=layers/common:streamer:. as the Makefile does"
        return None, time.perf_counter() - started, traceback.format_exc() + hint
    except Exception:
        return None, time.perf_counter() - started, traceback.format_exc()
    return result, time.perf_counter() - started, None


def _previous(name: str) -> str:
    try:
        old = json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return "not run yet"
    return f"{headline(old)} (not rerun; from {old.get('date', 'an earlier run')})".replace("|", "/")


def write_summary(rows: list[tuple[str, str, float]], info: dict[str, Any], when: datetime) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"- date: {when.isoformat(timespec='seconds')}",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['os']}",
        f"- python: {info['python']}",
        "",
        "| benchmark | result | wall time |",
        "|---|---|---|",
        *(f"| {name} | {text} | {f'{secs:.1f} s' if secs else '-'} |" for name, text, secs in rows),
        "",
        "Details in results/<benchmark>.json.",
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="bench_* modules to run (default: all)")
    a = ap.parse_args(argv)
    available = discover()
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in a.names] or available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    when = datetime.now(UTC)
    rows: list[tuple[str, str, float]] = []
    failed = 0
    for module_name in wanted:
        name = result_name(module_name)
        print(f"running {module_name} ...", file=sys.stderr, flush=True)
        result, secs, error = run_one(module_name)
        if error is not None:
            failed += 1
            print(error, file=sys.stderr)
            rows.append((name, "FAILED: " + error.strip().splitlines()[-1].replace("|", "/"), secs))
            continue
        assert result is not None
        record = {**result, "machine": info, "date": when.isoformat(timespec="seconds")}
        (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        rows.append((name, headline(result).replace("|", "/"), secs))
    # Benchmarks not run this time keep their last recorded line, so summary.md always covers them all.
    ran = {row[0] for row in rows}
    for module_name in available:
        name = result_name(module_name)
        if name not in ran:
            rows.append((name, _previous(name), 0.0))
    print(write_summary(rows, info, when))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
