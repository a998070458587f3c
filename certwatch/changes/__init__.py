"""Changes: the snapshot of what the proxy serves, and the one all-or-nothing commit."""
