"""Issuing and renewing certificates through an ACME server (SPEC §12)."""
