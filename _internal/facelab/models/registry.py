"""Model registry: `@register_model(name)`, `create_model(name, arch)`, `list_models()`.

Listing needs no import of torch: each name's module is imported on first use.
"""

from __future__ import annotations

from facelab.core.registry import Registry

MODELS = Registry("model", lazy={"saehd": "facelab.models.saehd", "quick96": "facelab.models.saehd",
                                 "xseg": "facelab.models.xseg"})  # fmt: skip
register_model = MODELS.register
list_models = MODELS.names
create_model = MODELS.create
