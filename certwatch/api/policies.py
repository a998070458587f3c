"""Security policy actions: list (system, custom, and what this host cannot enforce) and create."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlmodel import col, select

from certwatch import errors
from certwatch.api.registry import ActionContext, ChangeRequest, Request, action
from certwatch.ids import new_id
from certwatch.inventory.policies import (
    MAX_CIPHERS,
    SYSTEM_POLICIES,
    Policy,
    check_custom,
    resolve_policy,
)
from certwatch.store.models import SecurityPolicy
from offload.tls import unenforceable


def policy_view(policy: Policy) -> dict[str, Any]:
    """The API form of a policy, naming what this host's OpenSSL cannot enforce."""
    return {
        "SecurityPolicyId": policy.policy_id,
        "SecurityPolicyName": policy.name,
        "System": policy.system,
        "TlsVersions": list(policy.tls_versions),
        "Ciphers": list(policy.ciphers),
        "Unenforceable": unenforceable(policy.tls_versions, policy.ciphers),
    }


@action("ListSecurityPolicies", Request, changing=False)
def list_security_policies(ctx: ActionContext, req: Request) -> dict[str, Any]:
    """The system policies, then the custom ones."""
    custom = ctx.session.exec(select(SecurityPolicy).order_by(col(SecurityPolicy.created_at)))
    policies = [*SYSTEM_POLICIES.values(), *(resolve_policy(ctx.session, row.id) for row in custom)]
    return {"SecurityPolicies": [policy_view(p) for p in policies]}


class CreateSecurityPolicyRequest(ChangeRequest):
    """CreateSecurityPolicy parameters."""

    SecurityPolicyName: str = Field(min_length=1, max_length=128)
    TlsVersions: list[str] = Field(min_length=1, max_length=4)
    Ciphers: list[str] = Field(min_length=1, max_length=MAX_CIPHERS * 4)


@action("CreateSecurityPolicy", CreateSecurityPolicyRequest, changing=True)
def create_security_policy(ctx: ActionContext, req: CreateSecurityPolicyRequest) -> dict[str, Any]:
    """Create a custom policy from the system policies' versions and ciphers."""
    versions = list(dict.fromkeys(req.TlsVersions))
    ciphers = list(dict.fromkeys(req.Ciphers))
    problem = check_custom(req.SecurityPolicyName, versions, ciphers)
    if problem:
        raise errors.InvalidParameter(problem)
    row = SecurityPolicy(
        id=new_id("spy"),
        name=req.SecurityPolicyName,
        tls_versions=versions,
        ciphers=ciphers,
        created_at=ctx.now,
    )
    ctx.session.add(row)
    return {"SecurityPolicyId": row.id}
