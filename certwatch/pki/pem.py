"""PEM text as blocks: whether a text is complete, and its certificates apart from its key.

Light on purpose (no cryptography, no store): the command line uses it too.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----\s*", re.DOTALL)


def complete(text: str) -> bool:
    """Every BEGIN line has its END line."""
    begins = text.count("-----BEGIN ")
    return begins > 0 and begins == text.count("-----END ") == len(_BLOCK.findall(text))


def split_pem(text: str) -> tuple[str, str]:
    """(certificate blocks, the first private key block) of a PEM text; either may be empty."""
    certs: list[str] = []
    keys: list[str] = []
    for match in _BLOCK.finditer(text):
        label = match.group(1)
        (keys if label.endswith("PRIVATE KEY") else certs).append(match.group(0).strip() + "\n")
    return "".join(certs), "".join(keys[:1])
