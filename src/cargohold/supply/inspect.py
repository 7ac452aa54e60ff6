"""One read of an image for everything the supply chain asks of it: the layers are walked once,
with the catalogers' and the lint's interests together, so the SBOM, the scan and the lint of an
image cost one pass over its bytes, whoever asks (the CLI, the registry's scan worker)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .catalog import INTERESTS, ImageCatalog, catalog_files
from .layers import walk_layers
from .lint import Finding, lint_image
from .lintfiles import LintInterest


@dataclass(frozen=True)
class LayerInput:
    digest: str
    media_type: str
    size: int
    open: Callable[[], BinaryIO]  # the blob as stored (compressed), read once


@dataclass(frozen=True)
class ImageInput:
    reference: str  # as the user named it: the lint judges its tag
    digest: str  # the image manifest's
    manifest: dict[str, Any]
    config: bytes
    layers: list[LayerInput] = field(default_factory=list)


@dataclass(frozen=True)
class Inspection:
    catalog: ImageCatalog
    lint: list[Finding]


def _platform(config: bytes) -> str:
    try:
        document = json.loads(config)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    parts = [document.get("os"), document.get("architecture"), document.get("variant")]
    return "/".join(str(part) for part in parts if isinstance(part, str) and part)


def inspect_image(image: ImageInput) -> Inspection:
    """Catalogue and lint `image` in one walk over its layers."""
    lint = LintInterest()
    files = walk_layers([(layer.digest, layer.media_type, layer.open) for layer in image.layers], [*INTERESTS, lint])
    catalog = catalog_files(image.digest, files, platform=_platform(image.config))
    findings = lint_image(image.config, image.manifest, image.reference, lint.facts(files))
    return Inspection(catalog, findings)
