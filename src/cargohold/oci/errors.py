"""Error codes of the OCI Distribution Specification, with their HTTP statuses.

The model layer raises `RegistryError`; the HTTP layer turns it into the spec's JSON body.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(Enum):
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
    # Not in the spec's table, but needed for statuses the spec names without a code.
    RANGE_INVALID = (416, "requested range not satisfiable")
    PAGINATION_NUMBER_INVALID = (400, "invalid number of results requested")
    NOT_FOUND = (404, "no such endpoint")
    UNKNOWN = (500, "unknown error")

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
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.default_message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}
        super().__init__(f"{code.name}: {self.message}")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}
