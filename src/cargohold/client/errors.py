"""The one exception the client library raises: a message a person can act on, on one line."""

from __future__ import annotations


class ClientError(Exception):
    """Anything that stops a transfer: unreachable registry, refused credentials, bad input, lying server.

    `str(err)` is a single line fit for stderr; the CLI prints it and exits 1.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class AuthError(ClientError):
    """The registry or its token server refused the credentials (or wants some)."""


class NotFoundError(ClientError):
    """The repository, manifest, tag or blob does not exist."""


class IntegrityError(ClientError):
    """Bytes did not match their digest: a corrupt input file or a lying server."""


class ConnectionFailed(ClientError):
    """The connection failed (refused, reset, timed out) after any retries the request allowed."""
