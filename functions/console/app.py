"""GET /console: the trader's console, a static page served by the stack's own API (no bucket, no CDN to keep).

The page (static/) is plain HTML, CSS and JavaScript on the public REST API; the charting library is built into
static/vendor/ by `make console` from the pinned npm package (console/package.json), never copied into the
repository. Only the files in static/ are served; anything else is a 404. The page keeps the API key in the
tab's sessionStorage and sends it as the X-API-KEY header: it never travels in a URL.
"""

from __future__ import annotations

import mimetypes
from functools import cache
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}
# The page talks only to its own origin; no inline script runs, no frames.
_SECURITY = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "style-src 'self' 'unsafe-inline'"  # the chart library styles its own elements inline
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def _files() -> dict[str, Path]:
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}


def _answer(status: int, body: str, content_type: str, cache_s: int = 0) -> dict[str, Any]:
    headers = {"Content-Type": content_type, "Cache-Control": f"max-age={cache_s}" if cache_s else "no-store"}
    return {"statusCode": status, "headers": {**headers, **_SECURITY}, "body": body}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    wanted = ((event.get("pathParameters") or {}).get("file") or "index.html").strip("/")
    files = _files()
    if wanted not in files:
        return _answer(404, f"no such file in the console: {wanted[:80]}", "text/plain; charset=utf-8")
    path = files[wanted]
    suffix = path.suffix.lower()
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    content_type = _TYPES.get(suffix, guessed)
    return _answer(200, path.read_text(encoding="utf-8"), content_type, cache_s=0 if suffix == ".html" else 300)
