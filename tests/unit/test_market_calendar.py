"""The market calendar (bracketflow/data/calendar-<year>.json): regular sessions per segment, exchange holidays (MCX's
evening session kept on equity holidays), special sessions such as Muhurat trading on a Sunday, a data file that is
updated without a code change; and the checks that follow it: the risk trading window, the MIS square-off and
whether reconciliation runs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from importlib import resources

import pytest

from bracketflow.domain.calendar import IST, MarketCalendar, YearCalendar, market_calendar
from bracketflow.domain.enums import Exchange


def ist(y: int, m: int, d: int, hh: int, mm: int) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=IST)


@pytest.fixture
def cal() -> MarketCalendar:
    return market_calendar((2026, 2027))


def test_a_regular_weekday_trades_each_segments_own_hours(cal):
    monday = ist(2026, 3, 2, 9, 15)
    assert cal.is_open("NSE", monday) and cal.is_open("NFO", monday)
    assert not cal.is_open("NSE", ist(2026, 3, 2, 9, 14)) and not cal.is_open("NSE", ist(2026, 3, 2, 15, 31))
    assert cal.is_open("MCX", ist(2026, 3, 2, 23, 0)) and cal.is_open("CDS", ist(2026, 3, 2, 16, 59))
    assert not cal.is_open("NSE", ist(2026, 3, 7, 11, 0))  # a Saturday


def test_an_exchange_holiday_closes_equity_but_keeps_mcxs_evening_session(cal):
    holi = date(2026, 3, 3)
    assert cal.sessions("NSE", holi) == [] and cal.holiday("NSE", holi) == "Holi"
    assert not cal.is_open("NFO", ist(2026, 3, 3, 11, 0))
    assert not cal.is_open("MCX", ist(2026, 3, 3, 11, 0))
    assert cal.is_open("MCX", ist(2026, 3, 3, 18, 0))
    assert cal.sessions("MCX", date(2026, 12, 25)) == []  # Christmas: every segment closed


def test_muhurat_trading_opens_a_sunday_for_its_hour(cal):
    (session,) = cal.sessions("NSE", date(2026, 11, 8))
    assert (session.opens, session.closes) == (time(18, 0), time(19, 0)) and "Muhurat" in session.name
    assert cal.is_open("NSE", ist(2026, 11, 8, 18, 30)) and not cal.is_open("NSE", ist(2026, 11, 8, 11, 0))


def test_the_next_session_skips_weekends_and_holidays(cal):
    # Friday 2 Oct 2026 is a holiday: from Thursday's close the next NSE session is Monday 5 Oct
    after = cal.next_session("NSE", ist(2026, 10, 1, 16, 0))
    assert after is not None and after.day == date(2026, 10, 5) and after.opens == time(9, 15)


def test_a_holiday_added_to_the_data_file_closes_the_market_without_a_code_change(tmp_path):
    data = json.loads(resources.files("bracketflow.data").joinpath("calendar-2026.json").read_text())
    data["days"]["2026-03-02"] = {"name": "Unscheduled closure", "closed": "all"}
    edited = MarketCalendar({2026: YearCalendar.from_json(data)}, {})
    assert not edited.is_open("NSE", ist(2026, 3, 2, 11, 0))


def test_a_data_file_naming_an_unknown_segment_is_refused():
    with pytest.raises(ValueError, match="unknown segments"):
        YearCalendar.from_json(
            {"year": 2026, "regular": {"NSE": [["09:15", "15:30"]]}, "days": {"2026-01-26": {"closed": ["NSEX"]}}}
        )


def test_this_and_next_years_calendars_ship_with_the_package():
    now = datetime.now(UTC).astimezone(IST).year
    shipped = market_calendar((now, now + 1))
    assert shipped.known(now) and shipped.known(now + 1)
    for year in (now, now + 1):
        for segment in ("NSE", "BSE", "NFO", "CDS", "MCX", "NCDEX"):
            assert shipped.years[year].regular[segment], (year, segment)


# ---------- the checks that follow it ----------


def test_the_risk_window_is_closed_on_a_holiday_and_open_in_a_special_session():
    from bracketflow.services.risk import in_trading_window

    assert in_trading_window(Exchange.NSE, ist(2026, 3, 2, 11, 0))
    assert not in_trading_window(Exchange.NSE, ist(2026, 3, 3, 11, 0))  # Holi
    assert in_trading_window(Exchange.MCX, ist(2026, 3, 3, 19, 0))  # MCX's evening session on Holi
    assert in_trading_window(Exchange.NSE, ist(2026, 11, 8, 18, 15))  # Muhurat, a Sunday


def test_the_mis_square_off_follows_the_days_session(monkeypatch):
    from bracketflow.services.square_off import square_off_due
    from bracketflow.settings import get_settings

    monkeypatch.setenv("SQUARE_OFF_TIME_IST", "15:15")
    get_settings.cache_clear()
    assert square_off_due(ist(2026, 3, 2, 15, 15))
    assert not square_off_due(ist(2026, 3, 3, 15, 15))  # Holi: no session, nothing to square off
    # Muhurat 18:00-19:00: the 15:15 square-off cannot happen in it, so it is due 15 minutes before its close
    assert not square_off_due(ist(2026, 11, 8, 18, 30))
    assert square_off_due(ist(2026, 11, 8, 18, 45))
    assert not square_off_due(ist(2026, 11, 8, 19, 0))


def test_reconciliation_runs_on_trading_days_only_in_kite_mode(monkeypatch):
    from bracketflow.services.reconcile import trading_day
    from bracketflow.settings import get_settings

    monkeypatch.setenv("BROKER", "kite")
    get_settings.cache_clear()
    assert trading_day(ist(2026, 3, 2, 10, 0))
    assert trading_day(ist(2026, 3, 3, 10, 0))  # Holi: MCX trades in the evening
    assert not trading_day(ist(2026, 12, 25, 10, 0))  # Christmas
    assert not trading_day(ist(2026, 3, 7, 10, 0))  # Saturday
    monkeypatch.setenv("BROKER", "paper")
    get_settings.cache_clear()
    assert trading_day(ist(2026, 12, 25, 10, 0))  # the paper market never closes
    get_settings.cache_clear()


def test_the_pre_market_login_check_is_quiet_on_a_day_no_segment_trades(monkeypatch):
    from bracketflow.services.broker_session import premarket_check
    from bracketflow.settings import get_settings

    # Given Kite mode and Christmas, when every segment is closed
    monkeypatch.setenv("BROKER", "kite")
    get_settings.cache_clear()
    try:
        # When the weekday schedule runs the check at 08:45 IST
        result = premarket_check(now=ist(2026, 12, 25, 8, 45))
    finally:
        get_settings.cache_clear()
    # Then it raises no alarm and sends nothing: no session opens, so no login is missing
    assert result == {"ok": True, "skipped": "no exchange session on 2026-12-25", "telegram_sent": 0}
    assert market_calendar((2026,)).trades_on(date(2026, 3, 3))  # Holi: MCX's evening still needs a login
