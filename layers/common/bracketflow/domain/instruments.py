"""The instrument master: what can be traded, its tick size and lot size, and its ticker token.

Loaded from Kite's /instruments CSV format (bracketflow/data/instruments.csv, a package data file generated
by paper/make_instruments.py). Pure: no network, no environment; the paper exchange uses it too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources

# Kite's segment codes, carried in the low byte of every instrument token.
SEGMENT_CODES = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BFO": 5, "BCD": 6, "MCX": 7, "MCXSX": 8, "INDICES": 9}
INDEX_SEGMENT = 9

# TradingView names the indices differently from Kite: an alert sent from an index chart with {{ticker}} carries
# these. Our shipped master does not list every index, so without this such an alert would reach Kite (live) or be
# an "unknown instrument" (paper) instead of being refused as the index it is. (exchange, ticker) -> Kite's name.
TRADINGVIEW_INDEX_TICKERS = {
    ("NSE", "NIFTY"): "NIFTY 50",
    ("NSE", "BANKNIFTY"): "NIFTY BANK",
    ("NSE", "CNXFINANCE"): "NIFTY FIN SERVICE",
    ("NSE", "CNXIT"): "NIFTY IT",
    ("NSE", "INDIAVIX"): "INDIA VIX",
    ("BSE", "SENSEX"): "SENSEX",
}


def is_index_token(instrument_token: int) -> bool:
    """Index packets carry no depth and cannot be traded; Kite marks them with segment 9."""
    return instrument_token & 0xFF == INDEX_SEGMENT


@dataclass(frozen=True, slots=True)
class Instrument:
    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: Decimal
    expiry: date | None
    strike: Decimal
    tick_size: Decimal
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str

    @property
    def key(self) -> str:
        """The `EXCHANGE:TRADINGSYMBOL` form Kite's quote API uses."""
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def is_index(self) -> bool:
        return is_index_token(self.instrument_token) or self.segment == "INDICES"

    @property
    def tradable(self) -> bool:
        return not self.is_index

    def is_on_tick(self, price: Decimal) -> bool:
        if self.tick_size <= 0:
            return True
        return price % self.tick_size == 0

    def is_lot_multiple(self, quantity: int) -> bool:
        if self.lot_size <= 0:
            return True
        return quantity % self.lot_size == 0


def _parse_row(row: dict[str, str]) -> Instrument:
    expiry = row.get("expiry") or ""
    return Instrument(
        instrument_token=int(row["instrument_token"]),
        exchange_token=int(row["exchange_token"]),
        tradingsymbol=row["tradingsymbol"],
        name=row.get("name", ""),
        last_price=Decimal(row.get("last_price") or "0"),
        expiry=date.fromisoformat(expiry) if expiry else None,
        strike=Decimal(row.get("strike") or "0"),
        tick_size=Decimal(row.get("tick_size") or "0"),
        lot_size=int(row.get("lot_size") or "0"),
        instrument_type=row.get("instrument_type", ""),
        segment=row.get("segment", ""),
        exchange=row["exchange"],
    )


class InstrumentMaster:
    """Lookups by (exchange, tradingsymbol) and by instrument token."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._all = tuple(instruments)
        self._by_symbol = {(i.exchange, i.tradingsymbol): i for i in self._all}
        self._by_token = {i.instrument_token: i for i in self._all}

    @classmethod
    def from_csv(cls, text: str) -> InstrumentMaster:
        return cls(_parse_row(row) for row in csv.DictReader(io.StringIO(text)))

    @classmethod
    def load(cls) -> InstrumentMaster:
        """The master shipped with the package (bracketflow/data/instruments.csv)."""
        return default_master()

    def get(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        return self._by_symbol.get((exchange.upper(), tradingsymbol.upper()))

    def by_key(self, key: str) -> Instrument | None:
        """Look up `NSE:INFY`; a bare `INFY` means NSE."""
        exchange, _, symbol = key.rpartition(":")
        return self.get(exchange or "NSE", symbol)

    def by_token(self, instrument_token: int) -> Instrument | None:
        return self._by_token.get(instrument_token)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, item: object) -> bool:
        return item in self._by_token.values() if isinstance(item, Instrument) else False


def instruments_csv_text() -> str:
    """The raw CSV, exactly as Kite's /instruments endpoint would serve it."""
    return resources.files("bracketflow.data").joinpath("instruments.csv").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def default_master() -> InstrumentMaster:
    return InstrumentMaster.from_csv(instruments_csv_text())


