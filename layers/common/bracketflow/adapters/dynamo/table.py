"""The one DynamoDB table (single-table design, see records.py), reached lazily through the shared client cache."""

from __future__ import annotations

import threading
from typing import Any

from bracketflow.adapters.aws import resource
from bracketflow.settings import get_settings

# Building a boto3 Table resource costs ~1 ms of Python (its actions and attributes are generated from the resource
# model each time), and every DynamoDB call here asks for the table: one per thread, rebuilt if the resource or
# the table name changes (tests and the local stack reset the client cache). Per thread because boto3 documents
# resource objects as not thread-safe; a Lambda has one thread, the local stack many.
_local = threading.local()


def table() -> Any:
    dynamodb, name = resource("dynamodb"), get_settings().table_name
    cached = getattr(_local, "table", None)
    if cached is None or cached[0] is not dynamodb or cached[1] != name:
        cached = _local.table = (dynamodb, name, dynamodb.Table(name))
    return cached[2]


def ddb() -> Any:
    """The resource's client: same Python-typed values as the Table, plus TransactWriteItems."""
    return resource("dynamodb").meta.client


def table_name() -> str:
    return get_settings().table_name
