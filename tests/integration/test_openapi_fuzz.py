"""Schemathesis against the document the stack serves, on a whole local stack: no request makes a 5xx.

Every operation of GET /swagger?format=json gets valid and invalid requests (schemathesis' positive and negative
modes: wrong types, missing fields, out-of-range numbers, strings where objects belong), with the dev account's key
and without, and every operation with a body also gets raw bytes under content types it does not take. A bounded
number of examples per operation keeps it to a minute or two; a 5xx fails with the request that caused it, and so
does an answer whose status code, content type or body the document does not describe.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from local.openapi import DOCUMENT
from tests.support.stack import stack_fixture

pytestmark = [pytest.mark.xdist_group("stack"), pytest.mark.timeout(600)]

API_KEY = "fuzz-dev-key"
EXAMPLES_PER_OPERATION = 50

stack = stack_fixture(API_KEY, relay=False)


@pytest.fixture(scope="module")
def document(stack) -> dict[str, Any]:
    answer = requests.get(f"{stack.api_url}/swagger", params={"format": "json"}, timeout=30)
    assert answer.status_code == 200
    return answer.json()


@pytest.fixture(scope="module")
def api_schema(stack, document) -> Any:
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=stack.api_url)
    return schema


# Every operation of the shipped document (test_openapi_document holds it to the template's routes), one test each.
OPERATIONS = sorted(
    (method.upper(), path)
    for path, item in json.loads(DOCUMENT.read_text(encoding="utf-8"))["paths"].items()
    for method in item
)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_request_the_document_describes_makes_a_5xx(api_schema, method, path):
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, keyed=st.booleans())
    def call(case: Any, keyed: bool) -> None:
        # Half the requests carry the dev account's key, so the fuzz reaches past authentication into the services.
        case.call_and_validate(
            headers={"X-API-KEY": API_KEY} if keyed else None,
            timeout=30,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        )

    call()


RAW_CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/octet-stream",
        "",
    ]
)


def _fill(path: str) -> str:
    return path.replace("{token}", "tv-token").replace("{account_id}", "local").replace("{file}", "app.js")


def _body_routes(document: dict[str, Any]) -> list[str]:
    return [_fill(path) for path, item in document["paths"].items() if "post" in item and "requestBody" in item["post"]]


# What fuzzing found, kept as fixed cases: each once answered 500.
HOSTILE = [
    ("multipart/form-data; boundary=x", "\u0100".encode()),  # the form parser reads the body as latin-1
    (
        "multipart/form-data; boundary=x",
        '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n\u20b9\r\n--x--'.encode(),
    ),
    ("application/x-www-form-urlencoded", "symbol=\u20b9&quantity=1".encode()),
    ("application/json", b"\xff\xfe"),
    ("text/plain", b"[" * 2000),
]


@pytest.mark.parametrize(("content_type", "body"), HOSTILE, ids=[f"{c} {b[:12]!r}" for c, b in HOSTILE])
def test_bodies_fuzzing_once_broke_are_a_400_with_a_message(stack, document, content_type, body):
    for path in _body_routes(document):
        for headers in ({"Content-Type": content_type}, {"Content-Type": content_type, "X-API-KEY": API_KEY}):
            answer = requests.post(f"{stack.api_url}{path}", data=body, headers=headers, timeout=30)
            assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:200])
            assert answer.json()["status"] == "error" and answer.json()["message"], (path, answer.text[:200])


def test_raw_bodies_under_any_content_type_never_make_a_5xx(stack, document):
    """What schemathesis does not send: undecodable bytes, truncated JSON, deep nesting, huge numbers, under content
    types the operation does not declare, to every operation that takes a body."""
    targets = _body_routes(document)
    assert len(targets) >= 6  # place, both webhook routes, both batch routes, the postback
    bodies = st.one_of(
        st.binary(max_size=300),
        st.sampled_from(
            [
                b"\xff\xfe",
                b"[" * 2000,
                b'{"quantity": 1e999999999, "symbol": "INFY"}',
                b'{"symbol": "NSE:INFY", "quantity": "1e999999999", "disclosed_quantity": "1e999999"}',
                b'{"legs": [' + b"{}," * 50 + b"{}]}",
                b'{"a": "\\ud800"}',
                b"null",
                b"",
                b'{"symbol": "INFY"',
            ]
        ),
        st.text(max_size=200).map(str.encode),
    )

    @settings(max_examples=EXAMPLES_PER_OPERATION * 2, deadline=None, database=None)
    @given(path=st.sampled_from(targets), body=bodies, content_type=RAW_CONTENT_TYPES, keyed=st.booleans())
    def post(path: str, body: bytes, content_type: str, keyed: bool) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        if keyed:
            headers["X-API-KEY"] = API_KEY
        answer = requests.post(f"{stack.api_url}{path}", data=body, headers=headers, timeout=30)
        assert answer.status_code < 500, f"POST {path} {content_type!r} {body[:80]!r} -> {answer.status_code}"
        if answer.headers.get("Content-Type", "").startswith("application/json") and answer.status_code >= 400:
            assert answer.json()["status"] == "error" and answer.json()["message"], answer.text

    post()


@pytest.mark.parametrize("method", ["TRACE", "PATCH", "PUT", "OPTIONS", "FOO"])
def test_a_method_a_route_does_not_have_is_api_gateways_403(stack, method):
    for path in ("/api/v1/placebracketorder", "/api/v1/orderbook", "/tradingview/webhook/bracket", "/nowhere"):
        answer = requests.request(method, f"{stack.api_url}{path}", timeout=30)
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text[:200])
        assert answer.json() == {"message": "Missing Authentication Token"}
