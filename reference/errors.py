"""The project's exceptions: one root, infrastructure errors, and domain errors with a code.

Domain errors carry the error code of contract §4 (`validation`, `not_found`, ...); the HTTP status
for each code lives in the API layer, not here.
"""

from __future__ import annotations


class ReferenceServiceError(Exception):
    """Root of every exception this project raises on purpose."""


class ConfigError(ReferenceServiceError):
    """The configuration cannot work (bad URL, unknown scheme, missing key)."""


class StartupError(ReferenceServiceError):
    """A dependency could not be reached at start-up within the connect timeout."""


class BrokerUnavailable(ReferenceServiceError):
    """The message broker cannot be reached, or did not confirm a publish."""


class StoreUnavailable(ReferenceServiceError):
    """The result store (or domain store) cannot be reached."""


class NotQueued(BrokerUnavailable):
    """A request was not queued (its publish failed or was not confirmed); its record, written
    under `request_id`, says so: Fail with code `unavailable`."""

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class Unroutable(BrokerUnavailable):
    """Published to a queue that does not exist: the broker returned the message."""


class QueueMismatch(ConfigError):
    """A queue exists on the broker with arguments other than ours."""


class DeliveryAlreadySettled(ReferenceServiceError):
    """A delivery was acked or rejected twice (RabbitMQ closes the channel for this)."""


class AuthError(ReferenceServiceError):
    """The bearer token is missing or invalid."""

    def __init__(self, message: str, *, token_present: bool) -> None:
        super().__init__(message)
        self.token_present = token_present


class DomainError(ReferenceServiceError):
    """A failure of an action, reported to the client with `code`."""

    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationFailed(DomainError):
    code = "validation"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Forbidden(DomainError):
    code = "forbidden"


class UnknownAction(DomainError):
    code = "unknown_action"


class DeadlineExceeded(DomainError):
    code = "deadline_exceeded"


class JobFailed(DomainError):
    code = "job_failed"


class PoisonMessage(ReferenceServiceError):
    """A message that can never be processed: not JSON, or lacking a required field."""

    def __init__(self, reason: str, *, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
