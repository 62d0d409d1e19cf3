"""The chaos soak: the local stack under a seeded storm of alerts and failures, then an honest look at what is left.

`make soak` (`python -m local.soak`): at least 1,000 brackets; tests/e2e/test_soak.py runs a shorter one. While a
fast paper market walks, TradingView-style alerts arrive on the webhook (many symbols, both sides, MIS and CNC, LIMIT
and MARKET entries, about half with a trail), and at the same time:
- every fault kind the paper exchange has (paper/faults.py KINDS, read at run time, so a new kind is exercised too),
  each at a rate;
- TradingView resends (the same alert body again, a moment to seconds later) and trader DELETEs;
- a strategy's own signals for an earlier alert's strategy and symbol: exit / close / closelong / closeshort / a flat
  market position, now and then a closeall for the strategy, and reverse pairs (an alert on a symbol of their own,
  then its reverse: the other side, "reverse": true), each resent at the same rate as alerts;
- scale-out alerts now and then: two or three targets under one stop, each with its share of the quantity, most with a
  breakeven stop after the first target (each share is a bracket of its own);
- price-breakeven alerts now and then: a plain bracket whose stop moves to its entry (plus a buffer) once the price
  reaches a level part of the way to its target (breakeven_at, the streamer's move);
- the trader's own hands at the broker, through its Kite API as the trader's app would: closing a position, deleting
  a GTT, an unrelated round trip and a resting order on a symbol bracketflow trades;
- kill -9 of the streamer (restarted by the stack if it supervises its children, else by the soak, and said so);
- Lambda invocations that die right after the broker acted (local/chaos.py), as a timeout or crash would end them.
Then the faults stop, the market holds still, reconciliation runs, and the checks below read the broker's own state
and timeline (GET /_paper/timeline: every order and GTT change with a sub-second time) against bracketflow's records:

  one_bracket_per_alert   every distinct bracket-opening alert (reverses too) made exactly one bracket (a scale-out:
                          one per share, named in its answer); its resends named that bracket (and those shares)
                          (exit signals open none: a bracket a signal ends is CLOSED, SIGNAL)
  one_action_per_signal   every exit signal was answered 200, and its resends "duplicate": true
  order_placed_twice      no order tag of ours placed again while an earlier order with that tag was working or done
  position_mismatch       per symbol and product, the broker's net position = what bracketflow says is open
  gtt_mismatch            each open bracket with a position has exactly one live GTT for its open quantity
  orphan_gtt              no live GTT that no open bracket owns
  transient_status        no bracket left CREATED / ENTRY_FILLED / EXITING / EXIT_FAILED (ENTRY_PENDING only with
                          its entry still working at the broker)
  review_unexplained      every NEEDS_REVIEW bracket has a FlaggedForReview event with a reason
  server_error            no 5xx answered to a client
  unprotected_too_long    (reported, and a violation above UNPROTECTED_GOAL_S) the longest time any filled quantity
                          had neither a live GTT nor a working flattening order, from the broker's timeline

The plan (what is sent when, what fails at which rate) comes from the seed; what the stack does under it depends on
timing, so two runs of one seed are alike, not identical.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import requests

from local.chaos import CrashAfterBroker
from local.stack import REPO_ROOT, LocalStack, StackConfig

log = logging.getLogger("local.soak")

KITE_HEADERS = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}
SOAK_API_KEY = "soak-dev-key"
UNPROTECTED_GOAL_S = 5.0
RESTART_GRACE_S = 5.0  # how long the stack has to bring a killed streamer back before the soak does
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "soak.json"
README_PATH = REPO_ROOT / "README.md"
README_BEGIN = "<!-- soak results: written by `make soak` -->"
README_END = "<!-- end of soak results -->"

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
TRANSIENT = frozenset({"CREATED", "ENTRY_FILLED", "EXITING", "EXIT_FAILED"})
FINISHED = frozenset({"CLOSED", "FAILED", "CANCELLED", "EXPIRED"})
LIVE_ORDER = frozenset({"OPEN", "TRIGGER PENDING"})

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


# ---------- the plan ----------


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


# ---------- the run ----------


@dataclass
class Send:
    index: int
    body: str
    status: int
    bracket_id: str | None
    duplicate: bool | None
    message: str
    shares: tuple[str, ...] = ()  # a scale-out's brackets, one per share, as its answer named them


@dataclass
class SignalSend:
    index: int
    body: str
    status: int
    duplicate: bool | None
    brackets: list[dict[str, Any]]  # what the answer says was done: bracket_id, status, action
    message: str


@dataclass
class SoakResult:
    seed: int
    brackets: int
    alerts: int
    violations: list[dict[str, Any]]
    worst_unprotected_s: float
    wall_time_s: float
    faults_fired: dict[str, int]
    statuses: dict[str, int]
    unprotected_worst: list[dict[str, Any]]
    notes: list[str]
    counts: dict[str, Any]

    def violation_counts(self) -> dict[str, int]:
        return dict(Counter(v["check"] for v in self.violations))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["violation_counts"] = self.violation_counts()
        data["unprotected_goal_s"] = UNPROTECTED_GOAL_S
        return data


class Soak:
    def __init__(self, cfg: SoakConfig, say: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.say = say
        self.rng = random.Random(cfg.seed * 7919 + 1)
        self.stack: LocalStack | None = None
        self.chaos = CrashAfterBroker(cfg.crash_rate, seed=cfg.seed) if cfg.crash_rate > 0 else None
        self.sends: list[Send] = []
        self.bodies: dict[int, str] = {}
        self.signal_sends: list[SignalSend] = []  # exit signals: they open no bracket, so they are checked apart
        self.signal_bodies: dict[int, str] = {}
        self.reversing: dict[int, list[str]] = {}  # a reverse alert's index -> the brackets its answer said it closes
        self.client_errors: list[dict[str, Any]] = []
        self.actions: Counter[str] = Counter()
        self.hand_order_ids: set[str] = set()  # the trader's unrelated orders: not bracketflow's to match
        self.hand_deleted_gtts: set[int] = set()  # GTTs the trader deleted: the gap until re-protection is theirs
        self.resting: list[tuple[float, str]] = []  # (cancel at, order id)
        self.notes: list[str] = []
        self.http = requests.Session()
        self.started = 0.0
        self.killed: tuple[float, int, Any] | None = None  # (restart deadline, pid killed, its Child)

    # ---- plumbing ----

    @property
    def api(self) -> str:
        assert self.stack is not None
        return self.stack.api_url

    @property
    def broker(self) -> str:
        assert self.stack is not None and self.stack.paper_url is not None
        return self.stack.paper_url

    def _client(self, method: str, path: str, **kwargs: Any) -> requests.Response | None:
        """A request to the stack's API as a client makes it; any 5xx (or no answer) is kept for the report."""
        try:
            answer = self.http.request(method, f"{self.api}{path}", timeout=30, **kwargs)
        except requests.RequestException as exc:
            self.client_errors.append({"method": method, "path": path, "status": None, "error": type(exc).__name__})
            return None
        if answer.status_code >= 500:
            self.client_errors.append(
                {"method": method, "path": path, "status": answer.status_code, "body": answer.text[:300]}
            )
        return answer

    def _kite(self, method: str, path: str, **kwargs: Any) -> Any:
        """The trader's app on the broker's Kite API; None when the broker refused (the trader shrugs)."""
        try:
            answer = self.http.request(method, f"{self.broker}{path}", headers=KITE_HEADERS, timeout=10, **kwargs)
        except requests.RequestException:
            return None
        if answer.status_code != 200:
            return None
        return answer.json().get("data")

    def _paper(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, f"{self.broker}/_paper/{path}", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()["data"]

    def _ltp(self, symbol: str) -> Decimal | None:
        """The last price, as TradingView's {{close}} or the trader's screen has it: read past the storm (a chart
        keeps its price while the broker's API fails)."""
        key = f"NSE:{symbol}"
        try:
            found = self.http.get(f"{self.broker}/_paper/quotes", params={"i": key}, timeout=30)
            found.raise_for_status()
            quote = found.json()["data"].get(key)
        except (requests.RequestException, ValueError):
            return None
        return Decimal(str(quote["ltp"])) if quote else None

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    # ---- lifecycle ----

    def stack_config(self) -> StackConfig:
        cfg = self.cfg
        return StackConfig(
            api_port=0,
            moto_port=0,
            paper_port=0,
            local_api_key=SOAK_API_KEY,
            cron_every_s=cfg.reconcile_every_s,
            crash_after_broker=self.chaos,
            paper_postbacks=True,  # as with Kite: order updates on the ticker and as postbacks
            extra_env={
                "PAPER_MARKET": "walk",
                "PAPER_SEED": str(cfg.seed),
                "PAPER_WALK_STEP_BPS": str(cfg.walk_step_bps),
                "RECONCILE_EVERY_S": str(cfg.reconcile_every_s),
                # One trader, many brackets: the account's limits are not what this soak tests.
                "DEFAULT_MAX_OPEN_BRACKETS": "100000",
                "DEFAULT_DAILY_LOSS_LIMIT": "1000000000",
                "PLACEMENT_RATE_LIMIT_PER_SECOND": "50",
                "POWERTOOLS_METRICS_DISABLED": "true",
            },
        )

    def run(self) -> SoakResult:
        started_wall = time.monotonic()
        plan = make_plan(self.cfg)
        stack = self.stack = LocalStack(self.stack_config())
        if self.chaos is not None:
            self.chaos.rate = 0  # no deaths while the stack comes up
        stack.start()
        try:
            if not stack.dev_account_seeded:
                raise RuntimeError("the soak's account could not be seeded (see the stack's log)")
            fault_rules, unaimed = self._fault_rules()
            self._paper("POST", "faults", {"rules": fault_rules})
            if unaimed:
                self.notes.append(f"fault kinds run unaimed at rate {DEFAULT_FAULT_RATE}: {', '.join(unaimed)}")
            if self.chaos is not None:
                self.chaos.rate = self.cfg.crash_rate
            self.say(
                f"soak seed {self.cfg.seed}: {self.cfg.brackets} alerts over ~{plan[-1].at:.0f} s, "
                f"{len(plan)} planned steps, faults: {', '.join(sorted({r['kind'] for r in fault_rules}))}"
            )
            self._play(plan)
            faults_fired = self._stop_the_storm()
            self._settle()
            result = self._check(faults_fired, time.monotonic() - started_wall)
        finally:
            stack.stop()
        result.wall_time_s = round(time.monotonic() - started_wall, 1)
        return result

    def _fault_rules(self) -> tuple[list[dict[str, Any]], list[str]]:
        from paper.faults import KINDS

        rules: list[dict[str, Any]] = []
        unaimed = []
        for kind in KINDS:
            aimed = FAULT_PLAN.get(kind)
            if aimed is None:
                unaimed.append(kind)
                aimed = [{"rate": DEFAULT_FAULT_RATE}]
            for rule in aimed:
                rate = min(rule["rate"] * self.cfg.fault_scale, 1.0)
                if rate > 0:
                    rules.append({**rule, "kind": kind, "rate": rate, "count": FAULT_COUNT})
        return rules, unaimed

    def _play(self, plan: list[Step]) -> None:
        self.started = time.monotonic()
        next_progress = self.cfg.progress_every_s
        for step in plan:
            while True:
                now = self._elapsed()
                self._cancel_due_resting(now)
                self._restart_check()
                if now >= next_progress:
                    self._progress()
                    next_progress += self.cfg.progress_every_s
                if now >= step.at:
                    break
                time.sleep(min(step.at - now, 0.25))
            getattr(self, f"_do_{step.kind}")(step)

    def _progress(self) -> None:
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        open_now = Counter(b.status.value for b in BracketRepository().list_open())
        sent = len({s.index for s in self.sends})
        self.say(
            f"  {self._elapsed():6.0f} s: {sent} alerts sent, open {dict(open_now)}, "
            f"actions {dict(self.actions)}, client 5xx {len(self.client_errors)}"
        )

    # ---- steps ----

    def _do_alert(self, step: Step) -> None:
        alert = dict(step.data["alert"])
        symbol = alert["symbol"].split(":", 1)[1]
        ltp = self._ltp(symbol)
        if ltp is None:
            self.notes.append(f"alert {step.data['index']} not sent: no price for {symbol}")
            return
        tick = Decimal("0.05")
        away = tick * step.data["offset_ticks"]
        # A positive offset rests (below the market for a buy, above for a sell); a negative one crosses.
        price = ltp - away if alert["action"] == "buy" else ltp + away
        alert["entry_price"] = str((price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick)
        if BREAKEVEN_WAY in alert:
            alert["breakeven_at"] = breakeven_price(alert, Decimal(alert["entry_price"]), tick)
            del alert[BREAKEVEN_WAY]
            self.actions["breakeven_at"] += 1
        alert["apikey"] = SOAK_API_KEY
        body = json.dumps(alert)
        self.bodies[step.data["index"]] = body
        self._send(step.data["index"], body)
        self.actions["reverse" if alert.get("reverse") else "alert"] += 1
        if "targets" in alert:
            self.actions["scale_out"] += 1

    def _do_resend(self, step: Step) -> None:
        body = self.bodies.get(step.data["index"])
        if body is not None:
            self._send(step.data["index"], body)
            self.actions["resend"] += 1

    def _send(self, index: int, body: str) -> None:
        answer = self._client("POST", "/tradingview/webhook/bracket", data=body, headers={"Content-Type": "text/plain"})
        if answer is None:
            self.sends.append(Send(index, body, 0, None, None, "no answer"))
            return
        try:
            payload = answer.json()
        except ValueError:
            payload = {}
        if payload.get("reverse_of"):
            self.reversing.setdefault(index, list(payload["reverse_of"]))
        self.sends.append(
            Send(
                index,
                body,
                answer.status_code,
                payload.get("bracket_id"),
                payload.get("duplicate"),
                str(payload.get("message") or "")[:200],
                tuple(str(s.get("bracket_id")) for s in payload.get("shares") or ()),
            )
        )

    def _do_signal(self, step: Step) -> None:
        body = json.dumps({**step.data["signal"], "apikey": SOAK_API_KEY})
        self.signal_bodies[step.data["index"]] = body
        self._send_signal(step.data["index"], body)
        self.actions["closeall" if step.data["signal"]["action"] == "closeall" else "exit_signal"] += 1

    def _do_signal_resend(self, step: Step) -> None:
        body = self.signal_bodies.get(step.data["index"])
        if body is not None:
            self._send_signal(step.data["index"], body)
            self.actions["signal_resend"] += 1

    def _send_signal(self, index: int, body: str) -> None:
        answer = self._client("POST", "/tradingview/webhook/bracket", data=body, headers={"Content-Type": "text/plain"})
        try:
            payload = answer.json() if answer is not None else {}
        except ValueError:
            payload = {}
        self.signal_sends.append(
            SignalSend(
                index,
                body,
                0 if answer is None else answer.status_code,
                payload.get("duplicate"),
                list(payload.get("brackets") or []),
                str(payload.get("message") or ("no answer" if answer is None else ""))[:200],
            )
        )

    def _do_delete(self, step: Step) -> None:
        ids = {s.bracket_id for s in self.sends if s.index == step.data["index"] and s.bracket_id}
        for bracket_id in sorted(ids):
            self._client("DELETE", f"/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": SOAK_API_KEY})
            self.actions["trader_delete"] += 1

    def _do_kill_streamer(self, step: Step) -> None:
        assert self.stack is not None
        child = next((c for c in self.stack.children if c.spec.name == "streamer" and c.alive), None)
        if child is None or child.proc is None:
            self.notes.append(f"{self._elapsed():.0f} s: no live streamer to kill")
            return
        old_pid = child.proc.pid
        os.kill(old_pid, signal.SIGKILL)
        child.proc.wait(10)
        self.actions["streamer_kill"] += 1
        self.killed = (time.monotonic() + RESTART_GRACE_S, old_pid, child)

    def _restart_check(self) -> None:
        """Given RESTART_GRACE_S, did the stack bring the streamer back? If not, the soak does what a supervisor
        would, from this thread (the stack's main thread: children die with the thread that started them)."""
        if self.killed is None:
            return
        deadline, old_pid, child = self.killed
        if self._streamer_pid() not in (None, old_pid):
            self.actions["streamer_restarted_by_stack"] += 1
            self.killed = None
        elif time.monotonic() >= deadline:
            assert self.stack is not None
            if child in self.stack.children:
                self.stack.children.remove(child)
            self.stack._start_child(child.spec, self.stack.config.streamer_restart)
            self.actions["streamer_restarted_by_soak"] += 1
            self.killed = None

    def _streamer_pid(self) -> int | None:
        assert self.stack is not None
        for c in self.stack.children:
            if c.spec.name == "streamer" and c.alive and c.proc is not None:
                return c.proc.pid
        return None

    def _do_hand(self, step: Step) -> None:
        action = step.data["action"]
        done = getattr(self, f"_hand_{action}")()
        self.actions[f"hand_{action}" if done else f"hand_{action}_skipped"] += 1

    def _calm_targets(self) -> list[Any]:
        """Open PROTECTED brackets whose price is well inside their stop and target (so no exit is near: a hand
        action there is the trader's, not a race with bracketflow's own exit)."""
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        calm = []
        for b in sorted(BracketRepository().list_open(), key=lambda b: b.id):
            if b.status.value != "PROTECTED":
                continue
            ltp = self._ltp(b.spec.symbol)
            if ltp is None:
                continue
            # The stored stop may trail the streamer's by a couple of seconds: keep well clear of it.
            margin = ltp * Decimal("0.003")
            if abs(ltp - b.stop_price) > margin and abs(b.spec.target_price - ltp) > margin:
                calm.append(b)
        return calm

    def _hand_order(self, params: dict[str, str]) -> dict[str, Any] | None:
        """Place an untagged order as the trader's app would; when the answer is lost or an error, look for it (the
        broker may have placed it anyway). {"order_id", "status"} as the broker's timeline last shows it, or None."""
        marker = self._paper("GET", "timeline?since=1000000000")["next"]
        placed = self._kite("POST", "/orders/regular", data=params)
        events = self._paper("GET", f"timeline?since={marker}")["events"]
        mine = [e for e in events if e["event"] == "order" and not e.get("tag")]
        if placed is not None:
            order_id = str(placed["order_id"])
        else:
            match = [
                e
                for e in mine
                if all(str(e[k]) == params[k] for k in ("tradingsymbol", "transaction_type", "product", "order_type"))
                and int(e["quantity"]) == int(params["quantity"])
            ]
            if not match:
                return None
            order_id = match[0]["order_id"]
        statuses = [e["status"] for e in mine if e["order_id"] == order_id]
        return {"order_id": order_id, "status": statuses[-1] if statuses else "OPEN"}

    def _hand_close_position(self) -> bool:
        """Exit a whole position (symbol and product) as the Kite app's Positions -> Exit does, if every bracket on
        it is calm and nothing of bracketflow's is working there."""
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        open_brackets = BracketRepository().list_open()
        calm = {(b.spec.symbol, b.spec.product.value) for b in self._calm_targets()}
        busy = {(b.spec.symbol, b.spec.product.value) for b in open_brackets if b.status.value != "PROTECTED"}
        candidates = sorted(calm - busy)
        if not candidates:
            return False
        symbol, product = self.rng.choice(candidates)
        # every bracket on it must be calm, not just one
        on_it = [b for b in open_brackets if (b.spec.symbol, b.spec.product.value) == (symbol, product)]
        calm_ids = {b.id for b in self._calm_targets()}
        if any(b.id not in calm_ids for b in on_it):
            return False
        positions = self._kite("GET", "/portfolio/positions") or {"net": []}
        net = sum(
            int(p["quantity"])
            for p in positions["net"]
            if p["tradingsymbol"] == symbol and p["product"] == product and p["exchange"] == "NSE"
        )
        if net == 0:
            return False
        placed = self._hand_order(
            {
                "exchange": "NSE",
                "tradingsymbol": symbol,
                "transaction_type": "SELL" if net > 0 else "BUY",
                "quantity": str(abs(net)),
                "product": product,
                "order_type": "MARKET",
                "market_protection": "5",
            }
        )
        return placed is not None and placed["status"] != "REJECTED"

    def _hand_delete_gtt(self) -> bool:
        calm = [b for b in self._calm_targets() if b.gtt_id]
        if not calm:
            return False
        target = self.rng.choice(calm)
        self.hand_deleted_gtts.add(int(target.gtt_id))  # even unanswered: the broker may have deleted it
        return self._kite("DELETE", f"/gtt/triggers/{target.gtt_id}") is not None

    def _hand_round_trip(self) -> bool:
        """The trader's own quick trade on a symbol a bracket holds, matching that bracket's exit exactly (side,
        product, quantity), untagged, bought and sold back at once: not bracketflow's to act on."""
        calm = self._calm_targets()
        if not calm:
            return False
        b = self.rng.choice(calm)
        exit_side = "SELL" if b.spec.action.value == "BUY" else "BUY"
        back = "BUY" if exit_side == "SELL" else "SELL"
        params = {
            "exchange": "NSE",
            "tradingsymbol": b.spec.symbol,
            "quantity": str(b.filled_quantity or b.spec.quantity),
            "product": b.spec.product.value,
            "order_type": "MARKET",
            "market_protection": "5",
        }
        first = self._hand_order({**params, "transaction_type": exit_side})
        if first is None:
            return False
        self.hand_order_ids.add(first["order_id"])
        if first["status"] == "REJECTED":
            return False
        # Back out at once; a refused leg is tried again, as the trader would, so no position of theirs is left.
        for _attempt in range(20):
            second = self._hand_order({**params, "transaction_type": back})
            if second is not None:
                self.hand_order_ids.add(second["order_id"])
                if second["status"] != "REJECTED":
                    return True
            time.sleep(0.3)
        self.notes.append(f"a hand round trip on {b.spec.symbol} {b.spec.product.value} could not be closed")
        return True

    def _hand_resting_order(self) -> bool:
        """An untagged LIMIT 5% away from the market on a traded symbol, cancelled by hand 10 to 40 s later."""
        symbol = self.rng.choice(self.cfg.symbols)
        ltp = self._ltp(symbol)
        if ltp is None:
            return False
        side = self.rng.choice(("BUY", "SELL"))
        price = ltp * (Decimal("0.95") if side == "BUY" else Decimal("1.05"))
        price = (price / Decimal("0.05")).quantize(Decimal(1)) * Decimal("0.05")
        placed = self._hand_order(
            {
                "exchange": "NSE",
                "tradingsymbol": symbol,
                "transaction_type": side,
                "quantity": str(self.rng.randint(1, 5)),
                "product": self.rng.choice(("MIS", "CNC")),
                "order_type": "LIMIT",
                "price": str(price),
            }
        )
        if placed is None:
            return False
        self.hand_order_ids.add(str(placed["order_id"]))
        self.resting.append((self._elapsed() + self.rng.uniform(10, 40), str(placed["order_id"])))
        return True

    def _cancel_due_resting(self, now: float, everything: bool = False) -> None:
        due = [r for r in self.resting if everything or r[0] <= now]
        self.resting = [r for r in self.resting if r not in due]
        for _, order_id in due:
            for _attempt in range(5):  # the storm may still be refusing calls; the trader tries again
                if self._kite("DELETE", f"/orders/regular/{order_id}") is not None:
                    break
                history = self._kite("GET", f"/orders/{order_id}")
                if history and history[-1]["status"] not in LIVE_ORDER:
                    break
                time.sleep(0.2)

    # ---- quiet ----

    def _stop_the_storm(self) -> dict[str, int]:
        """Faults off, Lambdas stop dying, the trader's hands off, the market holds still."""
        if self.chaos is not None:
            self.chaos.rate = 0
        while self.killed is not None:
            self._restart_check()
            time.sleep(0.2)
        rules = self._paper("GET", "faults")["rules"]
        fired: Counter[str] = Counter()
        for rule in rules:
            fired[rule["kind"]] += int(rule["fired"])
        self._paper("POST", "faults", {"rules": []})
        self._paper("POST", "config", {"market": "manual"})
        self._cancel_due_resting(0, everything=True)
        if self._streamer_pid() is None:
            self.notes.append("the streamer was not running when the storm stopped")
        if self.actions["streamer_restarted_by_soak"]:
            self.notes.append(
                f"the stack did not bring a killed streamer back within {RESTART_GRACE_S:.0f} s "
                f"({self.actions['streamer_restarted_by_soak']} time(s)): the soak restarted it, as a supervisor would"
            )
        if self.chaos is not None:
            for function, n in sorted(self.chaos.fired.items()):
                fired[f"lambda_died:{function}"] += n
        for name in ("resend", "trader_delete", "streamer_kill"):
            fired[name] = self.actions[name]
        for name, n in self.actions.items():
            if name.startswith("hand_") and not name.endswith("_skipped"):
                fired[name] = n
        return dict(fired)

    def _fingerprint(self) -> tuple[Any, ...]:
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        open_brackets = tuple(sorted((b.id, b.version) for b in BracketRepository().list_open()))
        timeline = self._paper("GET", "timeline?since=0")["next"]
        return open_brackets, timeline

    def _reconcile_runs_since(self, since: datetime) -> int:
        assert self.stack is not None
        sfn = self.stack.client("stepfunctions")
        arn = self.stack.state_machine_arn("ReconcileStateMachine")
        runs = sfn.list_executions(stateMachineArn=arn, statusFilter="SUCCEEDED")["executions"]
        return sum(1 for r in runs if r["startDate"] >= since)

    def _queued(self, dead_letters: bool = False) -> dict[str, int]:
        """Messages (visible or in flight) on the stack's queues: the work still to do, or (dead_letters) given up."""
        assert self.stack is not None and self.stack.template is not None
        sqs = self.stack.client("sqs")
        found = {}
        for logical_id, queue in self.stack.template.queues.items():
            if ("DeadLetter" in logical_id) != dead_letters:
                continue
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue.url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            found[logical_id] = int(attrs["ApproximateNumberOfMessages"]) + int(
                attrs["ApproximateNumberOfMessagesNotVisible"]
            )
        return found

    def _settle(self) -> None:
        """Wait, bounded, until nothing changes for quiet_for_s, no queue holds work (a message waiting out its
        visibility timeout is work still to come) and reconciliation has run twice since the storm."""
        quiet_since = datetime.now(UTC)
        deadline = time.monotonic() + self.cfg.settle_max_s
        last = self._fingerprint()
        unchanged_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(2)
            now = self._fingerprint()
            if now != last:
                last, unchanged_since = now, time.monotonic()
                continue
            if (
                time.monotonic() - unchanged_since >= self.cfg.quiet_for_s
                and self._reconcile_runs_since(quiet_since) >= 2
            ):
                self.say(f"  settled {self.cfg.settle_max_s - (deadline - time.monotonic()):.0f} s after the storm")
                return
        queued = {k: v for k, v in self._queued().items() if v}
        self.notes.append(
            f"not settled {self.cfg.settle_max_s:.0f} s after the storm stopped (checked anyway); queued: {queued}"
        )
        self.say(self.notes[-1])

    # ---- checks ----

    def _check(self, faults_fired: dict[str, int], wall: float) -> SoakResult:  # noqa: C901, PLR0912, PLR0915 - every promise checked over one snapshot of the books
        from bracketflow.adapters.dynamo.brackets import BracketRepository
        from bracketflow.domain.ids import bracket_ref

        assert self.stack is not None
        repo = BracketRepository()
        brackets = repo.order_book("local", limit=100_000)
        by_id = {b.id: b for b in brackets}
        state = self._paper("GET", "state")
        timeline = self._paper("GET", "timeline?since=0")["events"]
        violations: list[dict[str, Any]] = []

        def violation(check: str, detail: str, **where: Any) -> None:
            violations.append({"check": check, **where, "detail": detail})

        # one bracket per distinct alert
        per_alert: dict[int, set[str]] = defaultdict(set)
        for send in self.sends:
            if send.bracket_id:
                per_alert[send.index].add(send.bracket_id)
        for index, ids in sorted(per_alert.items()):
            if len(ids) > 1:
                violation("one_bracket_per_alert", f"alert {index} made {len(ids)} brackets: {sorted(ids)}")
        for index in sorted({s.index for s in self.sends}):
            firsts = [s for s in self.sends if s.index == index]
            if firsts and any(s.status == 200 and s.duplicate is False for s in firsts[1:]):
                violation("one_bracket_per_alert", f"a resend of alert {index} was not answered as a duplicate")
            shares = {s.shares for s in firsts if s.shares}
            if len(shares) > 1:
                violation("one_bracket_per_alert", f"scale-out alert {index} was answered with other shares: {shares}")
        answered = set().union(*per_alert.values(), *(s.shares for s in self.sends)) if per_alert else set()
        for extra in sorted(set(by_id) - answered):
            violation("one_bracket_per_alert", "a bracket no alert's answer named", bracket_id=extra)

        # no order placed twice (by tag), from the broker's timeline
        ref_to_bracket = {bracket_ref(b): b for b in by_id}
        first_seen: dict[str, float] = {}
        final_at: dict[str, float] = {}
        for e in timeline:
            if e["event"] != "order":
                continue
            first_seen.setdefault(e["order_id"], e["t"])
            if e["status"] not in LIVE_ORDER and e["order_id"] not in final_at:
                final_at[e["order_id"]] = e["t"]
        orders = {o["order_id"]: o for o in state["orders"]}
        by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for o in orders.values():
            if o.get("tag"):
                by_tag[o["tag"]].append(o)
        for tag, group in sorted(by_tag.items()):
            owner = ref_to_bracket.get(tag[:-1])
            if owner is None:
                violation(
                    "order_placed_twice", f"an order tagged {tag} that no bracket owns", order_id=group[0]["order_id"]
                )
                continue
            group.sort(key=lambda o: first_seen.get(o["order_id"], 0))
            for earlier_i, later in enumerate(group[1:], start=1):
                placed = first_seen.get(later["order_id"], 0)
                for earlier in group[:earlier_i]:
                    ended = final_at.get(earlier["order_id"])
                    still_working = ended is None or ended > placed
                    if earlier["status"] == "REJECTED":
                        continue
                    if still_working or earlier["status"] == "COMPLETE":
                        violation(
                            "order_placed_twice",
                            f"{tag} ({_role(tag)}) placed again as {later['order_id']} while {earlier['order_id']} "
                            f"was {'working' if still_working else 'filled'}",
                            bracket_id=owner,
                        )
                        break

        # positions: broker net (less the trader's unrelated orders) vs what bracketflow says is open
        hand_net: Counter[tuple[str, str]] = Counter()
        for order_id in self.hand_order_ids:
            o = orders.get(order_id)
            if o is not None and o["filled_quantity"]:
                sign = 1 if o["transaction_type"] == "BUY" else -1
                hand_net[(o["tradingsymbol"], o["product"])] += sign * int(o["filled_quantity"])
        broker_net: Counter[tuple[str, str]] = Counter()
        for p in state["positions"]:
            broker_net[(p["tradingsymbol"], p["product"])] += int(p["quantity"])
        ours: Counter[tuple[str, str]] = Counter()
        open_qty: dict[str, int] = {}
        for b in brackets:
            if b.status.value in FINISHED:
                continue
            qty = b.filled_quantity - (b.exit.filled_quantity if b.exit is not None else 0)
            open_qty[b.id] = qty
            sign = 1 if b.spec.action.value == "BUY" else -1
            ours[(b.spec.symbol, b.spec.product.value)] += sign * qty
        for key in sorted(set(broker_net) | set(ours)):
            at_broker = broker_net[key] - hand_net[key]
            if at_broker != ours[key]:
                holders = sorted(
                    b.id for b in brackets if (b.spec.symbol, b.spec.product.value) == key and b.id in open_qty
                )
                violation(
                    "position_mismatch",
                    f"broker net {at_broker:+d}, bracketflow open {ours[key]:+d} (open brackets: {holders or 'none'})",
                    symbol=key[0],
                    product=key[1],
                )

        # GTTs: exactly one live GTT per open position, none without an open bracket
        active = {str(g["id"]): g for g in state["gtts"] if g["status"] == "active"}
        owner_of_gtt = {b.gtt_id: b for b in brackets if b.gtt_id}
        for b in brackets:
            qty = open_qty.get(b.id, 0)
            if b.id not in open_qty or qty == 0:
                continue
            gtt = active.get(str(b.gtt_id)) if b.gtt_id else None
            if gtt is None:
                violation(
                    "gtt_mismatch",
                    f"{b.status.value} with {qty} open and no live GTT (its gtt_id {b.gtt_id})",
                    bracket_id=b.id,
                )
            elif any(int(leg["quantity"]) != qty for leg in gtt["orders"]):
                legs = [int(leg["quantity"]) for leg in gtt["orders"]]
                violation("gtt_mismatch", f"GTT {b.gtt_id} legs {legs} for an open {qty}", bracket_id=b.id)
        for gtt_id, g in sorted(active.items()):
            holder = owner_of_gtt.get(gtt_id)
            if holder is not None and holder.id in open_qty and open_qty[holder.id] != 0:
                continue
            cond = g["condition"]
            gtt_legs = [(leg["transaction_type"], int(leg["quantity"]), leg["product"]) for leg in g["orders"]]
            why = (
                f"its bracket {holder.id} is {holder.status.value}"
                if holder is not None
                else "no bracket records it (a second GTT for one bracket, or one left behind)"
            )
            violation(
                "orphan_gtt",
                f"live GTT {gtt_id} on {cond['tradingsymbol']} {gtt_legs}: {why}",
                gtt_id=gtt_id,
                **({"bracket_id": holder.id} if holder is not None else {}),
            )

        # statuses
        for b in brackets:
            status = b.status.value
            if status in TRANSIENT:
                violation("transient_status", f"left {status}", bracket_id=b.id)
            elif status == "ENTRY_PENDING":
                entry = orders.get(str(b.entry.broker_order_id)) if b.entry.broker_order_id else None
                if entry is None or entry["status"] not in LIVE_ORDER:
                    seen = entry["status"] if entry else "not at the broker"
                    violation("transient_status", f"ENTRY_PENDING, its entry order {seen}", bracket_id=b.id)
            elif status == "NEEDS_REVIEW":
                flagged = [e for e in repo.events(b.id) if e.get("type") == "FlaggedForReview"]
                if not flagged or not str(flagged[-1].get("reason") or "").strip():
                    violation("review_unexplained", "NEEDS_REVIEW with no FlaggedForReview reason", bracket_id=b.id)

        # exit signals: acted on once each
        for check, detail in signal_findings(self.signal_sends):
            violation(check, detail)

        # no 5xx to a client
        for err in self.client_errors:
            violation(
                "server_error",
                f"{err['method']} {err['path']} -> {err.get('status')}: {err.get('body') or err.get('error')}",
            )

        gaps = unprotected_intervals(timeline, self.hand_order_ids, self.hand_deleted_gtts)
        worst = [g for g in gaps if not g.get("trader_deleted_gtt")]
        after_hand = [g for g in gaps if g.get("trader_deleted_gtt")]
        worst_s = round(worst[0]["seconds"], 3) if worst else 0.0
        for interval in worst:
            if interval["seconds"] > UNPROTECTED_GOAL_S:
                violation(
                    "unprotected_too_long",
                    f"{interval['quantity']} unprotected for {interval['seconds']:.1f} s from {interval['from']}",
                    symbol=interval["symbol"],
                    product=interval["product"],
                )

        statuses = Counter(b.status.value for b in brackets)
        counts = {
            "alerts_sent": len({s.index for s in self.sends}),
            "sends": len(self.sends),
            "answers": dict(Counter(s.status for s in self.sends)),
            "actions": dict(self.actions),
            "orders_at_broker": len(orders),
            "gtts_at_broker": len(state["gtts"]),
            "timeline_events": len(timeline),
            "needs_review_reasons": _review_reasons(repo, [b for b in brackets if b.status.value == "NEEDS_REVIEW"]),
            "dead_letters": {k: v for k, v in self._queued(dead_letters=True).items() if v},
            # The trader took the stop away: how long until reconciliation put one back (not counted above).
            "unprotected_after_trader_deleted_gtt_s": [g["seconds"] for g in after_hand],
            **signal_counts(self.signal_sends, self.reversing, brackets),
            "scale_out": scale_out_counts(repo, brackets),
            "breakeven_at": breakeven_at_counts(repo, brackets),
        }
        if self.cfg.details_path is not None:
            details = {
                "timeline": timeline,
                "orders": state["orders"],
                "gtts": state["gtts"],
                "hand_order_ids": sorted(self.hand_order_ids),
                "sends": [asdict(s) for s in self.sends],
                "signal_sends": [asdict(s) for s in self.signal_sends],
                "brackets": [{**b.to_dict(), "events": repo.events(b.id)} for b in brackets],
            }
            self.cfg.details_path.write_text(json.dumps(details, default=str))
        return SoakResult(
            seed=self.cfg.seed,
            brackets=len(brackets),
            alerts=len({s.index for s in self.sends}),
            violations=violations,
            worst_unprotected_s=worst_s,
            wall_time_s=round(wall, 1),
            faults_fired=faults_fired,
            statuses=dict(statuses),
            unprotected_worst=worst[:10],
            notes=self.notes,
            counts=counts,
        )


def signal_findings(sends: list[SignalSend]) -> list[tuple[str, str]]:
    """one_action_per_signal: each exit signal answered 200 (a 5xx is server_error's), each resend as a duplicate."""
    found = []
    by_index: dict[int, list[SignalSend]] = defaultdict(list)
    for send in sends:
        by_index[send.index].append(send)
    for index, group in sorted(by_index.items()):
        first = group[0]
        if 400 <= first.status < 500 and first.status != 429:
            found.append(("one_action_per_signal", f"signal {index} refused {first.status}: {first.message}"))
        acted = first.status == 200
        for later in group[1:]:
            if acted and later.status == 200 and later.duplicate is not True:
                found.append(("one_action_per_signal", f"a resend of signal {index} acted again: {later.brackets}"))
            acted = acted or later.status == 200
    return found


def signal_counts(sends: list[SignalSend], reversing: dict[int, list[str]], brackets: list[Any]) -> dict[str, Any]:
    """What the signals did: per first answer, what was done to the brackets they named; how many reverse alerts
    found a bracket to close; and how every closed bracket ended (reason SIGNAL among the others)."""
    firsts: dict[int, SignalSend] = {}
    for send in sends:
        firsts.setdefault(send.index, send)
    done = Counter(b["action"] for s in firsts.values() for b in s.brackets)
    return {
        "signals": {
            "sent": len(firsts),
            "answers": dict(Counter(s.status for s in sends)),
            "matched_nothing": sum(1 for s in firsts.values() if s.status == 200 and not s.brackets),
            "bracket_actions": dict(done),
        },
        "reverses_that_closed_a_bracket": len(reversing),
        "exit_reasons": dict(Counter(b.exit_reason.value for b in brackets if b.exit_reason is not None)),
    }


def scale_out_counts(repo: Any, brackets: list[Any]) -> dict[str, Any]:
    """What the scale-out alerts became: their shares, how each ended, and the breakeven stops set (each one tighter
    than the stop it replaced, or the ratchet broke)."""
    shares = [b for b in brackets if b.group]
    moves = [(b, e) for b in shares for e in repo.events(b.id) if e["type"] == "BreakevenStopSet"]
    long = {b.id: b.spec.action.value == "BUY" for b in shares}
    loosened = [e for b, e in moves if (Decimal(e["new_stop"]) <= Decimal(e["old_stop"])) == long[b.id]]
    return {
        "alerts": len({b.group[0] for b in shares}),
        "shares": len(shares),
        "exit_reasons": dict(Counter(b.exit_reason.value for b in shares if b.exit_reason is not None)),
        "breakeven_stops_set": len(moves),
        "breakeven_stops_loosened": len(loosened),
    }


def breakeven_at_counts(repo: Any, brackets: list[Any]) -> dict[str, Any]:
    """What the price-breakeven alerts became: how each ended, the breakeven stops the streamer set (each one tighter
    than the stop it replaced, or the ratchet broke) and any bracket whose breakeven was set twice."""
    priced = [b for b in brackets if b.spec.breakeven_at is not None]
    moves = [(b, e) for b in priced for e in repo.events(b.id) if e["type"] == "BreakevenStopSet"]
    loosened = [
        e for b, e in moves if (Decimal(e["new_stop"]) <= Decimal(e["old_stop"])) == (b.spec.action.value == "BUY")
    ]
    return {
        "brackets": len(priced),
        "exit_reasons": dict(Counter(b.exit_reason.value for b in priced if b.exit_reason is not None)),
        "breakeven_stops_set": len(moves),
        "breakeven_stops_loosened": len(loosened),
        "set_twice": sum(1 for n in Counter(b.id for b, _ in moves).values() if n > 1),
    }


def _role(tag: str) -> str:
    return {"E": "entry", "X": "exit", "S": "stop", "T": "target"}.get(tag[-1:], "?")


def _review_reasons(repo: Any, brackets: list[Any]) -> dict[str, int]:
    reasons: Counter[str] = Counter()
    for b in brackets:
        flagged = [e for e in repo.events(b.id) if e.get("type") == "FlaggedForReview"]
        reason = str(flagged[-1].get("reason") or "") if flagged else "(none)"
        reasons[reason.split(":")[0][:80]] += 1
    return dict(reasons.most_common())


def unprotected_intervals(  # noqa: C901, PLR0915 - one sweep over the broker's timeline
    timeline: list[dict[str, Any]], ignore_orders: set[str], trader_deleted: set[int] | None = None
) -> list[dict[str, Any]]:
    """From the broker's timeline alone: per symbol and product, the stretches when some filled quantity had
    neither a live GTT leg nor a working flattening order (an exit-tagged order, a GTT's child, or any untagged
    order that reduces the position) covering it. Longest first; one still open at the end runs to the last event.

    Orders in `ignore_orders` (the trader's own unrelated trades) are left out of the position and the cover; a
    stretch that began when the trader deleted a GTT (`trader_deleted`) is marked `trader_deleted_gtt`."""
    trader_deleted = trader_deleted or set()
    net: Counter[tuple[str, str]] = Counter()
    gtts: dict[int, tuple[tuple[str, str], list[tuple[str, int]]]] = {}
    working: dict[str, tuple[tuple[str, str], str, int, bool]] = {}  # order -> (key, side, pending, flattening)
    filled: dict[str, int] = {}
    children: set[str] = set()
    open_since: dict[tuple[str, str], tuple[float, int]] = {}
    hand_made: set[tuple[str, str]] = set()  # open stretches that the trader's GTT deletion began
    intervals: list[dict[str, Any]] = []
    last_t = timeline[-1]["t"] if timeline else 0.0

    def uncovered(key: tuple[str, str]) -> int:
        n = net[key]
        if n == 0:
            return 0
        closing = "SELL" if n > 0 else "BUY"
        cover = 0
        for gkey, legs in gtts.values():
            if gkey == key:
                cover += max((q for side, q in legs if side == closing), default=0)
        for wkey, side, pending, flattening in working.values():
            if wkey == key and side == closing and flattening:
                cover += pending
        return max(abs(n) - cover, 0)

    def settle(key: tuple[str, str], t: float, by_trader: bool = False) -> None:
        gap = uncovered(key)
        if gap > 0 and key not in open_since:
            open_since[key] = (t, gap)
            if by_trader:
                hand_made.add(key)
        elif gap > 0:
            since, most = open_since[key]
            open_since[key] = (since, max(most, gap))
        elif gap == 0 and key in open_since:
            since, most = open_since.pop(key)
            if t > since:  # a fill and its cover in one instant left nothing naked
                intervals.append(_interval(key, since, t, most, key in hand_made))
            hand_made.discard(key)

    for e in timeline:
        t = e["t"]
        if e["event"] == "gtt":
            legs = e["legs"]
            product = legs[0]["product"] if legs else ""
            key = (e["tradingsymbol"], product)
            if e["status"] == "active":
                gtts[e["id"]] = (key, [(leg["transaction_type"], int(leg["quantity"])) for leg in legs])
            else:
                gtts.pop(e["id"], None)
            if e.get("order_id"):
                children.add(str(e["order_id"]))
            settle(key, t, by_trader=e["change"] == "deleted" and int(e["id"]) in trader_deleted)
            continue
        order_id = e["order_id"]
        if order_id in ignore_orders:
            continue
        key = (e["tradingsymbol"], e["product"])
        delta = int(e["filled_quantity"]) - filled.get(order_id, 0)
        if delta:
            filled[order_id] = int(e["filled_quantity"])
            net[key] += delta if e["transaction_type"] == "BUY" else -delta
        tag = e.get("tag") or ""
        if e["status"] in LIVE_ORDER and int(e["pending_quantity"]) > 0:
            flattening = tag.endswith("X") or order_id in children or not tag
            working[order_id] = (key, e["transaction_type"], int(e["pending_quantity"]), flattening)
        else:
            working.pop(order_id, None)
        settle(key, t)
    for key, (since, most) in open_since.items():
        intervals.append({**_interval(key, since, last_t, most, key in hand_made), "still_open": True})
    intervals.sort(key=lambda i: -i["seconds"])
    return intervals


def _interval(key: tuple[str, str], since: float, until: float, quantity: int, by_trader: bool) -> dict[str, Any]:
    return {
        **({"trader_deleted_gtt": True} if by_trader else {}),
        "symbol": key[0],
        "product": key[1],
        "quantity": quantity,
        "seconds": round(until - since, 3),
        "from": datetime.fromtimestamp(since, UTC).isoformat(timespec="milliseconds"),
    }


# ---------- results ----------


def write_results(result: SoakResult, path: Path = RESULTS_PATH, readme: Path | None = README_PATH) -> None:
    from benchmarks.__main__ import machine

    record = {
        **result.as_dict(),
        "machine": machine(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if readme is not None and readme.is_file():
        text = readme.read_text()
        if README_BEGIN in text and README_END in text:
            head, rest = text.split(README_BEGIN, 1)
            _, tail = rest.split(README_END, 1)
            readme.write_text(head + README_BEGIN + "\n" + readme_table(record) + README_END + tail)


def readme_table(record: dict[str, Any]) -> str:
    faults = ", ".join(f"{k} {v}" for k, v in sorted(record["faults_fired"].items()) if v)
    by_check = ", ".join(f"{k} {v}" for k, v in sorted(record["violation_counts"].items())) or "none"
    rows = [
        ("brackets (distinct alerts)", f"{record['brackets']} ({record['alerts']})"),
        ("bracket statuses at the end", ", ".join(f"{k} {v}" for k, v in sorted(record["statuses"].items()))),
        ("faults fired, by kind", faults),
        ("violations", f"{len(record['violations'])} ({by_check})"),
        ("worst unprotected time", f"{record['worst_unprotected_s']:.1f} s (goal < {UNPROTECTED_GOAL_S:.0f} s)"),
        ("wall time", f"{record['wall_time_s']:.0f} s"),
        ("seed / machine", f"{record['seed']} / {record['machine']['cpu']}, {record['machine']['cores']} cores"),
        ("date", record["date"]),
    ]
    lines = ["| measure | result |", "| --- | --- |", *(f"| {k} | {v.replace('|', '/')} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def summary(result: SoakResult) -> str:
    lines = [
        f"soak seed {result.seed}: {result.brackets} brackets from {result.alerts} alerts "
        f"in {result.wall_time_s:.0f} s",
        f"  statuses: {result.statuses}",
        f"  faults fired: {result.faults_fired}",
        f"  worst unprotected: {result.worst_unprotected_s:.2f} s (goal < {UNPROTECTED_GOAL_S:.0f} s)",
        f"  violations: {len(result.violations)} {result.violation_counts()}",
        f"  scale-out: {result.counts.get('scale_out')}",
        f"  breakeven at a price: {result.counts.get('breakeven_at')}",
    ]
    lines += [f"    - {json.dumps(v, default=str)}" for v in result.violations[:60]]
    if len(result.violations) > 60:
        lines.append(f"    ... and {len(result.violations) - 60} more (see the results file)")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def quiet_app_logs() -> None:
    """The functions' own (Powertools, JSON) logs go to the stack's log file, not to the terminal.

    Powertools filters its logger's records out of the root's handlers (so Lambda does not print them twice), so
    propagating to the root would drop them: the app's logger writes to the root handlers' streams itself."""
    import bracketflow.observability  # noqa: F401 - builds the app's logger and its stdout handler

    app = logging.getLogger("bracketflow")
    json_lines = app.handlers[0].formatter if app.handlers else None  # Powertools' JSON, with the keys it appends
    for handler in list(app.handlers):
        app.removeHandler(handler)
    for root_handler in logging.getLogger().handlers:
        if isinstance(root_handler, logging.StreamHandler):
            handler = logging.StreamHandler(root_handler.stream)
            handler.setFormatter(json_lines or root_handler.formatter)
            app.addHandler(handler)
    app.propagate = False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m local.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--brackets", type=int, default=SoakConfig.brackets, help="distinct alerts (default 1000)")
    ap.add_argument("--seed", type=int, default=SoakConfig.seed)
    ap.add_argument("--alerts-per-s", type=float, default=SoakConfig.alerts_per_s)
    ap.add_argument("--out", type=Path, default=RESULTS_PATH, help="results file (README table too, if default)")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--log", type=Path, default=tmp / "bracketflow-soak.log")
    ap.add_argument("--details", type=Path, default=tmp / "bracketflow-soak-details.json")
    a = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        filename=str(a.log),
        filemode="w",
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_app_logs()
    print(f"the stack's log: {a.log}", flush=True)
    cfg = SoakConfig(brackets=a.brackets, seed=a.seed, alerts_per_s=a.alerts_per_s, details_path=a.details)
    result = Soak(cfg, say=lambda line: print(line, flush=True)).run()
    write_results(result, a.out, README_PATH if a.out == RESULTS_PATH else None)
    print(summary(result), flush=True)
    print(f"results: {a.out}; the broker's timeline and every bracket: {a.details}", flush=True)
    return 0 if not result.violations else 1


if __name__ == "__main__":
    sys.exit(main())
