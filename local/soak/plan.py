"""The soak's plan: what it sends when and which faults fire at which rate, all from the seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

SYMBOLS = (
    "INFY",
    "SBIN",
    "RELIANCE",
    "TCS",
    "HDFCBANK",
    "ICICIBANK",
    "ITC",
    "LT",
    "AXISBANK",
    "KOTAKBANK",
    "BHARTIARTL",
    "TATAMOTORS",
    "WIPRO",
    "SUNPHARMA",
)
# Symbols only reverse pairs trade (an alert, then its reverse): the guard against an open bracket the other way is
# account-wide per symbol, so on the storm's symbols, where other strategies hold the old side, a reverse is refused.
REVERSE_SYMBOLS = ("MARUTI", "BAJFINANCE", "ASIANPAINT", "HCLTECH", "TATASTEEL", "NTPC", "ONGC", "HINDUNILVR")

# How each fault kind is aimed; a kind not named here (a new one) runs unaimed at DEFAULT_FAULT_RATE.
FAULT_PLAN: dict[str, list[dict[str, Any]]] = {
    "reject": [
        {"match": {"path": "/orders", "method": "POST"}, "rate": 0.03},
        {"match": {"path": "/gtt/triggers", "method": "POST"}, "rate": 0.03},  # a fired GTT's child rejected
    ],
    "http_500": [{"rate": 0.02}],
    "http_429": [{"rate": 0.02}],
    "http_500_after": [
        {"match": {"path": "/orders", "method": "POST"}, "rate": 0.04},
        {"match": {"path": "/gtt/triggers", "method": "POST"}, "rate": 0.06},
        {"match": {"path": "/gtt/triggers", "method": "DELETE"}, "rate": 0.04},
        {"match": {"path": "/gtt/triggers", "method": "PUT"}, "rate": 0.04},
    ],
    "timeout": [{"match": {"method": "POST"}, "rate": 0.01, "seconds": 8}],
    # drop_ws is rolled once per moving instrument per walk step (and per heartbeat): about one drop a minute.
    "drop_ws": [{"rate": 0.00003}],
    "delay_fill": [{"rate": 0.05, "seconds": 2}],
    "drop_order_update": [{"rate": 0.05}],
    # The broker going down right after it acted: every request on that path refused for 2 s, about once a minute
    # at one alert a second. (Unaimed at the default rate, an outage would start every few seconds somewhere and the
    # broker would be down more than up: no stop could be placed by anyone, and the soak would measure the outage.)
    "outage_after": [
        {"match": {"path": "/orders", "method": "POST"}, "rate": 0.005, "seconds": 2},
        {"match": {"path": "/gtt/triggers", "method": "POST"}, "rate": 0.005, "seconds": 2},
    ],
}
DEFAULT_FAULT_RATE = 0.02
FAULT_COUNT = 1_000_000  # rates, not counts, bound the faults


@dataclass
class SoakConfig:
    brackets: int = 1000  # distinct alerts sent
    seed: int = 16
    alerts_per_s: float = 1.0
    resend_rate: float = 0.15  # of alerts sent again, 0.2 to 8 s later
    delete_rate: float = 0.08  # of alerts whose bracket the trader DELETEs 1 to 40 s later
    exit_rate: float = 0.12  # of alerts followed 1.5 to 20 s later by an exit signal for their strategy and symbol
    closeall_rate: float = 0.01  # of alerts followed 1.5 to 30 s later by a closeall for their strategy
    reverse_rate: float = 0.05  # per alert, a reverse pair: an alert on a REVERSE_SYMBOLS symbol, 2 to 12 s later its
    # reverse (the other side, same strategy)
    scale_out_rate: float = 0.06  # of alerts sent as a scale-out (targets with shares, mostly with a breakeven)
    breakeven_at_rate: float = 0.05  # of the other alerts sent with a price breakeven (breakeven_at)
    hand_every_s: float = 12.0  # a hand action at the broker about this often
    streamer_kill_every_s: float = 120.0
    crash_rate: float = 0.03  # of broker-changing calls inside a Lambda invocation that end it
    fault_scale: float = 1.0  # multiplies every fault rate (0: no faults)
    walk_step_bps: float = 8.0  # a fast market: time compressed about 16x in variance
    reconcile_every_s: float = 10.0
    settle_max_s: float = 240.0  # bound on the quiet phase
    quiet_for_s: float = 25.0  # settled once nothing changed for this long (and reconciliation ran twice)
    symbols: tuple[str, ...] = SYMBOLS
    progress_every_s: float = 30.0
    details_path: Path | None = None  # the broker's timeline and books and every bracket, for a post-mortem


@dataclass(order=True)
class Step:
    at: float
    seq: int
    kind: str = field(compare=False)
    data: dict[str, Any] = field(default_factory=dict, compare=False)


def make_plan(cfg: SoakConfig) -> list[Step]:
    """Everything the soak will do and when (seconds from the start), from the seed alone."""
    rng = random.Random(cfg.seed)
    steps: list[Step] = []
    seq = 0

    def add(at: float, kind: str, **data: Any) -> None:
        nonlocal seq
        seq += 1
        steps.append(Step(at, seq, kind, data))

    interval = 1.0 / cfg.alerts_per_s
    duration = cfg.brackets * interval
    opened: list[tuple[float, dict[str, Any]]] = []  # (when, the alert) of each bracket-opening alert, by index
    scale_rng = random.Random(f"{cfg.seed}:scale-out")  # its own draws: the rest of the seed's plan stays as it was
    breakeven_rng = random.Random(f"{cfg.seed}:breakeven-at")  # the same
    for i in range(cfg.brackets):
        at = i * interval + rng.uniform(0, interval * 0.5)
        symbol = rng.choice(cfg.symbols)
        # One side per symbol for three minutes at a time, so the guard (no open bracket the other way on a symbol)
        # blocks alerts only around the turns.
        side = "buy" if random.Random(f"{cfg.seed}:{symbol}:{int(at // 180)}").random() < 0.5 else "sell"
        alert = {
            "symbol": f"NSE:{symbol}",
            "action": side,
            "quantity": str(rng.randint(1, 5)),
            "product": rng.choice(("MIS", "CNC")),
            "pricetype": "MARKET" if rng.random() < 0.6 else "LIMIT",
            "sl_percent": str(rng.choice(("0.3", "0.4", "0.5", "0.6", "0.8"))),
            "target_percent": str(rng.choice(("0.5", "0.6", "0.8", "1", "1.2"))),
            "strategy": f"soak{cfg.seed}-{i}",
        }
        if rng.random() < 0.5:
            alert["trail"] = rng.choice(("0.2%", "0.3%", "0.5%", "1 points", "2 points"))
        if rng.random() < 0.3:
            alert["client_order_id"] = f"soak{cfg.seed}-{i}"
        # LIMIT entries: a few ticks through the market (fills at once) or a few ticks away (rests, then fills).
        offset_ticks = rng.choice((-4, -2, 2, 4, 8)) if alert["pricetype"] == "LIMIT" else 0
        if scale_rng.random() < cfg.scale_out_rate:
            alert = scale_out(alert, scale_rng)
        elif breakeven_rng.random() < cfg.breakeven_at_rate:
            alert = breakeven_at(alert, breakeven_rng)
        add(at, "alert", index=i, alert=alert, offset_ticks=offset_ticks)
        opened.append((at, alert))
        if rng.random() < cfg.resend_rate:
            add(at + rng.uniform(0.2, 8.0), "resend", index=i)
        if rng.random() < cfg.delete_rate:
            add(at + rng.uniform(1.0, 40.0), "delete", index=i)
    t = rng.uniform(5, cfg.hand_every_s)
    while t < duration:
        add(t, "hand", action=rng.choice(("close_position", "delete_gtt", "round_trip", "resting_order")))
        t += rng.uniform(0.5, 1.5) * cfg.hand_every_s
    t = rng.uniform(20, cfg.streamer_kill_every_s)
    while t < duration:
        add(t, "kill_streamer")
        t += rng.uniform(0.7, 1.3) * cfg.streamer_kill_every_s
    for step in signal_steps(cfg, opened):
        add(step.at, step.kind, **step.data)
    return sorted(steps)


def scale_out(alert: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The alert as a scale-out: a first target at half its target (so some are reached while the storm runs) and the
    next ones further out, each with a share of a larger quantity (halves of an even quantity, or three equal
    quantities), mostly with a breakeven stop after the first target."""
    out = dict(alert)
    first = Decimal(out.pop("target_percent")) / 2
    lots = int(out["quantity"])
    if rng.random() < 0.6:
        out["quantity"] = str(2 * lots)
        out["targets"] = [{"percent": str(first), "share": 50}, {"percent": str(2 * first), "share": 50}]
    else:
        out["quantity"] = str(3 * lots)
        out["targets"] = [{"percent": str(first * k), "quantity": lots} for k in (1, 2, 3)]
    if rng.random() < 0.75:
        out["breakeven_after"] = 1
        out["breakeven_buffer"] = rng.choice(("0", "0.05", "0.5"))
    return out


