"""The instrument master shipped with bracketflow: Kite's CSV layout and token rules, a realistic universe."""

from __future__ import annotations

from decimal import Decimal as D

from bracketflow.domain.instruments import InstrumentMaster, default_master, instruments_csv_text, is_index_token
from paper import make_instruments


def test_the_committed_csv_is_what_the_generator_makes() -> None:
    # Given the generator, when it renders, then the committed file is identical (no hand edits drift).
    assert instruments_csv_text() == make_instruments.render()


def test_tokens_carry_the_segment_in_the_low_byte() -> None:
    master = default_master()
    for instrument in master:
        segment = instrument.instrument_token & 0xFF
        assert instrument.instrument_token >> 8 == instrument.exchange_token
        expected = {"INDICES": 9, "NSE": 1, "NFO-FUT": 2, "NFO-OPT": 2}[instrument.segment]
        assert segment == expected, instrument


def test_indices_are_segment_9_and_not_tradable() -> None:
    master = default_master()
    for name in ("NIFTY 50", "NIFTY BANK"):
        index = master.get("NSE", name)
        assert index is not None and index.is_index and not index.tradable
        assert is_index_token(index.instrument_token)
    assert not master.get("NSE", "INFY").is_index


def test_lookups_by_symbol_key_and_token_agree() -> None:
    master = default_master()
    infy = master.get("NSE", "INFY")
    assert infy is not None
    assert master.by_token(infy.instrument_token) is infy
    assert master.by_key("NSE:INFY") is infy and master.by_key("INFY") is infy
    assert master.get("nse", "infy") is infy
    assert master.get("NSE", "NOPE") is None and master.by_token(1) is None


def test_the_universe_has_equities_futures_and_an_iron_condor_worth_of_nifty_options() -> None:
    master = default_master()
    equities = [i for i in master if i.segment == "NSE"]
    assert len(equities) >= 20
    for symbol in ("INFY", "SBIN", "RELIANCE", "TCS", "HDFCBANK", "ICICIBANK"):
        instrument = master.get("NSE", symbol)
        assert instrument is not None and instrument.tick_size == D("0.05") and instrument.lot_size == 1
    nifty_future = master.get("NFO", "NIFTY26DECFUT")
    assert nifty_future is not None and nifty_future.lot_size == 75 and nifty_future.tick_size == D("0.10")
    assert master.get("NFO", "BANKNIFTY26DECFUT").lot_size == 35
    # An iron condor needs short strikes near the money and long wings further out, all in one expiry.
    for symbol in ("NIFTY26DEC24000CE", "NIFTY26DEC24000PE", "NIFTY26DEC24200CE", "NIFTY26DEC23800PE"):
        option = master.get("NFO", symbol)
        assert option is not None and option.lot_size == 75 and option.expiry is not None
        assert option.strike == D(symbol[-7:-2])


def test_tick_and_lot_checks() -> None:
    future = default_master().get("NFO", "NIFTY26DECFUT")
    assert future.is_on_tick(D("24100.10")) and not future.is_on_tick(D("24100.05"))
    assert future.is_lot_multiple(150) and not future.is_lot_multiple(100)


def test_a_master_can_be_built_from_any_kite_csv() -> None:
    text = (
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,"
        "instrument_type,segment,exchange\n"
        "408065,1594,INFY,INFOSYS,0.0,,0.0,0.05,1,EQ,NSE,NSE\n"
    )
    master = InstrumentMaster.from_csv(text)
    assert len(master) == 1 and master.get("NSE", "INFY").tick_size == D("0.05")
