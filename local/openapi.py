"""The API's one OpenAPI document, built from the functions' own route declarations: `make openapi` writes it.

Every Api route of template.yaml is in it: each function's Powertools resolver describes its routes (the REST API,
the TradingView webhook, batch orders, the broker postback, the daily login), and the few functions that answer API
Gateway events without a resolver (GET /health, the console's files) are described here. On top of what Powertools
generates, the document gets the X-API-KEY security scheme on the routes that take an account's key, the error shape
{"status": "error", "message": ...} as the Error component every JSON 4xx/5xx refers to, and no 422 (the resolvers
answer a body that does not fit the model with a 400 naming the field).

The document is written to layers/common/bracketflow/openapi.json, and the REST API's function serves it at
GET /swagger?format=json (Swagger UI at /swagger): a Lambda package holds only its own function's code, so the
document is built here, where every function is at hand. tests/integration/test_openapi_document.py fails when the
file is stale or a routed path is missing from it.

    python -m local.openapi           write the document
    python -m local.openapi --check   exit 1 if the written document is not what the code declares
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
DOCUMENT = ROOT / "layers" / "common" / "bracketflow" / "openapi.json"

TITLE = "bracketflow API"
DESCRIPTION = (
    "Bracket orders with trailing stop-losses on Indian brokers (Kite Connect v3, or the paper exchange): the REST "
    "API, TradingView alerts, batch orders, the broker's order postbacks and the daily broker login. Every error "
    'answers {"status": "error", "message": "<what and why>"}. A method a path does not have is refused by API '
    'Gateway itself with 403 {"message": "Missing Authentication Token"}.'
)
VERSION = "1.0.0"
API_KEY_SCHEME = "ApiKey"
API_KEY_HEADER = "X-API-KEY"
ERROR_REF = "#/components/schemas/Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error's body: what was wrong and why, in words a trader can act on",
    "properties": {"status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}},
    "required": ["status", "message"],
}
# Powertools' 422 models: the resolvers answer 400 with the Error shape instead.
_POWERTOOLS_ONLY = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": ERROR_REF}, description)


# Routes whose function answers API Gateway's events without a Powertools resolver, described by hand.
HAND_WRITTEN: dict[tuple[str, str], dict[str, Any]] = {
    ("/health", "get"): {
        "summary": "Liveness: the API is up, its stage and broker, and the broker session's state",
        "description": "Public: shows neither the broker's token nor its user id. The local stack adds its "
        "components (the AWS emulation, the paper exchange, the streamer and its restarts) and answers 503 while "
        "one of them is down.",
        "operationId": "health_get",
        "responses": {
            "200": _json({"type": "object", "additionalProperties": True}, "Up"),
            "503": _json({"type": "object", "additionalProperties": True}, "Local stack: a component is down"),
        },
    },
    ("/console", "get"): {
        "summary": "The trader's console (an HTML page that reads and acts through this API)",
        "operationId": "console_get",
        "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    },
    ("/console/{file}", "get"): {
        "summary": "One of the console's static files",
        "operationId": "console_file_get",
        "parameters": [
            {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}, "description": "e.g. app.js"}
        ],
        "responses": {
            "200": {"description": "The file", "content": {"*/*": {"schema": {"type": "string"}}}},
            "404": {"description": "No such file", "content": {"text/plain": {"schema": {"type": "string"}}}},
        },
    },
}


def _resolver_of(module_file: Path, name: str) -> Any:
    """The Powertools resolver a function's handler module builds, or None."""
    from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

    spec = importlib.util.spec_from_file_location(f"openapi_{name}", module_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = [v for v in vars(module).values() if isinstance(v, ApiGatewayResolver)]
    return found[0] if found else None


def template_routes(template_path: Path = TEMPLATE) -> dict[str, list[tuple[str, str]]]:
    """{function logical id: [(OpenAPI path, lower-case method)]} for every Api event of the template."""
    from local.template import load_yaml

    routes: dict[str, list[tuple[str, str]]] = {}
    for logical_id, resource in (load_yaml(template_path).get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            props = event.get("Properties") or {}
            path = openapi_path(str(props["Path"]))
            routes.setdefault(logical_id, []).append((path, str(props.get("Method", "ANY")).lower()))
    return routes


def openapi_path(resource: str) -> str:
    """API Gateway's /console/{file+} is OpenAPI's /console/{file}."""
    return "/" + resource.lstrip("/").replace("+}", "}")


def _code_dirs(template_path: Path) -> dict[str, Path]:
    from local.template import load_yaml

    found = {}
    for logical_id, resource in (load_yaml(template_path).get("Resources") or {}).items():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            module = str(props.get("Handler", "app.lambda_handler")).rpartition(".")[0]
            found[logical_id] = template_path.parent / props["CodeUri"] / f"{module.replace('.', '/')}.py"
    return found


def build(template_path: Path = TEMPLATE) -> dict[str, Any]:
    """The document for every Api route of `template_path`, as the functions declare them."""
    layer = str(template_path.parent / "layers" / "common")
    if layer not in sys.path:
        sys.path.insert(0, layer)
    modules = _code_dirs(template_path)
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for logical_id, routes in sorted(template_routes(template_path).items()):
        resolver = _resolver_of(modules[logical_id], logical_id)
        declared: dict[str, Any] = {}
        if resolver is not None:
            generated = json.loads(resolver.get_openapi_json_schema(title=TITLE, version=VERSION))
            declared = generated.get("paths") or {}
            schemas.update((generated.get("components") or {}).get("schemas") or {})
        for path, method in routes:
            operation = (declared.get(path) or {}).get(method) or HAND_WRITTEN.get((path, method))
            if operation is None:
                raise LookupError(f"{logical_id} serves {method.upper()} {path} but describes it nowhere")
            paths.setdefault(path, {})[method] = _tidy(copy.deepcopy(operation), schemas)
    for name in _POWERTOOLS_ONLY:
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {
            "schemas": {name: schemas[name] for name in sorted(schemas)},
            "securitySchemes": {
                API_KEY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": API_KEY_HEADER,
                    "description": "The account's API key (make account prints it; the dev account's is in .env)",
                }
            },
        },
    }


