"""Client commands (`push`, `pull`, `copy`, `tag`, `ls`, `inspect`, `rm`, `digest`, `login`, `logout`).

A thin layer over `cargohold.client`: parse flags, call the library, print. Every failure is one
line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import uvloop

from ..client import Client, ClientError, Options, TLSOptions
from ..client.credentials import CredentialStore
from ..client.progress import NullReporter, Reporter, RichReporter
from ..client.sessions import default_directory as default_session_directory

T = TypeVar("T")


def parse_size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = units.get(text[-1:], 1)
    return int(float(text.rstrip("kmg")) * factor)


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """How to reach registries: TLS and retries (every command that reads an image)."""
    decorators = [
        click.option("--insecure", is_flag=True, help="Plain HTTP for every registry (loopback hosts use it anyway)."),
        click.option(
            "--ca-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Extra CA to trust."
        ),
        click.option(
            "--cert-dir",
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            help="Directory of *.crt CAs (and client.cert/client.key), as docker's certs.d/<host>/.",
        ),
        click.option("--retries", type=int, default=4, show_default=True, help="Retries per request after errors."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def transport_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Flags every client command shares: the connection's, and how to print the result."""
    decorators = [
        connection_options,
        click.option("-q", "--quiet", is_flag=True, help="Print only the result (a digest, names)."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def transfer_options(command: Callable[..., Any]) -> Callable[..., Any]:
    decorators = [
        click.option("-j", "--jobs", type=int, default=4, show_default=True, help="Blobs transferred at once."),
        click.option(
            "--chunk-size", default="64MiB", show_default=True, help="Bytes per upload request (resume granularity)."
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def run(coroutine_factory: Callable[[Client], Awaitable[T]], flags: dict[str, Any], *, progress: bool = False) -> T:
    """Build a Client from the flags, run the coroutine, map every failure to one line and exit 1."""
    quiet, as_json = flags.get("quiet"), flags.get("as_json")
    try:
        chunk_size = parse_size(flags.get("chunk_size") or "64MiB")
    except ValueError:
        raise click.BadParameter(f"invalid size {flags.get('chunk_size')!r}", param_hint="--chunk-size") from None
    options = Options(
        tls=TLSOptions(
            insecure=bool(flags.get("insecure")), ca_cert=flags.get("ca_cert"), cert_dir=flags.get("cert_dir")
        ),
        retries=max(0, int(flags.get("retries", 4))),
        jobs=max(1, int(flags.get("jobs") or 4)),
        chunk_size=max(1024 * 1024, chunk_size),
        session_dir=default_session_directory(),
    )
    reporter: Reporter = NullReporter()
    if progress and not quiet and not as_json and sys.stderr.isatty():
        reporter = RichReporter()

    async def main() -> T:
        async with Client(options, CredentialStore(), reporter) as client:
            return await coroutine_factory(client)

    try:
        return uvloop.run(main())
    except ClientError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename + ': ' if err.filename else ''}{err.strerror or err}")
    except KeyboardInterrupt:
        fail("interrupted")
    except Exception as err:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("CARGOHOLD_DEBUG"):
            raise
        fail(f"internal error: {type(err).__name__}: {err} (set CARGOHOLD_DEBUG=1 for a traceback)")
    raise AssertionError("unreachable")


def fail(message: str) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(1)


def emit(result: dict[str, Any], flags: dict[str, Any], text: str, quiet_text: str) -> None:
    if flags.get("as_json"):
        click.echo(json.dumps(result, indent=2))
    elif flags.get("quiet"):
        click.echo(quiet_text)
    else:
        click.echo(text)


def _summary(verb: str, destination: str, result: Any) -> str:
    blobs = f"{result.uploaded} blob(s) {verb}, {result.skipped} already there"
    if result.mounted:
        blobs += f", {result.mounted} mounted"
    extra = f", {len(result.referrers)} referrer(s)" if result.referrers else ""
    return f"{destination}: {result.digest} ({blobs}{extra})"


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.argument("destination")
@click.option("--artifact-type", help="Push the SOURCES as files of an OCI artifact of this type.")
@click.option(
    "--file-type", default="application/octet-stream", show_default=True, help="Media type of artifact files."
)
@click.option("--annotation", "annotations", multiple=True, help="KEY=VALUE on the artifact manifest (repeatable).")
@click.option("--subject", help="Make the artifact a referrer of this image (tag or digest in the same repository).")
@click.option("--all", "all_platforms", is_flag=True, help="Push every platform of an index.")
@click.option("--platform", help="The platform to push from an index, e.g. linux/arm64 (default: this machine's).")
@transfer_options
@transport_options
def push(
    sources: tuple[str, ...],
    destination: str,
    artifact_type: str | None,
    file_type: str,
    annotations: tuple[str, ...],
    subject: str | None,
    all_platforms: bool,
    platform: str | None,
    **flags: Any,
) -> None:
    """Push an image from an OCI layout (`oci:DIR[:TAG]`) or a `docker save` tarball to DESTINATION.

    With --artifact-type, push files as an OCI artifact: `push --artifact-type T FILE... DEST`.
    """
    if artifact_type:
        files = [(Path(s), file_type) for s in sources]
        notes = {}
        for item in annotations:
            key, sep, value = item.partition("=")
            if not sep:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--annotation")
            notes[key] = value

        async def do_artifact(client: Client) -> Any:
            return await client.push_artifact(files, destination, artifact_type, annotations=notes, subject=subject)

        result = run(do_artifact, flags, progress=True)
    else:
        if len(sources) != 1:
            raise click.UsageError("push takes one SOURCE (or several files with --artifact-type)")

        async def do_push(client: Client) -> Any:
            from ..client.api import location

            where = location(sources[0], local=True)
            if where.transport == "registry":
                raise ClientError(f"{sources[0]}: push reads an OCI layout or a tarball; use copy between registries")
            return await client.copy(where, destination, all_platforms=all_platforms, platform=platform)

        result = run(do_push, flags, progress=True)
    emit(result.as_dict(), flags, _summary("pushed", destination, result), result.digest)


@click.command()
@click.argument("source")
@click.argument("destination")
@click.option("--all", "all_platforms", is_flag=True, help="Pull every platform of an index (OCI layout only).")
@click.option("--platform", help="The platform to pull from an index, e.g. linux/arm64 (default: this machine's).")
@transfer_options
@transport_options
def pull(source: str, destination: str, all_platforms: bool, platform: str | None, **flags: Any) -> None:
    """Pull SOURCE into an OCI layout (`oci:DIR[:TAG]`, or a directory) or a tarball for `docker load` (`FILE.tar`)."""

    async def do(client: Client) -> Any:
        from ..client.api import location

        where = location(destination, local=True)
        if where.transport == "registry":
            raise ClientError(f"{destination}: pull writes an OCI layout or a .tar; use copy between registries")
        return await client.copy(source, where, all_platforms=all_platforms, platform=platform)

    result = run(do, flags, progress=True)
    emit(result.as_dict(), flags, _summary("pulled", destination, result), result.digest)


@click.command()
@click.argument("source")
@click.argument("destination")
@click.option("--all", "all_platforms", is_flag=True, help="Copy an index with every platform's image.")
@click.option("--platform", help="The platform to copy from an index (default: this machine's).")
@click.option("--referrers", is_flag=True, help="Carry along signatures, SBOMs and other referrers.")
@transfer_options
@transport_options
def copy(
    source: str, destination: str, all_platforms: bool, platform: str | None, referrers: bool, **flags: Any
) -> None:
    """Copy an image from SOURCE to DESTINATION (registries, `oci:DIR[:TAG]`, `docker-archive:FILE`)."""

    async def do(client: Client) -> Any:
        return await client.copy(
            source, destination, all_platforms=all_platforms, platform=platform, referrers=referrers
        )

    result = run(do, flags, progress=True)
    emit(result.as_dict(), flags, _summary("copied", destination, result), result.digest)


@click.command()
@click.argument("source")
@click.argument("tags", nargs=-1, required=True)
@transport_options
def tag(source: str, tags: tuple[str, ...], **flags: Any) -> None:
    """Add TAGS to the manifest SOURCE names (HOST/REPO:TAG or @DIGEST); no blob is uploaded again."""

    async def do(client: Client) -> str:
        return await client.tag(source, list(tags))

    digest = run(do, flags)
    emit({"digest": digest, "tags": list(tags)}, flags, f"{digest} tagged {', '.join(tags)}", digest)


@click.command("ls")
@click.argument("target")
@transport_options
def ls(target: str, **flags: Any) -> None:
    """List the repositories of a registry (HOST) or the tags of a repository (HOST/REPO)."""

    async def do(client: Client) -> list[str]:
        return await client.list(target)

    names = run(do, flags)
    emit({"names": names}, flags, "\n".join(names), "\n".join(names))


@click.command()
@click.argument("source")
@click.option("--raw", is_flag=True, help="Print the manifest exactly as stored.")
@click.option("--config", "show_config", is_flag=True, help="Print the image config exactly as stored.")
@click.option("--platform", help="For an index: describe this platform's image, e.g. linux/amd64.")
@transport_options
def inspect(source: str, raw: bool, show_config: bool, platform: str | None, **flags: Any) -> None:
    """Describe an image: digest, media type, platforms, config, layers, sizes, annotations."""

    async def do(client: Client) -> Any:
        if raw and not show_config:
            return (await client.manifest(source))[0]
        if show_config:
            return await client.config(source, platform=platform)
        return await client.inspect(source, platform=platform)

    result = run(do, flags)
    if isinstance(result, bytes):
        sys.stdout.buffer.write(result)
        sys.stdout.flush()
        return
    if flags.get("as_json"):
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(_describe(result))


def _describe(info: dict[str, Any]) -> str:
    from ..oci.rules import format_bytes

    lines = [f"Name:        {info['name']}", f"Digest:      {info['digest']}", f"MediaType:   {info['mediaType']}"]
    if info.get("artifactType"):
        lines.append(f"ArtifactType: {info['artifactType']}")
    for entry in info.get("platforms") or []:
        lines.append(f"Platform:    {entry['platform'] or '?':<16} {entry['digest']}")
    config = info.get("config") or {}
    if config.get("os"):
        lines.append(
            f"Platform:    {config['os']}/{config['architecture']}"
            + (f"/{config['variant']}" if config.get("variant") else "")
        )
    if config.get("created"):
        lines.append(f"Created:     {config['created']}")
    if config.get("cmd") or config.get("entrypoint"):
        lines.append(f"Command:     {json.dumps((config.get('entrypoint') or []) + (config.get('cmd') or []))}")
    for env in config.get("env") or []:
        lines.append(f"Env:         {env}")
    if "layers" in info:
        lines.append(f"Size:        {format_bytes(info['totalSize'])} ({len(info['layers'])} layers)")
        for layer in info["layers"]:
            lines.append(f"Layer:       {layer['digest']}  {format_bytes(layer['size'])}")
    for key, value in (info.get("annotations") or {}).items():
        lines.append(f"Annotation:  {key}={value}")
    return "\n".join(lines)


@click.command("rm")
@click.argument("target")
@transport_options
def rm(target: str, **flags: Any) -> None:
    """Untag (HOST/REPO:TAG) or delete a manifest (HOST/REPO@DIGEST)."""

    async def do(client: Client) -> str:
        return await client.delete(target)

    removed = run(do, flags)
    emit({"deleted": removed}, flags, f"deleted {removed}", removed)


@click.command()
@click.argument("source")
@transport_options
def digest(source: str, **flags: Any) -> None:
    """Print the manifest digest of SOURCE (registry, oci:DIR[:TAG], docker-archive:FILE)."""

    async def do(client: Client) -> str:
        return await client.digest(source)

    value = run(do, flags)
    emit({"digest": value}, flags, value, value)


@click.command()
@click.argument("registry")
@click.option("-u", "--username", help="User name (prompted for if missing).")
@click.option("-p", "--password", help="Password; prefer --password-stdin, which keeps it out of `ps`.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@transport_options
def login(registry: str, username: str | None, password: str | None, password_stdin: bool, **flags: Any) -> None:
    """Check credentials against REGISTRY and store them in docker's config.json (or its credential helper)."""
    if password_stdin:
        if password:
            raise click.UsageError("--password and --password-stdin exclude each other")
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    assert username is not None and password is not None

    async def do(client: Client) -> str:
        return await client.login(registry, username, password)

    where = run(do, flags)
    emit({"registry": registry, "stored": where}, flags, f"Login succeeded; credentials stored in {where}", where)


@click.command()
@click.argument("registry")
@transport_options
def logout(registry: str, **flags: Any) -> None:
    """Forget the stored credentials for REGISTRY."""

    async def do(client: Client) -> bool:
        return client.logout(registry)

    removed = run(do, flags)
    text = f"Removed credentials for {registry}" if removed else f"Not logged in to {registry}"
    emit({"registry": registry, "removed": removed}, flags, text, text)


COMMANDS = [push, pull, copy, tag, ls, inspect, rm, digest, login, logout]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
