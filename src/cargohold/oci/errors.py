"""Error codes of the OCI Distribution Specification, with their HTTP statuses.

The model layer raises `RegistryError`; the HTTP layer turns it into the spec's JSON body.
The spec says an error body's `code` MUST be one of its table, so a refusal that no code of
the table describes (a path that is no endpoint, an unsatisfiable range, a bad page size, an
internal error) is a `RegistryError` without a code: its status and a plain-text message.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """The spec's table (distribution-spec v1.1, "Error Codes"), and Distribution's UNAVAILABLE."""

    # value: (HTTP status, default message)
    BLOB_UNKNOWN = (404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = (400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = (404, "blob upload unknown to registry")
    DIGEST_INVALID = (400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (404, "manifest references a blob or manifest unknown to the repository")
    MANIFEST_INVALID = (400, "manifest invalid")
    MANIFEST_UNKNOWN = (404, "manifest unknown")
    NAME_INVALID = (400, "invalid repository name")
    NAME_UNKNOWN = (404, "repository name not known to registry")
    SIZE_INVALID = (400, "provided length did not match content length")
    UNAUTHORIZED = (401, "authentication required")
    DENIED = (403, "requested access to the resource is denied")
    UNSUPPORTED = (405, "the operation is unsupported")
    TOOMANYREQUESTS = (429, "too many requests")
    # Not in the spec's table but Distribution's (errcode.ErrorCodeUnavailable): the one answer
    # for a dependency that is down or slow, which clients (docker, containerd) retry.
    UNAVAILABLE = (503, "service unavailable")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def default_message(self) -> str:
        return self.value[1]


class RegistryError(Exception):
    """A request the registry refuses, with the spec's code and a message for a person."""

    def __init__(
        self,
        code: ErrorCode | None,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code is None and (message is None or status is None):
            raise TypeError("an error without a code needs its status and a message")
        self.code = code
        self.message = message or (code.default_message if code else "")
        self.detail = detail
        self.status = status or (code.status if code else 500)
        self.headers = headers or {}
        super().__init__(f"{code.name if code else self.status}: {self.message}")

    @classmethod
    def plain(cls, status: int, message: str, headers: dict[str, str] | None = None) -> RegistryError:
        """A refusal that no code of the spec's table describes: its status and a message."""
        return cls(None, message, status=status, headers=headers)

    def body(self) -> dict[str, Any]:
        """The spec's error document; only for errors with a code."""
        if self.code is None:
            raise ValueError("an error without a code has a plain-text body")
        error: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}

    def render(self) -> tuple[str, bytes]:
        """(content type, body) as the HTTP layer sends it."""
        if self.code is None:
            return "text/plain; charset=utf-8", (self.message + "\n").encode()
        return "application/json", json.dumps(self.body()).encode()