def _tidy(operation: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Powertools' operation -> ours: no 422, X-API-KEY as the security scheme, errors as the Error component."""
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    parameters = operation.get("parameters") or []
    key = [p for p in parameters if p.get("in") == "header" and p.get("name", "").lower() == API_KEY_HEADER.lower()]
    if key:
        operation["parameters"] = [p for p in parameters if p not in key]
        if not operation["parameters"]:
            del operation["parameters"]
        # A body that may carry the key itself ("apikey", as TradingView alerts must) makes the header optional.
        optional = "apikey" in _body_properties(operation, schemas)
        operation["security"] = [{API_KEY_SCHEME: []}, {}] if optional else [{API_KEY_SCHEME: []}]
    for code, response in responses.items():
        if code.startswith("3"):
            response.pop("content", None)  # a redirect has no body (Powertools gives every answer a JSON one)
        if code.startswith(("4", "5")) and "application/json" in (response.get("content") or {}):
            response["content"]["application/json"]["schema"] = {"$ref": ERROR_REF}
    return operation


def _body_properties(operation: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    body = ((operation.get("requestBody") or {}).get("content") or {}).get("application/json") or {}
    schema = body.get("schema") or {}
    ref = str(schema.get("$ref", ""))
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[1]) or {}
    return schema.get("properties") or {}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    document = build()
    text = render(document)
    if "--check" in argv:
        if not DOCUMENT.is_file() or DOCUMENT.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT.relative_to(ROOT)} is stale: run `make openapi` and commit it", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT.relative_to(ROOT)}: {sum(len(v) for v in document['paths'].values())} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
