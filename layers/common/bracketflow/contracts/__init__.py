"""The messages that cross a process, each written and read here only: a producer builds the type and sends
`to_dict()`/`to_json()`, the consumer reads it with `from_json()`. tests/unit/test_contracts.py holds each producer's
JSON to its consumer, and finds any such message built anywhere else.

  ExitRequest                    ExitQueue: close a bracket's position at market (contracts/exits.py).
  WatchRequest, UnwatchRequest   StreamerControlQueue: trail a protected bracket, or stop (contracts/watch.py).
  StopSyncRequest                StopSyncQueue: move the GTT's stop leg to a tighter stop (contracts/stops.py).
"""

from bracketflow.contracts.exits import PRICELESS_EXIT_REASONS, QUEUED_EXIT_REASONS, ExitRequest
from bracketflow.contracts.stops import StopSyncRequest
from bracketflow.contracts.watch import UnwatchRequest, WatchRequest, read_control_message
from bracketflow.contracts.wire import wire_time

__all__ = [
    "PRICELESS_EXIT_REASONS",
    "QUEUED_EXIT_REASONS",
    "ExitRequest",
    "StopSyncRequest",
    "UnwatchRequest",
    "WatchRequest",
    "read_control_message",
    "wire_time",
]
