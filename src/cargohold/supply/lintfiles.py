"""The lint's interest in the layer walk (`layers.walk_layers`): it gathers the `lint.FileFacts`.

It asks the walk to keep the entries the file checks read in the final filesystem (setuid/setgid,
world-writable, package caches, `etc/passwd` and `etc/shadow` with their bytes), and streams every
file worth scanning (`secrets.should_scan`) through a `SecretScanner` as it passes, in every layer.
The walk keeps stream results for the final filesystem only; a file a later layer deletes or
replaces is still in its layer's blob, so the interest records the files with matches itself, as
their readers finish, and `facts()` marks which of them the final filesystem still has.

    interest = LintInterest()
    merged = walk_layers(layers, [interest, ...])
    findings = lint_image(config, manifest, reference, interest.facts(merged))
"""

from __future__ import annotations

from collections.abc import Mapping

from . import secrets
from .layers import Entry, Keep, Kept
from .lint import FileFacts, FileSecret, PathFact, is_cache_file
from .secrets import SecretMatch, SecretScanner

ACCOUNT_FILES = ("etc/passwd", "etc/shadow")


def is_special(entry: Entry) -> bool:
    return entry.kind in ("file", "hardlink") and bool(entry.mode & 0o6000)


def is_world_writable(entry: Entry) -> bool:
    # Symlinks are always 0777 and mean nothing; a sticky directory (/tmp) is writable by design.
    return entry.kind != "symlink" and bool(entry.mode & 0o002) and not entry.mode & 0o1000


class _SecretReader:
    """One file's scan; tells the interest what it found when the walk ends the file."""

    def __init__(self, interest: LintInterest, entry: Entry) -> None:
        self._interest = interest
        self._entry = entry
        self._scanner = SecretScanner(
            secrets.rules_for(entry.path), sniff_binary=not secrets.is_secret_file(entry.path)
        )
        self._matches: tuple[SecretMatch, ...] | None = None

    def feed(self, chunk: bytes) -> bool:
        self._scanner.feed(chunk)
        return not self._scanner.binary

    def result(self) -> tuple[SecretMatch, ...]:
        if self._matches is None:
            self._matches = tuple(self._scanner.result())
            if self._matches:
                self._interest.found.append((self._entry, self._matches))
        return self._matches


class LintInterest:
    """An `Interest` of the layer walk; `facts(merged)` after the walk gives `lint_image` its files."""

    name = "lint"

    def __init__(self) -> None:
        # Files with secrets, in every layer, in walk order.
        self.found: list[tuple[Entry, tuple[SecretMatch, ...]]] = []
        # Directories kept as world-writable: a later layer's entry for the same directory is kept
        # too, so the final filesystem shows its mode (a directory over a directory is a merge).
        self._open_dirs: set[str] = set()

    def keep(self, entry: Entry) -> Keep:
        if entry.kind == "file" and entry.path in ACCOUNT_FILES:
            return Keep.CONTENT
        if entry.kind == "dir" and (is_world_writable(entry) or entry.path in self._open_dirs):
            self._open_dirs.add(entry.path)
            return Keep.ENTRY
        if is_special(entry) or is_world_writable(entry) or is_cache_file(entry.path):
            return Keep.ENTRY
        if entry.kind == "file" and secrets.should_scan(entry.path, entry.size):
            return Keep.ENTRY  # so that facts() can tell whether this layer's file is still there
        return Keep.NOTHING

    def stream(self, entry: Entry) -> _SecretReader | None:
        if entry.kind == "file" and secrets.should_scan(entry.path, entry.size):
            return _SecretReader(self, entry)
        return None

    def facts(self, merged: Mapping[str, Kept]) -> FileFacts:
        special, world_writable, caches = [], [], []
        accounts: dict[str, bytes | None] = dict.fromkeys(ACCOUNT_FILES)
        for path, kept in merged.items():
            entry = kept.entry
            fact = PathFact(path, entry.kind, entry.mode, entry.layer, entry.size)
            if is_special(entry):
                special.append(fact)
            if is_world_writable(entry):
                world_writable.append(fact)
            if entry.kind in ("file", "hardlink") and is_cache_file(path):
                caches.append(fact)
            if path in accounts and entry.kind == "file":
                accounts[path] = kept.content
        found = []
        for entry, matches in self.found:
            final = merged.get(entry.path)
            present = final is not None and final.entry.index == entry.index
            found.append(FileSecret(entry.path, entry.layer, entry.index, present, matches))
        return FileFacts(
            special=tuple(special),
            world_writable=tuple(world_writable),
            secrets=tuple(found),
            passwd=accounts["etc/passwd"],
            shadow=accounts["etc/shadow"],
            caches=tuple(caches),
        )
