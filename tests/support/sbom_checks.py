"""An SBOM held to the package managers' own answer for the image it describes.

`check_cyclonedx` and `check_spdx` take a document as the `cargohold sbom` command printed it and
the image's truth (tests/support/images.py) and fail with a readable difference: per ecosystem,
which packages the SBOM has that the managers do not report, and which it misses."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from packaging.utils import canonicalize_name
from spdx_tools.spdx.parser.error import SPDXParsingError
from spdx_tools.spdx.parser.json.json_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from tests.support.images import BuiltImage

ECOSYSTEMS = ("deb", "apk", "rpm", "pypi", "npm", "golang")
# Language ecosystems whose purl namespace is part of the package's name (npm's scope, a Go module's host and path).
NAMESPACED = ("npm", "golang")
SOURCE_PROPERTY = "cargohold:source"
LAYER_PROPERTY = "cargohold:layer"


def purl_key(purl: PackageURL) -> tuple[str, str, str]:
    """(type, name, version) as `Component.key` has them."""
    name = f"{purl.namespace}/{purl.name}" if purl.type in NAMESPACED and purl.namespace else purl.name
    if purl.type == "pypi":
        name = canonicalize_name(name)
    return (purl.type, name, purl.version or "")


def compare_package_sets(found: list[tuple[str, str, str]], image: BuiltImage, what: str) -> None:
    """Per ecosystem, exactly the packages the managers report: no more, no less, none twice.
    The image itself may be there as its `pkg:oci` purl (at its manifest digest)."""
    found = [key for key in found if key[0] != "oci" or key[2] != image.digest]
    unknown = sorted({key[0] for key in found} - set(ECOSYSTEMS))
    assert not unknown, f"{what}: purl types no package manager of the image reports: {unknown}"
    expected = Counter(c.key for c in image.components)
    actual = Counter(found)
    problems = []
    for ecosystem in ECOSYSTEMS:
        extra = sorted((actual - expected).keys() & {k for k in actual if k[0] == ecosystem})
        missing = sorted((expected - actual).keys() & {k for k in expected if k[0] == ecosystem})
        if extra or missing:
            problems.append(f"{ecosystem}: not reported by its manager {extra}; missing {missing}")
    assert not problems, f"{what} of {image.name}:{image.tag} differs from the package managers:\n" + "\n".join(
        problems
    )
    for gone in image.removed:
        assert gone.key not in actual, f"{what}: {gone.name} {gone.version} was removed in a later layer"


# --- CycloneDX ------------------------------------------------------------------------------------------------------


def _cyclonedx_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        yield from _cyclonedx_components(component.get("components", []))


def _properties(component: dict[str, Any], name: str) -> list[str]:
    return [p.get("value", "") for p in component.get("properties", []) if p.get("name") == name]


def _source_named(component: dict[str, Any], purl: PackageURL) -> list[str]:
    """The source package the component names: its cargohold:source properties or its purl's
    upstream qualifier; either may carry a version after the name ("glibc@2.36-9", "bash (5.2)")."""
    values = [*_properties(component, SOURCE_PROPERTY), purl.qualifiers.get("upstream", "")]
    return [value.split("@")[0].split(" ")[0] for value in values if value]


def check_cyclonedx(text: str, image: BuiltImage) -> dict[str, Any]:
    """The document validates as CycloneDX 1.6 and lists the image's packages exactly, each with
    the layer that brought it in, its source package where the manager names one, and the OS."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:  # the message alone: the error's text also carries the whole schema
        raise AssertionError(f"not valid CycloneDX 1.6: {getattr(error.data, 'message', error)}"[:3000])
    document: dict[str, Any] = json.loads(text)
    assert document.get("specVersion") == "1.6", document.get("specVersion")
    everything = list(_cyclonedx_components(document.get("components", [])))
    metadata_component = document.get("metadata", {}).get("component")
    packages = [(c, PackageURL.from_string(c["purl"])) for c in everything if c.get("purl")]
    compare_package_sets([purl_key(purl) for _, purl in packages], image, "CycloneDX components")

    truth = {c.key: c for c in image.components}
    wrong_layer, wrong_source = [], []
    for component, purl in packages:
        expected = truth[purl_key(purl)]
        layers = _properties(component, LAYER_PROPERTY)
        if layers != [image.layer_digest(expected)]:
            wrong_layer.append(f"{purl}: {LAYER_PROPERTY} {layers}, want layer {expected.layer}")
        names_source = expected.source and expected.source != expected.name and expected.type in ("deb", "apk")
        if names_source and expected.source not in _source_named(component, purl):
            wrong_source.append(f"{purl}: source {_source_named(component, purl)}, want {expected.source}")
        if expected.type == "rpm":
            assert purl.qualifiers.get("epoch") == expected.epoch, f"{purl}: epoch qualifier, want {expected.epoch}"
    assert not wrong_layer, f"{len(wrong_layer)} components without the layer that brought them in:\n" + "\n".join(
        wrong_layer[:20]
    )
    assert not wrong_source, f"{len(wrong_source)} components without their source package:\n" + "\n".join(
        wrong_source[:20]
    )

    systems = [c for c in [*everything, metadata_component or {}] if c.get("type") == "operating-system"]
    assert [(c.get("name"), c.get("version")) for c in systems] == [(image.distro["ID"], image.distro["VERSION_ID"])], (
        f"operating-system components: {systems}"
    )
    return document


# --- SPDX -----------------------------------------------------------------------------------------------------------


def check_spdx(text: str, image: BuiltImage) -> Any:
    """The document parses and validates with spdx-tools and has the image's packages exactly
    (by their purl external references)."""
    try:
        document = JsonLikeDictParser().parse(json.loads(text))
    except SPDXParsingError as error:
        raise AssertionError(f"not valid SPDX: {error.get_messages()}"[:3000]) from None
    messages = validate_full_spdx_document(document)
    assert not messages, "not valid SPDX:\n" + "\n".join(m.validation_message for m in messages[:20])
    found = []
    for package in document.packages:
        purls = [ref.locator for ref in package.external_references if ref.reference_type == "purl"]
        assert len(purls) <= 1, f"SPDX package {package.name} has {len(purls)} purls: {purls}"
        found += [purl_key(PackageURL.from_string(purl)) for purl in purls]
    compare_package_sets(found, image, "SPDX packages")
    return document
