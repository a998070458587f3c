"""Scans: what the store holds in use, and live probes of what is really served."""
