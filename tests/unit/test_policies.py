"""Which security policies can be served: a TLS version needs a cipher that works at it."""

from __future__ import annotations

import pytest

from certwatch.inventory.policies import SYSTEM_POLICIES, check_custom, impossible


@pytest.mark.parametrize("policy_id", sorted(SYSTEM_POLICIES))
def test_every_system_policy_can_be_served(policy_id: str) -> None:
    """Each of the five system policies has a cipher for each version it enables."""
    policy = SYSTEM_POLICIES[policy_id]
    assert impossible(policy.tls_versions, policy.ciphers) is None


@pytest.mark.parametrize(
    ("versions", "ciphers", "refused"),
    [
        (["TLSv1.1"], ["ECDHE-RSA-AES128-GCM-SHA256", "AES256-SHA256"], "TLSv1.1"),
        (["TLSv1.0"], ["AES128-GCM-SHA256"], "TLSv1.0"),
        (["TLSv1.0", "TLSv1.1", "TLSv1.2"], ["ECDHE-RSA-AES256-GCM-SHA384"], "TLSv1.0"),
        (["TLSv1.1"], ["ECDHE-RSA-AES128-SHA"], None),
        (["TLSv1.3"], ["TLS_AES_128_GCM_SHA256"], None),
        (["TLSv1.2", "TLSv1.3"], ["AES128-GCM-SHA256", "TLS_CHACHA20_POLY1305_SHA256"], None),
    ],
)
def test_custom_policy_is_refused_for_a_version_without_a_usable_cipher(
    versions: list[str], ciphers: list[str], refused: str | None
) -> None:
    """A version only TLS 1.2 ciphers are listed for is named in the refusal; others pass."""
    problem = check_custom("p", versions, ciphers)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith(f"{refused} is enabled but none of the listed ciphers")
