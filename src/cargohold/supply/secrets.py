"""Well-known keys and tokens, found in bytes: a file streamed in chunks, an ENV value, a history line.

A `SecretRule` is one pattern. `TOKEN_RULES` (formats with a fixed prefix: keys, cloud and forge
tokens) apply to every file scanned; `CONTEXT_RULES` (JWTs, passwords in URLs), which library code
and its docstrings are full of, only to ENV values, labels, history lines and configuration files;
the credential files' rules (`.docker/config.json`, `.npmrc`...) and `password = "..."` only to the
files where such a line means something (`rules_for`). `SecretScanner` runs rules over a stream: each
chunk is searched together with the tail of the one before, so a token cut by a chunk boundary is
still found, and found once.

Which files are worth scanning (`should_scan`) is the false-positive rule, written down here:

- never under `usr/share/`, `usr/include/`, the package managers' databases (`var/lib/dpkg/`,
  `var/lib/rpm/`, `var/lib/apk/`, `lib/apk/db/`), caches (`var/cache/`) or the kernel's trees
  (`proc/`, `sys/`, `dev/`): documentation, headers, test certificates and package metadata, none
  of it the image owner's;
- a *library tree* is `lib*/`, `usr/lib*/`, `usr/local/lib*/`, or anything below a `site-packages`,
  `dist-packages`, `node_modules`, `vendor`, `third_party` or `gems` directory: installed code,
  not the owner's. In one, test and example directories (`test`, `tests`, `testdata`, `testing`,
  `__tests__`, `fixtures`, `examples`, `dummyserver`) are not scanned (`usr/lib/python3.11/test/
  keycert.pem`), only the token formats and the credential files' rules apply (not JWTs, URLs or
  `password = "..."`, which its code and data are full of), and what is found is reported LOW
  (`in_library`): it is mostly a vendor's own public client key. An application's own `tests/`
  (`/app/tests`, `/usr/src/app/tests`) is scanned as any other file;
- never a template (`*.example`, `*.sample`, `*.template`, `*.tmpl`, `*.dist`), and never a file of a
  binary kind by its name (`.so`, `.pyc`, images, archives) or over 1 MiB;
- a file whose first chunk has a NUL byte is binary and scanned no further;
- a value that says it is an example (`AKIAIOSFODNN7EXAMPLE`, AWS's documented one) or a
  placeholder (`changeme`, `xxxx`, `your-token-here`) is not reported;
- the well-known secret files (`.docker/config.json`, `.git-credentials`, `.npmrc`, `.pypirc`,
  `id_rsa`...) are always scanned, wherever they are.

A found value is never kept whole: `redact` keeps its first few characters and its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# The longest text any rule matches: every quantifier in the rules below is bounded so that this
# holds, and the scanner keeps this much of a chunk's tail to find a match cut by the boundary.
MAX_MATCH = 512
# Characters before a match that a rule looks at (\b, a key name before its value).
CONTEXT = 64
# Files over this size are not read for secrets (configuration and key files are small).
MAX_SCAN_SIZE = 1 << 20
# How far into a file a NUL byte says "binary".
BINARY_SNIFF = 8192


@dataclass(frozen=True)
class SecretRule:
    """One kind of secret. `value_group` is the regex group holding the secret itself (0: all of it)."""

    id: str
    pattern: re.Pattern[bytes]
    title: str
    severity: str  # CRITICAL / HIGH / MEDIUM (the lint's scale)
    value_group: int = 0
    marker: bool = False  # the match is a marker (a PEM header), shown as it is: the secret follows it
    # Lower-case words every match contains: the regex runs only on text that has one (a `bytes.find`
    # is a hundred times faster than a regex that cannot skip ahead to a literal prefix).
    keywords: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SecretMatch:
    """One secret found: where (byte offset in what was scanned) and its redacted value."""

    rule: str
    title: str
    severity: str
    offset: int
    redacted: str  # the value as `redact` shows it; a marker rule's marker, e.g. "(RSA PRIVATE KEY)"


def _rule(
    id: str,
    pattern: bytes,
    title: str,
    severity: str,
    value_group: int = 0,
    *,
    keywords: tuple[bytes, ...],
    marker: bool = False,
) -> SecretRule:
    return SecretRule(id, re.compile(pattern), title, severity, value_group, marker, keywords)


# Token formats documented by their issuers; each has a fixed prefix, which keeps false positives low.
TOKEN_RULES: tuple[SecretRule, ...] = (
    _rule(
        "private-key",
        # The marker, then key material (after PEM's or PGP's optional headers), on a new line or
        # after a "\n" written out in JSON (a cloud service account's key file): a program holding
        # only the marker as a constant is not a key.
        rb"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY|PGP PRIVATE KEY BLOCK)-----"
        rb"[ \t]{0,4}(?:\r?\n|\\n)(?:[A-Za-z\-]{1,32}:[^\r\n\\]{0,100}(?:\r?\n|\\n)){0,4}(?:\r?\n|\\n)?"
        rb"[A-Za-z0-9+/=]{32}",
        "private key",
        "CRITICAL",
        1,
        marker=True,
        keywords=(b"-----begin",),
    ),
    _rule(
        "aws-access-key-id", rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "AWS access key id", "HIGH", keywords=(b"akia", b"asia")
    ),
    _rule(
        "aws-secret-access-key",
        rb"(?i)aws_?secret_?access_?key[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        "AWS secret access key",
        "CRITICAL",
        1,
        keywords=(b"aws",),
    ),
    _rule(
        "github-token",
        rb"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b",
        "GitHub token",
        "CRITICAL",
        keywords=(b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"),
    ),
    _rule(
        "github-pat",
        rb"\bgithub_pat_[A-Za-z0-9_]{50,255}\b",
        "GitHub fine-grained token",
        "CRITICAL",
        keywords=(b"github_pat_",),
    ),
    _rule(
        "gitlab-token",
        rb"\bglpat-[A-Za-z0-9_\-]{20,255}",
        "GitLab personal access token",
        "CRITICAL",
        keywords=(b"glpat-",),
    ),
    _rule("slack-token", rb"\bxox[baprs]-[A-Za-z0-9\-]{10,255}", "Slack token", "HIGH", keywords=(b"xox",)),
    _rule(
        "stripe-live-key",
        rb"\b[sr]k_live_[A-Za-z0-9]{24,255}\b",
        "Stripe live secret key",
        "CRITICAL",
        keywords=(b"k_live_",),
    ),
    _rule(
        "google-api-key", rb"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])", "Google API key", "HIGH", keywords=(b"aiza",)
    ),
    _rule("npm-token", rb"\bnpm_[A-Za-z0-9]{36}\b", "npm access token", "CRITICAL", keywords=(b"npm_",)),
    _rule("pypi-token", rb"\bpypi-AgEI[A-Za-z0-9_\-]{50,400}", "PyPI API token", "CRITICAL", keywords=(b"pypi-agei",)),
)
# Secrets without a prefix of their own: only where a value is expected (not in library code).
CONTEXT_RULES: tuple[SecretRule, ...] = (
    _rule(
        "jwt",
        rb"\beyJ[A-Za-z0-9_\-]{10,200}\.eyJ[A-Za-z0-9_\-]{10,300}\.[A-Za-z0-9_\-]{10,200}",
        "JSON web token",
        "MEDIUM",
        keywords=(b"eyj",),
    ),
    _rule(
        "url-credentials",
        rb"\b[a-z][a-z0-9+.\-]{1,20}://[A-Za-z0-9._~%\-]{1,64}:([^@/\s\"'$:{}<>]{3,128})@[A-Za-z0-9.\-]",
        "password in a URL",
        "HIGH",
        1,
        keywords=(b"://",),
    ),
)
# What an ENV value, a label or a history line is scanned with.
CONTENT_RULES = TOKEN_RULES + CONTEXT_RULES

# Credential files and where in them the secret sits; applied only to the named files.
DOCKER_AUTH = _rule(
    "docker-config-auth",
    rb"\"(?:auth|identitytoken)\"[ \t]{0,8}:[ \t]{0,8}\"([A-Za-z0-9+/=_\-.]{8,400})\"",
    "registry credentials in a docker config.json",
    "CRITICAL",
    1,
    keywords=(b"auth", b"identitytoken"),
)
GIT_CREDENTIALS = _rule(
    "git-credentials",
    rb"https?://[^:\s/@]{1,64}:([^@\s]{1,128})@",
    "password in .git-credentials",
    "CRITICAL",
    1,
    keywords=(b"@",),
)
NPMRC_TOKEN = _rule(
    "npmrc-auth",
    rb"(?m)(?:_authToken|_auth|_password)[ \t]{0,8}=[ \t]{0,8}\"?([^\s\"$]{4,400})",
    "registry token in .npmrc",
    "CRITICAL",
    1,
    keywords=(b"_auth", b"_password"),
)
PYPIRC_PASSWORD = _rule(
    "pypirc-password",
    rb"(?m)^[ \t]{0,8}password[ \t]{0,8}[:=][ \t]{0,8}(\S{1,400})",
    "password in .pypirc",
    "CRITICAL",
    1,
    keywords=(b"password",),
)
# `password = "..."` (or `secret:`, `api_key=`), quoted, at the start of a line that is not a comment; a
# value that is a path (`password_file = "/run/secrets/db"`) points to the secret and is not one.
CONFIG_PASSWORD = _rule(
    "config-password",
    rb"(?im)^[ \t]{0,16}[\"']?[\w.\-]{0,40}(?:password|passwd|secret|api_?key|access_?token)[\w.\-]{0,40}[\"']?"
    rb"[ \t]{0,8}[:=][ \t]{0,8}[\"'](?!\.{0,2}/)([^\"'\s$%{}<>]{4,200})[\"']",
    "password in a configuration file",
    "HIGH",
    1,
    keywords=(b"password", b"passwd", b"secret", b"apikey", b"api_key", b"accesstoken", b"access_token"),
)

# Values that are there to be replaced, not secrets.
PLACEHOLDERS = frozenset(
    {
        *("password", "passwd", "pass", "pwd", "secret", "token", "key", "apikey", "api_key"),
        *("changeme", "change-me", "change_me", "example", "sample", "dummy", "test", "foo", "bar", "redacted"),
        *("none", "null", "nil", "true", "false", "undefined"),
    }
)


def is_placeholder(value: bytes | str) -> bool:
    """A value that says it is not real: an example, a placeholder word, `xxxx`/`****`, `your-...`."""
    text = (value.decode("utf-8", "replace") if isinstance(value, bytes) else value).strip().lower()
    return (
        text in PLACEHOLDERS or "example" in text or text.startswith(("your", "<", "${")) or set(text) <= set("x*.-_#0")
    )


# File names that are credentials wherever they are found, and the rules they get.
_SECRET_FILE_RULES: dict[str, tuple[SecretRule, ...]] = {
    ".git-credentials": (GIT_CREDENTIALS,),
    ".npmrc": (NPMRC_TOKEN,),
    ".pypirc": (PYPIRC_PASSWORD,),
    ".netrc": (
        _rule(
            "netrc-password",
            rb"\bpassword[ \t]{1,8}(\S{1,400})",
            "password in .netrc",
            "CRITICAL",
            1,
            keywords=(b"password",),
        ),
    ),
}
# Key files by name: the private-key rule finds what is in them.
SECRET_FILE_NAMES = frozenset(
    {*_SECRET_FILE_RULES, "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".env", "credentials", ".htpasswd"}
)
CONFIG_SUFFIXES = frozenset(
    {".env", ".ini", ".cfg", ".conf", ".config", ".properties", ".yaml", ".yml", ".toml", ".json", ".xml"}
)

_SKIP_PREFIXES = (
    "usr/share/",
    "usr/include/",
    "var/lib/dpkg/",
    "var/lib/rpm/",
    "var/lib/apk/",
    "lib/apk/db/",
    "var/cache/",
    "proc/",
    "sys/",
    "dev/",
)
_TEST_DIRS = frozenset({"test", "tests", "testdata", "testing", "__tests__", "fixtures", "examples", "dummyserver"})
_LIBRARY_DIRS = frozenset({"site-packages", "dist-packages", "node_modules", "vendor", "third_party", "gems"})
_LIBRARY_ROOT = re.compile(r"(?:usr/(?:local/)?)?lib[^/]*/")
_TEMPLATE_SUFFIXES = frozenset({".example", ".sample", ".template", ".tmpl", ".dist"})
_BINARY_SUFFIXES = frozenset(
    {
        ".so",
        ".a",
        ".o",
        ".pyc",
        ".pyo",
        ".class",
        ".jar",
        ".whl",
        ".egg",
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".ico",
        ".webp",
        ".gz",
        ".tgz",
        ".xz",
        ".bz2",
        ".zst",
        ".zip",
        ".mo",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".wasm",
        ".db",
        ".sqlite",
    }
)


def normalize_path(path: str) -> str:
    """A layer member's path as the lint names it: relative, no `./`, no trailing slash."""
    while path.startswith(("./", "/")):
        path = path[1:] if path.startswith("/") else path[2:]
    return path.rstrip("/")


