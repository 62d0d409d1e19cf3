"""GET /health on the deployed API: the API and its function are up, and which stage and broker they serve."""

from __future__ import annotations

import json
from typing import Any

from bracketflow.settings import get_settings


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    body = {"status": "ok", "components": {"api": "up"}, "stage": settings.stage, "broker": settings.broker}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
