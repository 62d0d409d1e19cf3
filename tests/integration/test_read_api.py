"""GET/DELETE /api/v1/brackets/{id}, the order book, the order log, the OpenAPI document; account scoping."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.support.intake import aws, bracket_request, call_api, other_trader, trader  # noqa: F401

PLACE = "/api/v1/placebracketorder"


def place(trader, **overrides):
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, **overrides))
    return answer


def get(path, trader, **kwargs):
    return call_api("GET", path, headers={"X-API-KEY": trader.api_key}, **kwargs)


def test_a_bracket_reads_back_with_its_levels_stop_and_audit_trail(aws, trader):
    placed = place(trader, trail={"type": "percent", "value": 1}, trail_activation_price=1510, strategy="s1")
    answer = get(f"/api/v1/brackets/{placed.body['bracket_id']}", trader)
    assert answer.status == 200 and answer.body["status"] == "success"
    data = answer.body["data"]
    assert data["bracket_id"] == placed.body["bracket_id"] and data["status"] == "CREATED"
    assert (data["symbol"], data["exchange"], data["side"], data["product"], data["quantity"]) == (
        "INFY", "NSE", "BUY", "MIS", 10,
    )  # fmt: skip
    assert Decimal(data["entry"]["price"]) == 1500 and data["entry"]["order_id"] is None
    assert data["entry"]["filled_quantity"] == 0 and data["entry"]["average_price"] is None
    assert Decimal(data["stop_price"]) == 1480 and Decimal(data["target_price"]) == 1550
    assert data["trail"]["type"] == "percent" and Decimal(data["trail"]["value"]) == 1
    assert data["exit"] is None and data["tags"] == []
    assert [e["type"] for e in data["events"]] == ["BracketRegistered"] and data["events"][0]["at"]


def test_a_blocked_bracket_shows_its_tag_and_both_events(aws, trader):
    place(trader, strategy="a")
    blocked = place(trader, strategy="a", quantity=20)
    data = get(f"/api/v1/brackets/{blocked.body['bracket_id']}", trader).body["data"]
    assert data["status"] == "FAILED" and data["tags"] == ["DUPLICATE_BLOCKED:OPEN_BRACKET_SAME_SYMBOL_STRATEGY"]
    assert [e["type"] for e in data["events"]] == ["BracketRegistered", "BracketBlocked"]


def test_another_accounts_bracket_is_not_found_for_read_or_cancel(aws, trader, other_trader):
    # Given Asha's bracket
    placed = place(trader)
    path = f"/api/v1/brackets/{placed.body['bracket_id']}"
    # When Ravi asks for it or tries to cancel it
    read = get(path, other_trader)
    cancel = call_api("DELETE", path, headers={"X-API-KEY": other_trader.api_key})
    # Then 404, exactly as for an id that does not exist (ids never leak across accounts)
    missing = get("/api/v1/brackets/br_00000000000000000000000000", other_trader)
    assert read.status == cancel.status == missing.status == 404
    assert read.body["message"].replace(placed.body["bracket_id"], "X") == missing.body["message"].replace(
        "br_00000000000000000000000000", "X"
    )
    # And the bracket was not touched
    assert get(path, trader).body["data"]["status"] == "CREATED"
    # And Ravi's order book does not show it
    assert get("/api/v1/orderbook", other_trader).body["data"]["orders"] == []


@pytest.mark.parametrize("path", ["/api/v1/brackets/br_x", "/api/v1/orderbook", "/api/v1/orderlogs"])
def test_reads_need_an_api_key(aws, trader, path):
    assert call_api("GET", path).status == 401
    assert call_api("GET", path, headers={"X-API-KEY": "bfk_wrong"}).status == 401


def test_the_order_book_filters_and_counts_per_status(aws, trader):
    # Given two open brackets on different symbols/strategies and one blocked
    place(trader, strategy="a")
    place(trader, symbol="SBIN", entry_price=800, sl_price=790, target_price=820, strategy="b")
    place(trader, strategy="a", quantity=20)  # duplicate -> FAILED
    book = get("/api/v1/orderbook", trader).body["data"]
    assert book["total"] == 3 and book["counts"]["CREATED"] == 2 and book["counts"]["FAILED"] == 1
    assert len(book["orders"]) == 3
    # When filtered
    failed = get("/api/v1/orderbook", trader, query={"status": "failed"}).body["data"]
    infy = get("/api/v1/orderbook", trader, query={"symbol": "NSE:INFY"}).body["data"]
    strat_b = get("/api/v1/orderbook", trader, query={"strategy": "b"}).body["data"]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    dated = get("/api/v1/orderbook", trader, query={"date": today}).body["data"]
    other_day = get("/api/v1/orderbook", trader, query={"date": "2020-01-01"}).body["data"]
    # Then each filter narrows the rows, and counts cover all statuses of the other filters
    assert [o["status"] for o in failed["orders"]] == ["FAILED"] and failed["counts"]["CREATED"] == 2
    assert failed["orders"][0]["tags"] == ["DUPLICATE_BLOCKED:OPEN_BRACKET_SAME_SYMBOL_STRATEGY"]
    assert {o["symbol"] for o in infy["orders"]} == {"INFY"} and infy["total"] == 2
    assert [o["symbol"] for o in strat_b["orders"]] == ["SBIN"]
    assert dated["total"] == 3 and other_day["total"] == 0


@pytest.mark.parametrize("query", [{"status": "DONE"}, {"date": "yesterday"}, {"date": "2026-02-30"}])
def test_a_bad_order_book_filter_is_a_400(aws, trader, query):
    answer = get("/api/v1/orderbook", trader, query=query)
    assert answer.status == 400 and answer.body["status"] == "error"


def test_the_order_log_lists_requests_and_answers_with_the_key_redacted(aws, trader):
    place(trader)
    place(trader, sl_price=1600)
    answer = get("/api/v1/orderlogs", trader)
    logs = answer.body["data"]["logs"]
    assert answer.status == 200 and len(logs) == 2
    assert {entry["status_code"] for entry in logs} == {200, 400}
    assert all(entry["request"]["apikey"] == "***" and entry["api_type"] == "placebracketorder" for entry in logs)
    assert trader.api_key not in str(answer.body)


def test_cancelling_an_open_bracket_records_the_request(aws, trader):
    placed = place(trader)
    path = f"/api/v1/brackets/{placed.body['bracket_id']}"
    answer = call_api("DELETE", path, headers={"X-API-KEY": trader.api_key})
    assert answer.status == 202 and answer.body["data"]["cancel_requested"] is True
    events = [e["type"] for e in get(path, trader).body["data"]["events"]]
    assert events == ["BracketRegistered", "CancelRequested"]


def test_cancelling_a_finished_bracket_is_a_409(aws, trader):
    place(trader, strategy="a")
    blocked = place(trader, strategy="a", quantity=20)
    answer = call_api("DELETE", f"/api/v1/brackets/{blocked.body['bracket_id']}", headers={"X-API-KEY": trader.api_key})
    assert answer.status == 409 and "FAILED" in answer.body["message"]


def test_the_openapi_document_lists_the_routes_and_error_codes(aws):
    answer = call_api("GET", "/swagger", query={"format": "json"})
    assert answer.status == 200
    paths = answer.body["paths"]
    assert {
        "/api/v1/placebracketorder",
        "/api/v1/brackets/{bracket_id}",
        "/api/v1/orderbook",
        "/api/v1/orderlogs",
    } <= set(paths)
    codes = set(paths["/api/v1/placebracketorder"]["post"]["responses"])
    assert {"200", "400", "401", "403", "404", "409", "429"} <= codes


def test_an_unknown_route_is_a_404_in_the_error_envelope(aws):
    answer = call_api("GET", "/api/v1/nothing")
    assert answer.status == 404 and answer.body["status"] == "error"
