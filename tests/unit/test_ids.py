"""Typed ids: unique, time-sortable, and a short deterministic broker tag per bracket."""

from __future__ import annotations

import re
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bracketflow.domain import ids
from bracketflow.domain.ids import (
    bracket_ref,
    id_timestamp_ms,
    is_bracket_ref_of,
    new_batch_id,
    new_bracket_id,
    new_event_id,
    new_ulid,
    order_tag,
)

ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")  # Crockford: no I, L, O, U


def test_bracket_and_batch_ids_have_their_prefix_and_a_ulid():
    # When new ids are made / Then each is "<prefix>_" + 26 Crockford chars
    b, t, e = new_bracket_id(), new_batch_id(), new_event_id()
    assert b.startswith("br_") and ULID_RE.match(b[3:])
    assert t.startswith("bt_") and ULID_RE.match(t[3:])
    assert e.startswith("ev_") and ULID_RE.match(e[3:])


def test_ids_are_unique_and_sort_in_creation_order_even_within_one_millisecond():
    # Given many ids made back to back (most share a millisecond)
    made = [new_bracket_id() for _ in range(5000)]
    # Then no two are equal and string order is creation order
    assert len(set(made)) == len(made)
    assert sorted(made) == made


@pytest.fixture
def restore_id_clock():
    """Tests that feed the generator a future clock must not leave later ids in the future."""
    saved = (ids._last_ms, ids._last_random)
    yield
    ids._last_ms, ids._last_random = saved


def test_ids_from_later_milliseconds_sort_after_earlier_ones(restore_id_clock):
    # Given ids made with explicit, increasing clocks far in the future of anything made so far
    future = int(time.time() * 1000) + 10_000_000
    a, b = new_ulid(future), new_ulid(future + 1)
    # Then the later one sorts after, and the time part decodes back
    assert a < b
    assert id_timestamp_ms("x_" + a) == future
    assert id_timestamp_ms("x_" + b) == future + 1


def test_a_clock_that_steps_back_never_breaks_the_order(restore_id_clock):
    # Given the last id came from a later clock (e.g. NTP stepped the clock back)
    later = int(time.time() * 1000) + 20_000_000
    first = new_ulid(later)
    # When the next id is made with an earlier clock
    second = new_ulid(later - 5000)
    # Then it still sorts after the first
    assert second > first


def test_ids_made_from_many_threads_are_unique():
    # Given 8 threads making ids at once
    out: list[list[str]] = [[] for _ in range(8)]

    def work(i: int) -> None:
        out[i].extend(new_bracket_id() for _ in range(500))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every id is distinct
    flat = [x for chunk in out for x in chunk]
    assert len(set(flat)) == len(flat) == 4000


def test_the_creation_time_is_readable_from_an_id():
    # Given the clock now / When an id is made / Then its time part is within the same second window
    before = int(time.time() * 1000)
    made = new_bracket_id()
    assert id_timestamp_ms(made) >= before - 1  # may have been bumped forward by monotonic ids, never back


@pytest.mark.parametrize("bad", ["br_short", "br_" + "I" * 26, "nothing"])
def test_a_foreign_string_is_not_read_as_an_id(bad):
    with pytest.raises(ValueError):
        id_timestamp_ms(bad)


def test_bracket_ref_is_short_alphanumeric_and_deterministic():
    # Given a bracket id
    bid = new_bracket_id()
    # When its broker ref is computed twice
    ref1, ref2 = bracket_ref(bid), bracket_ref(bid)
    # Then it is the same, fits Kite's 20-char alphanumeric tag, and differs for another bracket
    assert ref1 == ref2
    assert len(ref1) <= 20 and ref1.isalnum()
    assert bracket_ref(new_bracket_id()) != ref1


@given(st.text(min_size=1, max_size=200))
def test_bracket_ref_fits_a_kite_tag_for_any_id(any_id):
    ref = bracket_ref(any_id)
    assert len(ref) <= ids.BROKER_TAG_MAX and ref.isalnum() and ref.isascii()


def test_order_tags_name_the_bracket_and_the_leg():
    # Given a bracket
    bid = new_bracket_id()
    # When tags are made for its entry and its exit
    entry, exit_ = order_tag(bid, "ENTRY"), order_tag(bid, "EXIT")
    # Then both fit Kite's tag, both lead back to the bracket, and they differ by leg
    assert entry != exit_
    for tag in (entry, exit_):
        assert len(tag) <= 20 and tag.isalnum()
        assert is_bracket_ref_of(tag, bid)
    assert not is_bracket_ref_of(entry, new_bracket_id())
    assert not is_bracket_ref_of(None, bid)


def test_order_tag_refuses_an_unknown_leg():
    with pytest.raises(ValueError):
        order_tag(new_bracket_id(), "HEDGE")


def test_many_bracket_refs_do_not_collide():
    # Given 20k brackets / Then 20k distinct refs (80 bits of hash)
    refs = {bracket_ref(new_bracket_id()) for _ in range(20_000)}
    assert len(refs) == 20_000
