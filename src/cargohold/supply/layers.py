"""An image's merged filesystem, read by streaming its layers bottom first.

Each layer blob is decompressed and read as a tar stream, one member at a time: nothing holds a
whole layer, in memory or on disk. The analyses say through an `Interest` which entries they
want: metadata only, the bytes (capped), the bytes of every layer that wrote the path (for the
package databases), or a look at the bytes as they pass (`StreamReader`, for Go binaries). What
the walk keeps is only what some interest asked for, and only what is still present in the final
filesystem once the OCI whiteouts, opaque directories and replacements of later layers applied.

The kept paths live in a tree, one node per path component, so that deleting a directory from
the merged view (a whiteout, an opaque directory, a file put where a directory was) is cutting
one branch, and each tar member costs a walk of its own path only.
"""

from __future__ import annotations

import enum
import gzip
import io
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, Protocol, Self

import zstandard

DEFAULT_CONTENT_CAP = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
_TAR_BUFFER = 16 * 1024  # tarfile's stream copies its whole buffer on each small read: keep it small

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"

EntryKind = Literal["file", "dir", "symlink", "hardlink", "other"]
Compression = Literal["none", "gzip", "zstd"]
# One layer as the walk takes it: digest, media type, and a callable opening the compressed blob.
LayerSource = tuple[str, str, Callable[[], BinaryIO]]


class LayerError(Exception):
    """A layer that cannot be read as a (compressed) tar archive."""


@dataclass(frozen=True)
class Entry:
    """One tar member of one layer, as the merged filesystem sees it."""

    path: str  # normalised: relative, no leading "./" or "/", no trailing "/", never ".."
    kind: EntryKind
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    size: int
    target: str  # a symlink's target as written, a hardlink's (normalised) path; "" otherwise
    layer: str  # the layer's digest
    index: int  # the layer's position, 0 = bottom


class Keep(enum.IntEnum):
    """How much of an entry an interest wants; the walk keeps the most any interest asks for."""

    NOTHING = 0
    ENTRY = 1  # the metadata
    CONTENT = 2  # the metadata and the bytes (up to the cap)
    HISTORY = 3  # the bytes of the path in every layer that wrote it too


class StreamReader(Protocol):
    """Consumes one file's bytes as they pass, chunk by chunk, in order."""

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; return False once it needs no more of this file."""
        ...

    def result(self) -> object:
        """What it found; kept with the file under the interest's name."""
        ...


class Interest(Protocol):
    """One analysis's say in what the walk keeps."""

    name: str  # the key of its stream results in `Kept.results`

    def keep(self, entry: Entry) -> Keep: ...

    def stream(self, entry: Entry) -> StreamReader | None: ...


@dataclass(frozen=True)
class Kept:
    """What the walk kept of one path of the final filesystem."""

    entry: Entry
    content: bytes | None  # None: metadata only, or larger than the cap (`over_cap`)
    results: dict[str, object] = field(default_factory=dict)  # interest name -> its StreamReader's result
    history: list[tuple[str, bytes]] = field(default_factory=list)  # (layer digest, content), bottom first
    over_cap: bool = False


@dataclass(frozen=True)
class LayerStats:
    digest: str
    index: int
    media_type: str
    compression: Compression  # as sniffed from the bytes, whatever the media type says
    compressed_size: int
    uncompressed_size: int  # the tar stream's length
    entries: int  # tar members, whiteouts included
    over_cap: tuple[str, ...] = ()  # paths whose content an interest wanted but was larger than the cap


