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
