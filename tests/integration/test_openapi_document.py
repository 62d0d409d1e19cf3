"""The API's one OpenAPI document: every route the template and the local stack serve is in it, the document shipped
in the layer is what the functions declare today, routes that take an account's key carry the X-API-KEY scheme, and
every JSON error answer is the Error component."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from local.gateway import routes_from
from local.openapi import DOCUMENT, ERROR_REF, build, openapi_path, render, template_routes
from local.template import load_template

pytestmark = pytest.mark.xdist_group("openapi")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_the_shipped_document_is_what_the_functions_declare_today():
    assert DOCUMENT.read_text(encoding="utf-8") == render(build()), (
        "layers/common/bracketflow/openapi.json is stale: run `make openapi` and commit it"
    )


def test_every_route_of_the_template_is_documented_and_nothing_else(document):
    routed = {(method.upper(), path) for routes in template_routes().values() for path, method in routes}
    assert routed == operations(document)
    # the ones a trader, TradingView, Kite and the console depend on, named so that a loss reads plainly
    assert {
        ("POST", "/api/v1/placebracketorder"),
        ("POST", "/tradingview/webhook/bracket"),
        ("POST", "/tradingview/webhook/bracket/{token}"),
        ("POST", "/api/v1/batchorders"),
        ("POST", "/accounts/{account_id}/batch-orders"),
        ("GET", "/api/v1/batches/{batch_id}"),
        ("POST", "/broker/postback"),
        ("GET", "/broker/login"),
        ("GET", "/broker/callback"),
        ("GET", "/health"),
    } <= operations(document)


def test_every_route_the_local_stack_serves_is_documented(document):
    served = {(r.method, openapi_path(r.resource)) for r in routes_from(load_template("template.yaml"))}
    served.add(("GET", "/health"))  # answered by the local stack itself
    assert all(method != "ANY" for method, _ in served), "an ANY route needs each of its methods documented"
    assert served <= operations(document)


def test_routes_that_take_an_accounts_key_carry_the_api_key_scheme(document):
    scheme = document["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-KEY"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            names = [p["name"].lower() for p in operation.get("parameters", [])]
            assert "x-api-key" not in names, f"{method} {path} lists the key as a parameter besides the scheme"
            if path.startswith(("/api/v1/", "/accounts/")):
                assert {"ApiKey": []} in operation.get("security", []), f"{method} {path} has no X-API-KEY scheme"
            else:
                assert "security" not in operation, f"{method} {path} is public but asks for a key"
    # reads and cancels need the header; a placement may carry the key in its body instead
    assert document["paths"]["/api/v1/orderbook"]["get"]["security"] == [{"ApiKey": []}]
    assert document["paths"]["/api/v1/placebracketorder"]["post"]["security"] == [{"ApiKey": []}, {}]


def test_every_json_error_answer_is_the_error_component(document):
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["status", "message"] and error["properties"]["status"]["enum"] == ["error"]
    seen = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "422" not in operation["responses"], f"{method} {path}: a body that does not fit is a 400"
            for code, response in operation["responses"].items():
                content = response.get("content") or {}
                if re.fullmatch(r"[45]\d\d", code) and "application/json" in content:
                    assert content["application/json"]["schema"] == {"$ref": ERROR_REF}, f"{method} {path} {code}"
                    seen += 1
    assert seen > 40
    assert not any(name in document["components"]["schemas"] for name in ("HTTPValidationError", "ValidationError"))


@pytest.mark.parametrize(("context_path", "server"), [("/dev/swagger", "/dev"), ("/swagger", "/")])
def test_the_rest_api_serves_the_document_and_swagger_ui(document, context_path, server):
    from functions.api.app import lambda_handler
    from tests.support.intake import FakeContext, api_event

    def get(query: dict[str, str] | None) -> dict[str, Any]:
        event = api_event("GET", "/swagger", query=query)
        event["requestContext"]["path"] = context_path  # execute-api keeps the stage in it; a custom domain does not
        return lambda_handler(event, FakeContext())

    served = get({"format": "json"})
    assert served["statusCode"] == 200
    body = json.loads(served["body"])
    assert {k: v for k, v in body.items() if k != "servers"} == document
    assert body["servers"] == [{"url": server}]
    ui = get(None)
    assert ui["statusCode"] == 200 and "SwaggerUIBundle" in ui["body"] and '"/api/v1/batchorders"' in ui["body"]
