"""What each API action answers, as pydantic models: the OpenAPI document's response schemas.

The handlers return plain dicts; these models only describe them (top-level fields typed,
nested objects too), and `tests/integration/api/test_openapi.py` checks real answers against
them. Every answer also carries `RequestId`; a changing action called with `DryRun` answers
`DryRunResponse` instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Time = str
"""An RFC 3339 UTC timestamp (`2025-01-31T12:00:00Z`)."""


class Response(BaseModel):
    """Base of every successful answer."""

    model_config = ConfigDict(extra="forbid")

    RequestId: str = Field(description="The id of this call (also the X-Request-Id header).")


class EmptyResponse(Response):
    """An action that answers nothing but its request id."""


class DryRunResponse(BaseModel):
    """The answer of a changing action called with `DryRun: true`: everything was checked,
    nothing changed."""

    RequestId: str = Field(description="The id of this call.")
    DryRun: Literal[True] = Field(description="Always true: nothing was changed.")
    StagedCertificateId: str | None = Field(
        default=None,
        description="RotateListenerCertificate only: the candidate a rotation would apply.",
    )
    Reason: str | None = Field(
        default=None, description="RotateListenerCertificate only: why that candidate, or none."
    )


class ErrorResponse(BaseModel):
    """Every refusal (4xx) and every fault of the service (5xx); a refused call changed
    nothing."""

    RequestId: str = Field(description="The id of this call.")
    Code: str = Field(description="The error code, e.g. InvalidParameter, ListenerNotFound.")
    Message: str = Field(description="What was refused and why.")


# Certificates


class CertificateObject(BaseModel):
    """A certificate of the inventory (never its key)."""

    CertificateId: str
    CertificateName: str
    CertificateType: Literal["Server", "Ca", "Client"]
    CommonName: str
    SubjectAlternativeNames: list[str]
    Issuer: str
    SerialNumber: str
    Fingerprint: str = Field(description="SHA-256 of the DER certificate, hex.")
    NotBefore: Time
    NotAfter: Time
    DaysRemaining: int = Field(description="Whole days until NotAfter (negative once expired).")
    KeyAlgorithm: str
    KeySize: int
    SignatureAlgorithm: str
    ChainLength: int = Field(description="Certificates in the uploaded chain, leaf included.")
    Status: Literal["Valid", "Expiring", "Expired", "NotYetValid", "Revoked"]
    Managed: bool = Field(description="Whether certwatch issues and renews it through ACME.")
    RenewalAt: Time | None = Field(
        description="When certwatch renews it (managed: the time picked in the ACME server's "
        "renewal window, else with a third of its lifetime left or rotation.before_days "
        "before NotAfter, whichever is sooner); null for certificates it does not renew."
    )
    Warnings: list[str] = Field(description="e.g. WeakKey, Sha1Signature, IncompleteChain.")


class UploadCertificateResponse(Response):
    """UploadCertificate's answer."""

    CertificateId: str = Field(description="The id of the stored certificate.")


class GetCertificateResponse(Response):
    """GetCertificate's answer."""

    Certificate: CertificateObject


class ListCertificatesResponse(Response):
    """ListCertificates' answer: one page."""

    Certificates: list[CertificateObject]
    NextToken: str | None = Field(description="Pass it back for the next page; null at the end.")
    TotalCount: int = Field(description="How many certificates match, over all pages.")


# Load balancers, server groups, listeners


class CreateLoadBalancerResponse(Response):
    """CreateLoadBalancer's answer."""

    LoadBalancerId: str


class LoadBalancerObject(BaseModel):
    """A load balancer and the listeners it holds."""

    LoadBalancerId: str
    LoadBalancerName: str
    CreatedAt: Time
    ListenerIds: list[str]


class ListLoadBalancersResponse(Response):
    """ListLoadBalancers' answer, oldest first."""

    LoadBalancers: list[LoadBalancerObject]


class CreateServerGroupResponse(Response):
    """CreateServerGroup's answer."""

    ServerGroupId: str


class ServerObject(BaseModel):
    """A backend server of a group."""

    ServerIp: str
    Port: int
    Weight: int


class HealthCheckObject(BaseModel):
    """A server group's health checks, every field given."""

    HealthCheckEnabled: bool
    HealthCheckType: Literal["TCP"]
    HealthCheckConnectPort: int = Field(description="0: each server's own port.")
    HealthCheckInterval: float = Field(description="Seconds.")
    HealthCheckConnectTimeout: float = Field(description="Seconds.")
    HealthyThreshold: int
    UnhealthyThreshold: int