def is_secret_file(path: str) -> bool:
    """A file that holds credentials by its name: scanned wherever it is."""
    parts = PurePosixPath(normalize_path(path)).parts
    if not parts:
        return False
    if parts[-1] in SECRET_FILE_NAMES:
        return True
    return len(parts) >= 2 and parts[-2] == ".docker" and parts[-1] == "config.json"


def should_scan(path: str, size: int) -> bool:
    """Whether a regular file of this path and size is read for secrets (the rule is the module's docstring)."""
    path = normalize_path(path)
    if size > MAX_SCAN_SIZE or size == 0:
        return False
    if is_secret_file(path):
        return True
    pure = PurePosixPath(path)
    suffix = pure.suffix.lower()
    if suffix in _TEMPLATE_SUFFIXES or suffix in _BINARY_SUFFIXES or ".so." in pure.name:
        return False
    if path.startswith(_SKIP_PREFIXES):
        return False
    return not (in_library(path) and any(part in _TEST_DIRS for part in pure.parts[:-1]))


def in_library(path: str) -> bool:
    """Whether a path is in a library tree (installed code; the module's docstring says which)."""
    path = normalize_path(path)
    return bool(_LIBRARY_ROOT.match(path)) or any(part in _LIBRARY_DIRS for part in PurePosixPath(path).parts[:-1])


