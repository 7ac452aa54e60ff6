"""The distribution, from `etc/os-release` or `usr/lib/os-release` (os-release(5))."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from ..layers import Entry, Keep, Kept, StreamReader, resolve_symlink
from ..packages import Distro
from . import text_of

PATHS = ("etc/os-release", "usr/lib/os-release")


class OsReleaseInterest:
    """Both files, and the symlink `etc/os-release -> ../usr/lib/os-release` most images have."""

    name = "os-release"

    def keep(self, entry: Entry) -> Keep:
        if entry.path not in PATHS:
            return Keep.NOTHING
        return Keep.CONTENT if entry.kind in ("file", "hardlink") else Keep.ENTRY

    def stream(self, entry: Entry) -> StreamReader | None:
        return None


INTEREST = OsReleaseInterest()


def parse_os_release(content: bytes) -> Distro:
    """Parse os-release's shell-like `KEY=value` lines; lines that are not such are ignored."""
    values: dict[str, str] = {}
    for line in text_of(content).splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]  # an unbalanced quote: take the text as it stands
        values[key.strip()] = " ".join(words)
    return Distro(
        id=values.get("ID", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        codename=values.get("VERSION_CODENAME", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
    )


def find_distro(files: Mapping[str, Kept]) -> Distro | None:
    """The distribution as the final filesystem says, following symlinks among the two paths."""
    for path in PATHS:
        seen: set[str] = set()
        current: str | None = path
        while current is not None and current in files and current not in seen:
            seen.add(current)
            kept = files[current]
            if kept.entry.kind == "symlink":
                current = resolve_symlink(current, kept.entry.target)
                continue
            if kept.content is not None:
                distro = parse_os_release(kept.content)
                if distro.id:
                    return distro
            break
    return None
