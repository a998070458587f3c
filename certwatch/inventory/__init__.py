"""The inventory's rules (certificates, listeners, balancers, policies), called by every path."""
