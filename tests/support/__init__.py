"""Helpers and fixtures the tests share: moto set-ups, the local stack, Kite order updates, exits, batches."""
