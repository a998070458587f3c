"""API errors: one exception type per error `Code` of the SPEC.

    ApiError (code, status, message)
    ├── InvalidParameter, InvalidJson, RequestTooLarge, IdempotentParameterMismatch (400/413)
    ├── certificate checks (400): InvalidCertificate, InvalidPrivateKey, KeyCertificateMismatch,
    │   MissingPrivateKey, NotACaCertificate, InvalidChain, CertificateExpired,
    │   CertificateNotYetValid; PKCS#12/DER uploads: InvalidPassword, MultipleLeafCertificates
    ├── limits and rules (400): QuotaExceeded, TooManyCertificates, IncorrectCertificateType,
    │   MissingCaCertificate, PortInUse, ResourceInUse
    ├── ACME (400): AcmeNotConfigured, UnsupportedChallenge
    ├── NotFound (404): `<Object>NotFound`, the object named at raise time; InvalidAction (404)
    ├── Unauthorized (401)
    ├── ProxyUnavailable (503): the data plane did not take the change
    └── TooManyConnections (503): the API has `api.max_connections` open

Each is raised where its rule lives and turned into the JSON error in one place (`api.py`).
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the API reports as `{"Code", "Message"}` with an HTTP status."""

    code = "InternalError"
    status = 500

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    """A 400 whose `Code` is given at raise time (certificate checks use x509's codes)."""

    status = 400


class InvalidParameter(BadRequest):
    """A parameter is missing, of the wrong type, or out of range."""

    code = "InvalidParameter"


class InvalidJson(BadRequest):
    """The body is not a JSON object."""

    code = "InvalidJson"


class IdempotentParameterMismatch(BadRequest):
    """A `ClientToken` was reused with different parameters."""

    code = "IdempotentParameterMismatch"


class RequestTooLarge(ApiError):
    """The body is larger than the API accepts."""

    code = "RequestTooLarge"
    status = 413


class MissingPrivateKey(BadRequest):
    """A server certificate was uploaded without its key."""

    code = "MissingPrivateKey"


class CertificateExpired(BadRequest):
    """An expired certificate cannot be a listener's default."""

    code = "CertificateExpired"


class CertificateNotYetValid(BadRequest):
    """A certificate before its NotBefore cannot be a listener's default."""

    code = "CertificateNotYetValid"


class QuotaExceeded(BadRequest):
    """More additional certificates than one load balancer may hold."""

    code = "QuotaExceeded.AdditionalCertificates"


class TooManyCertificates(BadRequest):
    """More certificates in one Associate/Disassociate call than allowed."""

    code = "TooManyCertificates"


class IncorrectCertificateType(BadRequest):
    """A certificate of the wrong type for the role it was given."""

    code = "IncorrectCertificateType"


class MissingCaCertificate(BadRequest):
    """Mutual TLS was asked for without a CA certificate."""

    code = "MissingCaCertificate"


class PortInUse(BadRequest):
    """The listener's address and port are taken."""

    code = "PortInUse"


class ResourceInUse(BadRequest):
    """The object is still used by a listener or a staged rotation."""

    code = "ResourceInUse"


class AcmeNotConfigured(BadRequest):
    """A certificate was requested while no ACME server is configured (`[acme]`)."""

    code = "AcmeNotConfigured"


class UnsupportedChallenge(BadRequest):
    """The configured ACME challenge cannot prove control of a requested name."""

    code = "UnsupportedChallenge"


class NotFound(ApiError):
    """An unknown id: `Code` is `<Object>NotFound`."""

    status = 404

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"{kind} {object_id!r} does not exist", code=f"{kind}NotFound")


class InvalidAction(ApiError):
    """No action of that name."""

    code = "InvalidAction"
    status = 404


class Unauthorized(ApiError):
    """No or a wrong bearer token."""

    code = "Unauthorized"
    status = 401


class ProxyUnavailable(ApiError):
    """The data plane did not acknowledge the change in time; nothing was changed."""

    code = "ProxyUnavailable"
    status = 503


class TooManyConnections(ApiError):
    """The API has as many connections open as `api.max_connections`; this one is closed."""

    code = "TooManyConnections"
    status = 503


class ConcurrentModification(ApiError):
    """Another change to the same object won a race this one could not merge; nothing changed,
    and the call may be retried."""

    code = "ConcurrentModification"
    status = 409


class StoreUnavailable(ApiError):
    """The store cannot be reached; nothing changed, and the call may be retried."""

    code = "StoreUnavailable"
    status = 503
