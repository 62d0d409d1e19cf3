"""Which bracket a GTT protects: at most one, enforced by DynamoDB (records.gtt_claim_key: GTT#<gtt_id>).

GTTs take no tag, so a GTT is recognised at the broker only by instrument, triggers and legs. Two brackets with the
same instrument, levels, side and quantity (two alerts of one strategy filled at one price, or the same alert sent
to two of the stack's accounts) ask for identical GTTs, and the one a retry finds "already at the broker" may be the
other bracket's. So whoever records a gtt_id for a bracket writes this claim in the same TransactWriteItems
(claim_put), on the condition that no other bracket holds it; adoption candidates are filtered by claimed_by_others
first; a lost claim means start over.

A claim outlives its GTT: it expires (the table's TTL) CLAIM_DAYS after it is written, more than the year a Kite GTT
stays live, so a GTT that may still protect an open position is never up for adoption again. A claim is never
released: a GTT that fired or was cancelled stays its bracket's, which is what keeps a second bracket from taking
another's fired GTT for its own.

The claim is keyed by the GTT id alone, not by account: a stack has one broker session (settings.
broker_secret_name), so all of its accounts place their GTTs in the same broker account and every one of them sees
(and could adopt) the others' GTTs. The account that claimed is kept on the item for the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import BracketRepository, ConditionalPut, ExtraConditionFailed
from bracketflow.adapters.dynamo.table import table
from bracketflow.domain.bracket import Bracket

CLAIM_DAYS = 400
CLAIM_CONDITION = "attribute_not_exists(pk) OR bracket_id = :me"


class GttClaimedElsewhere(Exception):
    """The GTT is another bracket's (its claim won first); nothing was written for this bracket."""

    def __init__(self, gtt_id: str, bracket_id: str) -> None:
        super().__init__(f"GTT {gtt_id} is claimed by another bracket than {bracket_id}")
        self.gtt_id = gtt_id
        self.bracket_id = bracket_id


def claim_put(account_id: str, gtt_id: str, bracket_id: str, now: datetime) -> ConditionalPut:
    """The claim, for the transaction that records `gtt_id` on the bracket (a repeat by the same bracket passes)."""
    item = {
        **r.gtt_claim_key(gtt_id),
        "type": "GTTCLAIM",
        "gtt_id": gtt_id,
        "bracket_id": bracket_id,
        "account_id": account_id,
        "claimed_at": r.iso(now),
        "expires_at": int((now + timedelta(days=CLAIM_DAYS)).timestamp()),
    }
    return ConditionalPut(item=item, condition=CLAIM_CONDITION, values={":me": bracket_id})


def save_claiming(
    repo: BracketRepository,
    previous: Bracket,
    current: Bracket,
    events: Sequence[Any],
    gtt_id: str,
    *,
    legs: Iterable[dict[str, Any]] = (),
) -> None:
    """repo.save of a bracket that now records `gtt_id`, with the GTT's claim in the same transaction.

    Raises GttClaimedElsewhere (nothing written) when another bracket holds the claim."""
    claim = claim_put(current.account_id, gtt_id, current.id, current.updated_at)
    try:
        repo.save(previous, current, events, legs=legs, extra=[claim])
    except ExtraConditionFailed as taken:
        raise GttClaimedElsewhere(gtt_id, current.id) from taken


def claim_alone(account_id: str, gtt_id: str, bracket_id: str, now: datetime) -> bool:
    """Claim outside a bracket write (before cancelling a GTT we placed: never cancel another bracket's)."""
    put = claim_put(account_id, gtt_id, bracket_id, now)
    client = table().meta.client
    try:
        table().put_item(
            Item=put.item, ConditionExpression=put.condition, ExpressionAttributeValues=dict(put.values or {})
        )
    except client.exceptions.ConditionalCheckFailedException:
        return False
    return True


def claimed_by_others(gtt_ids: Iterable[str], bracket_id: str) -> set[str]:
    """Those of `gtt_ids` another bracket has claimed (one consistent GetItem each: adoption candidates are few)."""
    taken = set()
    for gtt_id in dict.fromkeys(gtt_ids):
        item = table().get_item(Key=r.gtt_claim_key(gtt_id), ConsistentRead=True).get("Item")
        if item is not None and item.get("bracket_id") != bracket_id:
            taken.add(gtt_id)
    return taken


def claimant(gtt_id: str) -> str | None:
    """The bracket that claimed `gtt_id` (None: no bracket of this stack ever recorded it)."""
    item = table().get_item(Key=r.gtt_claim_key(gtt_id), ConsistentRead=True).get("Item")
    return None if item is None else str(item.get("bracket_id"))


def claimed_at(gtt_id: str) -> datetime | None:
    """When `gtt_id` was recorded for a bracket (None: never by this stack): how long the broker has had to list it."""
    item = table().get_item(Key=r.gtt_claim_key(gtt_id), ConsistentRead=True).get("Item")
    return None if item is None or not item.get("claimed_at") else datetime.fromisoformat(str(item["claimed_at"]))
