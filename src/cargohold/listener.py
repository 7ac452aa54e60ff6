"""The listening socket, bound before anything slow: a registry that is restarting should
make its first clients wait, not refuse them. Standard library only, so it costs nothing
to import before the server's own modules."""

from __future__ import annotations

import socket

LISTEN_BACKLOG = 1024


class ListenError(OSError):
    """The address to serve on cannot be had (in use, not an address of this machine)."""


def listen_on(host: str, port: int, backlog: int | None = LISTEN_BACKLOG) -> socket.socket:
    """A socket bound to host:port, exclusively: no SO_REUSEPORT, so a second server started on
    the same port fails instead of silently sharing its connections. Listening unless
    `backlog` is None: then it only proves the port free (connections made to a socket that
    listened and was closed would be reset)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may bind over TIME_WAIT
        # Accepted connections inherit it: small answers (manifests, 401s) go out at once, as on
        # the sockets granian makes itself.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind((host, port))
        if backlog is not None:
            listener.listen(backlog)
    except OSError as err:
        listener.close()
        raise ListenError(f"cannot listen on {host}:{port}: {(err.strerror or str(err)).lower()}") from None
    return listener