def rules_for(path: str) -> tuple[SecretRule, ...]:
    """The rules a file is scanned with: the token formats; a credential file's own rules; and, for a
    configuration file outside the library trees, the context rules and `password = "..."`."""
    pure = PurePosixPath(normalize_path(path))
    extra: tuple[SecretRule, ...] = _SECRET_FILE_RULES.get(pure.name, ())
    if pure.name == "config.json" and pure.parent.name == ".docker":
        extra = (DOCKER_AUTH,)
    elif in_library(path):
        pass  # a library's code and data: the token formats only
    elif pure.suffix.lower() in CONFIG_SUFFIXES or pure.name in {".env", "credentials"}:
        extra = (*CONTEXT_RULES, CONFIG_PASSWORD)
    return TOKEN_RULES + extra


def redact(value: bytes | str) -> str:
    """A secret shown so a person can recognise it, never whole: a few first characters and its length.

    Four characters for a value of 12 or more, fewer for a shorter one, so no short value is half shown.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    shown = min(4, len(text) // 3)
    return f"{text[:shown]}…({len(text)} chars)"


def _value(rule: SecretRule, match: re.Match[bytes]) -> bytes | None:
    """The secret a match holds, or None when it is an example or a placeholder."""
    value = match.group(rule.value_group)
    if rule.marker:
        return value
    return None if is_placeholder(value) else value


def scan_bytes(data: bytes, rules: tuple[SecretRule, ...] = CONTENT_RULES) -> list[SecretMatch]:
    """All matches in `data` (an ENV value, a history line): one pass, no chunks."""
    scanner = SecretScanner(rules)
    scanner.feed(data)
    return scanner.result()


class SecretScanner:
    """Runs rules over a stream of chunks; `result()` ends the stream and returns what was found.

    Each chunk is appended to the last `MAX_MATCH + CONTEXT` bytes of what came before; a match is
    taken from the buffer only if it starts where this buffer "owns" (after everything earlier
    buffers searched) and at least `MAX_MATCH` before the buffer's end, so it lies wholly inside it.
    The rest waits for the next chunk, or for `result()`.
    """

    def __init__(self, rules: tuple[SecretRule, ...] = CONTENT_RULES, *, sniff_binary: bool = False) -> None:
        self._rules = rules
        self._buffer = b""
        self._base = 0  # offset in the stream of self._buffer[0]
        self._owned_from = 0  # offset in the stream from which matches have not yet been taken
        self._last_end: dict[str, int] = {}  # per rule: where its last match ended (no overlapping repeats)
        self._matches: list[SecretMatch] = []
        self._sniff = sniff_binary
        self._seen = 0
        self.binary = False

    def feed(self, chunk: bytes) -> None:
        if self.binary or not chunk:
            return
        if self._sniff and self._seen < BINARY_SNIFF and b"\0" in chunk[: BINARY_SNIFF - self._seen]:
            self.binary = True
            self._buffer = b""
            return
        self._seen += len(chunk)
        self._buffer += chunk
        self._search(self._base + len(self._buffer) - MAX_MATCH)
        keep_from = max(0, self._owned_from - CONTEXT - self._base)
        self._buffer = self._buffer[keep_from:]
        self._base += keep_from

    def result(self) -> list[SecretMatch]:
        if not self.binary:
            self._search(self._base + len(self._buffer))
            self._buffer = b""
        return sorted(self._matches, key=lambda m: (m.offset, m.rule))

    def _search(self, owned_to: int) -> None:
        """Take matches starting in [owned_from, owned_to) (stream offsets)."""
        if owned_to <= self._owned_from:
            return
        start = self._owned_from - self._base
        stop = owned_to - self._base
        # A match starts in [start, stop) and ends before the buffer's end: its keywords are in here.
        lowered = self._buffer[start:].lower()
        for rule in self._rules:
            if rule.keywords and not any(word in lowered for word in rule.keywords):
                continue
            for match in rule.pattern.finditer(self._buffer, start):
                if match.start() >= stop:
                    break
                offset = self._base + match.start()
                if offset < self._last_end.get(rule.id, 0):
                    continue
                self._last_end[rule.id] = self._base + match.end()
                value = _value(rule, match)
                if value is not None:
                    shown = f"({value.decode('ascii', 'replace')})" if rule.marker else redact(value)
                    self._matches.append(SecretMatch(rule.id, rule.title, rule.severity, offset, shown))
        self._owned_from = owned_to
