"""A GTT protects one bracket only (services/protect.py, adapters/dynamo/gtt_claims.py), against moto (the real table
schema) and the paper exchange as the broker.

Two brackets of one account with the same instrument, levels, side and quantity (two alerts of one strategy on INFY
filled at the same price) ask the broker for identical GTTs. Protection adopts a GTT it finds at the broker only when
no other bracket has claimed it (a GTT# CLAIM item written in the transaction that records the bracket PROTECTED), so
each position gets a broker-side stop of its own, while a retry after a lost create still adopts its own GTT.
"""

from __future__ import annotations

# ruff: noqa: F811  (the `world` fixture imported from tests.support.exits is redefined as test parameters)
import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.support.exits import world  # noqa: F401  (pytest fixture)

LTP = Decimal("1500")
SL = Decimal("1485")
TARGET = Decimal("1530")


def _quote(paper: Any, ltp: Decimal = LTP) -> None:
    paper.set_quotes(
        [
            {
                "exchange": "NSE",
                "tradingsymbol": "INFY",
                "ltp": str(ltp),
                "bid": str(ltp),
                "ask": str(ltp + Decimal("0.05")),
            }
        ]
    )


def seed_filled(paper: Any, *, quantity: int = 10, account: str = "acc_asha") -> Any:
    """An ENTRY_FILLED INFY BUY bracket (the state PlaceProtection finds): its MARKET entry filled at the paper."""
    from bracketflow.adapters.broker import get_broker
    from bracketflow.adapters.broker.port import OrderRequest
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.bracket import Bracket, BracketSpec, LegOrder
    from bracketflow.domain.enums import Action, BracketStatus, Exchange, LegRole, OrderStatus, PriceType, Product
    from bracketflow.domain.events import EntryFilled
    from bracketflow.domain.ids import AccountId, order_tag

    spec = BracketSpec(
        account_id=AccountId(account),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action.BUY,
        quantity=quantity,
        entry_price=LTP,
        sl_price=SL,
        target_price=TARGET,
        price_type=PriceType.MARKET,
    )
    created = Bracket.register(spec, now=datetime.now(UTC))
    entry_id = get_broker().place_order(
        OrderRequest("NSE", "INFY", "BUY", quantity, "MIS", "MARKET", tag=order_tag(created.id, "ENTRY"))
    )
    filled = dataclasses.replace(
        created,
        status=BracketStatus.ENTRY_FILLED,
        version=3,
        entry=LegOrder(LegRole.ENTRY, OrderStatus.EXECUTED, entry_id, quantity, quantity, LTP),
    )
    BracketRepository().create(filled, [EntryFilled(filled.id, data={"filled_quantity": quantity}, bracket_version=3)])
    return filled


def stored(bracket_id: str) -> Any:
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    found = BracketRepository().get(bracket_id)
    assert found is not None
    return found


def claim_of(world: Any, gtt_id: str) -> dict[str, Any] | None:
    from bracketflow.adapters.dynamo import records as r

    return world.table.get_item(Key=r.gtt_claim_key(gtt_id), ConsistentRead=True).get("Item")


def active_gtts(world: Any) -> list[dict[str, Any]]:
    return [g for g in world.paper.state()["gtts"] if g["status"] == "active"]


def test_two_identical_brackets_each_get_a_gtt_of_their_own(world):
    from bracketflow.services.protect import place_protection

    # Given two filled INFY brackets of one account with the same levels, side, quantity and fill price
    _quote(world.paper)
    first, second = seed_filled(world.paper), seed_filled(world.paper)
    # When each is protected
    one = place_protection(first.id)["gtt_id"]
    two = place_protection(second.id)["gtt_id"]
    # Then each is PROTECTED by its own GTT, two GTTs are live at the broker, and each GTT is claimed by its bracket
    assert one != two
    assert (stored(first.id).gtt_id, stored(second.id).gtt_id) == (one, two)
    assert sorted(str(g["id"]) for g in active_gtts(world)) == sorted([one, two])
    assert (claim_of(world, one) or {}).get("bracket_id") == first.id
    assert (claim_of(world, two) or {}).get("bracket_id") == second.id


def test_brackets_of_two_accounts_never_share_a_gtt(world):
    from bracketflow.services.protect import place_protection

    # Given the same filled INFY bracket in two of the stack's accounts: they trade through its one broker session,
    # so each sees the other's GTTs at the broker
    _quote(world.paper)
    asha, ravi = seed_filled(world.paper, account="acc_asha"), seed_filled(world.paper, account="acc_ravi")
    # When each is protected
    one = place_protection(asha.id)["gtt_id"]
    two = place_protection(ravi.id)["gtt_id"]
    # Then the second did not adopt the first's GTT: each position has a broker-side stop of its own
    assert one != two
    assert sorted(str(g["id"]) for g in active_gtts(world)) == sorted([one, two])
    assert ((claim_of(world, one) or {}).get("account_id"), (claim_of(world, two) or {}).get("account_id")) == (
        "acc_asha",
        "acc_ravi",
    )


