"""Replays of synthetic sessions agree exactly with an independent reading of docs/trailing.md (reference.py here)."""

from __future__ import annotations

import json

import pytest

from streamer import replay
from streamer.engine import TrailingEngine
from streamer.frames import read_frames
from streamer.simple import SimpleEngine
from streamer.synthetic import SessionSpec, write_session
from streamer.watchlist import load_watchlist
from tests.streamer import reference

SESSIONS = [
    SessionSpec(seed=1, instruments=120, messages=150, packets_per_message=60, watched=80, gap_rate=0.0),
    SessionSpec(seed=2, instruments=120, messages=150, packets_per_message=60, watched=80, gap_rate=0.01),
    SessionSpec(seed=3, instruments=60, messages=200, packets_per_message=40, watched=60, gap_rate=0.05),
    SessionSpec(seed=4, instruments=200, messages=80, packets_per_message=150, watched=150, gap_rate=0.002),
    SessionSpec(seed=5, instruments=90, messages=150, packets_per_message=90, watched=90, modes="full", gap_rate=0.01),
    SessionSpec(seed=6, instruments=50, messages=200, packets_per_message=30, watched=50, modes="ltp", gap_rate=0.02),
    SessionSpec(seed=8, instruments=30, messages=300, packets_per_message=30, watched=30, twins=30, gap_rate=0.01),
    SessionSpec(seed=9, instruments=60, messages=150, packets_per_message=40, watched=60, drift=0.001),
]


@pytest.fixture(params=SESSIONS, ids=lambda s: f"seed{s.seed}-{s.modes}-gap{s.gap_rate}-drift{s.drift}")
def session(request, tmp_path):
    frames, watchlist = tmp_path / "session.bin", tmp_path / "watchlist.json"
    write_session(request.param, frames, watchlist)
    return frames, watchlist


def test_replay_writes_exactly_the_reference_exits(session, tmp_path):
    # Given a recorded session and its watchlist
    frames, watchlist = session
    expected_exits, expected_stops = reference.run(frames.read_bytes(), watchlist.read_text())
    # When the replay tool runs the engine over it
    out = tmp_path / "exits.jsonl"
    assert replay.main(["--frames", str(frames), "--watchlist", str(watchlist), "--exits", str(out)]) == 0
    # Then it writes the same exits, in the same order, as the independent reference
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == expected_exits
    # And the session was a real test: some brackets exited, some stops trailed and some stayed open
    assert written
    assert expected_stops
    # And the stops of the brackets still open agree too
    _, engine = replay.replay(read_frames(frames), load_watchlist(watchlist))
    assert engine.stops() == expected_stops


def test_the_fast_engine_agrees_with_the_plain_calculator_packet_for_packet(session):
    # Given the same session fed to the fast engine and to the straightforward parser + calculator
    frames, watchlist = session
    brackets = load_watchlist(watchlist)
    fast, plain = TrailingEngine(brackets), SimpleEngine(brackets)
    trailed = set()
    for message in read_frames(frames):
        # When each message is applied, Then both decide the same exits and hold the same stops after it
        assert fast.feed(message) == plain.feed(message)
        assert fast.stops() == plain.stops()
        trailed.update(fast.take_stop_changes())
    assert trailed  # stops really moved during the session


def test_a_repeated_replay_is_identical(tmp_path):
    # Given the same seed generated twice
    spec = SESSIONS[1]
    write_session(spec, tmp_path / "a.bin", tmp_path / "a.json")
    write_session(spec, tmp_path / "b.bin", tmp_path / "b.json")
    # Then the recordings and watchlists are byte-identical, and so are the exits
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    other = SessionSpec(**{**spec.__dict__, "seed": 99})
    write_session(other, tmp_path / "c.bin", tmp_path / "c.json")
    assert (tmp_path / "c.bin").read_bytes() != (tmp_path / "a.bin").read_bytes()


def test_replay_refuses_a_truncated_recording_with_a_clear_message(tmp_path, capsys):
    # Given a recording cut off in the middle of a frame
    frames, watchlist = tmp_path / "s.bin", tmp_path / "w.json"
    write_session(SESSIONS[0], frames, watchlist)
    frames.write_bytes(frames.read_bytes()[:-7])
    # When replayed, Then it stops with exit code 2 and says why, writing no exits
    out = tmp_path / "exits.jsonl"
    assert replay.main(["--frames", str(frames), "--watchlist", str(watchlist), "--exits", str(out)]) == 2
    assert "claims" in capsys.readouterr().err
    assert not out.exists()
