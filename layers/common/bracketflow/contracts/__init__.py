"""The messages that cross a process, each written and read here only: a producer builds the type and sends
`to_dict()`/`to_json()`, the consumer reads it with `from_json()`. tests/unit/test_contracts.py holds each producer's
JSON to its consumer, and finds any such message built anywhere else.

  ExitRequest                    ExitQueue: close a bracket's position at market (contracts/exits.py).
  WatchRequest, UnwatchRequest   StreamerControlQueue: trail a protected bracket, or stop (contracts/watch.py).
"""

from bracketflow.contracts.exits import PRICELESS_EXIT_REASONS, QUEUED_EXIT_REASONS, ExitRequest
from bracketflow.contracts.watch import UnwatchRequest, WatchRequest, read_control_message
from bracketflow.contracts.wire import wire_time

__all__ = [
    "PRICELESS_EXIT_REASONS",
    "QUEUED_EXIT_REASONS",
    "ExitRequest",
    "UnwatchRequest",
    "WatchRequest",
    "read_control_message",
    "wire_time",
]