class ServerGroupObject(BaseModel):
    """A server group, its servers, its health checks and the listeners that use it."""

    ServerGroupId: str
    ServerGroupName: str
    Servers: list[ServerObject]
    HealthCheckConfig: HealthCheckObject
    CreatedAt: Time
    ListenerIds: list[str]


class ListServerGroupsResponse(Response):
    """ListServerGroups' answer, oldest first."""

    ServerGroups: list[ServerGroupObject]


class CreateListenerResponse(Response):
    """CreateListener's answer."""

    ListenerId: str


class ListenerObject(BaseModel):
    """A listener with all its fields."""

    ListenerId: str
    LoadBalancerId: str
    ListenerProtocol: Literal["TCPSSL", "TCP"]
    ListenerPort: int
    ListenerAddress: str
    ServerGroupId: str
    CertificateIds: list[str] = Field(description="The default server certificate (one id).")
    AdditionalCertificateIds: list[str] = Field(description="The SNI certificates.")
    SecurityPolicyId: str
    CaEnabled: bool = Field(description="Whether clients must present a certificate.")
    CaCertificateIds: list[str]
    IdleTimeout: int = Field(description="Seconds.")
    ListenerDescription: str | None
    AlertThresholdsDays: list[int] | None = Field(
        description="The listener's own alert thresholds (days), or null for the defaults."
    )
    ListenerStatus: Literal["Running", "Stopped"]
    AlpnEnabled: bool
    AlpnPolicy: Literal["HTTP1Only", "HTTP2Only", "HTTP2Preferred", "HTTP2Optional"] | None
    ProxyProtocolEnabled: bool = Field(description="A PROXY protocol v2 header to backends.")
    Cps: int = Field(description="New connections a second it accepts (0: unlimited).")
    MaxConnections: int = Field(description="Open connections it accepts (0: unlimited).")
    CreatedAt: Time


class GetListenerAttributeResponse(ListenerObject, Response):
    """GetListenerAttribute's answer: the listener's fields at the top level."""


class ListListenersResponse(Response):
    """ListListeners' answer, oldest first."""

    Listeners: list[ListenerObject]


class ListenerCertificateObject(BaseModel):
    """A certificate as a listener uses it."""

    CertificateId: str
    CertificateType: Literal["Server", "Ca", "Client"]
    IsDefault: bool
    Role: Literal["default", "additional", "ca"]
    Status: Literal["Valid", "Expiring", "Expired", "NotYetValid", "Revoked"]
    CommonName: str | None
    NotAfter: Time
    DaysRemaining: int


class ListListenerCertificatesResponse(Response):
    """ListListenerCertificates' answer: default, additional, then CA certificates."""

    Certificates: list[ListenerCertificateObject]


class SecurityPolicyObject(BaseModel):
    """A TLS security policy, system or custom."""

    SecurityPolicyId: str
    SecurityPolicyName: str
    System: bool
    TlsVersions: list[str]
    Ciphers: list[str]
    Unenforceable: list[str] = Field(
        description="Versions and ciphers this host's OpenSSL cannot enforce."
    )


class ListSecurityPoliciesResponse(Response):
    """ListSecurityPolicies' answer: system policies, then custom ones."""

    SecurityPolicies: list[SecurityPolicyObject]


class CreateSecurityPolicyResponse(Response):
    """CreateSecurityPolicy's answer."""

    SecurityPolicyId: str


# Rotation and monitoring


class StageCertificateResponse(Response):
    """StageCertificate's answer: the staged entry, judged at once."""

    StagedCertificateId: str
    Status: Literal["Pending", "Applied", "Rejected", "Superseded"]
    Reason: str | None = Field(description="Why it was rejected or superseded, else null.")


class StagedCertificateObject(BaseModel):
    """A staged certificate and how it was judged."""

    StagedCertificateId: str
    CertificateId: str
    ListenerId: str | None = Field(description="The one listener it is for, or null for any.")
    CommonName: str | None
    NotAfter: Time
    Status: Literal["Pending", "Applied", "Rejected", "Superseded"]
    Reason: str | None
    Source: str = Field(description="Where it came from (the API, the staging folder, ACME).")
    CreatedAt: Time
    UpdatedAt: Time


class ListStagedCertificatesResponse(Response):
    """ListStagedCertificates' answer, oldest first."""

    StagedCertificates: list[StagedCertificateObject]


class RotationResponse(Response):
    """The answer of a rotation or a rollback."""

    RotationEventId: str | None = Field(description="The history entry it wrote.")
    Result: Literal["Applied", "RolledBack", "Rejected"]
    Reason: str | None


