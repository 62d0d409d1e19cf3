"""The trader's console, as a trader uses it: a real headless Chromium against the whole local stack (paper market,
streamer, workflows). Sign in, place a bracket from the form, watch it fill and its stop move on the chart, see a
blocked bracket's reason and the counts, cancel a resting entry.

UPDATE_SCREENSHOTS=1 writes the README's screenshots (docs/images/console-*.png) from this run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from local.stack import LocalStack
from tests.e2e.conftest import E2E_API_KEY
from tests.stack_support import quote, wait_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# Chromium as root in a sandboxed CI machine with no network beyond loopback.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BOUND_S = 90  # upper bounds for a slow machine, never timing assertions
UI_BOUND_MS = BOUND_S * 1000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs it (the browser target)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())  # the cancel confirmation
    yield tab
    context.close()


def api(stack: LocalStack, method: str, path: str, body: dict | None = None) -> dict:
    answer = requests.request(
        method, f"{stack.api_url}{path}", json=body, headers={"X-API-KEY": E2E_API_KEY}, timeout=10
    )
    return {**answer.json(), "http_status": answer.status_code}


def stop_of(stack: LocalStack, bracket_id: str) -> Decimal:
    return Decimal(str(api(stack, "GET", f"/api/v1/brackets/{bracket_id}")["data"]["stop_price"]))


def status_of(stack: LocalStack, bracket_id: str) -> str:
    return str(api(stack, "GET", f"/api/v1/brackets/{bracket_id}")["data"]["status"])


def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    target = REPO / "docs" / "images" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"console-{name}.png"))


def test_a_trader_signs_in_places_watches_and_cancels(manual_market: LocalStack, page: Page, tmp_path: Path):
    stack = manual_market
    console = f"{stack.api_url}/console"

    # Given the console, and a key that is not the account's
    page.goto(console)
    page.fill("#api-key", "not-a-key")
    page.click("#sign-in-form button")
    # Then it says so and stays on the sign-in form
    expect(page.locator("#sign-in-error")).to_have_text("That API key was not accepted.")
    expect(page.locator("#book")).to_be_hidden()

    # When the trader signs in with the account's key
    page.fill("#api-key", E2E_API_KEY)
    page.click("#sign-in-form button")
    expect(page.locator("#book")).to_be_visible()
    # And the key is kept for the tab only, never in the address
    assert E2E_API_KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('bracketflow.apikey')") == E2E_API_KEY
    assert page.evaluate("localStorage.length") == 0

    # When a stop-loss on the wrong side is submitted, the message shows at that field
    page.click("#new-bracket")
    form = page.locator("#place-form")
    form.locator("[name=symbol]").fill("INFY")
    form.locator("[name=pricetype]").select_option("MARKET")
    form.locator("[name=entry_price]").fill("1500")
    form.locator("[name=sl_price]").fill("1505")
    form.locator("[name=target_price]").fill("1520")
    page.click("#place-submit")
    expect(form.locator('.field-error[data-for="sl_price"]')).to_contain_text("SL price must be less")

    # When the trader fixes it and places a MARKET BUY of 1 INFY with a 1-point trail
    form.locator("[name=sl_price]").fill("1495")
    form.locator("[name=trail_type]").select_option("points")
    form.locator("[name=trail_value]").fill("1")
    form.locator("[name=strategy]").fill("console")
    page.click("#place-submit")

    # Then the bracket's view opens, and the entry fills and is protected
    page.wait_for_url("**#/bracket/*", timeout=UI_BOUND_MS)
    bracket_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#bracket-status")).to_have_text("PROTECTED", timeout=UI_BOUND_MS)

    # When the market rises (best bid 1504.95: a MIS long trails from the bid)
    quote(stack, "1505", "1504.95", "1505")
    # Then the API's stop moves to 1503.95, and the page's stop follows the API's within seconds
    wait_for(
        "the stop to trail to 1503.95", lambda: stop_of(stack, bracket_id) == Decimal("1503.95"), timeout_s=BOUND_S
    )
    expect(page.locator("#stop-value")).to_have_attribute("data-value", "1503.95", timeout=UI_BOUND_MS)
    # And the chart has the price the streamer recorded, and the audit trail shows the stop's move
    expect(page.locator("#last-price")).to_have_text("1,505.00", timeout=UI_BOUND_MS)
    expect(page.locator('#events-table tr[data-event="StopTrailed"]').first).to_be_visible()
    assert page.locator("#chart canvas").count() > 0
    screenshot(page, "bracket", tmp_path)

    # Given a SELL of the same symbol, which the guard blocks while the BUY is open
    blocked = api(stack, "POST", "/api/v1/placebracketorder", {
        "symbol": "INFY", "exchange": "NSE", "product": "MIS", "action": "SELL", "quantity": 1,
        "entry_price": "1505", "sl_price": "1515", "target_price": "1480", "strategy": "fade",
    })  # fmt: skip
    assert blocked["http_status"] == 409, blocked
    # And a LIMIT BUY far under the market, which rests
    resting = api(stack, "POST", "/api/v1/placebracketorder", {
        "symbol": "INFY", "exchange": "NSE", "product": "MIS", "action": "BUY", "quantity": 1,
        "entry_price": "1400", "sl_price": "1390", "target_price": "1450", "strategy": "dip",
    })  # fmt: skip
    assert resting["http_status"] == 200, resting
    resting_id = resting["bracket_id"]
    wait_for(
        "the resting entry at the broker", lambda: status_of(stack, resting_id) == "ENTRY_PENDING", timeout_s=BOUND_S
    )

    # When the trader goes back to the order book
    page.click("#back")
    expect(page.locator("#book")).to_be_visible()
    # Then the blocked bracket shows its tag, with the reason on hover, and the counts say so
    blocked_row = page.locator(f'tr[data-bracket="{blocked["bracket_id"]}"]')
    tag = blocked_row.locator(".block")
    expect(tag).to_have_text("GUARD_BLOCKED:OPPOSITE_OPEN_BRACKET", timeout=UI_BOUND_MS)
    assert "other direction" in (tag.get_attribute("title") or "")
    expect(page.locator('#counts [data-status="FAILED"] b')).to_have_text("1")
    expect(page.locator('#counts [data-status="PROTECTED"] b')).to_have_text("1")

    # When the trader cancels the resting entry from its row (and confirms)
    page.locator(f'tr[data-bracket="{resting_id}"] button').click()
    # Then the broker's order is cancelled and the book shows it
    wait_for("the resting bracket cancelled", lambda: status_of(stack, resting_id) == "CANCELLED", timeout_s=BOUND_S)
    expect(page.locator(f'tr[data-bracket="{resting_id}"] .badge')).to_have_text("CANCELLED", timeout=UI_BOUND_MS)
    expect(page.locator('#counts [data-status="CANCELLED"] b')).to_have_text("1")
    screenshot(page, "orderbook", tmp_path)

    # When the market falls through the trailed stop, the position exits and the book shows its P&L
    quote(stack, "1503", "1502.95", "1503")
    row = page.locator(f'tr[data-bracket="{bracket_id}"]')
    expect(row.locator(".badge")).to_have_text("CLOSED", timeout=UI_BOUND_MS)
    pnl = api(stack, "GET", "/api/v1/orderbook")["data"]["pnl"]["total"]
    expect(page.locator("#pnl-total")).to_contain_text(f"{Decimal(str(pnl)):+,.2f}".replace("+-", "-"))
