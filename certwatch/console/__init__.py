"""The console: server-rendered pages for people, over the API's actions and nothing else."""

from certwatch.console.routes import mount

__all__ = ["mount"]