def index_called(exchange: str, tradingsymbol: str) -> str | None:
    """The index's name when (exchange, tradingsymbol) means an index — in the master, or a TradingView index
    ticker — else None. Indices cannot be traded, so nothing may be placed on one."""
    exchange, tradingsymbol = exchange.upper(), tradingsymbol.upper()
    instrument = default_master().get(exchange, tradingsymbol)
    if instrument is not None:
        return instrument.tradingsymbol if instrument.is_index else None
    return TRADINGVIEW_INDEX_TICKERS.get((exchange, tradingsymbol))


# ---------- the compact master (Kite's full instrument list, for lookups in a Lambda) ----------
#
# Kite's /instruments CSV has ~100k rows. Parsing it into Instrument objects costs about a second and ~100 MB, too
# much for a webhook's first request; most requests look up one symbol. The compact form is the rows a lookup needs,
# one line each, "EXCHANGE:SYMBOL<TAB>token<TAB>exchange_token<TAB>expiry<TAB>strike<TAB>tick<TAB>lot<TAB>type<TAB>
# segment", sorted, gzipped: loading it is a decompress and a split, and a lookup is a binary search that parses the
# one line it finds. The name and last price are left out (nothing here uses them).

COMPACT_HEADER = "#bracketflow-instruments-v1"
_COMPACT_COLUMNS = 9


def to_compact(csv_text: str) -> bytes:
    """Kite's /instruments CSV -> the compact, sorted, gzipped master (see above)."""
    import gzip

    lines = []
    for row in csv.DictReader(io.StringIO(csv_text)):
        exchange, symbol = row["exchange"].upper(), row["tradingsymbol"].upper()
        if "\t" in symbol or "\n" in symbol:
            continue  # never in Kite's list; a line must stay one row
        fields = (
            f"{exchange}:{symbol}",
            str(int(row["instrument_token"])),
            str(int(row.get("exchange_token") or 0)),
            row.get("expiry") or "",
            row.get("strike") or "0",
            row.get("tick_size") or "0",
            str(int(float(row.get("lot_size") or 0))),
            row.get("instrument_type", ""),
            row.get("segment", ""),
        )
        lines.append("\t".join(fields))
    lines.sort()
    return gzip.compress("\n".join([COMPACT_HEADER, *lines]).encode(), compresslevel=6, mtime=0)


def _from_line(line: str) -> Instrument:
    key, token, exchange_token, expiry, strike, tick, lot, kind, segment = line.split("\t")
    exchange, _, symbol = key.partition(":")
    return Instrument(
        instrument_token=int(token),
        exchange_token=int(exchange_token),
        tradingsymbol=symbol,
        name="",
        last_price=Decimal("0"),
        expiry=date.fromisoformat(expiry) if expiry else None,
        strike=Decimal(strike),
        tick_size=Decimal(tick),
        lot_size=int(lot),
        instrument_type=kind,
        segment=segment,
        exchange=exchange,
    )


class CompactMaster:
    """The compact master loaded: the same lookups as InstrumentMaster, each parsing only the row it finds."""

    def __init__(self, data: bytes) -> None:
        import gzip

        text = gzip.decompress(data).decode()
        header, _, body = text.partition("\n")
        if header != COMPACT_HEADER:
            raise ValueError(f"not a compact instrument master (header {header[:40]!r})")
        self._lines = body.split("\n") if body else []
        self._by_token: dict[int, int] | None = None

    def get(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        from bisect import bisect_left

        prefix = f"{exchange.upper()}:{tradingsymbol.upper()}\t"
        at = bisect_left(self._lines, prefix)
        if at < len(self._lines) and self._lines[at].startswith(prefix):
            return _from_line(self._lines[at])
        return None

    def by_key(self, key: str) -> Instrument | None:
        exchange, _, symbol = key.rpartition(":")
        return self.get(exchange or "NSE", symbol)

    def by_token(self, instrument_token: int) -> Instrument | None:
        if self._by_token is None:  # built on first use only (the streamer; the webhook never asks)
            self._by_token = {int(line.split("\t", 2)[1]): n for n, line in enumerate(self._lines)}
        at = self._by_token.get(instrument_token)
        return None if at is None else _from_line(self._lines[at])

    def __iter__(self) -> Iterator[Instrument]:
        return (_from_line(line) for line in self._lines)

    def __len__(self) -> int:
        return len(self._lines)
