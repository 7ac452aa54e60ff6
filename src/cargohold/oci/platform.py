"""Platforms (`os/architecture[/variant]`) and picking one manifest from an index. No I/O."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass
from typing import Any

_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i386": "386", "i686": "386"}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/arm64`, `linux/arm/v7`; raises ValueError on anything else."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/architecture[/variant], e.g. linux/amd64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_descriptor(cls, platform: dict[str, Any] | None) -> Platform | None:
        if not platform or "os" not in platform or "architecture" not in platform:
            return None
        return cls(str(platform["os"]), str(platform["architecture"]), platform.get("variant"))

    def matches(self, other: Platform) -> bool:
        """Same os and architecture; a variant only counts when both name one."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not (self.variant and other.variant and self.variant != other.variant)


def host_platform() -> Platform:
    machine = _host.machine().lower()
    return Platform("linux", _ARCH_ALIASES.get(machine, machine))
