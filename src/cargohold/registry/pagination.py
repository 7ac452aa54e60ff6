"""The `n`/`last` pagination that tag and catalog listings share."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from ..oci.errors import RegistryError
from .http import Request

# The most entries one page holds, whatever `n` asks: a registry may return fewer than asked
# (distribution-spec, "Listing Tags"), and the `Link` header leads to the rest.
MAX_PAGE = 10_000


def page(request: Request, fetch: Callable[[int | None, str | None], list[str]]) -> tuple[list[str], dict[str, str]]:
    """One page of a sorted listing and, when more follow, its `Link` header."""
    raw_n = request.query("n")
    last = request.query("last") or None
    if raw_n is None or raw_n == "":
        return fetch(None, last), {}
    if not (raw_n.isascii() and raw_n.isdigit()):
        # No code of the spec's table fits: the status and a plain message.
        raise RegistryError.plain(400, f"n must be a non-negative integer, got {raw_n[:40]!r}")
    digits = raw_n.lstrip("0")  # never int() a long text: absurd sizes simply get the largest page
    n = MAX_PAGE if len(digits) > len(str(MAX_PAGE)) else min(int(digits or "0"), MAX_PAGE)
    if n == 0:
        return [], {}
    items = fetch(n + 1, last)
    if len(items) <= n:
        return items, {}
    items = items[:n]
    link = f'<{request.path}?n={n}&last={quote(items[-1], safe="")}>; rel="next"'
    return items, {"link": link}