class MergedFiles(Mapping[str, Kept]):
    """The kept paths of the final filesystem, and what each layer held."""

    def __init__(self, files: dict[str, Kept], layers: Sequence[LayerStats]) -> None:
        self._files = files
        self.layers: tuple[LayerStats, ...] = tuple(layers)

    def __getitem__(self, path: str) -> Kept:
        return self._files[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def normalise_path(name: str) -> str:
    """A tar member's name as a relative path; ValueError for a name that climbs out ("..")."""
    parts = [part for part in name.split("/") if part and part != "."]
    if ".." in parts:
        raise ValueError(f"path {name!r} climbs out of the filesystem")
    return "/".join(parts)


def resolve_symlink(link_path: str, target: str) -> str | None:
    """The path a symlink at `link_path` points to, within the image; None if it climbs out of the root."""
    base = [] if target.startswith("/") else link_path.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not base:
                return None
            base.pop()
        else:
            base.append(part)
    return "/".join(base)


# --- decompression ---------------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """A read-only stream that counts the bytes read through it and names read failures."""

    def __init__(self, source: BinaryIO, on_error: Callable[[Exception], LayerError]) -> None:
        self._source = source
        self._on_error = on_error
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._source.read(size)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as error:
            raise self._on_error(error) from error
        self.count += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff them), put back in front."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                head, self._prefix = self._prefix, b""
                more = self._rest.read(-1 if size < 0 else size - len(head))
                return head + more
            head, self._prefix = self._prefix[:size], self._prefix[size:]
            return head
        return self._rest.read(size)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _sniff(stream: BinaryIO) -> tuple[Compression, BinaryIO]:
    """The compression the bytes are in (tools mislabel media types), and the stream unread."""
    head = stream.read(4)
    rest: BinaryIO = _Prefixed(head, stream)  # type: ignore[assignment]
    if head.startswith(_GZIP_MAGIC):
        return "gzip", rest
    if head.startswith(_ZSTD_MAGIC):
        return "zstd", rest
    return "none", rest


def _decompressed(compression: Compression, stream: BinaryIO) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]  # multi-member, streaming
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=_CHUNK, read_across_frames=True)
    return stream


# --- the merged tree -------------------------------------------------------------------------


class _Node:
    """One path of the merged view: what is kept there, and the kept paths below it."""

    __slots__ = ("children", "content", "entry", "history", "newest", "over_cap", "results")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entry: Entry | None = None
        self.content: bytes | None = None
        self.results: dict[str, object] = {}
        self.history: list[tuple[str, bytes]] = []
        self.over_cap = False
        # The highest layer index kept at or below this node (an upper bound once things are
        # removed): a branch with nothing as new as the deleting layer is cut whole, unvisited.
        self.newest = -1

    def drop(self, *, keep_history: bool = False) -> None:
        self.entry = None
        self.content = None
        self.results = {}
        self.over_cap = False
        if not keep_history:
            self.history = []


class _Tree:
    def __init__(self) -> None:
        self.root = _Node()

    def find(self, parts: list[str], *, clear_ancestors: bool = False) -> _Node | None:
        """The node of a path; with `clear_ancestors`, dropping on the way any kept non-directory
        standing where a directory now is (a layer writing `a/b` makes `a` a directory)."""
        node = self.root
        for part in parts[:-1]:
            child = node.children.get(part)
            if child is None:
                return None
            if clear_ancestors and child.entry is not None and child.entry.kind != "dir":
                child.drop()
            node = child
        return node.children.get(parts[-1]) if parts else node

    def make(self, parts: list[str], index: int) -> _Node:
        node = self.root
        node.newest = index
        last = len(parts) - 1
        for position, part in enumerate(parts):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
            elif position < last and child.entry is not None and child.entry.kind != "dir":
                child.drop()
            child.newest = index
            node = child
        return node

    def parent_of(self, parts: list[str]) -> _Node | None:
        node: _Node | None = self.root
        for part in parts[:-1]:
            assert node is not None
            node = node.children.get(part)
            if node is None:
                return None
        return node

    def remove_lower(self, parent: _Node, name: str, index: int) -> None:
        """Remove from the branch `parent/name` everything layers below `index` put there."""
        node = parent.children.get(name)
        if node is None:
            return
        if node.newest < index:
            del parent.children[name]
            return
        if node.entry is not None and node.entry.index < index:
            node.drop()
        for child_name in list(node.children):
            self.remove_lower(node, child_name, index)
        if node.entry is None and not node.children:
            del parent.children[name]

    def kept(self) -> dict[str, Kept]:
        found: dict[str, Kept] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node.entry is not None:
                found[node.entry.path] = Kept(node.entry, node.content, node.results, node.history, node.over_cap)
        return dict(sorted(found.items()))


