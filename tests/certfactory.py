"""Test certificates: the product's own on-the-fly PKI (`certwatch.devpki`)."""

from certwatch.pki.devpki import Issued, Pki, Revocation, issue, make_crl, make_key, make_pki

__all__ = ["Issued", "Pki", "Revocation", "issue", "make_crl", "make_key", "make_pki"]
