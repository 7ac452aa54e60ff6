"""Turning a quota refusal into the error a client shows its user."""

from __future__ import annotations

from ..oci.errors import ErrorCode, RegistryError
from ..oci.rules import format_bytes
from ..storage.records import QuotaExceededError


def quota_refusal(err: QuotaExceededError, consequence: str) -> RegistryError:
    if err.adding:
        state = f"would hold {format_bytes(err.usage + err.adding)} of its {format_bytes(err.limit)} quota"
    else:
        state = f"holds {format_bytes(err.usage)}, over its {format_bytes(err.limit)} quota"
    return RegistryError(ErrorCode.DENIED, f"quota exceeded: {err.scope} {state}; {consequence}")