# The soak's own plan field: how far to the target (a fraction) the alert's breakeven_at lies, made a price at sending.
BREAKEVEN_WAY = "breakeven_way"


def breakeven_at(alert: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The alert with a price breakeven part of the way to its target (set from the entry when it is sent), and a
    buffer, so some are reached while the storm runs."""
    return {**alert, BREAKEVEN_WAY: rng.choice(("0.3", "0.4", "0.5")), "breakeven_buffer": rng.choice(("0", "0.05"))}


def breakeven_price(alert: dict[str, Any], entry: Decimal, tick: Decimal) -> str:
    """The alert's breakeven_at: its share of the way from the entry to the target, on the tick toward the target."""
    distance = entry * Decimal(alert["target_percent"]) / 100 * Decimal(alert[BREAKEVEN_WAY])
    buy = alert["action"] == "buy"
    price = entry + distance if buy else entry - distance
    ticks = (price / tick).quantize(Decimal(1), rounding=ROUND_CEILING if buy else ROUND_FLOOR)
    return str(ticks * tick)


EXIT_WORDS = ("exit", "close", "side", "flat", "wrong_side")


def signal_steps(cfg: SoakConfig, opened: list[tuple[float, dict[str, Any]]]) -> list[Step]:
    """A strategy's own signals after its alerts, from their own seeded draws (so the rest of a seed's plan is what it
    was): exit signals and closealls ("signal" steps, indexed apart from alerts, since they open no bracket) soon
    after an alert, while its bracket is likely open; and reverse pairs, an alert on a REVERSE_SYMBOLS symbol with a
    wide stop and then its reverse ("alert" steps indexed after the plan's alerts: each opens one bracket)."""
    rng = random.Random(f"{cfg.seed}:signals")
    out: list[Step] = []
    signals = 0
    pairs = 0

    def resent(at: float, kind: str, index: int) -> None:
        if rng.random() < cfg.resend_rate:
            out.append(Step(at + rng.uniform(0.2, 8.0), 0, kind, {"index": index}))

    for at, alert in opened:
        target = {"symbol": alert["symbol"], "strategy": alert["strategy"]}
        long = alert["action"] == "buy"
        roll = rng.random()
        if roll < cfg.exit_rate + cfg.closeall_rate:
            if roll < cfg.exit_rate:
                word = rng.choice(EXIT_WORDS)
                when = at + rng.uniform(1.5, 20.0)
                if word in ("exit", "close"):
                    body = {"action": word, **target}
                elif word == "flat":  # TradingView's {{strategy.market_position}}: flat, whatever the action says
                    body = {"action": "sell" if long else "buy", "market_position": "flat", **target}
                else:  # closelong / closeshort; the wrong side closes nothing
                    body = {"action": "closelong" if long == (word == "side") else "closeshort", **target}
            else:
                when = at + rng.uniform(1.5, 30.0)
                body = {"action": "closeall", "strategy": alert["strategy"]}
            out.append(Step(when, 0, "signal", {"index": signals, "signal": body}))
            resent(when, "signal_resend", signals)
            signals += 1
        if rng.random() < cfg.reverse_rate:
            side = rng.choice(("buy", "sell"))
            first = {
                "symbol": f"NSE:{REVERSE_SYMBOLS[pairs % len(REVERSE_SYMBOLS)]}",
                "action": side,
                "quantity": str(rng.randint(1, 5)),
                "product": rng.choice(("MIS", "CNC")),
                "pricetype": "MARKET",
                "sl_percent": str(rng.choice(("1.5", "2", "2.5"))),  # wide: still open when its reverse comes
                "target_percent": str(rng.choice(("2", "3"))),
                "strategy": f"soak{cfg.seed}-r{pairs}",
            }
            pricetype = "MARKET" if rng.random() < 0.7 else "LIMIT"
            reverse = {
                **first,
                "action": "sell" if side == "buy" else "buy",
                "quantity": str(rng.randint(1, 5)),
                "pricetype": pricetype,
                "sl_percent": str(rng.choice(("0.4", "0.5", "0.6", "0.8"))),
                "target_percent": str(rng.choice(("0.6", "0.8", "1", "1.2"))),
                "reverse": True,
            }
            offset_ticks = rng.choice((-4, -2, 2)) if pricetype == "LIMIT" else 0
            when = at + rng.uniform(0.1, 0.9)
            later = when + rng.uniform(2.0, 12.0)
            index = cfg.brackets + 2 * pairs
            out.append(Step(when, 0, "alert", {"index": index, "alert": first, "offset_ticks": 0}))
            out.append(Step(later, 0, "alert", {"index": index + 1, "alert": reverse, "offset_ticks": offset_ticks}))
            resent(later, "resend", index + 1)
            pairs += 1
    return out
