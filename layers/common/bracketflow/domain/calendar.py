"""The market calendar: when each segment trades, from the year's data file (bracketflow/data/calendar-<year>.json).

A segment (NSE, BSE, NFO, CDS, MCX, NCDEX) trades its `regular` sessions Monday to Friday. A day listed under `days`
replaces that for the segments it names: "closed" (a list of segments, or "all") has no session that day unless
"sessions" gives one (MCX's evening session on an equity holiday); "sessions" also opens a segment on a weekend
(Muhurat trading, a budget-day Sunday). Times are IST. Holidays and special sessions change every year and
sometimes mid-year: they live in the data file, so updating them is an edit of that file, not of code.

A year without a file trades its regular weekday sessions (no holidays known), and says so (`known`): the deployable
check keeps this year's and next year's files in the package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import cache
from importlib import resources
from typing import Any

# India has no daylight saving: a fixed offset needs no tz database in the Lambda image.
IST = timezone(timedelta(hours=5, minutes=30), "IST")
WEEKEND = (5, 6)
_SEARCH_DAYS = 20  # the longest run of days without a session is far shorter (a long weekend plus holidays)


@dataclass(frozen=True)
class Session:
    segment: str
    day: date
    opens: time
    closes: time
    name: str  # "regular", or the listed day's name (a special session)

    @property
    def opens_at(self) -> datetime:
        return datetime.combine(self.day, self.opens, tzinfo=IST)

    @property
    def closes_at(self) -> datetime:
        return datetime.combine(self.day, self.closes, tzinfo=IST)

    def contains(self, at: datetime) -> bool:
        return self.opens_at <= at.astimezone(IST) <= self.closes_at


def _times(pairs: list[list[str]]) -> list[tuple[time, time]]:
    return [(time.fromisoformat(a), time.fromisoformat(b)) for a, b in pairs]


@dataclass(frozen=True)
class YearCalendar:
    year: int
    provisional: bool
    regular: dict[str, list[tuple[time, time]]]
    days: dict[date, dict[str, Any]]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> YearCalendar:
        regular = {segment: _times(pairs) for segment, pairs in data["regular"].items()}
        days = {}
        for text, entry in (data.get("days") or {}).items():
            day = date.fromisoformat(text)
            if day.year != data["year"]:
                raise ValueError(f"calendar {data['year']}: {text} is not in that year")
            closed = entry.get("closed") or []
            unknown = set(closed if closed != "all" else []) | set(entry.get("sessions") or {})
            if unknown - set(regular):
                strangers = sorted(unknown - set(regular))
                raise ValueError(f"calendar {data['year']}: {text} names unknown segments {strangers}")
            days[day] = {
                "name": entry.get("name") or text,
                "closed": set(regular) if closed == "all" else set(closed),
                "sessions": {seg: _times(pairs) for seg, pairs in (entry.get("sessions") or {}).items()},
            }
        return cls(int(data["year"]), bool(data.get("provisional")), regular, days)


class MarketCalendar:
    """Sessions per segment and day; `years` maps a year to its calendar (missing: regular weekdays only)."""

    def __init__(self, years: dict[int, YearCalendar], fallback_regular: dict[str, list[tuple[time, time]]]):
        self.years = years
        self.fallback_regular = fallback_regular

    def known(self, year: int) -> bool:
        return year in self.years

    def sessions(self, segment: str, day: date) -> list[Session]:
        year = self.years.get(day.year)
        regular = (year.regular if year else self.fallback_regular).get(segment)
        if regular is None:
            raise KeyError(f"no sessions are known for the segment {segment!r}")
        listed = year.days.get(day) if year else None
        if listed is not None and (segment in listed["sessions"] or segment in listed["closed"]):
            pairs = listed["sessions"].get(segment, [])
            return [Session(segment, day, a, b, listed["name"]) for a, b in pairs]
        if day.weekday() in WEEKEND:
            return []
        return [Session(segment, day, a, b, "regular") for a, b in regular]

    def session_at(self, segment: str, at: datetime) -> Session | None:
        """The session of `segment` in progress at `at` (open and close included), if any."""
        day = at.astimezone(IST).date()
        return next((s for s in self.sessions(segment, day) if s.contains(at)), None)

    def is_open(self, segment: str, at: datetime) -> bool:
        return self.session_at(segment, at) is not None

    def next_session(self, segment: str, at: datetime) -> Session | None:
        """The session in progress at `at`, or else the next one to open."""
        day = at.astimezone(IST).date()
        for offset in range(_SEARCH_DAYS):
            for session in self.sessions(segment, day + timedelta(days=offset)):
                if session.closes_at >= at:
                    return session
        return None

    def trades_on(self, day: date) -> bool:
        """Some segment has a session that day (MCX's evening on an equity holiday counts)."""
        return any(self.sessions(segment, day) for segment in self.segments())

    def segments(self) -> list[str]:
        regular = next(iter(self.years.values())).regular if self.years else self.fallback_regular
        return sorted(regular)

    def holiday(self, segment: str, day: date) -> str | None:
        """The listed day's name when `segment` has no session on a weekday because of it."""
        year = self.years.get(day.year)
        listed = year.days.get(day) if year else None
        if listed and segment in listed["closed"] and day.weekday() not in WEEKEND:
            return str(listed["name"])
        return None


def _read_year(year: int) -> YearCalendar | None:
    name = f"calendar-{year}.json"
    path = resources.files("bracketflow.data").joinpath(name)
    if not path.is_file():
        return None
    return YearCalendar.from_json(json.loads(path.read_text(encoding="utf-8")))


@cache
def market_calendar(years: tuple[int, ...] | None = None) -> MarketCalendar:
    """The shipped calendar: every calendar-<year>.json in bracketflow/data (by default the year before, this and
    the next, which is all any check looks at)."""
    if years is None:
        now = datetime.now(UTC).astimezone(IST).year
        years = (now - 1, now, now + 1)
    loaded = {year: cal for year in years if (cal := _read_year(year)) is not None}
    latest = max(loaded.values(), key=lambda c: c.year, default=None)
    fallback = latest.regular if latest else {}
    return MarketCalendar(loaded, fallback)
