"""Reproducible benchmarks: `make bench` (python -m benchmarks) runs every bench_*.py module here.

Each module has run() -> dict; the harness writes benchmarks/results/<name>.json (name without "bench_")
and a summary.md with the machine and date. Speed is measured here, never asserted in tests.
"""