# --- the walk --------------------------------------------------------------------------------


_KINDS: dict[bytes, EntryKind] = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
}


def walk_layers(
    layers: Iterable[LayerSource],
    interests: Sequence[Interest],
    *,
    content_cap: int = DEFAULT_CONTENT_CAP,
) -> MergedFiles:
    """Read the layers bottom first and return what the interests kept of the final filesystem."""
    tree = _Tree()
    stats = [
        _walk_layer(tree, index, digest, media_type, opener, interests, content_cap)
        for index, (digest, media_type, opener) in enumerate(layers)
    ]
    return MergedFiles(tree.kept(), stats)


def _walk_layer(
    tree: _Tree,
    index: int,
    digest: str,
    media_type: str,
    opener: Callable[[], BinaryIO],
    interests: Sequence[Interest],
    content_cap: int,
) -> LayerStats:
    def not_tar(error: Exception | str) -> LayerError:
        return LayerError(f"layer {digest}: not a tar archive ({error})")

    def unreadable(error: Exception) -> LayerError:
        return LayerError(f"layer {digest}: reading the blob failed ({type(error).__name__}: {error})")

    def corrupt(error: Exception) -> LayerError:
        return not_tar(f"{compression} stream corrupt: {error}" if compression != "none" else error)

    blob = opener()
    try:
        raw = _Counting(blob, unreadable)
        compression, sniffed = _sniff(raw)  # type: ignore[arg-type]
        plain = _Counting(_decompressed(compression, sniffed), corrupt)
        walker = _LayerWalk(tree, index, digest, interests, content_cap)
        try:
            with tarfile.open(fileobj=plain, mode="r|", bufsize=_TAR_BUFFER, tarinfo=_CheckedTarInfo) as archive:
                # Stream mode appends every member it reads to a list nobody uses here: cleared
                # after each, memory stays flat over a million-member layer.
                members: list[tarfile.TarInfo] = vars(archive)["members"]
                while (member := archive.next()) is not None:
                    members.clear()
                    walker.take(archive, member)
            while plain.read(_CHUNK):
                pass  # the padding after the end-of-archive blocks, counted in the size
        except _CorruptHeader as error:
            raise not_tar(f"a corrupt header after {walker.entries} entries: {error}") from error
        except tarfile.TarError as error:
            raise not_tar(error) from error
        except ValueError as error:  # normalise_path's refusal
            raise LayerError(f"layer {digest}: {error}") from error
    finally:
        blob.close()
    return LayerStats(
        digest=digest,
        index=index,
        media_type=media_type,
        compression=compression,
        compressed_size=raw.count,
        uncompressed_size=plain.count,
        entries=walker.entries,
        over_cap=tuple(walker.over_cap),
    )


class _CorruptHeader(tarfile.ReadError):
    pass


# tarfile's own name for a header that fails its checksum (not in its public interface).
_INVALID_HEADER: type[Exception] = vars(tarfile)["InvalidHeaderError"]


