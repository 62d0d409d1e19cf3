"""The webhook's symbol lookup in Kite's full instrument list: a synthetic master of Kite's size (100,000 rows in
Kite's /instruments columns: equities on NSE and BSE, index and stock futures and options on NFO, currency and
commodity contracts), stored as the stack stores it (domain/instruments.to_compact), then loaded and searched as a
Lambda would. Measured: the stored size, the cold load (gunzip + split, what the first request after a cold start or
a new day's list pays), the time per lookup (hits and misses), and the memory the loaded master holds.

Target: the load stays out of the cold start (it happens at the first lookup, never at import) and costs well under
the webhook's 350 ms cold-import budget; a lookup is microseconds.
"""

from __future__ import annotations

import csv
import gc
import io
import random
import statistics
import time
import tracemalloc
from datetime import date, timedelta
from typing import Any

from paper.make_instruments import COLUMNS  # the same columns as Kite's master and the paper one

SEGMENTS = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "MCX": 7}


def full_size_csv(rows: int = 100_000, seed: int = 17) -> str:
    """A deterministic Kite-shaped instrument list of `rows` rows."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    expiries = [date(2026, 12, 31) + timedelta(days=7 * n) for n in range(12)]
    n = 0

    def row(exchange: str, symbol: str, expiry: str, strike: str, tick: str, lot: int, kind: str, segment: str) -> None:
        nonlocal n
        n += 1
        exchange_token = 100_000 + n
        token = exchange_token << 8 | SEGMENTS[exchange]
        writer.writerow(
            [token, exchange_token, symbol, symbol[:10], "0", expiry, strike, tick, lot, kind, segment, exchange]
        )

    underlyings = [f"STK{i:04d}" for i in range(2_000)]
    futures: set[tuple[str, str]] = set()
    for name in underlyings:
        row("NSE", name, "", "0", "0.05", 1, "EQ", "NSE")
        row("BSE", name, "", "0", "0.05", 1, "EQ", "BSE")
    while n < rows:
        name = rng.choice(underlyings[:300])
        expiry = rng.choice(expiries)
        code = expiry.strftime("%y%b").upper()
        lot = rng.choice((25, 50, 75, 250, 500, 1250))
        if rng.random() < 0.1:
            if (name, code) not in futures:  # one future per underlying and expiry, as Kite lists them
                futures.add((name, code))
                row("NFO", f"{name}{code}FUT", expiry.isoformat(), "0", "0.05", lot, "FUT", "NFO-FUT")
            continue
        strike = rng.randrange(100, 5000) * 5
        kind = rng.choice(("CE", "PE"))
        exchange = rng.choices(("NFO", "MCX", "CDS"), weights=(90, 5, 5))[0]
        segment = {"NFO": "NFO-OPT", "MCX": "MCX-OPT", "CDS": "CDS-OPT"}[exchange]
        row(exchange, f"{name}{code}{strike}{kind}{n}", expiry.isoformat(), str(strike), "0.05", lot, kind, segment)
    return out.getvalue()


def run(rows: int = 100_000, lookups: int = 20_000) -> dict[str, Any]:
    from bracketflow.domain.instruments import CompactMaster, to_compact

    text = full_size_csv(rows)
    started = time.perf_counter()
    stored = to_compact(text)
    compact_s = time.perf_counter() - started

    loads = []
    for _ in range(7):
        gc.collect()
        started = time.perf_counter()
        master = CompactMaster(stored)
        loads.append(time.perf_counter() - started)
    gc.collect()
    tracemalloc.start()
    master = CompactMaster(stored)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    symbols = [line.split(",")[2] for line in text.splitlines()[1:]]
    exchanges = [line.split(",")[11] for line in text.splitlines()[1:]]
    rng = random.Random(3)
    picks = [rng.randrange(len(symbols)) for _ in range(lookups)]
    started = time.perf_counter()
    for i in picks:
        assert master.get(exchanges[i], symbols[i]) is not None
    hit_us = (time.perf_counter() - started) / lookups * 1e6
    started = time.perf_counter()
    for i in picks:
        master.get("NSE", symbols[i] + "X")
    miss_us = (time.perf_counter() - started) / lookups * 1e6

    load_ms = statistics.median(loads) * 1000
    return {
        "benchmark": "instrument master lookup (Kite's full list, compact form)",
        "headline": (
            f"{rows:,} rows: stored {len(stored) / 1e6:.2f} MB, cold load {load_ms:.0f} ms (median of 7), "
            f"lookup {hit_us:.1f} us (miss {miss_us:.1f} us), held {held / 1e6:.1f} MB (peak {peak / 1e6:.1f} MB)"
        ),
        "rows": rows,
        "stored_bytes": len(stored),
        "csv_bytes": len(text.encode()),
        "compact_build_s": round(compact_s, 3),
        "cold_load_ms": {"median": round(load_ms, 1), "max": round(max(loads) * 1000, 1)},
        "lookup_us": {"hit": round(hit_us, 2), "miss": round(miss_us, 2), "lookups": lookups},
        "memory_mb": {"held": round(held / 1e6, 1), "peak_while_loading": round(peak / 1e6, 1)},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
