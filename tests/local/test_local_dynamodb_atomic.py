"""The local stack's DynamoDB applies each request atomically, as DynamoDB does.

moto's own backend takes no lock, and the local stack is hit by many threads and processes at once (Lambdas, pollers,
the streamer); without the stack's lock, concurrent conditional transactions lose writes or fail inside moto.
"""

from __future__ import annotations

import threading

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from local.aws import MotoServer

WRITERS = 6
INCREMENTS_EACH = 40


def test_concurrent_conditional_transactions_never_lose_a_write() -> None:
    # Given the local stack's moto server with one counter item
    server = MotoServer(port=0)
    server.start()
    try:
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=server.endpoint,
            region_name="ap-south-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}, max_pool_connections=WRITERS * 2),
        )
        ddb.create_table(
            TableName="counters",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.put_item(TableName="counters", Item={"pk": {"S": "c"}, "version": {"N": "0"}})
        server_errors: list[str] = []
        applied = [0] * WRITERS

        def writer(slot: int) -> None:
            # Each writer does what our repository does: read the version, then a conditional transaction that
            # bumps it and appends an audit item; a lost race is retried.
            while applied[slot] < INCREMENTS_EACH:
                version = int(ddb.get_item(TableName="counters", Key={"pk": {"S": "c"}})["Item"]["version"]["N"])
                try:
                    ddb.transact_write_items(
                        TransactItems=[
                            {
                                "Update": {
                                    "TableName": "counters",
                                    "Key": {"pk": {"S": "c"}},
                                    "UpdateExpression": "SET version = :next",
                                    "ConditionExpression": "version = :seen",
                                    "ExpressionAttributeValues": {
                                        ":seen": {"N": str(version)},
                                        ":next": {"N": str(version + 1)},
                                    },
                                }
                            },
                            {
                                "Put": {
                                    "TableName": "counters",
                                    "Item": {"pk": {"S": f"event-{version + 1}"}, "by": {"N": str(slot)}},
                                    "ConditionExpression": "attribute_not_exists(pk)",
                                }
                            },
                        ]
                    )
                    applied[slot] += 1
                except ClientError as exc:
                    code = exc.response["Error"]["Code"]
                    if exc.response["ResponseMetadata"]["HTTPStatusCode"] >= 500:
                        server_errors.append(code)
                        return
                    assert code == "TransactionCanceledException", code

        threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(WRITERS)]
        # When several writers race on the same item
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)

        # Then every applied transaction is there exactly once: the version counts them, one audit item each
        assert server_errors == []
        final = int(ddb.get_item(TableName="counters", Key={"pk": {"S": "c"}})["Item"]["version"]["N"])
        assert final == sum(applied) == WRITERS * INCREMENTS_EACH
        events = ddb.scan(
            TableName="counters",
            ScanFilter={"pk": {"AttributeValueList": [{"S": "event-"}], "ComparisonOperator": "BEGINS_WITH"}},
        )["Items"]
        assert sorted(int(e["pk"]["S"].split("-")[1]) for e in events) == list(range(1, final + 1))
    finally:
        server.stop()
