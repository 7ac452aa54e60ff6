"""An async HTTP client for one registry: the Distribution API with retries and auth.

    >>> async with RegistryClient("127.0.0.1:5000") as reg:          # doctest: +SKIP
    ...     body, media_type, digest = await reg.get_manifest("team/app", "v1")
    ...     tags = await reg.list_tags("team/app")

Requests that may be repeated are retried on connection errors, 429 and 5xx with exponential
backoff, honouring `Retry-After`. Blob uploads and downloads (in `blobs.py`) resume instead.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.errors import RegistryError
from ..oci.manifest import inferred_media_type, normalise_content_type, referrer_descriptor
from .auth import Authenticator
from .credentials import Credentials
from .errors import AuthError, ClientError, ConnectionFailed, IntegrityError, NotFoundError
from .sessions import UploadSessions
from .tls import TLSOptions, scheme_and_context

MANIFEST_ACCEPT = ", ".join(
    [mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST, "application/*;q=0.1"]
)
# httpcore reads a response 64 KiB at a time; a blob download spends most of its CPU on the
# per-read overhead then. 1 MiB reads measured 1.3-1.5x faster here (bench/client_bench.py).
if hasattr(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES"):
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = 1024 * 1024

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class Options:
    """How the client talks to registries."""

    tls: TLSOptions = field(default_factory=TLSOptions)
    retries: int = 4  # attempts after the first, per request
    backoff: float = 0.5  # first delay; doubles each time, with jitter
    timeout: float = 60.0  # seconds without progress on one connection
    jobs: int = 4  # blobs transferred at once
    chunk_size: int = 64 * 1024 * 1024  # bytes per upload PATCH; a dropped chunk resumes where acknowledged
    session_dir: Path | None = None  # remember unfinished uploads here so a later push continues them


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def delete_scope(repo: str) -> str:
    return f"repository:{repo}:delete"


def describe_transport_error(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    cause = err.__cause__ or err.__context__
    while cause is not None and not str(text).strip():
        text = str(cause)
        cause = cause.__cause__
    return text


def retry_delay(attempt: int, base: float, response: httpx.Response | None = None) -> float:
    """Exponential backoff with jitter; a server's Retry-After (seconds or a date) wins, capped."""
    if response is not None and (value := response.headers.get("retry-after")):
        try:
            return min(float(value), MAX_RETRY_AFTER)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            if parsed is not None:
                return max(0.0, min(parsed.timestamp() - time.time(), MAX_RETRY_AFTER))
    return base * (2**attempt) * (0.75 + random.random() / 2)


def error_message(response: httpx.Response) -> str:
    """The registry's own words: the spec's `errors[]`, else the start of the body."""
    try:
        errors = response.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return text or response.reason_phrase


