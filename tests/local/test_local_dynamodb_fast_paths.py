"""The local stack's cheaper DynamoDB (local/moto_patches.py) answers exactly as moto would, and a cancelled
transaction leaves nothing behind: not its writes, not its stream records, and not a stream reader stranded on a
discarded shard.

moto backs up a transaction by deep-copying the table per item and swaps the copy in on failure; its responses walk
the botocore shape; its Query sorts the whole table first. The local stack replaces those three costs; these tests
hold the replacements to moto's own results.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.aws import MotoServer

TABLE = "fast-paths"


@pytest.fixture
def server() -> Iterator[MotoServer]:
    moto = MotoServer(port=0)
    moto.start()
    try:
        moto.client("dynamodb").create_table(
            TableName=TABLE,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "gpk", "AttributeType": "S"},
                {"AttributeName": "gsk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "gsi",
                    "KeySchema": [
                        {"AttributeName": "gpk", "KeyType": "HASH"},
                        {"AttributeName": "gsk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        yield moto
    finally:
        moto.stop()


def _item(pk: str, sk: str, **extra: Any) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}, **extra}


def _latest_iterator(server: MotoServer) -> tuple[Any, str]:
    streams = server.client("dynamodbstreams")
    arn = server.client("dynamodb").describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    return streams, streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")[
        "ShardIterator"
    ]


def test_every_fast_answer_is_the_body_moto_would_have_sent(server: MotoServer) -> None:
    # Given the stack's handlers, and beside them moto's own serializer applied to the same results
    from moto.core.responses import BaseResponse
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    compared: list[str] = []
    differences: list[tuple[str, Any, Any]] = []
    fast = {h: h.serialized for h in (DynamoHandler, DynamoDBStreamsHandler)}

    def comparing(handler: type) -> Any:
        def serialized(self: Any, action_result: Any) -> Any:
            ours = fast[handler](self, action_result)
            motos = BaseResponse.serialized(self, action_result)
            compared.append(self._get_action())
            if (ours[0], json.loads(ours[2])) != (motos[0], json.loads(motos[2])):
                differences.append((self._get_action(), ours[2], motos[2]))
            return ours

        return serialized

    ddb = server.client("dynamodb")
    streams, iterator = _latest_iterator(server)
    DynamoHandler.serialized = comparing(DynamoHandler)  # type: ignore[method-assign]
    DynamoDBStreamsHandler.serialized = comparing(DynamoDBStreamsHandler)  # type: ignore[method-assign]
    try:
        # When every kind of attribute value goes through every data call, and a stream is read
        every_type = {
            "s": {"S": "text"},
            "n": {"N": "12.50"},
            "b": {"B": b"\x00\xffbytes"},
            "yes": {"BOOL": True},
            "nothing": {"NULL": True},
            "m": {"M": {"inner": {"L": [{"S": "a"}, {"N": "1"}, {"B": b"\x01"}]}}},
            "ss": {"SS": ["x", "y"]},
            "ns": {"NS": ["1", "2.5"]},
            "bs": {"BS": [b"\x02", b"\x03"]},
            "gpk": {"S": "G"},
            "gsk": {"S": "2026-01-01"},
        }
        ddb.put_item(TableName=TABLE, Item=_item("A", "1", **every_type))
        ddb.put_item(TableName=TABLE, Item=_item("A", "2", gpk={"S": "G"}, gsk={"S": "2026-01-02"}))
        ddb.put_item(TableName=TABLE, Item=_item("A", "3"), ReturnValues="ALL_OLD")
        ddb.put_item(TableName=TABLE, Item=_item("A", "3", n={"N": "1"}), ReturnValues="ALL_OLD")
        ddb.get_item(TableName=TABLE, Key={"pk": {"S": "A"}, "sk": {"S": "1"}}, ConsistentRead=True)
        ddb.get_item(TableName=TABLE, Key={"pk": {"S": "A"}, "sk": {"S": "missing"}})
        ddb.get_item(TableName=TABLE, Key={"pk": {"S": "A"}, "sk": {"S": "1"}}, ProjectionExpression="m.inner, s")
        ddb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "A"}, "sk": {"S": "3"}},
            UpdateExpression="SET n = n + :one, t = :t",
            ExpressionAttributeValues={":one": {"N": "1"}, ":t": {"S": "x"}},
            ReturnValues="ALL_NEW",
        )
        ddb.update_item(TableName=TABLE, Key={"pk": {"S": "A"}, "sk": {"S": "3"}}, UpdateExpression="REMOVE t")
        ddb.query(TableName=TABLE, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "A"}})
        ddb.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "A"}},
            Limit=1,
            ScanIndexForward=False,
        )
        ddb.query(
            TableName=TABLE,
            IndexName="gsi",
            KeyConditionExpression="gpk = :g AND gsk BETWEEN :a AND :b",
            ExpressionAttributeValues={":g": {"S": "G"}, ":a": {"S": "2026"}, ":b": {"S": "2027"}},
            ProjectionExpression="n",
        )
        ddb.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "A"}},
            Select="COUNT",
        )
        ddb.scan(TableName=TABLE)
        ddb.scan(TableName=TABLE, Limit=2)
        ddb.batch_get_item(
            RequestItems={TABLE: {"Keys": [{"pk": {"S": "A"}, "sk": {"S": "1"}}, {"pk": {"S": "A"}, "sk": {"S": "9"}}]}}
        )
        ddb.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": _item("B", "1")}}]})
        ddb.transact_get_items(
            TransactItems=[{"Get": {"TableName": TABLE, "Key": {"pk": {"S": "B"}, "sk": {"S": "1"}}}}]
        )
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": _item("C", "1"),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "B"}, "sk": {"S": "1"}}}},
            ]
        )
        ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "C"}, "sk": {"S": "1"}}, ReturnValues="ALL_OLD")
        got = streams.get_records(ShardIterator=iterator)
        streams.get_records(ShardIterator=got["NextShardIterator"])
    finally:
        DynamoHandler.serialized = fast[DynamoHandler]  # type: ignore[method-assign]
        DynamoDBStreamsHandler.serialized = fast[DynamoDBStreamsHandler]  # type: ignore[method-assign]

    # Then every answer is moto's, to the byte's meaning, and the stream batch carried the records
    assert differences == []
    assert {"PutItem", "GetItem", "UpdateItem", "Query", "Scan", "TransactWriteItems", "GetRecords"} <= set(compared)
    assert len(got["Records"]) >= 8


def test_a_cancelled_transaction_leaves_no_write_and_no_stream_record_and_readers_keep_reading(
    server: MotoServer,
) -> None:
    # Given an item and a stream reader that has read up to now
    ddb = server.client("dynamodb")
    ddb.put_item(TableName=TABLE, Item=_item("X", "state", version={"N": "1"}))
    streams, iterator = _latest_iterator(server)

    # When a transaction updates that item and adds another, then fails on a condition further on
    with pytest.raises(ClientError) as cancelled:
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "X"}, "sk": {"S": "state"}},
                        "UpdateExpression": "SET version = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Put": {"TableName": TABLE, "Item": _item("X", "event-2")}},
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": _item("X", "state-copy"),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    # and a write follows
    ddb.put_item(TableName=TABLE, Item=_item("Y", "after"))

    # Then nothing of the transaction is in the table, and the reader sees exactly the later write
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    items = {(i["pk"]["S"], i["sk"]["S"]): i for i in ddb.scan(TableName=TABLE)["Items"]}
    assert set(items) == {("X", "state"), ("Y", "after")}
    assert items[("X", "state")]["version"] == {"N": "1"}
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [("INSERT", "Y")]


def test_queries_find_and_page_exactly_as_the_table_and_index_order_them(server: MotoServer) -> None:
    # Given items across partitions, some in the index and some not
    ddb = server.client("dynamodb")
    for p in ("P", "Q"):
        for i in range(7):
            extra = {"gpk": {"S": "OPEN"}, "gsk": {"S": f"{i % 3}#{p}{i}"}} if i % 2 == 0 else {}
            ddb.put_item(TableName=TABLE, Item=_item(p, f"k{i}", **extra))

    def pages(**query: Any) -> list[str]:
        seen: list[str] = []
        kwargs: dict[str, Any] = {"TableName": TABLE, "Limit": 2, **query}
        while True:
            page = ddb.query(**kwargs)
            seen += [f"{i['pk']['S']}/{i['sk']['S']}" for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return seen
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # When one partition is read backwards and the index forwards, two items a page
    table_pages = pages(
        KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "Q"}}, ScanIndexForward=False
    )
    index_pages = pages(
        IndexName="gsi",
        KeyConditionExpression="gpk = :o AND begins_with(gsk, :z)",
        ExpressionAttributeValues={":o": {"S": "OPEN"}, ":z": {"S": "0#"}},
    )
    empty = pages(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "nobody"}})

    # Then each comes whole, once, in key order
    assert table_pages == [f"Q/k{i}" for i in range(6, -1, -1)]
    assert index_pages == ["P/k0", "P/k6", "Q/k0", "Q/k6"]
    assert empty == []


def test_sort_key_conditions_on_the_table_and_the_index_find_what_moto_finds(server: MotoServer) -> None:
    # Given two partitions of items, every other one in the index, and moto's own Query kept aside for comparison
    from moto.dynamodb.models.table import Table

    ddb = server.client("dynamodb")
    for p in ("P", "Q"):
        for i in range(9):
            extra = {"gpk": {"S": "ACC"}, "gsk": {"S": f"2026-11-{10 + i}#{p}{i}"}} if i % 2 == 0 else {}
            ddb.put_item(TableName=TABLE, Item=_item(p, f"k{i}", **extra))
    queries = [
        {"KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b", "Values": {":p": "P", ":a": "k2", ":b": "k6"}},
        {"KeyConditionExpression": "pk = :p AND begins_with(sk, :a)", "Values": {":p": "Q", ":a": "k1"}},
        {"KeyConditionExpression": "pk = :p AND sk > :a", "Values": {":p": "Q", ":a": "k4"}},
        {
            "IndexName": "gsi",
            "KeyConditionExpression": "gpk = :p AND gsk BETWEEN :a AND :b",
            "Values": {":p": "ACC", ":a": "2026-11-12", ":b": "2026-11-17"},
        },
        {
            "IndexName": "gsi",
            "KeyConditionExpression": "gpk = :p AND begins_with(gsk, :a)",
            "Values": {":p": "ACC", ":a": "2026-11-14#"},
        },
        {"IndexName": "gsi", "KeyConditionExpression": "gpk = :p", "Values": {":p": "nobody"}},
    ]

    def pages(query: dict[str, Any]) -> list[str]:
        seen: list[str] = []
        values = {k: {"S": v} for k, v in query["Values"].items()}
        kwargs: dict[str, Any] = {"TableName": TABLE, "Limit": 2, "ExpressionAttributeValues": values}
        kwargs |= {k: v for k, v in query.items() if k != "Values"}
        while True:
            page = ddb.query(**kwargs)
            seen += [f"{i['pk']['S']}/{i['sk']['S']}" for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return seen
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # When each is read in pages with the local stack's Query, then with moto's
    ours = [pages(q) for q in queries]
    local_query, Table.query = Table.query, server._saved_query  # type: ignore[method-assign]
    try:
        moto = [pages(q) for q in queries]
    finally:
        Table.query = local_query  # type: ignore[method-assign]

    # Then both find the same items in the same order, and the conditions really narrowed them
    assert ours == moto
    assert ours[0] == ["P/k2", "P/k3", "P/k4", "P/k5", "P/k6"]
    assert ours[3] == ["P/k2", "Q/k2", "P/k4", "Q/k4", "P/k6", "Q/k6"]
    assert ours[4] == ["P/k4", "Q/k4"]
    assert ours[5] == []


def test_an_item_over_dynamodbs_size_limit_is_refused_as_moto_refuses_it(server: MotoServer) -> None:
    # Given an item just under moto's 400 KB limit in many attributes, and one just over it
    ddb = server.client("dynamodb")
    chunk = "x" * 9_000
    under = _item("big", "under", **{f"a{i:02d}": {"S": chunk} for i in range(44)})
    over = _item("big", "over", **{f"a{i:02d}": {"S": chunk} for i in range(46)})

    # When both are written
    ddb.put_item(TableName=TABLE, Item=under)
    with pytest.raises(ClientError) as raised:
        ddb.put_item(TableName=TABLE, Item=over)

    # Then the first is stored whole, and the second is refused with DynamoDB's error and not stored
    stored = ddb.get_item(TableName=TABLE, Key={"pk": {"S": "big"}, "sk": {"S": "under"}})["Item"]
    assert stored == under
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "Item size has exceeded the maximum allowed size" in raised.value.response["Error"]["Message"]
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "big"}, "sk": {"S": "over"}})


def test_a_tables_stream_keeps_its_newest_records_and_a_reader_left_behind_reads_on(
    server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from local import moto_patches

    # Given a stream that keeps its newest 10 records, and a reader that started before any write
    monkeypatch.setattr(moto_patches, "STREAM_RECORDS_KEPT", 10)
    ddb = server.client("dynamodb")
    streams, behind = _latest_iterator(server)
    # When 40 items are written, and another reader starts at the stream's start after them
    for n in range(40):
        ddb.put_item(TableName=TABLE, Item=_item("K", f"{n:02d}"))
    arn = ddb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    oldest = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    # Then the stream holds no more than one and a half times what it keeps (it trims in chunks), the newest last
    kept = [r["dynamodb"]["NewImage"]["sk"]["S"] for r in streams.get_records(ShardIterator=oldest)["Records"]]
    assert 10 <= len(kept) < 15 and kept[-1] == "39" and kept == sorted(kept)
    # And the reader left behind reads on from the oldest record kept, numbered as before, instead of failing
    read = streams.get_records(ShardIterator=behind)
    late = read["Records"]
    assert [r["dynamodb"]["NewImage"]["sk"]["S"] for r in late] == kept
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in late]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    # And a write after the trim is numbered on from the last one
    ddb.put_item(TableName=TABLE, Item=_item("K", "40"))
    (after,) = streams.get_records(ShardIterator=read["NextShardIterator"])["Records"]
    assert int(after["dynamodb"]["SequenceNumber"]) == numbers[-1] + 1