class _CheckedTarInfo(tarfile.TarInfo):
    """Tells a corrupt member header from the end of the archive: tarfile takes a header that
    fails its checksum after the first member for the end, and would end the layer silently."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            return super().frombuf(buf, encoding, errors)
        except _INVALID_HEADER as error:
            raise _CorruptHeader(str(error)) from None


class _LayerWalk:
    """The merging of one layer's members into the tree."""

    def __init__(self, tree: _Tree, index: int, digest: str, interests: Sequence[Interest], content_cap: int) -> None:
        self.tree = tree
        self.index = index
        self.digest = digest
        self.interests = interests
        self.content_cap = content_cap
        self.entries = 0
        self.over_cap: list[str] = []
        # This layer's kept or streamed files, which its hardlinks share.
        self.linkable: dict[str, tuple[bytes | None, dict[str, object]]] = {}

    def take(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.entries += 1
        path = normalise_path(member.name)
        if not path:
            return  # the root directory itself
        parts = path.split("/")
        name = parts[-1]
        if name.startswith(_WHITEOUT):
            self._whiteout(parts, name)
            return
        kind = _KINDS.get(member.type, "other")
        target = member.linkname
        if kind == "hardlink":
            target = normalise_path(target)
        entry = Entry(path, kind, member.mode, member.uid, member.gid, member.size, target, self.digest, self.index)

        level = Keep.NOTHING
        readers: dict[str, StreamReader] = {}
        for interest in self.interests:
            level = max(level, interest.keep(entry))
            if kind == "file" and (reader := interest.stream(entry)) is not None:
                readers[interest.name] = reader
        shared = self._shared(target) if kind == "hardlink" else None
        if shared is not None and shared[1]:
            level = max(level, Keep.ENTRY)  # the file it links to was streamed: its results hold here too
        self._replace(parts, entry, keep_history=level == Keep.HISTORY)
        if level == Keep.NOTHING and not readers:
            return

        content: bytes | None = None
        results: dict[str, object] = {}
        over_cap = False
        if kind == "file":
            wants_content = level >= Keep.CONTENT
            if wants_content and entry.size > self.content_cap:
                wants_content, over_cap = False, True
                self.over_cap.append(path)
            if wants_content or readers:
                content = self._read(archive, member, readers, wants_content)
            results = {name: reader.result() for name, reader in readers.items()}
            self.linkable[path] = (content, results)
        elif shared is not None:
            content = shared[0] if level >= Keep.CONTENT else None
            results = dict(shared[1])

        node = self.tree.make(parts, self.index)
        history = node.history if level == Keep.HISTORY else []
        if level == Keep.HISTORY and content is not None:
            if history and history[-1][0] == self.digest:
                history.pop()  # the same layer wrote the path twice: its last write counts
            history.append((self.digest, content))
        node.entry = entry
        node.content = content if level >= Keep.CONTENT else None
        node.results = results
        node.history = history
        node.over_cap = over_cap

    def _read(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, readers: dict[str, StreamReader], keep: bool
    ) -> bytes | None:
        stream = archive.extractfile(member)
        if stream is None:
            return None
        chunks: list[bytes] = []
        active = dict(readers)
        while (keep or active) and (chunk := stream.read(_CHUNK)):
            if keep:
                chunks.append(chunk)
            for name in [name for name, reader in active.items() if not reader.feed(chunk)]:
                del active[name]
        return b"".join(chunks) if keep else None

    def _shared(self, target: str) -> tuple[bytes | None, dict[str, object]] | None:
        """What a hardlink's target file holds: from this layer, or as kept from lower ones."""
        if target in self.linkable:
            return self.linkable[target]
        node = self.tree.find(target.split("/"))
        if node is not None and node.entry is not None:
            return node.content, node.results
        return None

    def _replace(self, parts: list[str], entry: Entry, *, keep_history: bool) -> None:
        """What a new entry at a path does to what lower layers kept there. A file replacing a
        file continues the path's history when the new one is kept with its history too."""
        node = self.tree.find(parts, clear_ancestors=True)
        if node is None:
            return
        if entry.kind != "dir":
            was_file = node.entry is not None and node.entry.kind != "dir" and not node.children
            node.children.clear()  # a file or link where a directory was: everything under it goes
            node.drop(keep_history=keep_history and was_file)
        elif node.entry is not None and node.entry.kind != "dir":
            node.drop()  # a directory where a file was; a directory over a directory keeps its children

    def _whiteout(self, parts: list[str], name: str) -> None:
        parent = self.tree.parent_of(parts)
        if parent is None:
            return
        if name == _OPAQUE:
            for child in list(parent.children):
                self.tree.remove_lower(parent, child, self.index)
        elif not name.startswith(_WHITEOUT + _WHITEOUT):  # other `.wh..wh.` names are aufs bookkeeping
            self.tree.remove_lower(parent, name[len(_WHITEOUT) :], self.index)
