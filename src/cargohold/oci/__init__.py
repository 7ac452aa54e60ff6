"""The pure OCI model: names, digests, media types, manifests. No I/O lives here."""
