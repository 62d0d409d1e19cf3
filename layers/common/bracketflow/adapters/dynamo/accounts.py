"""Accounts, API keys and webhook tokens in the table (keys and tokens stored only as peppered hashes)."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.table import ddb, table, table_name
from bracketflow.domain.accounts import Account, WebhookToken


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] in ("ConditionalCheckFailedException", "TransactionCanceledException")


def create_account_with_key(account: Account, key_hash: str) -> bool:
    """Write the profile and its first API key together; False when the account or key already exists."""
    not_exists = "attribute_not_exists(pk)"
    try:
        ddb().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table_name(),
                        "Item": r.account_to_item(account),
                        "ConditionExpression": not_exists,
                    }
                },
                {
                    "Put": {
                        "TableName": table_name(),
                        "Item": r.api_key_to_item(key_hash, account.account_id, account.created_at),
                        "ConditionExpression": not_exists,
                    }
                },
            ]
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def put_api_key(key_hash: str, account_id: str, created_at: str) -> bool:
    try:
        table().put_item(
            Item=r.api_key_to_item(key_hash, account_id, created_at), ConditionExpression="attribute_not_exists(pk)"
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def get_account(account_id: str) -> Account | None:
    item = table().get_item(Key=r.account_key(account_id)).get("Item")
    return r.account_from_item(item) if item else None


def get_api_key(key_hash: str) -> dict[str, Any] | None:
    return table().get_item(Key=r.api_key_key(key_hash)).get("Item")


def revoke_api_key(key_hash: str, account_id: str) -> bool:
    return _revoke(r.api_key_key(key_hash), account_id)


def put_webhook_token(token: WebhookToken) -> None:
    table().put_item(Item=r.webhook_token_to_item(token), ConditionExpression="attribute_not_exists(pk)")


def get_webhook_token(token_hash: str) -> WebhookToken | None:
    item = table().get_item(Key=r.webhook_token_key(token_hash)).get("Item")
    return r.webhook_token_from_item(item) if item else None


def revoke_webhook_token(token_hash: str, account_id: str) -> bool:
    return _revoke(r.webhook_token_key(token_hash), account_id)


def list_webhook_tokens(account_id: str) -> list[WebhookToken]:
    items = table().query(
        IndexName="gsi1",
        KeyConditionExpression=Key("gsi1pk").eq(r.account_pk(account_id)) & Key("gsi1sk").begins_with("TOKEN#"),
    )["Items"]
    return [r.webhook_token_from_item(i) for i in items]


def _revoke(key: dict[str, str], account_id: str) -> bool:
    """Mark revoked; only the owning account may (False when absent or another account's)."""
    try:
        table().update_item(
            Key=key,
            UpdateExpression="SET revoked = :t",
            ConditionExpression="attribute_exists(pk) AND account_id = :a",
            ExpressionAttributeValues={":t": True, ":a": account_id},
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def set_capital(account_id: str, capital: Any) -> bool:
    """Set the account's trading capital (what risk_percent is a percent of); False when there is no such account."""
    try:
        table().update_item(
            Key=r.account_key(account_id),
            UpdateExpression="SET capital = :c",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":c": capital},
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True
