"""Reconciliation's default schedule covers every session of every segment the account can trade.

EventBridge cron is UTC and IST is UTC+05:30, so the 08:30-15:29 IST window that covered the equity market left the
currency (to 17:00) and commodity (to 23:30, 23:55 on US summer time) evenings with no reconciliation at all: a lost
fill or a GTT gone at 20:00 waited for the next morning. Here the template's ReconcileSchedule default is evaluated
minute by minute against each exchange's session on the IST clock, for every weekday.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from bracketflow.domain.enums import Exchange
from local.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
IST = timezone(timedelta(hours=5, minutes=30))

# Each exchange's trading day on the IST clock, from its first order window to its last close (pre-open, post-close
# and the commodity evening included): an open bracket on any of them must be reconciled throughout.
SESSIONS_IST = {
    Exchange.NSE: (time(9, 0), time(16, 0)),  # pre-open 09:00, close 15:30, post-close session to 16:00
    Exchange.BSE: (time(9, 0), time(16, 0)),
    Exchange.NFO: (time(9, 0), time(15, 30)),
    Exchange.CDS: (time(9, 0), time(17, 0)),
    Exchange.MCX: (time(9, 0), time(23, 55)),  # 23:30, or 23:55 while the US is on summer time
    Exchange.NCDEX: (time(9, 0), time(23, 55)),  # the commodity evening taken at its latest: the safe reading
}
DAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}


def _values(field: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    """The values one cron field allows (*, ?, a, a-b, a/b, a-b/c, lists, day names)."""
    out: set[int] = set()
    for part in field.split(","):
        for name, number in (names or {}).items():
            part = part.replace(name, str(number))
        stepped = "/" in part
        step = 1
        if stepped:
            part, raw_step = part.split("/")
            step = int(raw_step)
        if part in ("*", "?"):
            first, last = low, high
        elif "-" in part:
            first, last = (int(x) for x in part.split("-"))
        else:
            first = int(part)
            last = high if stepped else first  # "a/b": from a to the end, every b
        out.update(range(first, last + 1, step))
    return out


def _schedule() -> str:
    return str(load_yaml(ROOT / "template.yaml")["Parameters"]["ReconcileSchedule"]["Default"])


def _fires_at(expression: str):
    match = re.fullmatch(r"cron\((.+)\)", expression)
    assert match, f"not a cron expression: {expression}"
    minute, hour, dom, month, dow, _year = match.group(1).split()
    assert dom == "?" and month == "*", "the check below reads minutes, hours and weekdays only"
    minutes, hours = _values(minute, 0, 59), _values(hour, 0, 23)
    weekdays = _values(dow, 0, 6, DAYS) if dow not in ("*", "?") else set(range(7))

    def fires(at_utc: datetime) -> bool:
        cron_weekday = (at_utc.weekday() + 1) % 7  # cron counts SUN as 0 (1 in EventBridge's own numbering: named)
        return at_utc.minute in minutes and at_utc.hour in hours and cron_weekday in weekdays

    return fires


def test_every_exchange_has_a_session_to_check():
    assert set(SESSIONS_IST) == set(Exchange)


@pytest.mark.parametrize("exchange", list(SESSIONS_IST), ids=lambda e: e.value)
def test_reconciliation_runs_every_minute_of_every_session_of_every_weekday(exchange):
    fires = _fires_at(_schedule())
    opens, closes = SESSIONS_IST[exchange]
    missed = []
    for day in range(2, 7):  # 2 March 2026 is a Monday: Monday to Friday
        at = datetime.combine(datetime(2026, 3, day).date(), opens, tzinfo=IST)
        end = datetime.combine(datetime(2026, 3, day).date(), closes, tzinfo=IST)
        while at <= end:
            if not fires(at.astimezone(UTC)):
                missed.append(at.strftime("%a %H:%M IST"))
            at += timedelta(minutes=1)
    assert missed == [], f"{exchange.value}: no reconciliation at {missed[:3]} ... ({len(missed)} minutes)"


def test_the_schedule_stays_within_the_trading_week():
    # No runs at the weekend (nothing trades): after Friday's evening, none from 01:00 IST Saturday to Monday 08:00
    fires = _fires_at(_schedule())
    saturday = datetime(2026, 3, 7, 1, 0, tzinfo=IST)
    monday = datetime(2026, 3, 9, 8, 0, tzinfo=IST)
    weekend = [saturday + timedelta(minutes=m) for m in range(int((monday - saturday).total_seconds() // 60))]
    assert [at for at in weekend if fires(at.astimezone(UTC))] == []
