"""Go modules, from the build information the Go linker leaves in each executable.

Executables are streamed past a reader that looks for the `\\xff Go buildinf:` blob across chunk
boundaries, so no binary is held whole. Go >= 1.18 writes the blob inline: a 32-byte header
(magic, pointer size, flags: bit value 2 means inline strings), then the Go version and the
module information as uvarint-length-prefixed strings, the latter wrapped in 16-byte sentinels.
Older binaries hold pointers into the data segment instead: they are reported as unreadable,
not guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..layers import Entry, Keep, Kept, StreamReader
from . import Findings, Found

MAGIC = b"\xff Go buildinf:"
_HEADER = 32
_INLINE = 2
_BLOB_LIMIT = 1024 * 1024  # the module list of even a large program is well under this
_MIN_EXECUTABLE = 64 * 1024  # smaller executables are scripts and C tools, never Go programs
_EXECUTABLE_MAGICS = (
    b"\x7fELF",
    b"MZ",  # PE
    b"\xfe\xed\xfa\xce",  # Mach-O 32 / 64, both byte orders, and fat binaries
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
)


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    sum: str = ""
    replace: Module | None = None


@dataclass(frozen=True)
class GoBinary:
    go_version: str  # "go1.19.8"
    path: str  # the main package's import path
    main: Module | None
    deps: tuple[Module, ...]


@dataclass(frozen=True)
class UnreadableGoBinary:
    reason: str


class _Need(Exception):
    """More bytes are needed to decode the blob."""


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data):
            raise _Need
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    length, at = _uvarint(data, at)
    if length > _BLOB_LIMIT:
        raise ValueError("string too long")
    if at + length > len(data):
        raise _Need
    return data[at : at + length], at + length


def decode_blob(data: bytes) -> GoBinary | UnreadableGoBinary | None:
    """Decode a blob starting at the magic; None when it is not build information after all
    (the magic also appears as a string in programs that read build information).
    Raises _Need when `data` stops short."""
    if len(data) < _HEADER:
        raise _Need
    pointer_size, flags = data[14], data[15]
    if pointer_size not in (4, 8) or flags & ~0b11:
        return None
    if not flags & _INLINE:
        return UnreadableGoBinary("build information in the pre-Go 1.18 pointer format")
    try:
        version, at = _string(data, _HEADER)
        modinfo, _ = _string(data, at)
    except ValueError:
        return None
    if not version.startswith(b"go"):
        return None
    modinfo = modinfo[16:-16] if len(modinfo) >= 33 and modinfo[-17] == ord("\n") else b""
    return parse_modinfo(version.decode("utf-8", errors="replace"), modinfo.decode("utf-8", errors="replace"))


def parse_modinfo(go_version: str, modinfo: str) -> GoBinary:
    """The `path`, `mod`, `dep` and `=>` lines of runtime/debug's module information."""
    path = ""
    main: Module | None = None
    deps: list[Module] = []
    for line in modinfo.splitlines():
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        if kind == "path":
            path = rest
        elif kind in ("mod", "dep") and fields[0]:
            module = Module(fields[0], fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else "")
            if kind == "mod":
                main = module
            else:
                deps.append(module)
        elif kind == "=>" and fields[0]:
            replacement = Module(fields[0], fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else "")
            if deps:
                deps[-1] = Module(deps[-1].path, deps[-1].version, deps[-1].sum, replacement)
            elif main is not None:
                main = Module(main.path, main.version, main.sum, replacement)
    return GoBinary(go_version, path, main, tuple(deps))


class BuildInfoReader:
    """Finds and decodes the build information of one executable as its chunks pass."""

    def __init__(self) -> None:
        self._tail = b""  # the last bytes of the previous chunk, where a magic may begin
        self._blob: bytearray | None = None  # from a magic on, while it is decoded
        self._first = True
        self._result: GoBinary | UnreadableGoBinary | None = None

    def feed(self, chunk: bytes) -> bool:
        if self._first:
            self._first = False
            if not chunk.startswith(_EXECUTABLE_MAGICS):
                return False
        if self._blob is not None:
            self._blob += chunk
            return self._try_blob()
        data = self._tail + chunk
        start = 0
        while (at := data.find(MAGIC, start)) >= 0:
            self._blob = bytearray(data[at:])
            if not self._try_blob():
                return False
            if self._blob is not None:
                return True  # the blob goes on in the next chunk
            start = at + 1
        self._tail = data[-(len(MAGIC) - 1) :]
        return True

    def _try_blob(self) -> bool:
        """Decode what is gathered; False when done with this file."""
        assert self._blob is not None
        try:
            found = decode_blob(bytes(self._blob))
        except _Need:
            if len(self._blob) > _BLOB_LIMIT:
                self._blob = None
                self._result = UnreadableGoBinary("build information larger than 1 MiB")
                return False
            return True
        self._blob = None
        if isinstance(found, GoBinary):
            self._result = found
            return False
        if isinstance(found, UnreadableGoBinary):
            self._result = found  # but a real inline blob may still follow a stray match
        return True

    def result(self) -> GoBinary | UnreadableGoBinary | None:
        return self._result


class GoInterest:
    name = "golang"

    def keep(self, entry: Entry) -> Keep:
        return Keep.NOTHING

    def stream(self, entry: Entry) -> StreamReader | None:
        if entry.mode & 0o111 and entry.size >= _MIN_EXECUTABLE:
            return BuildInfoReader()
        return None


INTEREST = GoInterest()


def find(files: Mapping[str, Kept]) -> Findings:
    findings = Findings()
    for path, kept in files.items():
        found = kept.results.get(INTEREST.name)
        if isinstance(found, UnreadableGoBinary):
            findings.unreadable.append(f"{path}: {found.reason}")
        elif isinstance(found, GoBinary):
            findings.packages.extend(_modules(path, kept.entry.layer, found))
    return findings


def _modules(location: str, layer: str, binary: GoBinary) -> list[Found]:
    def found(name: str, version: str) -> Found:
        return Found(type="golang", name=name, version=version, location=location, layer=layer)

    modules = []
    if binary.main is not None:
        modules.append(found(binary.main.path, binary.main.version or "(devel)"))
    elif binary.path:
        modules.append(found(binary.path, "(devel)"))
    for dep in binary.deps:
        replace = dep.replace
        if replace is None:
            modules.append(found(dep.path, dep.version))
        elif replace.path.startswith((".", "/")):
            modules.append(found(dep.path, replace.version or "(devel)"))  # a local directory's code
        else:
            modules.append(found(replace.path, replace.version))
    if binary.go_version.startswith("go"):
        # The standard library, which Go's advisories name "stdlib", at the toolchain's version.
        modules.append(found("stdlib", binary.go_version[2:]))
    return modules
