"""The `n`/`last` pagination that tag and catalog listings share."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from ..oci.errors import ErrorCode, RegistryError
from .http import Request


def page(request: Request, fetch: Callable[[int | None, str | None], list[str]]) -> tuple[list[str], dict[str, str]]:
    """One page of a sorted listing and, when more follow, its `Link` header."""
    raw_n = request.query("n")
    last = request.query("last") or None
    if raw_n is None or raw_n == "":
        return fetch(None, last), {}
    if not raw_n.isdigit():
        raise RegistryError(
            ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be a non-negative integer, got {raw_n[:40]!r}"
        )
    n = int(raw_n)
    if n == 0:
        return [], {}
    items = fetch(n + 1, last)
    if len(items) <= n:
        return items, {}
    items = items[:n]
    link = f'<{request.path}?n={n}&last={quote(items[-1], safe="")}>; rel="next"'
    return items, {"link": link}
