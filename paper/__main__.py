"""`python -m paper`: the paper exchange on 127.0.0.1:${PAPER_PORT:-8700}. Ctrl-C stops it cleanly."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from paper.config import PaperConfig
from paper.server import build_app


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        config = PaperConfig.from_env()
    except ValueError as exc:
        print(f"paper: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("paper").info(
        "paper exchange on http://%s:%d (market=%s, seed=%d), ticker at ws://%s:%d/ws",
        config.host,
        config.port,
        config.market,
        config.seed,
        config.host,
        config.port,
    )
    web.run_app(build_app(config), host=config.host, port=config.port, print=None, access_log=None, shutdown_timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
