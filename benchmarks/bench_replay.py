"""Benchmark: the streamer's hot path (parse + trailing) on a recorded full-mode session, one core.

A deterministic session (seed 7: 1500 instruments, 400 messages of 500 full packets = 200,000 packets,
1000 watched brackets plus 50 twins on the same tokens) is generated in memory and replayed through the live
TrailingEngine; packets/s is the best of several timed runs after a warm-up, each on a fresh engine, with the
process pinned to one CPU. Also measured: a mixed-mode session (ltp/quote/full, index packets, heartbeats),
the general-purpose parser alone, and the straightforward parser + calculator engine on a slice, for scale.
Target: 1,000,000+ packets/s on one core for the full-mode session.

Run alone: `python -m benchmarks bench_replay` (or `python -m benchmarks.bench_replay`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from streamer.engine import TrailingEngine
from streamer.parser import parse_message
from streamer.simple import SimpleEngine
from streamer.synthetic import SessionSpec, generate
from streamer.watchlist import WatchedBracket

FULL_SESSION = SessionSpec(seed=7, instruments=1500, messages=400, packets_per_message=500, watched=1000, modes="full")
MIXED_SESSION = SessionSpec(**{**FULL_SESSION.__dict__, "modes": "mixed"})
# Worst case for the threshold shortcut: every instrument trends, so trailing stops move on most ticks.
TRENDING_SESSION = SessionSpec(**{**FULL_SESSION.__dict__, "drift": 0.001, "gap_rate": 0.0})
RUNS = 7
PLAIN_MESSAGES = 40  # the straightforward engine is slow; a slice is enough to show the ratio


def _session(spec: SessionSpec) -> tuple[list[bytes], list[WatchedBracket]]:
    frames, watchlist = generate(spec)
    return frames, [WatchedBracket.from_dict(w) for w in watchlist]


def _packets(frames: Sequence[bytes]) -> int:
    return sum(parse_message(f).packet_count for f in frames)


def _best_seconds(work: Callable[[], Any], runs: int = RUNS) -> tuple[float, Any]:
    work()  # warm-up: caches, allocator, branch predictors
    best, last = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        last = work()
        best = min(best, time.perf_counter() - started)
    return best, last


def _replay_work(frames: Sequence[bytes], brackets: Sequence[WatchedBracket]) -> Callable[[], tuple[int, int, float]]:
    def work() -> tuple[int, int, float]:
        engine = TrailingEngine(brackets)  # a fresh engine per run: brackets exit as the session plays
        feed = engine.feed
        started = time.perf_counter()
        exits = 0
        for message in frames:
            exits += len(feed(message))
        return exits, len(engine), time.perf_counter() - started

    return work


def _measure_replay(frames: Sequence[bytes], brackets: Sequence[WatchedBracket], packets: int) -> dict[str, Any]:
    work = _replay_work(frames, brackets)
    work()
    times, result = [], None
    for _ in range(RUNS):
        result = work()
        times.append(result[2])
    assert result is not None
    best = min(times)
    return {
        "packets": packets,
        "brackets": len(brackets),
        "exits": result[0],
        "still_open": result[1],
        "best_s": round(best, 4),
        "median_s": round(sorted(times)[len(times) // 2], 4),
        "packets_per_s": round(packets / best),
    }


def _pin_to_one_cpu() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity here); single-threaded anyway"


def run() -> dict[str, Any]:
    previous_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pinning = _pin_to_one_cpu()
    try:
        full_frames, full_brackets = _session(FULL_SESSION)
        full_packets = _packets(full_frames)
        full = _measure_replay(full_frames, full_brackets, full_packets)

        mixed_frames, mixed_brackets = _session(MIXED_SESSION)
        mixed = _measure_replay(mixed_frames, mixed_brackets, _packets(mixed_frames))

        trend_frames, trend_brackets = _session(TRENDING_SESSION)
        trending = _measure_replay(trend_frames, trend_brackets, _packets(trend_frames))
        trend_engine = TrailingEngine(trend_brackets)
        stop_moves = 0
        for message in trend_frames:
            trend_engine.feed(message)
            stop_moves += len(trend_engine.take_stop_changes())
        trending["stop_moves_counted_per_message"] = stop_moves

        parse_s, _ = _best_seconds(lambda: [parse_message(f) for f in full_frames])
        no_brackets = _measure_replay(full_frames, [], full_packets)  # framing + one dict miss per packet

        plain_slice = full_frames[:PLAIN_MESSAGES]
        plain_packets = _packets(plain_slice)

        def plain() -> int:
            engine = SimpleEngine(full_brackets)
            return sum(len(engine.feed(m)) for m in plain_slice)

        plain_s, _ = _best_seconds(plain, runs=2)
    finally:
        if previous_affinity is not None:
            os.sched_setaffinity(0, previous_affinity)

    result = {
        "benchmark": "streamer replay: parse + trailing, one core",
        "headline": (
            f"{full['packets_per_s']:,} packets/s full-mode, {len(full_brackets)} brackets "
            f"(target 1,000,000); mixed-mode {mixed['packets_per_s']:,}/s; trending {trending['packets_per_s']:,}/s"
        ),
        "target_packets_per_s": 1_000_000,
        "session": FULL_SESSION.__dict__,
        "runs": RUNS,
        "cpu": pinning,
        "full_mode_replay": full,
        "mixed_mode_replay": mixed,
        "trending_full_mode_replay": trending,
        "full_mode_framing_only_packets_per_s": no_brackets["packets_per_s"],
        "parser_only_packets_per_s": round(full_packets / parse_s),
        "straightforward_engine_packets_per_s": round(plain_packets / plain_s),
        "note": (
            "best of runs after a warm-up; feed() time only (engine construction and file reading excluded); "
            "parser_only is the general parse_message() that builds a Tick per packet, which the engine's fast "
            "path does not use; straightforward_engine is parser + calculator on the first "
            f"{PLAIN_MESSAGES} messages"
        ),
    }
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
