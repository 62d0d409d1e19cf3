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

Each job has its module here: plan (the seed's plan), base (the run's state and plumbing), hands (the trader's own
actions at the broker), run (the storm and the quiet after it), checks, report (results file and README table) and
__main__ (the command); this package re-exports the names the command and tests use.
"""

import logging

from local.soak.checks import SoakResult, unprotected_intervals
from local.soak.plan import SoakConfig, make_plan
from local.soak.report import quiet_app_logs, summary, write_results
from local.soak.run import Soak

log = logging.getLogger("local.soak")

__all__ = [
    "Soak",
    "SoakConfig",
    "SoakResult",
    "make_plan",
    "quiet_app_logs",
    "summary",
    "unprotected_intervals",
    "write_results",
]
