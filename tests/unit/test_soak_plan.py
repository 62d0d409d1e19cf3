"""The soak's plan (local/soak/plan.py make_plan): a strategy's own signals mixed in among the alerts, from the seed."""

from __future__ import annotations

from local.soak.plan import SoakConfig, Step, make_plan

CFG = SoakConfig(brackets=400, seed=16)


def test_the_plan_is_the_seeds_and_the_signals_leave_the_alerts_as_they_were():
    plan = make_plan(CFG)
    assert [(s.at, s.kind, s.data) for s in plan] == [(s.at, s.kind, s.data) for s in make_plan(CFG)]
    without = make_plan(SoakConfig(brackets=400, seed=16, exit_rate=0, closeall_rate=0, reverse_rate=0))
    opening = [(s.at, s.data) for s in plan if s.kind == "alert" and s.data["index"] < CFG.brackets]
    assert opening == [(s.at, s.data) for s in without if s.kind == "alert"]


def test_exit_signals_name_an_earlier_alerts_strategy_and_symbol():
    plan = make_plan(CFG)
    alerts = {s.data["alert"]["strategy"]: s for s in plan if s.kind == "alert" and s.data["index"] < CFG.brackets}
    signals = [s for s in plan if s.kind == "signal"]
    actions = {s.data["signal"]["action"] for s in signals}
    assert {"exit", "close", "closelong", "closeshort", "closeall"} <= actions
    assert "buy" in actions or "sell" in actions  # a flat market position
    for s in signals:
        body = s.data["signal"]
        opened = alerts[body["strategy"]]
        assert opened.at < s.at
        if body["action"] == "closeall":
            assert set(body) == {"action", "strategy"}  # a strategy's, never the whole account's
        else:
            assert body["symbol"] == opened.data["alert"]["symbol"]
        if "market_position" in body:
            assert body["market_position"] == "flat"
    # each signal has its own index, and a resend only ever repeats a signal that was planned before it
    assert sorted(s.data["index"] for s in signals) == list(range(len(signals)))
    first = {s.data["index"]: s.at for s in signals}
    assert all(first[r.data["index"]] < r.at for r in plan if r.kind == "signal_resend")


def test_reverse_alerts_take_the_other_side_of_an_earlier_alerts_strategy_and_symbol():
    plan = make_plan(CFG)
    pairs = [s for s in plan if s.kind == "alert" and s.data["index"] >= CFG.brackets]
    by_index = {s.data["index"]: s for s in pairs}
    assert sorted(by_index) == list(range(CFG.brackets, CFG.brackets + len(pairs))) and len(pairs) % 2 == 0
    storm = {s.data["alert"]["symbol"] for s in plan if s.kind == "alert" and s.data["index"] < CFG.brackets}
    for index in range(CFG.brackets, CFG.brackets + len(pairs), 2):
        opened, reverse = by_index[index].data["alert"], by_index[index + 1].data["alert"]
        assert "reverse" not in opened and reverse["reverse"] is True
        assert by_index[index].at < by_index[index + 1].at
        assert (reverse["strategy"], reverse["symbol"]) == (opened["strategy"], opened["symbol"])
        assert {reverse["action"], opened["action"]} == {"buy", "sell"}
        # on a symbol of their own: the storm's other strategies hold no side there for the guard to refuse
        assert opened["symbol"] not in storm


def test_some_alerts_scale_out_with_shares_that_split_their_quantity():
    from decimal import Decimal

    from bracketflow.domain.bracket import ScaleTarget
    from bracketflow.domain.scale_out import share_quantities

    plan = make_plan(CFG)
    scaled = [s.data["alert"] for s in plan if s.kind == "alert" and "targets" in s.data["alert"]]
    assert 0 < len(scaled) < CFG.brackets // 5
    assert any("breakeven_after" in a for a in scaled) and any("breakeven_after" not in a for a in scaled)
    for alert in scaled:
        assert "target_percent" not in alert and 2 <= len(alert["targets"]) <= 3
        targets = tuple(
            ScaleTarget(Decimal(t["percent"]), Decimal(t["share"]) if "share" in t else None, t.get("quantity"))
            for t in alert["targets"]
        )
        # each share gets at least one unit of the quantity, and every unit is in one share
        quantities = share_quantities(int(alert["quantity"]), targets, 1)
        assert sum(quantities) == int(alert["quantity"]) and min(quantities) >= 1
        # further targets lie further out
        assert [t.price for t in targets] == sorted(t.price for t in targets)


def test_some_plain_alerts_carry_a_price_breakeven_part_of_the_way_to_their_target():
    from decimal import Decimal

    from bracketflow.domain.validation import validate_bracket
    from bracketflow.schemas.bracket import alert_to_spec
    from local.soak.plan import BREAKEVEN_WAY, breakeven_price

    plan = make_plan(CFG)
    priced = [s.data["alert"] for s in plan if s.kind == "alert" and BREAKEVEN_WAY in s.data["alert"]]
    assert 0 < len(priced) < CFG.brackets // 5
    assert not any("targets" in a or "breakeven_after" in a for a in priced)
    # the rest of the seed's plan is what it was without them
    without = make_plan(SoakConfig(brackets=400, seed=16, breakeven_at_rate=0))

    def plain(step: Step) -> tuple[float, str, str]:
        alert = step.data.get("alert")
        if alert is not None and BREAKEVEN_WAY in alert:
            alert = {k: v for k, v in alert.items() if k not in (BREAKEVEN_WAY, "breakeven_buffer")}
        return step.at, step.kind, repr({**step.data, "alert": alert} if alert is not None else step.data)

    assert [plain(s) for s in plan] == [plain(s) for s in without]
    for alert in priced:
        # made a price from the entry when sent, it is one the alert's own checks take: beyond the entry plus the
        # buffer, short of the target
        sent = {k: v for k, v in alert.items() if k != BREAKEVEN_WAY}
        sent |= {"entry_price": "1500.05", "breakeven_at": breakeven_price(alert, Decimal("1500.05"), Decimal("0.05"))}
        spec = validate_bracket(alert_to_spec(sent, "acct"), round_to_tick=True)
        assert spec.breakeven_at is not None and spec.breakeven_at % Decimal("0.05") == 0
