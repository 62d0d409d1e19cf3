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
