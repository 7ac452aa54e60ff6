"""Tag rules by repository and tag pattern (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True, slots=True)
class TagRule:
    repository: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> TagRule:
        repository, tag = text.rsplit(":", 1)
        return cls(repository, tag)

    def matches(self, repository: str, tag: str) -> bool:
        return fnmatchcase(repository, self.repository) and fnmatchcase(tag, self.tag)

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def parse_rules(texts: tuple[str, ...]) -> tuple[TagRule, ...]:
    return tuple(TagRule.parse(text) for text in texts)


def protecting_rule(rules: tuple[TagRule, ...], repository: str) -> Callable[[str], str | None]:
    """For tags of `repository`: the first rule that protects a tag, as text, or None."""

    def rule_for(tag: str) -> str | None:
        rule = next((rule for rule in rules if rule.matches(repository, tag)), None)
        return str(rule) if rule else None

    return rule_for


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Which tags of the repositories matching `repositories` may be deleted over time.

    A tag is kept if it matches a `keep` pattern, is among the `keep_last` most recently
    pushed, or is younger than `older_than` (seconds); every other tag goes. A policy with
    neither `keep_last` nor `older_than` deletes nothing.
    """

    repositories: str
    keep_last: int | None = None
    keep: tuple[str, ...] = ()
    older_than: float | None = None

    def doomed(self, tags: list[tuple[str, float]], now: float, protected: Callable[[str], object]) -> list[str]:
        """Of (tag, pushed-at) pairs, the tags to delete, oldest first."""
        if self.keep_last is None and self.older_than is None:
            return []
        newest_first = sorted(tags, key=lambda item: (-item[1], item[0]))
        recent = {name for name, _ in newest_first[: self.keep_last]} if self.keep_last is not None else set()
        cutoff = now - self.older_than if self.older_than is not None else float("inf")
        return [
            name
            for name, pushed in reversed(newest_first)
            if name not in recent
            and pushed < cutoff
            and not any(fnmatchcase(name, pattern) for pattern in self.keep)
            and not protected(name)
        ]


def first_policy(policies: tuple[RetentionPolicy, ...], repository: str) -> RetentionPolicy | None:
    return next((p for p in policies if fnmatchcase(repository, p.repositories)), None)


@dataclass(frozen=True, slots=True)
class Quota:
    """A limit in bytes of unique stored blobs: for each repository matching `repositories`,
    or shared by every repository under `namespace` (`team` covers `team/...`)."""

    limit: int
    repositories: str | None = None
    namespace: str | None = None

    def scope(self, repository: str) -> tuple[str, str] | None:
        """("repository" | "namespace", name) this quota counts `repository` in, if any."""
        if self.repositories is not None and fnmatchcase(repository, self.repositories):
            return "repository", repository
        if self.namespace is not None and repository.startswith(self.namespace + "/"):
            return "namespace", self.namespace
        return None


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TiB"