def test_the_claim_expires_long_after_a_gtt_could_still_be_live(world):
    from bracketflow.services.protect import place_protection

    # Given a filled bracket
    _quote(world.paper)
    filled = seed_filled(world.paper)
    # When it is protected
    gtt_id = place_protection(filled.id)["gtt_id"]
    # Then its claim names the bracket and the account and expires (TTL) more than a year ahead: a Kite GTT lives a
    # year, so a claim never lapses while its GTT could still protect an open position
    claim = claim_of(world, gtt_id)
    assert claim is not None and (claim["bracket_id"], claim["account_id"]) == (filled.id, "acc_asha")
    assert int(claim["expires_at"]) - datetime.now(UTC).timestamp() > 366 * 86400


def test_a_retry_after_a_lost_create_adopts_its_own_gtt_and_places_no_second(world, monkeypatch):
    from bracketflow.services import protect

    # Given a filled bracket whose first protection attempt created the GTT but died before recording it
    _quote(world.paper)
    filled = seed_filled(world.paper)
    real_record = protect._record_protection

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("Lambda timed out after the GTT was created")

    monkeypatch.setattr(protect, "_record_protection", dies)
    with pytest.raises(TimeoutError):
        protect.place_protection(filled.id)
    orphan = [str(g["id"]) for g in active_gtts(world)]
    assert len(orphan) == 1 and stored(filled.id).status.value == "ENTRY_FILLED"
    # When the step is retried
    monkeypatch.setattr(protect, "_record_protection", real_record)
    gtt_id = protect.place_protection(filled.id)["gtt_id"]
    # Then it adopts the GTT its first attempt created: still one GTT at the broker, claimed by this bracket
    assert [gtt_id] == orphan == [str(g["id"]) for g in active_gtts(world)]
    assert stored(filled.id).gtt_id == gtt_id
    assert (claim_of(world, gtt_id) or {}).get("bracket_id") == filled.id


def test_an_orphan_of_an_identical_bracket_may_be_adopted_but_never_a_claimed_gtt(world, monkeypatch):
    from bracketflow.services import protect

    # Given bracket A protected by G1, and bracket B (identical) whose first attempt created G2 but recorded nothing
    _quote(world.paper)
    a, b = seed_filled(world.paper), seed_filled(world.paper)
    g1 = protect.place_protection(a.id)["gtt_id"]
    real_record = protect._record_protection

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("Lambda timed out after the GTT was created")

    monkeypatch.setattr(protect, "_record_protection", dies)
    with pytest.raises(TimeoutError):
        protect.place_protection(b.id)
    monkeypatch.setattr(protect, "_record_protection", real_record)
    g2 = next(str(g["id"]) for g in active_gtts(world) if str(g["id"]) != g1)
    # When B's protection is retried
    got = protect.place_protection(b.id)["gtt_id"]
    # Then B adopts G2 (the unclaimed one), not A's G1, and no third GTT is placed
    assert got == g2
    assert sorted(str(g["id"]) for g in active_gtts(world)) == sorted([g1, g2])
    assert (claim_of(world, g1) or {}).get("bracket_id") == a.id
    assert (claim_of(world, g2) or {}).get("bracket_id") == b.id


def test_another_brackets_fired_gtt_is_not_taken_for_this_brackets_own(world):
    from bracketflow.services.protect import place_protection

    # Given bracket A protected by a GTT, and an identical bracket B filled just as A's GTT fires at the target
    _quote(world.paper)
    a = seed_filled(world.paper)
    g1 = place_protection(a.id)["gtt_id"]
    b = seed_filled(world.paper)
    _quote(world.paper, TARGET + Decimal("1"))
    fired = next(g for g in world.paper.state()["gtts"] if str(g["id"]) == g1)
    assert fired["status"] == "triggered"
    _quote(world.paper)
    # When B is protected
    got = place_protection(b.id)["gtt_id"]
    # Then B places a GTT of its own instead of thinking the broker closed its position with A's
    assert got != g1
    assert [str(g["id"]) for g in active_gtts(world)] == [got]
    assert stored(b.id).status.value == "PROTECTED" and stored(b.id).gtt_id == got
    assert (claim_of(world, got) or {}).get("bracket_id") == b.id