class RotationEventObject(BaseModel):
    """One entry of a listener's certificate history."""

    RotationEventId: str
    Time: Time
    Actor: str = Field(description="api, console, auto, cli, acme …")
    OldCertificateId: str | None
    NewCertificateId: str | None
    Role: str
    Result: str
    Reason: str | None


class ListRotationEventsResponse(Response):
    """ListRotationEvents' answer, newest first."""

    RotationEvents: list[RotationEventObject]


class ScanNowResponse(Response):
    """ScanNow's answer."""

    ScanId: str
    Certificates: dict[str, int] = Field(description="How many certificates by Status.")
    ProbesRun: int
    ProbesFailed: int
    AlertsSent: int
    AlertsFailed: int
    RevocationsChecked: int = Field(description="Certificates whose revocation was checked.")
    RevocationWarnings: list[str] = Field(
        description="Revocation sources that could not be used (a warning, not a revocation)."
    )


class AlertObject(BaseModel):
    """An expiry alert, sent or pending."""

    AlertId: str
    CertificateId: str
    ListenerIds: list[str]
    Threshold: str = Field(description="30, 7, 1 (days) or expired.")
    Title: str
    CreatedAt: Time
    SentAt: Time | None
    Delivered: bool
    Attempts: int
    LastError: str | None


class ListAlertsResponse(Response):
    """ListAlerts' answer, newest first."""

    Alerts: list[AlertObject]


class NotificationResult(BaseModel):
    """The test message's fate at one alert URL."""

    Url: str = Field(description="The alert URL, secrets masked.")
    Delivered: bool
    Error: str | None


class TestNotificationResponse(Response):
    """TestNotification's answer: one result per alert URL."""

    Results: list[NotificationResult]


# ACME


class CertificateRequestStarted(Response):
    """RequestCertificate's and RenewCertificate's answer: the order, placed."""

    CertificateRequestId: str
    Status: Literal["Pending", "Issued", "Failed"]


class CertificateRequestObject(BaseModel):
    """An ACME order and its state."""

    CertificateRequestId: str
    DomainNames: list[str]
    CertificateName: str | None
    KeyType: str | None
    ListenerId: str | None
    Role: Literal["default", "additional"]
    Renewal: bool
    RenewsCertificateId: str | None
    Status: Literal["Pending", "Issued", "Failed"]
    CreatedAt: Time
    UpdatedAt: Time
    CertificateId: str | None = Field(default=None, description="Once Issued.")
    Reason: str | None = Field(default=None, description="Once Failed.")
    NextAttemptAt: Time | None = Field(default=None, description="Once Failed: the next try.")


class GetCertificateRequestResponse(Response):
    """GetCertificateRequest's answer."""

    CertificateRequest: CertificateRequestObject


class ListCertificateRequestsResponse(Response):
    """ListCertificateRequests' answer."""

    CertificateRequests: list[CertificateRequestObject]
    NextToken: str | None = Field(description="Pass it back for the next page; null at the end.")
    TotalCount: int = Field(description="How many requests match, over all pages.")


RESPONSES: dict[str, type[Response]] = {
    "UploadCertificate": UploadCertificateResponse,
    "GetCertificate": GetCertificateResponse,
    "ListCertificates": ListCertificatesResponse,
    "CreateLoadBalancer": CreateLoadBalancerResponse,
    "ListLoadBalancers": ListLoadBalancersResponse,
    "CreateServerGroup": CreateServerGroupResponse,
    "ListServerGroups": ListServerGroupsResponse,
    "CreateListener": CreateListenerResponse,
    "GetListenerAttribute": GetListenerAttributeResponse,
    "ListListeners": ListListenersResponse,
    "ListListenerCertificates": ListListenerCertificatesResponse,
    "ListSecurityPolicies": ListSecurityPoliciesResponse,
    "CreateSecurityPolicy": CreateSecurityPolicyResponse,
    "StageCertificate": StageCertificateResponse,
    "ListStagedCertificates": ListStagedCertificatesResponse,
    "RotateListenerCertificate": RotationResponse,
    "RollbackListenerCertificate": RotationResponse,
    "ListRotationEvents": ListRotationEventsResponse,
    "ScanNow": ScanNowResponse,
    "ListAlerts": ListAlertsResponse,
    "TestNotification": TestNotificationResponse,
    "RequestCertificate": CertificateRequestStarted,
    "RenewCertificate": CertificateRequestStarted,
    "GetCertificateRequest": GetCertificateRequestResponse,
    "ListCertificateRequests": ListCertificateRequestsResponse,
}
"""Each action's answer; an action not named here answers `EmptyResponse`."""


def response_of(action: str) -> type[Response]:
    """The model of what `action` answers on success."""
    return RESPONSES.get(action, EmptyResponse)

