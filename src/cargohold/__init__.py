"""cargohold: an OCI registry and release pipeline in one program."""

__version__ = "0.1.0"
