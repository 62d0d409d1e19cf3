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


class BracketRefused(BracketflowError):
    """The bracket was registered, then refused by a risk, guard or duplicate check; it is FAILED with the tag.

    Risk blocks answer 403, guard and duplicate blocks 409; the body carries the bracket id and the tag so the
    trader can find the refused bracket in the order book, and for a scale-out every share's refused bracket
    (`shares`: bracket_id, share_index, bracket_status), as its accepted answer does.
    """

    def __init__(
        self,
        message: str,
        *,
        bracket_id: str,
        tag: str,
        status_code: int,
        shares: tuple[dict[str, object], ...] = (),
    ) -> None:
        super().__init__(message)
        self.bracket_id = bracket_id
        self.tag = tag
        self.status_code = status_code
        self.shares = shares

    def body(self) -> dict[str, object]:
        """What the answer carries besides the message."""
        shares = {"shares": list(self.shares)} if self.shares else {}
        return {"bracket_id": self.bracket_id, "tag": self.tag, **shares}


class BrokerMisconfigured(BracketflowError):
    """The broker settings are unsafe or incomplete: paper mode pointed at a real broker or at real credentials,
    or no api_key to log in with. Nothing is sent to any broker."""

    status_code = 503


class BrokerError(BracketflowError):
    """The broker did not do what we asked. Carries the HTTP status and Kite's error_type when there was one."""

    status_code = 502

    def __init__(self, message: str, *, http_status: int | None = None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_type = error_type


class BrokerRejected(BrokerError):
    """The broker refused the request (InputException, OrderException, margins...): the message says why."""

    status_code = 422


class BrokerRateLimited(BrokerError):
    """The broker answered 429: it refused the call before acting on it, so retrying later is safe."""

    status_code = 429


class BrokerUnavailable(BrokerError):
    """A 5xx, a network failure or a broker-side NetworkException/GeneralException."""

    status_code = 503


class BrokerTimeout(BrokerError):
    """No answer in time: the outcome at the broker is unknown until we look it up."""

    status_code = 504


class SessionExpired(BrokerError):
    """Kite's TokenException / 403: the daily access token is gone; the trader must log in again."""

    status_code = 503

    def __init__(
        self,
        message: str = "the Kite session has expired or is invalid — log in again",
        *,
        http_status: int | None = 403,
        error_type: str | None = "TokenException",
    ) -> None:
        super().__init__(message, http_status=http_status, error_type=error_type)


class PositionNotHeld(BrokerError):
    """The broker's net position no longer holds what an exit would close: placing it would open a reverse position."""

    status_code = 409


class BrokerOrderNotFound(BrokerError):
    """The broker has no order (or GTT) with that id."""

    status_code = 404


class ProtectionNotPossible(BracketflowError):
    """The filled position cannot get a GTT (levels crossed by the fill or the market): flatten it instead."""

    status_code = 409


class EntryCancelPending(BracketflowError):
    """The entry's cancellation was sent but the broker has not confirmed it yet; look again shortly."""

    status_code = 503


class ExitNotYetPossible(BracketflowError):
    """A strategy's exit (signal, time, kill switch) found the bracket's protection being placed this second: the exit
    intent comes back in seconds and exits it once it is PROTECTED (or finds the emergency flatten already exiting)."""

    status_code = 503
