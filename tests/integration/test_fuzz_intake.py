"""Fuzzing both placement handlers with hypothesis: no input makes a 5xx, and rejected input writes nothing.

One moto table for the whole run (creating one per example would dominate); after every rejected example the
table must hold no bracket, leg, event or dedupe key, and no workflow may have started.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.intake import aws, bracket_request, call_api, call_webhook, trader  # noqa: F401

FIELDS = [
    "symbol", "exchange", "product", "action", "quantity", "entry_price", "sl_price", "target_price", "pricetype",
    "validity", "trail", "trail_activation_price", "strategy", "client_order_id", "tag", "disclosed_quantity",
    "sl_percent", "sl_points", "target_percent", "target_points", "trail_percent", "ordertype", "trigger_price",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["NSE:INFY", "INFY", "buy", "SELL", "MIS", "1500", "1480.03", "1e400", "-0", "NaN", "1%", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
mutations = st.dictionaries(st.sampled_from(FIELDS), values, min_size=1, max_size=5)


def _written(aws) -> list[dict]:
    return [i for i in aws.items() if i["pk"].startswith(("BRACKET#", "DEDUPE#"))]


def _clean(aws) -> None:
    for item in aws.items():
        if not item["pk"].startswith(("ACCOUNT#", "APIKEY#")):
            aws.table.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutations, as_text=st.booleans())
def test_no_rest_input_makes_a_5xx_and_a_rejected_one_writes_nothing(aws, trader, mutation, as_text):
    _clean(aws)
    body = {**bracket_request(trader.api_key), **mutation}
    raw = json.dumps(body, default=str) if as_text else body
    answer = call_api("POST", "/api/v1/placebracketorder", raw)
    assert answer.status < 500, answer.body
    assert answer.body["status"] in ("success", "error")
    if answer.status >= 400 and "bracket_id" not in answer.body:
        assert _written(aws) == [], (answer.status, answer.body)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutations, content_type=st.sampled_from(["application/json", "text/plain"]))
def test_no_alert_makes_a_5xx_and_a_rejected_one_writes_nothing(aws, trader, mutation, content_type):
    _clean(aws)
    body = {**bracket_request(trader.api_key), **mutation}
    started_before = len(aws.executions())
    answer = call_webhook(json.dumps(body, default=str), content_type=content_type)
    assert answer.status < 500, answer.body
    if answer.status >= 400:
        assert len(aws.executions()) == started_before
        if "bracket_id" not in answer.body:
            assert _written(aws) == [], (answer.status, answer.body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.text(max_size=200), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))))
def test_no_raw_body_makes_a_5xx(aws, trader, body):
    assert call_webhook(body, content_type="text/plain").status < 500
    assert call_api("POST", "/api/v1/placebracketorder", body, headers={"X-API-KEY": trader.api_key}).status < 500
    assert _written(aws) == []
