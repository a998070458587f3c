"""The store: engine and migrations, tables, history, several nodes on one database."""