class RegistryClient:
    """One registry host. Share it between repositories; close it (or use `async with`) when done."""

    def __init__(self, host: str, credentials: Credentials | None = None, options: Options | None = None) -> None:
        self.host = host
        self.options = options or Options()
        self.scheme, ssl_context = scheme_and_context(host, self.options.tls)
        self.base_url = f"{self.scheme}://{host}"
        timeout = httpx.Timeout(self.options.timeout, connect=10.0, pool=None)
        limits = httpx.Limits(
            max_connections=self.options.jobs * 2 + 4, max_keepalive_connections=self.options.jobs + 4
        )
        self.http = httpx.AsyncClient(
            verify=ssl_context if ssl_context is not None else True,
            timeout=timeout,
            limits=limits,
            follow_redirects=True,
            trust_env=False,
            headers={"user-agent": "cargohold-client"},
        )
        self.auth = Authenticator(host, credentials, self.http)
        self.sessions = UploadSessions(self.options.session_dir) if self.options.session_dir else None
        self._pinged = False
        self._ping_lock = asyncio.Lock()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path)

    # --- the request loop ---------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        scopes: Iterable[str] = (),
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: Callable[[], Any] | bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """Send with auth; retry (if `retry`) on connection errors, 429 and 5xx.

        `content` is bytes, a factory of a fresh body (an async iterator) for each attempt, or
        one body to stream (with `retry=False`: it cannot be sent twice).
        Streamed responses must be closed by the caller.
        """
        if not self._pinged:
            async with self._ping_lock:
                if not self._pinged:
                    await self.ping()
        scope_tuple = tuple(scopes)
        url = self.url(path)
        authorised_again = False
        attempt = 0
        while True:
            sent = dict(headers or {})
            sent.update(await self.auth.headers(scope_tuple))
            body = content() if callable(content) else content
            request = self.http.build_request(method, url, headers=sent, params=params, content=body)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as err:
                if not retry or attempt >= self.options.retries:
                    raise ConnectionFailed(f"{method} {url}: {describe_transport_error(err)}") from None
                await asyncio.sleep(retry_delay(attempt, self.options.backoff))
                attempt += 1
                continue
            if response.status_code == 401 and not authorised_again:
                header = response.headers.get("www-authenticate")
                await response.aclose()
                if await self.auth.on_unauthorized(header, scope_tuple, "authorization" in sent):
                    authorised_again = True
                    continue
                raise self._unauthorized(response)
            if response.status_code == 401:
                await response.aclose()
                raise self._unauthorized(response)
            if response.status_code in RETRY_STATUSES and retry and attempt < self.options.retries:
                await response.aclose()
                await asyncio.sleep(retry_delay(attempt, self.options.backoff, response))
                attempt += 1
                continue
            return response

    def _unauthorized(self, response: httpx.Response) -> AuthError:
        if self.auth.credentials is None:
            return AuthError(f"{self.host} requires authentication: run `cargohold login {self.host}`")
        return AuthError(
            f"{self.host} refused the credentials of {self.auth.credentials.username!r} "
            f"for {response.request.method} {response.request.url.path}"
        )

    async def ping(self) -> None:
        """GET /v2/ once: learns whether (and how) the registry wants authentication."""
        url = self.url("/v2/")
        for attempt in range(self.options.retries + 1):
            try:
                response = await self.http.get(url)
            except httpx.TransportError as err:
                if attempt >= self.options.retries:
                    raise ClientError(
                        f"cannot reach registry {self.base_url}: {describe_transport_error(err)}"
                    ) from None
                await asyncio.sleep(retry_delay(attempt, self.options.backoff))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.options.retries:
                await asyncio.sleep(retry_delay(attempt, self.options.backoff, response))
                continue
            break
        if response.status_code == 400 and "https" in response.text.lower():
            raise ClientError(f"{self.host} speaks HTTPS: trust its CA with --ca-cert or certs.d/{self.host}/ca.crt")
        if response.status_code == 401:
            await self.auth.on_unauthorized(response.headers.get("www-authenticate"), ())
        elif response.status_code == 404:
            raise ClientError(f"{self.base_url} is not a registry: GET /v2/ answered 404")
        elif response.status_code >= 400:
            raise ClientError(f"{self.base_url}/v2/ answered {response.status_code}: {error_message(response)}")
        self._pinged = True

    async def check_login(self) -> None:
        """Prove the credentials work: basic on /v2/, or a token for the registry."""
        await self.ping()
        if self.auth.challenge is None:
            return
        response = await self.request("GET", "/v2/")
        if response.status_code != 200:
            raise ClientError(f"{self.host}: GET /v2/ answered {response.status_code}: {error_message(response)}")

    # --- manifests ----------------------------------------------------------------------------------------------

    async def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(payload, media type, digest); the digest is checked against the payload."""
        response = await self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", scopes=[pull_scope(repo)], headers={"accept": MANIFEST_ACCEPT}
        )
        if response.status_code == 404:
            raise NotFoundError(f"{self.host}/{repo}: manifest {reference} not found ({error_message(response)})")
        check(response, f"GET manifest {self.host}/{repo}:{reference}")
        payload = response.content
        digest = verify_manifest_digest(payload, reference, response.headers.get("docker-content-digest"), self.host)
        media_type = normalise_content_type(response.headers.get("content-type"))
        if media_type not in mt.MANIFEST_TYPES:
            media_type = media_type_of(payload) or media_type
        return payload, media_type, digest

    async def put_manifest(self, repo: str, reference: str, payload: bytes, media_type: str) -> str:
        response = await self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scopes=[push_scope(repo)],
            headers={"content-type": media_type},
            content=payload,
        )
        check(response, f"PUT manifest {self.host}/{repo}:{reference}")
        digest = str(Digest.of(payload))
        subject = _subject_of(payload)
        if subject and "oci-subject" not in response.headers:
            # no referrers API: keep the spec's fallback, an index tagged <alg>-<hex> of the subject
            await self._add_to_referrers_tag(repo, subject, referrer_descriptor(payload, media_type, digest))
        return digest

    async def _add_to_referrers_tag(self, repo: str, subject: str, descriptor: dict[str, Any]) -> None:
        tag = subject.replace(":", "-")
        try:
            payload, _, _ = await self.get_manifest(repo, tag)
            index = json.loads(payload)
        except NotFoundError:
            index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        if any(entry.get("digest") == descriptor["digest"] for entry in index.get("manifests") or []):
            return
        index.setdefault("manifests", []).append(descriptor)
        body = json.dumps(index, separators=(",", ":")).encode()
        response = await self.request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            scopes=[push_scope(repo)],
            headers={"content-type": mt.OCI_INDEX},
            content=body,
        )
        check(response, f"PUT referrers tag {self.host}/{repo}:{tag}")

    async def delete_manifest(self, repo: str, reference: str) -> None:
        response = await self.request(
            "DELETE", f"/v2/{repo}/manifests/{reference}", scopes=[f"repository:{repo}:delete,pull,push"]
        )
        if response.status_code == 404:
            raise NotFoundError(f"{self.host}/{repo}: {reference} not found ({error_message(response)})")
        check(response, f"DELETE {self.host}/{repo}:{reference}")

    # --- listings -----------------------------------------------------------------------------------------------

    async def _paged(self, path: str, key: str, scopes: list[str]) -> list[str]:
        items: list[str] = []
        next_path: str | None = f"{path}?n=1000"
        while next_path:
            response = await self.request("GET", next_path, scopes=scopes)
            if response.status_code == 404:
                raise NotFoundError(f"{self.host}: {path} not found ({error_message(response)})")
            check(response, f"GET {self.host}{path}")
            items.extend(response.json().get(key) or [])
            link = response.links.get("next", {}).get("url")
            next_path = link if link and link != next_path else None
        return items

    async def list_tags(self, repo: str) -> list[str]:
        return await self._paged(f"/v2/{repo}/tags/list", "tags", [pull_scope(repo)])

    async def list_repositories(self) -> list[str]:
        return await self._paged("/v2/_catalog", "repositories", ["registry:catalog:*"])

    async def referrers(self, repo: str, digest: str) -> list[dict[str, Any]]:
        """Manifests whose subject is `digest`: the referrers API, else the `sha256-<hex>` tag fallback."""
        response = await self.request(
            "GET", f"/v2/{repo}/referrers/{digest}", scopes=[pull_scope(repo)], headers={"accept": mt.OCI_INDEX}
        )
        if response.status_code == 200 and "json" in response.headers.get("content-type", ""):
            return list(response.json().get("manifests") or [])
        if response.status_code not in (404, 405, 400):
            check(response, f"GET referrers of {self.host}/{repo}@{digest}")
        fallback = digest.replace(":", "-")
        try:
            payload, _, _ = await self.get_manifest(repo, fallback)
        except NotFoundError:
            return []
        return list(json.loads(payload).get("manifests") or [])

    # --- blobs (bytes move in blobs.py) -------------------------------------------------------------------------

    async def blob_size(self, repo: str, digest: str, scopes: list[str] | None = None) -> int | None:
        """HEAD a blob: its size if the repository has it, else None."""
        response = await self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=scopes or [pull_scope(repo)])
        if response.status_code == 404:
            return None
        check(response, f"HEAD blob {self.host}/{repo}@{digest}")
        return int(response.headers.get("content-length", "0"))

    async def stream_blob(self, repo: str, digest: str, offset: int = 0) -> AsyncGenerator[bytes, None]:
        """The blob's bytes from `offset` on (a Range request; a server ignoring it is handled)."""
        headers = {"range": f"bytes={offset}-"} if offset else {}
        response = await self.request(
            "GET", f"/v2/{repo}/blobs/{digest}", scopes=[pull_scope(repo)], headers=headers, stream=True
        )
        try:
            if response.status_code == 404:
                raise NotFoundError(f"{self.host}/{repo}: blob {digest} not found")
            check(response, f"GET blob {self.host}/{repo}@{digest}")
            skip = offset if response.status_code == 200 else 0
            async for piece in response.aiter_raw():
                if skip:
                    if len(piece) <= skip:
                        skip -= len(piece)
                        continue
                    piece, skip = piece[skip:], 0
                yield piece
        finally:
            await response.aclose()


