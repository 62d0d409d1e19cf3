"""The streamer's EMF metrics, flushed periodically from their own thread (never per tick).

TicksPerSecond and MessagesPerSecond over the last interval, FeedLagSeconds (wall clock minus the exchange time of
a sampled full packet), Exits, Reconnects and BreakevenStopsSet (price breakevens stored) in the interval,
WatchedBrackets, and Heartbeat = 1 on every flush —
the "streamer heartbeat stale" alarm fires when Heartbeat stops arriving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_lambda_powertools.metrics import MetricUnit

from bracketflow import metrics_names
from bracketflow.observability import logger, metrics


@dataclass
class Counters:
    """Monotonic totals read from the streamer; the flusher reports the differences."""

    packets: int = 0
    messages: int = 0
    exits: int = 0
    reconnects: int = 0
    breakevens: int = 0
    watched: int = 0
    feed_lag_s: float | None = None


@dataclass
class MetricsFlusher:
    last: Counters = field(default_factory=Counters)
    last_at: float | None = None

    def flush(self, now: float, current: Counters) -> dict[str, float]:
        elapsed = (now - self.last_at) if self.last_at is not None else None
        values: dict[str, float] = {
            "Heartbeat": 1,
            "WatchedBrackets": current.watched,
            "Exits": current.exits - self.last.exits,
            "Reconnects": current.reconnects - self.last.reconnects,
            metrics_names.BREAKEVEN_STOPS_SET: current.breakevens - self.last.breakevens,
        }
        if elapsed and elapsed > 0:
            values["TicksPerSecond"] = (current.packets - self.last.packets) / elapsed
            values["MessagesPerSecond"] = (current.messages - self.last.messages) / elapsed
        if current.feed_lag_s is not None:
            values["FeedLagSeconds"] = current.feed_lag_s
        units = {
            "TicksPerSecond": MetricUnit.CountPerSecond,
            "MessagesPerSecond": MetricUnit.CountPerSecond,
            "FeedLagSeconds": MetricUnit.Seconds,
        }
        try:
            for name, value in values.items():
                metrics.add_metric(name=name, unit=units.get(name, MetricUnit.Count), value=value)
            metrics.flush_metrics()
        except Exception as exc:  # metrics must never stop trading
            logger.warning("metrics flush failed", extra={"error": str(exc)})
        self.last, self.last_at = current, now
        return values
