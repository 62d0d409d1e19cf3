"""Domain and application errors, in one place; the API maps them to status codes in one place too."""

from __future__ import annotations


class BracketflowError(Exception):
    """Base of every error the system raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationFailed(BracketflowError):
    """The request is not a valid bracket (bad field, bad price relation, off-tick, bad lot)."""

    status_code = 400


class Unauthorized(BracketflowError):
    status_code = 401


class Forbidden(BracketflowError):
    status_code = 403


class NotFound(BracketflowError):
    status_code = 404


class Conflict(BracketflowError):
    status_code = 409


class RateLimited(BracketflowError):
    status_code = 429


class InvalidStateTransition(BracketflowError):
    """A status change the transition table does not allow."""

    status_code = 409

    def __init__(self, entity: str, current: str, target: str) -> None:
        super().__init__(f"{entity} cannot go from {current} to {target}")
        self.entity = entity
        self.current = current
        self.target = target


class ConcurrentModification(BracketflowError):
    """A conditional write lost: another actor changed the record first."""

    status_code = 409


class BracketBlocked(BracketflowError):
    """The bracket was registered, then refused by a risk, guard or duplicate check; it is FAILED with the tag.

    Risk blocks answer 403, guard and duplicate blocks 409; the body carries the bracket id and the tag so the
    trader can find the refused bracket in the order book.
    """

    def __init__(self, message: str, *, bracket_id: str, tag: str, status_code: int) -> None:
        super().__init__(message)
        self.bracket_id = bracket_id
        self.tag = tag
        self.status_code = status_code