def _subject_of(payload: bytes) -> str | None:
    try:
        subject = json.loads(payload).get("subject")
    except (ValueError, AttributeError):
        return None
    return subject.get("digest") if isinstance(subject, dict) else None


def check(response: httpx.Response, what: str) -> None:
    """Raise a one-line ClientError for any status that is not a success."""
    if response.status_code < 400:
        return
    if response.status_code == 403:
        raise AuthError(f"{what}: denied ({error_message(response)})")
    raise ClientError(f"{what}: {response.status_code} {error_message(response)}")


def media_type_of(payload: bytes) -> str | None:
    """A fetched manifest's type from its body, when its Content-Type says nothing useful."""
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    return inferred_media_type(document) if isinstance(document, dict) else None


def verify_manifest_digest(payload: bytes, reference: str, header: str | None, host: str) -> str:
    """The payload's digest; a mismatch with the digest asked for, or the one the server claims, is an error."""
    if ":" in reference:
        try:
            wanted = Digest.parse(reference)
        except RegistryError as err:
            raise ClientError(err.message) from None
        actual = str(Digest.of(payload, wanted.algorithm))
        if actual != str(wanted):
            raise IntegrityError(f"{host} sent a manifest for {reference} whose digest is {actual}")
        return actual
    actual = str(Digest.of(payload))
    if header and header.startswith("sha256:") and header != actual:
        raise IntegrityError(f"{host} says manifest {reference} is {header}, but its bytes hash to {actual}")
    return actual
