"""Model registry: `@register_model(name)`, `create_model(name, arch)`, `list_models()`."""

from __future__ import annotations

import importlib
from typing import Any, Callable

_MODELS: dict[str, Callable[..., Any]] = {}
_MODULES = {"saehd": "saehd", "quick96": "saehd", "xseg": "xseg"}


def register_model(name: str):  # noqa: ANN201
    def wrap(factory):  # noqa: ANN001, ANN202
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_MODULES)


def create_model(name: str, *args: Any, **kwargs: Any) -> Any:
    if name not in _MODULES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_MODULES))}")
    importlib.import_module(f"facelab.models.{_MODULES[name]}")
    return _MODELS[name](*args, **kwargs)
