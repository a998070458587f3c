"""Certificates as data: parsing, the chain rule, PEM, trust stores, a PKI for tests and demos."""
