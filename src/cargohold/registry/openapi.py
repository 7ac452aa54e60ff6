"""The management API's OpenAPI 3.1 description, built from the same route table that serves it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .. import __version__

_PARAMETER = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def openapi_document(routes: Iterable[Any], prefix: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        raw = route.pattern.pattern.removeprefix("^").removesuffix("\\Z")
        path = _PARAMETER.sub(lambda m: "{" + m[1] + "}", raw)
        operation: dict[str, Any] = {
            "summary": (route.handler.__doc__ or "").strip(),
            "operationId": route.handler.__name__,
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAMETER.findall(raw)
            ],
            "responses": {
                str(route.status): {"description": "done", "content": {"application/json": {}}},
                "400": {"description": "a malformed request; the errors body says what"},
                "401": {"description": "no or bad credentials"},
                "403": {"description": "the caller is not an administrator"},
            },
        }
        if route.body:
            properties = {name: {"type": kind} for name, kind in route.body.items()}
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object", "properties": properties}}},
            }
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "cargohold management API", "version": __version__},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT with registry:admin:*"},
            }
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": paths,
    }
