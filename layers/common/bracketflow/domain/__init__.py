"""The pure domain: enums, typed ids, the bracket aggregate and its state machines, validation, events.

No boto3, requests or Powertools here: everything in this package runs in a unit test with no I/O.
"""