def test_a_lost_create_answer_that_finds_another_brackets_gtt_ends_with_distinct_owners(world, monkeypatch):
    from bracketflow.adapters.broker import kite
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.services.protect import place_protection

    # Given two identical filled brackets, A and B, and B's protection running: right after B's GTT create has listed
    # the broker's GTTs (to find its GTT should the answer be lost), A's protection runs to the end (A owns G1)
    _quote(world.paper)
    a, b = seed_filled(world.paper), seed_filled(world.paper)
    real_gtts = kite.KiteBroker.gtts
    listings: list[int] = []
    g1: list[str] = []

    def gtts_with_a_landing_between(self: Any) -> Any:
        listed = real_gtts(self)
        listings.append(len(listed))
        if len(listings) == 2:  # B's step listed (1), then B's create took its "before" (2)
            g1.append(place_protection(a.id)["gtt_id"])
            # And the broker then creates B's GTT but answers 500 (it acted, then said it failed)
            world.paper.set_faults([{"kind": "http_500_after", "match": {"path": "/gtt/triggers", "method": "POST"}}])
        return listed

    monkeypatch.setattr(kite.KiteBroker, "gtts", gtts_with_a_landing_between)
    # When B's protection finishes: the adapter's lost-answer lookup finds two new identical GTTs and answers with
    # the older, A's G1
    got = place_protection(b.id)["gtt_id"]
    # Then B's claim on G1 loses, the step starts over, and B adopts the GTT the broker really made for it: two GTTs,
    # each its own bracket's
    assert g1 and got != g1[0]
    live = sorted(str(g["id"]) for g in active_gtts(world))
    assert live == sorted([g1[0], got])
    assert (stored(a.id).gtt_id, stored(b.id).gtt_id) == (g1[0], got)
    assert (claim_of(world, g1[0]) or {}).get("bracket_id") == a.id
    assert (claim_of(world, got) or {}).get("bracket_id") == b.id
    assert [e["type"] for e in BracketRepository().events(b.id)].count("ProtectionPlaced") == 1


def test_two_protections_racing_for_one_unowned_gtt_end_with_distinct_owners(world, monkeypatch):
    from bracketflow.adapters.broker import get_broker
    from bracketflow.services import protect

    # Given two identical filled brackets and, at the broker, an identical GTT no bracket owns (an earlier attempt
    # created it and its record was lost)
    _quote(world.paper)
    a, b = seed_filled(world.paper), seed_filled(world.paper)
    settings_tick, buffer = Decimal("0.05"), Decimal("0.5")
    unowned = str(get_broker().create_gtt(protect.protection_request(a, 10, LTP, settings_tick, buffer)))
    # And their protections interleave: B lists the broker and finds the GTT unclaimed, then A runs to the end
    # (adopting and claiming that GTT) before B records
    real_unclaimed = protect._unclaimed
    b_looked: list[list[Any]] = []

    def interleaved(gtts: Any, bracket: Any) -> Any:
        found = real_unclaimed(gtts, bracket)
        if bracket.id == b.id and not b_looked:
            b_looked.append([str(g.gtt_id) for g in found])
            results[a.id] = protect.place_protection(a.id)["gtt_id"]
        return found

    results: dict[str, str] = {}
    monkeypatch.setattr(protect, "_unclaimed", interleaved)
    # When B's protection runs (with A's inside it)
    results[b.id] = protect.place_protection(b.id)["gtt_id"]
    # Then both saw the same unowned GTT, A owns it, and B, whose claim lost, started over and placed its own
    assert b_looked[0] == [unowned]
    assert results[a.id] == unowned != results[b.id]
    assert (stored(a.id).gtt_id, stored(b.id).gtt_id) == (results[a.id], results[b.id])
    for bracket_id, gtt_id in results.items():
        assert (claim_of(world, gtt_id) or {}).get("bracket_id") == bracket_id
    assert sorted(str(g["id"]) for g in active_gtts(world)) == sorted(results.values())


def test_reconciliations_new_gtt_for_a_bracket_is_its_own_even_when_the_create_answer_names_a_twins(world, monkeypatch):
    from bracketflow.adapters.broker import get_broker, kite
    from bracketflow.services.protect import place_protection
    from bracketflow.services.reconcile import reconcile_bracket, take_snapshot

    # Given two identical brackets protected by G1 (A) and G2 (B), and B's G2 deleted at the broker by hand
    _quote(world.paper)
    a, b = seed_filled(world.paper), seed_filled(world.paper)
    g1, g2 = place_protection(a.id)["gtt_id"], place_protection(b.id)["gtt_id"]
    get_broker().delete_gtt(int(g2))
    # And the new GTT's create answer comes back as A's G1 (the lost-create lookup found A's identical GTT)
    real_create = kite.KiteBroker.create_gtt
    made: list[int] = []

    def create_answering_g1(self: Any, req: Any, **options: Any) -> int:
        made.append(real_create(self, req, **options))
        return int(g1) if len(made) == 1 else made[-1]

    monkeypatch.setattr(kite.KiteBroker, "create_gtt", create_answering_g1)
    # When reconciliation re-protects B
    result = reconcile_bracket(take_snapshot()["run_id"], b.id)
    # Then B is re-protected by the GTT its create really made, claimed by B; A keeps G1; no extra GTT is placed
    assert result["repair"] == "REPROTECTED" and len(made) == 1
    g3 = str(made[0])
    assert (stored(a.id).gtt_id, stored(b.id).gtt_id) == (g1, g3)
    assert sorted(str(g["id"]) for g in active_gtts(world)) == sorted([g1, g3])
    assert (claim_of(world, g1) or {}).get("bracket_id") == a.id
    assert (claim_of(world, g3) or {}).get("bracket_id") == b.id
