"""No body, header or path a stranger sends makes a 5xx or a long computation, on any route that takes a body.

TradingView resends an alert it got a 5xx for, and a 5xx says "our bug" to whoever watches the alarms: bytes that are
not text, JSON nested thousands deep, numbers with thousands of digits or exponents beyond any decimal context must
each come back 400 with a message saying what is wrong, and write nothing. The fuzz tests feed raw bytes (as API
Gateway hands them over: base64 when they are not text) as well as JSON that is valid but absurd.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.intake import Answer, _invoke, api_event, aws, bracket_request, trader  # noqa: F401

# (module, path) of every route that reads a request body
BODY_ROUTES = [
    ("functions.api.app", "/api/v1/placebracketorder"),
    ("functions.webhook.app", "/tradingview/webhook/bracket"),
    ("functions.webhook.app", "/tradingview/webhook/bracket/tok_not_a_real_token"),
    ("functions.batch.app", "/api/v1/batchorders"),
    ("functions.batch.app", "/accounts/acc_asha/batch-orders"),
    ("functions.watcher.app", "/broker/postback"),
]
ROUTE_IDS = [path for _, path in BODY_ROUTES]


def send(
    module: str,
    path: str,
    body: bytes | str | None,
    *,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Answer:
    """POST `body` as API Gateway would pass it on: text as is, other bytes base64-encoded."""
    if isinstance(body, bytes):
        try:
            text, b64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, b64 = base64.b64encode(body).decode(), True
    else:
        text, b64 = body, False
    event = api_event("POST", path, None, headers=headers, content_type=content_type)
    event["body"], event["isBase64Encoded"] = text, b64
    return _invoke(module, event)


def _written(aws) -> list[dict[str, Any]]:
    return [i for i in aws.items() if i["pk"].startswith(("BRACKET#", "DEDUPE#", "BATCH#"))]


def leg(**fields: Any) -> dict[str, Any]:
    return {"tradingsymbol": "INFY", "exchange": "NSE", "transaction_type": "BUY", "quantity": 1,
            "order_type": "MARKET", "product": "MIS", **fields}  # fmt: skip


HOSTILE_BODIES = {
    "not UTF-8": (b"\xff\xfe", "UTF-8"),
    "not UTF-8 after JSON": (b'{"symbol": "INFY\xff"}', "UTF-8"),
    "arrays 2000 deep": ("[" * 2000, "nests"),
    "objects 2000 deep": ('{"a":' * 2000, "nests"),
    "a 5000-digit number": ('{"quantity": ' + "9" * 5000 + "}", "number"),
    "a 5000-digit fraction": ('{"quantity": 0.' + "9" * 5000 + "}", "number"),
    "too long": ('{"tag": "' + "x" * 70_000 + '"}', "too long"),
}


@pytest.mark.parametrize(("module", "path"), BODY_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("case", HOSTILE_BODIES, ids=list(HOSTILE_BODIES))
def test_a_hostile_body_is_a_400_that_says_why(aws, trader, module, path, case):
    # Given a body no client should send, with a valid key in the header
    body, said = HOSTILE_BODIES[case]
    # When it arrives on a route that reads bodies
    answer = send(module, path, body, headers={"X-API-KEY": trader.api_key})
    # Then 400 with a message naming the problem, and nothing recorded
    assert answer.status == 400, answer.body
    assert answer.body["status"] == "error" and said in answer.body["message"], answer.body
    assert _written(aws) == []


# Numbers as TradingView sends them (strings) that no decimal context or int should ever be asked to hold.
HUGE_NUMBERS = ["1e999999999", "-1e999999999", "1e999999", "1e-999999999", "9" * 4000, "0." + "0" * 3000 + "1"]
ALERT_NUMBER_FIELDS = ["quantity", "disclosed_quantity", "entry_price", "sl_price", "target_price", "trigger_price",
                       "trail_activation_price", "sl_percent", "target_points", "trail_percent"]  # fmt: skip


@pytest.mark.parametrize("field", ALERT_NUMBER_FIELDS)
@pytest.mark.parametrize("number", HUGE_NUMBERS, ids=lambda n: n if len(n) < 16 else f"{len(n)} chars")
def test_a_huge_number_in_an_alert_is_a_400(aws, trader, field, number):
    # Given a valid alert with one number that is absurd (sl/target given relative when that field is relative)
    body = {**bracket_request(trader.api_key), field: number}
    if field == "sl_percent":
        body.pop("sl_price")
    if field == "target_points":
        body.pop("target_price")
    # When it arrives at the TradingView route
    answer = send("functions.webhook.app", "/tradingview/webhook/bracket", json.dumps(body), content_type="text/plain")
    # Then a 400 naming the field; nothing is registered
    assert answer.status == 400, answer.body
    assert field.split("_")[0] in answer.body["message"], answer.body
    assert _written(aws) == []


@pytest.mark.parametrize("field", ["quantity", "disclosed_quantity", "entry_price", "sl_price", "target_price"])
@pytest.mark.parametrize("number", HUGE_NUMBERS, ids=lambda n: n if len(n) < 16 else f"{len(n)} chars")
def test_a_huge_number_in_a_rest_order_or_batch_leg_is_a_400(aws, trader, field, number):
    rest = send("functions.api.app", "/api/v1/placebracketorder", json.dumps({**bracket_request(), field: number}),
                headers={"X-API-KEY": trader.api_key})  # fmt: skip
    assert rest.status == 400 and field in rest.body["message"], rest.body
    leg_field = {"entry_price": "price", "sl_price": "trigger_price", "target_price": "price"}.get(field, "quantity")
    batch = send("functions.batch.app", "/api/v1/batchorders", json.dumps({"orders": [leg(**{leg_field: number})]}),
                 headers={"X-API-KEY": trader.api_key})  # fmt: skip
    assert batch.status == 400 and leg_field in batch.body["message"], batch.body
    assert _written(aws) == []


def test_a_rest_body_in_another_content_type_is_a_400(aws, trader):
    answer = send("functions.api.app", "/api/v1/placebracketorder", json.dumps(bracket_request(trader.api_key)),
                  content_type="application/x-www-form-urlencoded; charset=binary")  # fmt: skip
    assert answer.status == 400 and answer.body["status"] == "error", answer.body
    other = send("functions.api.app", "/api/v1/placebracketorder", "a=b", content_type="text/csv")
    assert other.status == 400 and "application/json" in other.body["message"], other.body
    assert _written(aws) == []


# ---------- fuzzing ----------
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=["Cs"]), max_size=40)


@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), body=st.binary(max_size=300))
def test_no_raw_bytes_make_a_5xx(aws, trader, route, body):
    answer = send(*route, body, headers={"X-API-KEY": trader.api_key})
    assert answer.status < 500, answer.body
    assert answer.body.get("status") == "error", answer.body


@FUZZ
@given(
    route=st.sampled_from(BODY_ROUTES),
    prefix=st.sampled_from([b'{"orders": [', b'{"symbol": ', b"[", b'{"a": {"b": ', b"{"]),
    depth=st.integers(min_value=0, max_value=3000),
    tail=st.binary(max_size=40),
)
def test_no_deeply_nested_prefix_makes_a_5xx(aws, trader, route, prefix, depth, tail):
    answer = send(*route, prefix + b"[" * depth + tail, headers={"X-API-KEY": trader.api_key})
    assert answer.status < 500, answer.body


@FUZZ
@given(
    route=st.sampled_from(BODY_ROUTES),
    headers=st.dictionaries(
        st.sampled_from(["X-API-KEY", "Content-Type", "Idempotency-Key", "Content-Encoding", "X-Forwarded-For"]),
        header_text,
        max_size=4,
    ),
)
def test_no_header_makes_a_5xx(aws, trader, route, headers):
    body = json.dumps(bracket_request(trader.api_key) if "batch" not in route[1] else {"orders": [leg()]})
    event = api_event("POST", route[1], body)
    event["headers"] = {**event["headers"], **headers}
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    answer = _invoke(route[0], event)
    assert answer.status < 500, answer.body


numbers_as_text = st.one_of(
    st.from_regex(r"-?[0-9]{0,60}(\.[0-9]{0,60})?([eE][-+]?[0-9]{1,12})?", fullmatch=True),
    st.sampled_from(["NaN", "-Infinity", "1e999999999", "1e-999999999", "0e999999999", "1_000"]),
)


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from([*ALERT_NUMBER_FIELDS, "trail", "points", "qty", "price"]),
        numbers_as_text,
        min_size=1,
        max_size=4,
    )
)
def test_no_number_text_in_an_alert_makes_a_5xx(aws, trader, fields):
    body = json.dumps({**bracket_request(trader.api_key), **fields})
    answer = send("functions.webhook.app", "/tradingview/webhook/bracket", body, content_type="text/plain")
    assert answer.status < 500, answer.body
