"""POST /api/v1/batchorders with a client_batch_id (or an Idempotency-Key header) on moto.

What must hold: a client that resends a batch (its answer timed out, it retried) gets the first batch back with
"duplicate": true, 200 or 202 as that batch's state says, and never a second batch: one record, one saga execution,
also when the resends arrive at the same instant. The same key with a different batch is refused 409 and writes
nothing. Keys are per account, and a key is free again once its window has ended.
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are redefined as test parameters)
from __future__ import annotations

import threading

import pytest

from tests.support.batch import (  # noqa: F401
    LONG_CALL,
    SHORT_PUT,
    batch_aws,
    batch_executions,
    batch_items,
    call_batch_api,
    iron_condor,
    leg,
    post_batch,
)
from tests.support.intake import aws, other_trader, trader  # noqa: F401


def states(env):
    return [i for i in batch_items(env) if i["sk"] == "STATE"]


def dedupe_keys(env):
    return [i for i in env.table.scan()["Items"] if i["pk"].startswith("DEDUPE#") and "#BATCH#" in i["pk"]]


def post_with_header(trader, orders, key, **extra):
    headers = {"X-API-KEY": trader.api_key, "Idempotency-Key": key}
    return call_batch_api("POST", "/api/v1/batchorders", {"orders": orders, **extra}, headers=headers)


def test_a_resent_batch_answers_the_first_one_and_places_nothing_new(batch_aws, trader):
    # Given an iron condor posted with a client_batch_id
    first = post_batch(trader, iron_condor(), client_batch_id="condor-0412")
    # When the client, having lost the answer, sends exactly the same request again
    again = post_batch(trader, iron_condor(), client_batch_id="condor-0412")
    # Then both answers name one batch; only the second is a duplicate
    assert (first.status, again.status) == (202, 202), (first.body, again.body)
    assert again.body["batch_id"] == first.body["batch_id"]
    assert (first.body["duplicate"], again.body["duplicate"]) == (False, True)
    assert again.body["client_batch_id"] == "condor-0412" and again.body["total_orders"] == 4
    # And there is one batch, one key naming it, and one saga execution
    assert [s["batch_id"] for s in states(batch_aws)] == [first.body["batch_id"]]
    assert [k["batch_id"] for k in dedupe_keys(batch_aws)] == [first.body["batch_id"]]
    assert [e["name"] for e in batch_executions(batch_aws)] == [first.body["batch_id"]]


def test_a_resend_of_a_finished_batch_answers_200_with_its_final_state(batch_aws, trader):
    from bracketflow.adapters.dynamo.batches import BatchRepository, event_item, now_iso

    first = post_batch(trader, [leg()], client_batch_id="one-leg")
    batch_id = first.body["batch_id"]
    # Given the saga has since finished the batch (as its last step records it)
    BatchRepository().update_state(
        batch_id,
        {"status": "PLACED", "completed_at": now_iso(), "updated_at": now_iso()},
        when=("status", ("IN_PROGRESS",)),
        event=event_item(batch_id, trader.account_id, "BatchCompleted", {"status": "PLACED"}),
    )
    # When the client resends it
    again = post_batch(trader, [leg()], client_batch_id="one-leg")
    # Then it gets that batch as it is now: final, so 200
    assert again.status == 200 and again.body["duplicate"] is True
    assert again.body["batch_id"] == batch_id and again.body["batch_status"] == "PLACED"
    assert len(batch_executions(batch_aws)) == 1


def test_the_idempotency_key_header_is_the_same_key_as_client_batch_id(batch_aws, trader):
    first = post_with_header(trader, iron_condor(), "7b0c2a5e-2f1d-4c1e-9d7a-0c3f5b8e9a11")
    # A resend may carry the key in the body instead: it is one key
    again = post_batch(trader, iron_condor(), client_batch_id="7b0c2a5e-2f1d-4c1e-9d7a-0c3f5b8e9a11")
    assert first.status == 202 and first.body["duplicate"] is False
    assert again.body["duplicate"] is True and again.body["batch_id"] == first.body["batch_id"]
    assert len(states(batch_aws)) == 1 and len(batch_executions(batch_aws)) == 1


def test_the_same_key_for_a_different_batch_is_refused_and_records_nothing(batch_aws, trader):
    # Given a batch recorded under a key
    first = post_batch(trader, iron_condor(), client_batch_id="k-1")
    before = sorted((i["pk"], i["sk"]) for i in batch_aws.table.scan()["Items"])
    # When the same key comes with other legs, or with the same legs but another rollback choice
    other_legs = post_batch(trader, [leg(LONG_CALL, "BUY")], client_batch_id="k-1")
    other_rollback = post_batch(trader, iron_condor(), client_batch_id="k-1", rollback_on_failure=False)
    # Then both are 409 naming the key, and the table holds exactly what it held (no batch, leg, event or key)
    for answer in (other_legs, other_rollback):
        assert answer.status == 409, answer.body
        assert answer.body["status"] == "error" and "k-1" in answer.body["message"]
        assert first.body["batch_id"] in answer.body["message"]
    assert sorted((i["pk"], i["sk"]) for i in batch_aws.table.scan()["Items"]) == before
    assert len(batch_executions(batch_aws)) == 1


def test_the_same_legs_written_differently_are_the_same_batch(batch_aws, trader):
    # "buy"/"nrml" and "BUY"/"NRML" are one order once validated: a client re-serialising its request is a resend
    first = post_batch(trader, [leg(SHORT_PUT, "SELL", order_type="LIMIT", price=228.65)], client_batch_id="k-2")
    spelled = leg(SHORT_PUT, "sell", order_type="limit", price="228.650", product="nrml")
    again = post_batch(trader, [spelled], client_batch_id="k-2")
    assert again.status == 202 and again.body["duplicate"] is True
    assert again.body["batch_id"] == first.body["batch_id"]


def test_concurrent_resends_make_exactly_one_batch_and_one_execution(batch_aws, trader, monkeypatch):
    # moto's in-memory table is not thread-safe; make each DynamoDB call atomic, as it is in DynamoDB, while our code
    # between the calls still interleaves freely.
    from moto.dynamodb.responses import DynamoHandler

    moto_lock = threading.Lock()
    original = DynamoHandler.call_action

    def atomic_call(self):
        with moto_lock:
            return original(self)

    monkeypatch.setattr(DynamoHandler, "call_action", atomic_call)
    # (the per-key placement limit is not what this is about: the test clock moves 1 s per read, in whichever order
    # the threads read it, so a thread can arrive "earlier" than a token already spent; here all four arrive in one
    # instant, within a burst the limit allows)
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.services import register_bracket

    monkeypatch.setenv("PLACEMENT_RATE_LIMIT_PER_SECOND", "1000")
    monkeypatch.setattr(register_bracket, "now_ms", lambda: 1_775_000_000_000)
    reset_clients()
    # Given the same batch sent four times at once (a client retrying eagerly)
    answers = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def send():
        start.wait()
        answer = post_batch(trader, iron_condor(), client_batch_id="burst-1")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every answer names one batch, exactly one of them recorded it, and one saga runs
    assert [a.status for a in answers] == [202] * 4, [a.body for a in answers]
    assert len({a.body["batch_id"] for a in answers}) == 1
    assert sorted(a.body["duplicate"] for a in answers) == [False, True, True, True]
    assert len(states(batch_aws)) == 1 and len(batch_executions(batch_aws)) == 1
    legs = [i for i in batch_items(batch_aws) if i["sk"].startswith("LEG#")]
    assert len(legs) == 4


def test_keys_are_per_account(batch_aws, trader, other_trader):
    mine = post_batch(trader, [leg()], client_batch_id="shared-name")
    theirs = post_batch(other_trader, [leg()], client_batch_id="shared-name")
    assert (mine.status, theirs.status) == (202, 202)
    assert theirs.body["duplicate"] is False and theirs.body["batch_id"] != mine.body["batch_id"]
    assert theirs.body["account_id"] == other_trader.account_id
    assert len(batch_executions(batch_aws)) == 2


def test_a_key_whose_window_ended_starts_a_new_batch(batch_aws, trader, monkeypatch):
    from bracketflow.services.batch import registration
    from bracketflow.settings import get_settings

    monkeypatch.setenv("CLIENT_BATCH_ID_WINDOW_SECONDS", "60")
    get_settings.cache_clear()
    clock = [1_775_000_000]
    monkeypatch.setattr(registration, "_now_s", lambda: clock[0])
    first = post_batch(trader, [leg()], client_batch_id="daily")
    # (61 s later: past the 60 s window, though DynamoDB's TTL has not deleted the key yet)
    clock[0] += 61
    later = post_batch(trader, [leg()], client_batch_id="daily")
    get_settings.cache_clear()
    assert later.status == 202 and later.body["duplicate"] is False
    assert later.body["batch_id"] != first.body["batch_id"]
    assert [k["batch_id"] for k in dedupe_keys(batch_aws)] == [later.body["batch_id"]]
    assert len(states(batch_aws)) == 2


@pytest.mark.parametrize(
    ("body_key", "header_key", "says"),
    [
        ("has space", None, "client_batch_id"),
        ("k#1", None, "client_batch_id"),
        (None, "x" * 129, "Idempotency-Key"),
        ("key-a", "key-b", "differ"),
    ],
)
def test_a_bad_key_is_a_400_and_records_nothing(batch_aws, trader, body_key, header_key, says):
    headers = {"X-API-KEY": trader.api_key}
    if header_key is not None:
        headers["Idempotency-Key"] = header_key
    body = {"orders": [leg()], **({"client_batch_id": body_key} if body_key is not None else {})}
    answer = call_batch_api("POST", "/api/v1/batchorders", body, headers=headers)
    assert answer.status == 400, answer.body
    assert answer.body["status"] == "error" and says.lower() in answer.body["message"].lower(), answer.body
    assert batch_items(batch_aws) == [] and dedupe_keys(batch_aws) == []
    assert batch_executions(batch_aws) == []


def test_without_a_key_every_post_is_a_new_batch(batch_aws, trader):
    first = post_batch(trader, [leg()])
    again = post_batch(trader, [leg()])
    assert first.body["batch_id"] != again.body["batch_id"]
    assert (first.body["duplicate"], again.body["duplicate"]) == (False, False)
    assert first.body["client_batch_id"] is None and dedupe_keys(batch_aws) == []
