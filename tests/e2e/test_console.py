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
from kiteconnect import KiteConnect
from playwright.sync_api import Browser, Page, expect, sync_playwright

from local.stack import LocalStack
from tests.e2e.conftest import E2E_API_KEY
from tests.e2e.firefox import FIREFOX, firefox_page
from tests.support.stack import bracket, quote, run_reconcile, wait_for

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


def sign_in(page: Page, stack: LocalStack) -> None:
    page.goto(f"{stack.api_url}/console")
    page.fill("#api-key", E2E_API_KEY)
    page.click("#sign-in-form button")
    expect(page.locator("#book")).to_be_visible()


def alarm_name(stack: LocalStack, logical_id: str) -> str:
    assert stack.template is not None
    return next(name for name in stack.template.alarms if name.endswith(f"-{logical_id}"))


def test_the_status_panel_shows_the_session_streamer_reconciliation_and_firing_alarms(
    manual_market: LocalStack, page: Page, tmp_path: Path
):
    stack = manual_market
    cloudwatch = stack.client("cloudwatch")
    dead_letters = alarm_name(stack, "ExitDeadLetterAlarm")
    sign_in(page, stack)

    # Then the panel shows the broker session as the API has it, and the streamer beating with its feed flowing
    status = api(stack, "GET", "/api/v1/status")["data"]
    expect(page.locator("#st-session")).to_have_attribute(
        "data-state", "up" if status["broker_session"]["state"] == "valid" else "down"
    )
    expect(page.locator("#st-streamer")).to_have_attribute("data-state", "up", timeout=UI_BOUND_MS)
    expect(page.locator("#st-feed")).to_have_attribute("data-feed", "flowing", timeout=UI_BOUND_MS)
    # And no alarm fires
    expect(page.locator("#st-alarms")).to_have_attribute("data-state", "up")
    expect(page.locator("#st-alarm-list li")).to_have_count(0)

    # Given a protected bracket whose GTT the trader deleted at the broker, by hand
    placed = api(stack, "POST", "/api/v1/placebracketorder", {
        "symbol": "INFY", "exchange": "NSE", "product": "MIS", "action": "BUY", "quantity": 1, "pricetype": "MARKET",
        "entry_price": "1500", "sl_price": "1490", "target_price": "1530", "strategy": "status",
    })  # fmt: skip
    assert placed["http_status"] == 200, placed
    bracket_id = placed["bracket_id"]
    wait_for("the bracket protected", lambda: status_of(stack, bracket_id) == "PROTECTED", timeout_s=BOUND_S)
    gtt_id = bracket(bracket_id).gtt_id
    kite = KiteConnect(api_key="paper", root=stack.paper_url, timeout=5)
    kite.set_access_token("paper-token")
    kite.delete_gtt(int(gtt_id))
    # When reconciliation runs (the schedule's run or this one) and puts a new GTT in its place
    run_reconcile(stack)

    def repaired() -> dict | None:
        rec = api(stack, "GET", "/api/v1/status")["data"]["reconciliation"]
        mine = [r for r in (rec["last_repair"] or {}).get("repaired", []) if r["bracket_id"] == bracket_id]
        return rec if mine else None

    rec = wait_for("the repair in the status", repaired, timeout_s=BOUND_S)
    assert {"bracket_id": bracket_id, "repair": "REPROTECTED"} in rec["last_repair"]["repaired"]
    # Then the panel names the run that repaired it, the repair and the bracket, and when the last run was
    panel = page.locator("#st-reconcile")
    expect(panel).to_have_attribute("data-repair-run", rec["last_repair"]["run_id"], timeout=UI_BOUND_MS)
    expect(panel.locator(f'li[data-bracket="{bracket_id}"]')).to_contain_text("REPROTECTED")
    expect(panel.locator(".v")).to_contain_text("checked")
    shown_at = panel.get_attribute("data-at") or ""
    assert shown_at and shown_at <= api(stack, "GET", "/api/v1/status")["data"]["reconciliation"]["last_run"]["at"]

    # When an alarm of the stack goes off
    cloudwatch.set_alarm_state(AlarmName=dead_letters, StateValue="ALARM", StateReason="1 exit intent dead-lettered")
    try:
        # Then the panel lists it, with its description
        firing = page.locator(f'#st-alarm-list li[data-alarm="{dead_letters}"]')
        expect(firing).to_be_visible(timeout=UI_BOUND_MS)
        expect(firing).to_contain_text("dead-letter queue")
        expect(page.locator("#st-alarms")).to_have_attribute("data-state", "down")
        screenshot(page, "status", tmp_path)
    finally:
        cloudwatch.set_alarm_state(AlarmName=dead_letters, StateValue="OK", StateReason="test over")
    # And when it is OK again, the panel drops it
    expect(page.locator("#st-alarm-list li")).to_have_count(0, timeout=UI_BOUND_MS)

    # (the bracket is exited, so the next test starts with nothing open)
    assert api(stack, "DELETE", f"/api/v1/brackets/{bracket_id}")["http_status"] == 202
    wait_for("the bracket closed", lambda: status_of(stack, bracket_id) == "CLOSED", timeout_s=BOUND_S)


