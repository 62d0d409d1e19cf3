"""Generate the instrument master (Kite's /instruments CSV) that bracketflow and the paper exchange share.

Deterministic: the same file every run, so it is committed and diffs stay meaningful. Run it with
`python -m paper.make_instruments` after changing the universe below.

Tokens follow Kite's layout: instrument_token = exchange_token << 8 | segment, with segment 1 for NSE,
2 for NFO and 9 for indices, so a streamer can tell index packets apart by `token & 0xFF == 9`.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "layers" / "common" / "bracketflow" / "data" / "instruments.csv"

COLUMNS = [
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
]

SEGMENT_NSE = 1
SEGMENT_NFO = 2
SEGMENT_INDICES = 9

# (tradingsymbol, company name, NSE exchange token, plausible price). Exchange tokens are NSE's own codes.
EQUITIES = [
    ("INFY", "INFOSYS", 1594, "1500.00"),
    ("SBIN", "STATE BANK OF INDIA", 3045, "800.00"),
    ("RELIANCE", "RELIANCE INDUSTRIES", 2885, "1300.00"),
    ("TCS", "TATA CONSULTANCY SERV LT", 11536, "3400.00"),
    ("HDFCBANK", "HDFC BANK", 1333, "1700.00"),
    ("ICICIBANK", "ICICI BANK.", 4963, "1250.00"),
    ("ITC", "ITC", 1660, "420.00"),
    ("LT", "LARSEN & TOUBRO.", 11483, "3600.00"),
    ("AXISBANK", "AXIS BANK", 5900, "1150.00"),
    ("KOTAKBANK", "KOTAK MAHINDRA BANK", 1922, "1900.00"),
    ("HINDUNILVR", "HINDUSTAN UNILEVER.", 1394, "2400.00"),
    ("BHARTIARTL", "BHARTI AIRTEL", 10604, "1600.00"),
    ("MARUTI", "MARUTI SUZUKI INDIA.", 10999, "12000.00"),
    ("TATAMOTORS", "TATA MOTORS", 3456, "750.00"),
    ("WIPRO", "WIPRO", 3787, "300.00"),
    ("BAJFINANCE", "BAJAJ FINANCE", 317, "7000.00"),
    ("ASIANPAINT", "ASIAN PAINTS", 236, "2300.00"),
    ("SUNPHARMA", "SUN PHARMACEUTICAL IND L", 3351, "1750.00"),
    ("TATASTEEL", "TATA STEEL", 3499, "150.00"),
    ("HCLTECH", "HCL TECHNOLOGIES", 7229, "1800.00"),
    ("NTPC", "NTPC", 11630, "350.00"),
    ("ONGC", "OIL AND NATURAL GAS CORP.", 2475, "260.00"),
]

# (tradingsymbol, exchange token, spot). Kite lists indices on NSE with segment INDICES, no tick and no lot.
INDICES = [
    ("NIFTY 50", 1001, "24000.00"),
    ("NIFTY BANK", 1016, "52000.00"),
]

# Index derivatives: (underlying name, index spot, lot size, strike step, strikes either side of spot).
DERIVATIVES = [
    ("NIFTY", "24000", 75, 100, 10),
    ("BANKNIFTY", "52000", 35, 500, 4),
]

# Monthly expiries (last Tuesday of the month, NSE's index expiry day), as Kite spells them in symbols.
EXPIRIES = [date(2026, 12, 29), date(2027, 1, 26)]
VALUATION_DATE = date(2026, 11, 20)
VOLATILITY = 0.14
TICK = Decimal("0.05")


def _on_tick(value: float, tick: Decimal = TICK) -> Decimal:
    ticks = (Decimal(str(value)) / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return max(ticks, Decimal(1)) * tick


def _option_premium(spot: float, strike: float, days: int, call: bool) -> float:
    # Black-Scholes with no rates: only needs to look plausible, not be a pricing model.
    t = max(days, 1) / 365.0
    d1 = (math.log(spot / strike) + 0.5 * VOLATILITY**2 * t) / (VOLATILITY * math.sqrt(t))
    d2 = d1 - VOLATILITY * math.sqrt(t)

    def n(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    if call:
        return spot * n(d1) - strike * n(d2)
    return strike * n(-d2) - spot * n(-d1)


def _symbol_expiry(expiry: date) -> str:
    return f"{expiry:%y}{expiry.strftime('%b').upper()}"


def rows() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for symbol, exchange_token, price in INDICES:
        out.append(
            {
                "instrument_token": str(exchange_token << 8 | SEGMENT_INDICES),
                "exchange_token": str(exchange_token),
                "tradingsymbol": symbol,
                "name": symbol,
                "last_price": price,
                "expiry": "",
                "strike": "0",
                "tick_size": "0",
                "lot_size": "0",
                "instrument_type": "EQ",
                "segment": "INDICES",
                "exchange": "NSE",
            }
        )
    for symbol, name, exchange_token, price in EQUITIES:
        out.append(
            {
                "instrument_token": str(exchange_token << 8 | SEGMENT_NSE),
                "exchange_token": str(exchange_token),
                "tradingsymbol": symbol,
                "name": name,
                "last_price": price,
                "expiry": "",
                "strike": "0",
                "tick_size": "0.05",
                "lot_size": "1",
                "instrument_type": "EQ",
                "segment": "NSE",
                "exchange": "NSE",
            }
        )
    nfo_exchange_token = 35001
    for name, spot_text, lot_size, step, width in DERIVATIVES:
        spot = float(spot_text)
        for expiry in EXPIRIES:
            days = (expiry - VALUATION_DATE).days
            prefix = f"{name}{_symbol_expiry(expiry)}"
            # Index futures trade in 0.10 steps: one instrument class whose tick is not the default.
            future_tick = Decimal("0.10")
            future_price = _on_tick(spot * (1 + 0.065 * days / 365), future_tick)
            out.append(
                {
                    "instrument_token": str(nfo_exchange_token << 8 | SEGMENT_NFO),
                    "exchange_token": str(nfo_exchange_token),
                    "tradingsymbol": f"{prefix}FUT",
                    "name": name,
                    "last_price": str(future_price),
                    "expiry": expiry.isoformat(),
                    "strike": "0",
                    "tick_size": str(future_tick),
                    "lot_size": str(lot_size),
                    "instrument_type": "FUT",
                    "segment": "NFO-FUT",
                    "exchange": "NFO",
                }
            )
            nfo_exchange_token += 1
            atm = int(spot) // step * step
            for strike in range(atm - width * step, atm + width * step + 1, step):
                for kind in ("CE", "PE"):
                    premium = _option_premium(spot, float(strike), days, kind == "CE")
                    out.append(
                        {
                            "instrument_token": str(nfo_exchange_token << 8 | SEGMENT_NFO),
                            "exchange_token": str(nfo_exchange_token),
                            "tradingsymbol": f"{prefix}{strike}{kind}",
                            "name": name,
                            "last_price": str(_on_tick(premium)),
                            "expiry": expiry.isoformat(),
                            "strike": str(strike),
                            "tick_size": "0.05",
                            "lot_size": str(lot_size),
                            "instrument_type": kind,
                            "segment": "NFO-OPT",
                            "exchange": "NFO",
                        }
                    )
                    nfo_exchange_token += 1
    return out


def render() -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows())
    return buffer.getvalue()


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT} ({len(rows())} instruments)")


if __name__ == "__main__":
    main()
