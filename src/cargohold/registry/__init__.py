"""The OCI Distribution API as an ASGI application."""
