"""BatchWorkflowInput: what a batch saga's execution starts with, "place these legs of this batch". Its producer: the
batch's registration (services/batch/registration.py). Its consumer: the batch state machine
(statemachine/batch.asl.json), which places each leg by its number and hands every task {"batch_id", "leg"}; the legs
themselves, and whether to roll back, are read from the batch's records, the truth the saga keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bracketflow.contracts.wire import compact_json, json_object
from bracketflow.errors import ValidationFailed


@dataclass(frozen=True)
class BatchWorkflowInput:
    """Start the saga of a registered batch: its legs by number, 1..n, in the order the trader sent them."""

    batch_id: str
    account_id: str
    rollback_on_failure: bool
    legs: tuple[int, ...]

    @classmethod
    def for_batch(cls, batch_id: str, account_id: str, rollback_on_failure: bool, leg_count: int) -> BatchWorkflowInput:
        return cls(batch_id, account_id, bool(rollback_on_failure), tuple(range(1, leg_count + 1)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "account_id": self.account_id,
            "rollback_on_failure": self.rollback_on_failure,
            "legs": list(self.legs),
        }

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_json(cls, body: str | bytes) -> BatchWorkflowInput:
        """Parse an execution's input; ValidationFailed names what is wrong."""
        raw = json_object(body, "batch workflow input")
        try:
            legs = raw["legs"]
            if not isinstance(legs, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in legs):
                raise ValueError(f"legs must be a list of leg numbers, got {legs!r}")
            rollback = raw["rollback_on_failure"]
            if not isinstance(rollback, bool):
                raise ValueError(f"rollback_on_failure must be true or false, got {rollback!r}")
            return cls(str(raw["batch_id"]), str(raw["account_id"]), rollback, tuple(legs))
        except KeyError as missing:
            raise ValidationFailed(f"batch workflow input lacks {missing}") from None
        except ValueError as exc:
            raise ValidationFailed(f"batch workflow input is invalid: {exc}") from None
