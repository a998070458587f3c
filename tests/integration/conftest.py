"""Fixtures of the integration tests that several modules share."""

from tests.integration.pebble import pebble

__all__ = ["pebble"]
