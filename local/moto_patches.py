"""The local stack's patches of moto internals: DynamoDB made atomic and cheaper, and moto's per-request work done once.

Each patch says what moto does, why that hurt on the local stack, and why ours answers the same; MotoServer installs
them on start() and puts moto's own code back on stop().
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

_DYNAMODB_LOCK = threading.RLock()


class MotoPatches:
    """The patches MotoServer installs on moto's classes, each saved so that stop() can put moto's back."""

    _locked_handlers: list[tuple[Any, Any]]
    _saved_transact: Any
    _plain_json_handlers: list[tuple[Any, Any]]
    _saved_query: Any
    _saved_module_list: Any
    _put_back_client_factory: Any
    _saved_entrypoint: Any
    _put_back_item_init: Any
    _put_back_method_names: Any
    _put_back_streams: Any

    def _serialize_dynamodb(self) -> None:
        """Apply every DynamoDB (and DynamoDB Streams) request atomically, as DynamoDB itself does.

        moto's DynamoDB backend takes no lock: a transaction deep-copies the table, applies its items one by one and
        restores the copy on failure, so two concurrent writers (the streamer persisting a stop while a Lambda closes
        the bracket) can lose a write or corrupt the audit trail. The local stack serves many threads and processes,
        so it puts one lock around the handlers.
        """
        from moto.dynamodb.responses import DynamoHandler
        from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

        for handler in (DynamoHandler, DynamoDBStreamsHandler):
            unlocked = handler.call_action

            def call_action(self: Any, _unlocked: Any = unlocked) -> Any:
                with _DYNAMODB_LOCK:
                    return _unlocked(self)

            self._locked_handlers.append((handler, handler.__dict__.get("call_action")))
            handler.call_action = call_action  # type: ignore[method-assign]

    def _roll_back_transactions_by_key(self) -> None:
        """Make a DynamoDB transaction cost what it writes, and keep its stream readable after a rollback.

        moto backs up a transaction by deep-copying the whole table once per item in it (with every stream record
        the table ever produced) and, on failure, puts the copy in the table's place. On the local stack that made
        each bracket transition cost hundreds of ms of pure-Python copying under the DynamoDB lock and the GIL,
        growing with the run: every other AWS call, the webhook's included, queued behind it. The swapped-in copy
        also has its own stream shard, so a stream reader's iterator stayed on the old one: it saw the rolled-back
        writes and never a later one (NotifyFunction and the activity log went deaf after a duplicate alert).
        Here moto's whole-table backup is the table itself, and a failed transaction is undone item by item: the
        keys it names get their previous item back (or lose the new one) and the stream is cut back to where it was.
        """
        from moto.dynamodb.models import DynamoDBBackend

        moto_transact = DynamoDBBackend.__dict__["transact_write_items"]
        self._saved_transact = moto_transact

        def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
            with _DYNAMODB_LOCK:  # the handler holds it already; the rollback must never interleave with a write
                undo = _transaction_undo(backend, transact_items)
                with _tables_not_copied():
                    try:
                        moto_transact(backend, transact_items)
                    except BaseException:
                        undo()
                        raise

        DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign,assignment]  # its receiver is not named self, as it sits in a method

    def _answer_data_calls_as_plain_json(self) -> None:
        """Answer DynamoDB's item calls and stream reads with json.dumps of moto's result, as their wire format is.

        moto 5.2 serialises every response by walking the operation's botocore output shape, looking each value up
        under several candidate key spellings: ~12 ms of pure Python for a Query of a few items, more for a stream
        batch, most of the DynamoDB server's time on the local stack (and held under the DynamoDB lock and the GIL).
        For these operations moto's result is already the JSON body (attribute values are {"S": ...} maps); only
        timestamps (stream records' ApproximateCreationDateTime) and binary values need moto's encoding, and unset
        members are left out, as its serializer does. tests/local/test_local_dynamodb_fast_paths.py compares both
        bodies. Errors (a cancelled transaction's reasons, a failed condition) still go through moto's serializer.
        """
        from moto.dynamodb.responses import DynamoHandler
        from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

        for handler, operations in ((DynamoHandler, PLAIN_JSON_DYNAMODB), (DynamoDBStreamsHandler, PLAIN_JSON_STREAMS)):
            own = handler.__dict__.get("serialized")
            moto_serialized = handler.serialized

            def serialized(
                self: Any, action_result: Any, _moto: Any = moto_serialized, _operations: Any = operations
            ) -> Any:
                result = action_result.result
                if type(action_result).__name__ not in _PLAIN_RESULTS or not isinstance(result, dict):
                    return _moto(self, action_result)
                if self._get_action() not in _operations:
                    return _moto(self, action_result)
                headers = {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}
                return 200, headers, plain_json_body(result)

            self._plain_json_handlers.append((handler, own))
            handler.serialized = serialized  # type: ignore[method-assign]

    def _query_only_what_a_query_reads(self) -> None:
        """A Query looks at the items its key condition names, not at the sorted table.

        moto starts every Query from all_items(): the whole table sorted by its keys, comparing DynamoType objects
        in Python, then filters and sorts again, and computes the size of every candidate (a recursive walk of the
        item) before it even checks the sort-key condition. On the local stack's single table that is O(n log n)
        per Query and grows for as long as `make run` runs (~15-25 ms at 400 items), under the DynamoDB lock; an
        alert's risk checks run two such Queries over an account's whole history. Here a table Query starts from
        the items under its hash key, an index Query from the items whose index hash key matches, and both keep only
        those whose sort key meets the condition, using moto's own comparison. moto then applies every condition
        again to that superset and sorts the matches by the index and table keys, a total order, so the results,
        their pages and LastEvaluatedKey are the same.
        """
        from moto.dynamodb.models.table import Table

        moto_query = Table.__dict__["query"]
        self._saved_query = moto_query

        def query(table: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
            index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
            if not index_name and hash_key is None:
                return moto_query(table, hash_key, *args, **kwargs)
            range_comparison = args[0] if args else kwargs.get("range_comparison")
            range_objs = args[1] if len(args) > 1 else kwargs.get("range_objs")
            with _DYNAMODB_LOCK:  # all_items is swapped on the instance only while this Query runs
                if index_name:
                    candidates = _index_candidates(
                        table,
                        index_name,
                        kwargs.get("hash_key_conditions") or [],
                        kwargs.get("range_key_conditions") or [],
                        range_comparison,
                        range_objs,
                    )
                else:
                    candidates = _items_under(table, hash_key)
                    if range_comparison and table.range_key_attr:
                        candidates = [
                            i
                            for i in candidates
                            if i.range_key is not None and i.range_key.compare(range_comparison, range_objs)
                        ]
                table.all_items = lambda: candidates
                try:
                    return moto_query(table, hash_key, *args, **kwargs)
                finally:
                    del table.all_items

        Table.query = query  # type: ignore[method-assign,assignment]  # its receiver is not named self, as it sits in a method

    def _restore_fast_paths(self) -> None:
        """moto's own parsing, client factory, item sizing, queries and transactions, in place of ours."""
        from moto.dynamodb.models import DynamoDBBackend

        if self._saved_entrypoint is not None:
            from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

            ExecutionWorker._get_evaluation_entrypoint = self._saved_entrypoint  # type: ignore[method-assign]
            self._saved_entrypoint = None
        if self._put_back_client_factory is not None:
            self._put_back_client_factory()
            self._put_back_client_factory = None
        for put_back in (self._put_back_item_init, self._put_back_method_names, self._put_back_streams):
            if put_back is not None:
                put_back()
        self._put_back_item_init = self._put_back_method_names = self._put_back_streams = None
        if self._saved_module_list is not None:
            from moto import backends

            backends.list_of_moto_modules = self._saved_module_list
            self._saved_module_list = None
        if self._saved_query is not None:
            from moto.dynamodb.models.table import Table

            Table.query = self._saved_query  # type: ignore[method-assign]
            self._saved_query = None
        if self._saved_transact is not None:
            DynamoDBBackend.transact_write_items = self._saved_transact  # type: ignore[method-assign]
            self._saved_transact = None


# The operations whose moto result is their JSON body as it stands (see _answer_data_calls_as_plain_json); not
# DeleteItem, whose result carries a ConsumedCapacityUnits that is no member of its output (moto's serializer drops it).
PLAIN_JSON_DYNAMODB = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
PLAIN_JSON_STREAMS = frozenset({"GetRecords", "GetShardIterator"})
_PLAIN_RESULTS = {"ActionResult", "DynamoResult"}  # not EmptyResult, PaginatedResult or an error


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _wire_value(value: Any) -> Any:
    from moto.core.serialize import TimestampSerializer

    if isinstance(value, datetime):
        return TimestampSerializer._timestamp_unixtimestamp(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"{type(value).__name__} is not part of a DynamoDB response")


def plain_json_body(result: dict[str, Any]) -> str:
    """A DynamoDB (Streams) operation's response body from moto's result dict."""
    return json.dumps(_without_none(result), default=_wire_value)


def list_moto_modules_once() -> Any:
    """moto's server lists its package directory (a listdir and ~150 isdir calls) on every request to find the
    backend for the Host header: ~8% of the local stack's CPU under load. The list cannot change while we run."""
    from moto import backends

    listing = backends.list_of_moto_modules
    modules = tuple(listing())
    backends.list_of_moto_modules = lambda: modules
    return listing


def workflow_clients_made_once() -> Any:
    """moto's ASL interpreter builds a new boto3 client for every Task it runs (~20 ms of CPU each here, on the
    default session, which is not thread-safe to build clients from). Every client it builds is the same (fixed
    keys, our server's port, no retries), and botocore clients are thread-safe to call, so it builds one per
    service and region. Returns what puts moto's factory back, also in interpreter modules imported meanwhile."""
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for
    made: dict[tuple[str, str, str, bool], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (region, service, os.environ.get("MOTO_PORT", ""), bool(boto_client.botocore_stubber.enabled))
        with lock:
            if key not in made:
                made[key] = original(region=region, service=service, state_credentials=state_credentials)
            return made[key]

    def swap(old: Any, new: Any) -> None:
        for name, module in list(sys.modules.items()):  # the interpreter's modules bind it by name at import
            if name.startswith("moto.stepfunctions.parser") and getattr(module, "boto_client_for", None) is old:
                module.boto_client_for = new  # type: ignore[attr-defined]

    swap(original, boto_client_for)
    return lambda: swap(boto_client_for, original)


def items_sized_once() -> Any:
    """moto builds an item attribute by attribute, and each insertion re-sums the size of every attribute already in
    it to enforce DynamoDB's 400 KB limit: quadratic in the attributes, ~2 ms of an alert's CPU for the bracket's
    ~30-attribute items. Sizes only add up, so summing once over the finished item refuses exactly the items moto's
    running check refuses (tests/local/test_local_dynamodb_fast_paths.py). Returns what puts moto's back."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    original = Item.__dict__["__init__"]

    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        typed = {key: DynamoType(value) for key, value in attrs.items()}
        if sum(bytesize(key) + value.size() for key, value in typed.items()) > _MOTO_ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        self.attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.update(self.attrs, typed)  # later top-level writes still go through moto's own check

    Item.__init__ = __init__  # type: ignore[method-assign]
    return lambda: setattr(Item, "__init__", original)


# Stream records kept per table (the newest); trimmed in chunks of half as many.
STREAM_RECORDS_KEPT = 20000


def streams_kept_bounded() -> Any:
    """moto keeps every record a table's stream ever had: a shard's list is emptied only by moto's own Lambda event
    source mappings, which the local stack does not use (its pollers read with GetRecords). Each record holds the
    item's old and new images, so a long run carries them all (the 1,000-alert soak's process reached 5 GB in 18
    minutes, and stalled for 10-15 s at a time; how much of that these records made is still to be measured).
    DynamoDB itself keeps a stream for 24 hours and trims the rest; ours keeps the newest STREAM_RECORDS_KEPT records,
    far more than any poller lags behind, and a read from before them starts at the oldest kept (AWS answers that
    read with TrimmedDataAccessException; a dev stack's poller is better served by the records that remain).
    Returns what puts moto's back."""
    from moto.dynamodb.models.table import StreamShard

    original_add, original_get = StreamShard.__dict__["add"], StreamShard.__dict__["get"]

    def add(self: Any, old: Any, new: Any) -> None:
        original_add(self, old, new)
        excess = len(self.items) - STREAM_RECORDS_KEPT
        if excess >= STREAM_RECORDS_KEPT // 2:  # in chunks: not a list copy on every write
            del self.items[:excess]
            self.starting_sequence_number += excess  # the next record's number is unchanged

    def get(self: Any, start: int, quantity: int) -> list[dict[str, Any]]:
        return original_get(self, max(int(start), self.starting_sequence_number), quantity)

    StreamShard.add = add  # type: ignore[method-assign]
    StreamShard.get = get  # type: ignore[method-assign]

    def put_back() -> None:
        StreamShard.add = original_add  # type: ignore[method-assign]
        StreamShard.get = original_get  # type: ignore[method-assign]

    return put_back


_MOTO_ITEM_SIZE_LIMIT = 405000  # moto's LimitedSizeDict: DynamoDB's 400 KB, as its authors measured it


def action_names_listed_once() -> Any:
    """moto lists a response class's methods with inspect.getmembers on every request, to check the action exists
    (~0.3 ms each). The classes' methods do not change while the stack runs. Returns what puts moto's back."""
    from moto.core import responses

    original = responses.method_names_from_class
    listed: dict[type, list[str]] = {}

    def method_names_from_class(clazz: Any) -> list[str]:
        names = listed.get(clazz)
        if names is None:
            names = listed[clazz] = original(clazz)
        return names

    responses.method_names_from_class = method_names_from_class
    return lambda: setattr(responses, "method_names_from_class", original)


def workflows_parsed_once() -> Any:
    """moto's interpreter parses a state machine's ASL with ANTLR at the start of every execution: ~80 ms of pure
    Python for the bracket workflow, taken with the GIL right as the webhook that started it writes its order log.
    The parse is a pure function of the definition, so each definition is parsed once and every execution gets its
    own deep copy of the result (~3 ms): the same fresh component tree a new parse would give. Returns moto's method."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original = ExecutionWorker.__dict__["_get_evaluation_entrypoint"]
    parsed: dict[str, Any] = {}
    lock = threading.Lock()

    def _get_evaluation_entrypoint(self: Any) -> Any:
        definition = self._evaluation_details.state_machine_details.definition
        with lock:
            program = parsed.get(definition)
        if program is None:
            program = AmazonStateLanguageParser.parse(definition)[0]
            with lock:
                if len(parsed) >= 64:  # a handful of machines locally; bound it anyway
                    parsed.clear()
                parsed[definition] = program
        return copy.deepcopy(program)

    ExecutionWorker._get_evaluation_entrypoint = _get_evaluation_entrypoint  # type: ignore[method-assign]
    return original


def _unsorted_items(table: Any) -> list[Any]:
    if not table.range_key_attr:
        return list(table.items.values())
    return [item for group in table.items.values() for item in group.values()]


def _index_candidates(
    table: Any,
    index_name: str,
    hash_conditions: list[tuple[str, Any]],
    range_conditions: list[tuple[str, str, list[Any]]],
    range_comparison: str | None,
    range_objs: list[Any] | None,
) -> list[Any]:
    """The items an index Query can match: a superset moto filters again (see _query_only_what_a_query_reads)."""
    items = _unsorted_items(table)
    index = next((i for i in table.all_indexes() if i.name == index_name), None)
    if index is None:
        return items  # moto answers the unknown index itself
    for name, wanted in hash_conditions:
        items = [i for i in items if (v := i.attrs.get(name)) is not None and v == wanted]
    range_keys = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
    if range_comparison and len(range_keys) == 1 and len(range_conditions) <= 1:
        name = range_conditions[-1][0] if range_conditions else range_keys[0]
        items = [i for i in items if (v := i.attrs.get(name)) is not None and v.compare(range_comparison, range_objs)]
    return items


def _items_under(table: Any, hash_key: Any) -> list[Any]:
    found = table.items.get(hash_key)
    if found is None:
        return []
    return list(found.values()) if table.range_key_attr else [found]


@contextmanager
def _tables_not_copied() -> Iterator[None]:
    """Within moto's transact_write_items (under the DynamoDB lock): its backup of a table is the table itself."""
    from moto.dynamodb.models.table import Table

    Table.__deepcopy__ = lambda table, memo: table  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del Table.__deepcopy__  # type: ignore[attr-defined]


def _transaction_undo(backend: Any, transact_items: list[dict[str, Any]]) -> Any:
    """What puts back every item a transaction names, and its tables' streams, as they are now."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    saved: list[tuple[Any, Any, Any, Any, bool]] = []  # table, hash, range, previous item (deep copy) or None
    seen: set[tuple[str, str, str]] = set()
    streams: dict[int, tuple[Any, int]] = {}
    for entry in transact_items:
        try:
            ((op_type, op),) = entry.items()
            table = backend.tables[op["TableName"]]
            key = op["Item"] if op_type == "Put" else op["Key"]
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        except Exception:  # moto refuses this entry the same way, before it writes anything
            continue
        marker = (table.name, str(hash_value), str(range_value))
        if marker in seen:
            continue
        seen.add(marker)
        current = table.get_item(hash_value, range_value)
        saved.append((table, hash_value, range_value, copy.deepcopy(current), hash_value in table.items))
        if table.stream_shard is not None and id(table) not in streams:
            streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))

    def undo() -> None:
        for table, hash_value, range_value, previous, hash_existed in reversed(saved):
            if range_value is None:
                if previous is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = previous
                continue
            group = table.items[hash_value]
            if previous is None:
                group.pop(range_value, None)
                if not group and not hash_existed:
                    table.items.pop(hash_value, None)
            else:
                group[range_value] = previous
        for shard, length in streams.values():
            del shard.items[length:]

    return undo


def send_task_failure_with_cause(self: Any) -> Any:
    """moto 5.2.5's SendTaskFailure drops `cause`; workflows read it in Catch (e.g. the broker's reject reason)."""
    from moto.core.responses import EmptyResult

    self.stepfunction_backend.send_task_failure(
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()
