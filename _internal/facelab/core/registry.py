"""One small registry, used by every kind of plugin (ARCHITECTURE: "Plugins").

    COLORS = Registry("colour transfer")
    @COLORS.register("rct")
    def rct(...): ...
    COLORS.names()            # ["rct", ...] in registration order (or the lazy table's order)
    COLORS.create("rct", ...) # the plugin called with the arguments (a factory), or
    COLORS.get("rct")         # the plugin itself (a function)

`lazy` maps names to the module that registers them, so that listing names needs no import and
a plugin's module (torch, say) is imported only when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


class Registry:
    def __init__(self, kind: str, lazy: dict[str, str] | None = None):
        self.kind = kind
        self.lazy = dict(lazy or {})
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(item: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return wrap

    def names(self) -> list[str]:
        return sorted(self.lazy) if self.lazy else list(self._items)

    def registered(self) -> list[str]:
        """The names whose module has run its register decorators (so far)."""
        return list(self._items)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items and name in self.lazy:
            importlib.import_module(self.lazy[name])  # runs its register decorators
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._items[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)
