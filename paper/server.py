"""The paper exchange over HTTP and websocket: Kite Connect v3 REST, the Kite Ticker, and /_paper/ test controls.

One aiohttp app on one port. Everything runs on one event loop, so the engine needs no locks.

Sessions work as Kite's do: GET /connect/login?api_key=..&v=3 is a login page whose button sends the browser to the
app's redirect URL (PAPER_REDIRECT_URL) with a one-time request_token and status=success; POST /session/token trades
it (with checksum = sha256(api_key + request_token + api_secret)) for a new access_token, and the previous one stops
working (its ticker connections are closed). Until the first login the configured PAPER_ACCESS_TOKEN works, so
tests and `make run` need no login. POST /_paper/session {"expire": true} ends every session, as 06:00 IST does.

Each job has its module: the exchange's state (exchange), the HTTP plumbing and the middleware every request
passes (middleware), Kite's REST routes (kite_rest), the ticker's websocket (ticker_socket) and the test controls
(controls); this module builds the app from them.
"""

from __future__ import annotations

from aiohttp import web

from bracketflow.domain.instruments import InstrumentMaster
from paper.config import PaperConfig
from paper.controls import (
    control_config,
    control_faults,
    control_quotes,
    control_replay,
    control_reset,
    control_session,
    control_state,
    control_timeline,
)
from paper.exchange import EXCHANGE_KEY, PaperExchange
from paper.kite_rest import (
    cancel_order,
    connect_login_page,
    connect_login_submit,
    delete_gtt,
    delete_session,
    get_gtt,
    holdings,
    instrument_list,
    list_gtts,
    list_orders,
    list_trades,
    ltp,
    modify_gtt,
    modify_order,
    order_history,
    order_trades,
    place_gtt,
    place_order,
    positions,
    profile,
    quote,
    session_token,
)
from paper.middleware import kite_middleware
from paper.ticker_socket import ticker_socket


def build_app(config: PaperConfig, instruments: InstrumentMaster | None = None) -> web.Application:
    exchange = PaperExchange(config, instruments)
    app = web.Application(middlewares=[kite_middleware])
    app[EXCHANGE_KEY] = exchange
    app.on_startup.append(exchange.start_background)
    app.on_shutdown.append(exchange.stop_background)
    app.add_routes(
        [
            web.get("/ws", ticker_socket),
            web.get("/", ticker_socket),
            web.get("/connect/login", connect_login_page),
            web.post("/connect/login", connect_login_submit),
            web.post("/session/token", session_token),
            web.delete("/session/token", delete_session),
            web.get("/user/profile", profile),
            web.get("/orders", list_orders),
            web.post("/orders/{variety}", place_order),
            web.put("/orders/{variety}/{order_id}", modify_order),
            web.delete("/orders/{variety}/{order_id}", cancel_order),
            web.get("/orders/{order_id}", order_history),
            web.get("/orders/{order_id}/trades", order_trades),
            web.get("/trades", list_trades),
            web.get("/portfolio/positions", positions),
            web.get("/portfolio/holdings", holdings),
            web.get("/quote", quote),
            web.get("/quote/ltp", ltp),
            web.get("/instruments", instrument_list),
            web.get("/instruments/{exchange}", instrument_list),
            web.post("/gtt/triggers", place_gtt),
            web.get("/gtt/triggers", list_gtts),
            web.get("/gtt/triggers/{trigger_id}", get_gtt),
            web.put("/gtt/triggers/{trigger_id}", modify_gtt),
            web.delete("/gtt/triggers/{trigger_id}", delete_gtt),
            web.post("/_paper/quotes", control_quotes),
            web.get("/_paper/quotes", control_quotes),
            web.post("/_paper/faults", control_faults),
            web.get("/_paper/faults", control_faults),
            web.get("/_paper/state", control_state),
            web.get("/_paper/timeline", control_timeline),
            web.post("/_paper/reset", control_reset),
            web.post("/_paper/config", control_config),
            web.get("/_paper/session", control_session),
            web.post("/_paper/session", control_session),
            web.post("/_paper/replay", control_replay),
        ]
    )
    return app


def exchange_of(app: web.Application) -> PaperExchange:
    return app[EXCHANGE_KEY]