PHONE = {"width": 390, "height": 844}


def within_width(page: Page, selector: str) -> None:
    """Every element `selector` matches is visible and lies inside the phone's width (no sideways scrolling)."""
    items = page.locator(selector)
    assert items.count() > 0, selector
    for i in range(items.count()):
        item = items.nth(i)
        expect(item).to_be_visible()
        box = item.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 0.5, (selector, i, box)


def no_sideways_scroll(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


def test_the_console_is_readable_on_a_phone(manual_market: LocalStack, browser: Browser, tmp_path: Path):
    stack = manual_market
    # Given a bracket open on the paper market and a phone-sized Chromium (touch, 3x pixels)
    placed = api(stack, "POST", "/api/v1/placebracketorder", {
        "symbol": "INFY", "exchange": "NSE", "product": "MIS", "action": "BUY", "quantity": 1, "pricetype": "MARKET",
        "entry_price": "1500", "sl_price": "1490", "target_price": "1530", "strategy": "phone",
    })  # fmt: skip
    assert placed["http_status"] == 200, placed
    bracket_id = placed["bracket_id"]
    wait_for("the bracket protected", lambda: status_of(stack, bracket_id) == "PROTECTED", timeout_s=BOUND_S)
    context = browser.new_context(viewport=PHONE, device_scale_factor=3, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        # When the trader signs in on the phone
        sign_in(page, stack)
        row = page.locator(f'tr[data-bracket="{bracket_id}"]')
        expect(row.locator(".badge")).to_have_text("PROTECTED", timeout=UI_BOUND_MS)
        expect(page.locator("#st-streamer")).to_have_attribute("data-state", "up", timeout=UI_BOUND_MS)
        # Then the page never scrolls sideways, and the order book's rows, their cells, the counts and the status
        # panel all fit the screen
        no_sideways_scroll(page)
        within_width(page, f'tr[data-bracket="{bracket_id}"] td:not(:empty)')
        within_width(page, "#counts .chip")
        within_width(page, "#status-panel .stat")
        within_width(page, "#new-bracket")
        expect(row.locator('td[data-label="Stop"]')).to_contain_text("1,490.00")
        screenshot(page, "phone-orderbook", tmp_path)

        # When they open the bracket
        row.locator(".sym").tap()
        expect(page.locator("#bracket")).to_be_visible()
        stop = str(api(stack, "GET", f"/api/v1/brackets/{bracket_id}")["data"]["stop_price"])
        expect(page.locator("#stop-value")).to_have_attribute("data-value", stop, timeout=UI_BOUND_MS)
        # Then its levels, the chart, the exit button and the audit trail fit the screen too
        no_sideways_scroll(page)
        within_width(page, "#chart")
        within_width(page, ".levels div")
        within_width(page, "#bracket-cancel")
        within_width(page, '#events-table tr[data-event="ProtectionPlaced"] td:visible')
        screenshot(page, "phone-bracket", tmp_path)

        # And the exit works from the phone (with its confirmation)
        page.locator("#bracket-cancel").tap()
        wait_for("the bracket closed", lambda: status_of(stack, bracket_id) == "CLOSED", timeout_s=BOUND_S)
        expect(page.locator("#bracket-status")).to_contain_text("CLOSED", timeout=UI_BOUND_MS)
    finally:
        context.close()


def test_the_console_works_in_firefox(manual_market: LocalStack):
    stack = manual_market
    assert Path(FIREFOX).exists(), "Firefox ESR is missing: `make test` installs it (the browser target)"
    with firefox_page() as page:
        page.set_viewport(1280, 860)
        page.goto(f"{stack.api_url}/console")
        # Given a wrong key, Then the page says so and stays on the sign-in form
        page.fill("#api-key", "not-a-key")
        page.click("#sign-in-form button")
        page.wait_for("the wrong key's message", "document.querySelector('#sign-in-error').textContent")
        assert page.text("#sign-in-error") == "That API key was not accepted."
        assert page.evaluate("document.querySelector('#book').hidden") is True
        # When the trader signs in, Then the book and the status panel show, the key kept for the tab only
        page.fill("#api-key", E2E_API_KEY)
        page.click("#sign-in-form button")
        page.wait_for("the order book", "!document.querySelector('#book').hidden")
        assert page.evaluate("sessionStorage.getItem('bracketflow.apikey')") == E2E_API_KEY
        assert E2E_API_KEY not in page.evaluate("location.href")
        page.wait_for(
            "the streamer in the status panel", "document.querySelector('#st-streamer').dataset.state === 'up'"
        )

        # When a bracket is placed from the form (a MARKET BUY of 1 INFY)
        page.click("#new-bracket")
        page.wait_for("the form", "document.querySelector('#place-dialog').open")
        for name, value in {
            "symbol": "INFY",
            "entry_price": "1500",
            "sl_price": "1490",
            "target_price": "1530",
        }.items():
            page.fill(f"#place-form [name={name}]", value)
        page.fill("#place-form [name=pricetype]", "MARKET")
        page.fill("#place-form [name=strategy]", "firefox")
        page.click("#place-submit")
        # Then its view opens, it fills and is protected, and the chart draws
        bracket_id = page.wait_for("the bracket's view", "(location.hash.match(/^#\\/bracket\\/(.+)$/) || [])[1]")
        page.wait_for("PROTECTED", "document.querySelector('#bracket-status').textContent === 'PROTECTED'")
        stop = str(api(stack, "GET", f"/api/v1/brackets/{bracket_id}")["data"]["stop_price"])
        page.wait_for("the stop", f"document.querySelector('#stop-value').dataset.value === {stop!r}")
        assert page.evaluate("document.querySelectorAll('#chart canvas').length") > 0
        assert (
            page.evaluate("document.querySelectorAll('#events-table tr[data-event=\"ProtectionPlaced\"]').length") == 1
        )

        # When the trader goes back to the book, Then the row and its count are there
        page.click("#back")
        page.wait_for("the row", f"document.querySelector('tr[data-bracket=\"{bracket_id}\"] .badge')?.textContent")
        assert page.text(f'tr[data-bracket="{bracket_id}"] .badge') == "PROTECTED"
        assert page.text('#counts [data-status="PROTECTED"] b') == "1"

    # (exited, so nothing is left open)
    assert api(stack, "DELETE", f"/api/v1/brackets/{bracket_id}")["http_status"] == 202
    wait_for("the bracket closed", lambda: status_of(stack, bracket_id) == "CLOSED", timeout_s=BOUND_S)
