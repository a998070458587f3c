"""Alerts: which are due (pure rules), their delivery through apprise, the renewal port."""
