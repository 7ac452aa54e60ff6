"""The cargohold client: push, pull, copy, tag, list, inspect and delete against any registry.

See `api.Client` for the entry point and `docs/client.md` for a guide.
"""

from .api import Client, location
from .credentials import Credentials, CredentialStore
from .errors import AuthError, ClientError, IntegrityError, NotFoundError
from .registry import Options, RegistryClient
from .tls import TLSOptions
from .transfer import CopyResult

__all__ = [
    "AuthError",
    "Client",
    "ClientError",
    "CopyResult",
    "CredentialStore",
    "Credentials",
    "IntegrityError",
    "NotFoundError",
    "Options",
    "RegistryClient",
    "TLSOptions",
    "location",
]
