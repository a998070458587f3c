"""The API actions; importing this package registers every action module's actions in `ACTIONS`."""

import importlib
import pkgutil

from certwatch.actions.registry import ACTIONS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ACTIONS"]
