"""The SBOM checks themselves (tests/support/sbom_checks.py): a document written straight from the
package managers' truth passes, and each way an SBOM can be wrong fails, so that
test_sbom_images.py cannot pass a wrong SBOM."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from packageurl import PackageURL

from tests.support import images
from tests.support.images import BuiltImage
from tests.support.oracles import Component
from tests.support.sbom_checks import LAYER_PROPERTY, SOURCE_PROPERTY, check_cyclonedx, check_spdx

pytestmark = pytest.mark.slow  # the images are built (or read from the clone's cache) first

NAMESPACES = {"deb": "debian", "apk": "alpine", "rpm": "almalinux"}


def purl_of(component: Component) -> str:
    namespace, _, name = component.name.rpartition("/")
    if component.type in NAMESPACES:
        namespace, name = NAMESPACES[component.type], component.name
    qualifiers = {"epoch": component.epoch} if component.epoch else {}
    return str(PackageURL(component.type, namespace or None, name, component.version, qualifiers))


def cyclonedx_of(image: BuiltImage) -> dict[str, Any]:
    """The CycloneDX 1.6 document the truth itself makes."""
    components: list[dict[str, Any]] = [
        {
            "type": "operating-system",
            "bom-ref": "os",
            "name": image.distro["ID"],
            "version": image.distro["VERSION_ID"],
        }
    ]
    for number, component in enumerate(image.components):
        properties = [{"name": LAYER_PROPERTY, "value": image.layer_digest(component)}]
        if component.source and component.source != component.name:
            properties.append({"name": SOURCE_PROPERTY, "value": component.source})
        components.append(
            {
                "type": "library",
                "bom-ref": f"package-{number}",
                "name": component.name,
                "version": component.version,
                "purl": purl_of(component),
                "properties": properties,
            }
        )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "components": components,
    }


def spdx_of(image: BuiltImage) -> dict[str, Any]:
    """The SPDX 2.3 document the truth itself makes: the image described, its packages contained."""
    packages = [
        {
            "SPDXID": f"SPDXRef-Package-{number}",
            "name": component.name,
            "versionInfo": component.version,
            "downloadLocation": "NOASSERTION",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl_of(component),
                }
            ],
        }
        for number, component in enumerate(image.components)
    ]
    image_package = {"SPDXID": "SPDXRef-Image", "name": image.name, "downloadLocation": "NOASSERTION"}
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image.name}:{image.tag}",
        "documentNamespace": f"https://cargohold.invalid/spdx/{uuid.uuid4()}",
        "creationInfo": {"created": "2024-01-01T00:00:00Z", "creators": ["Tool: cargohold-tests"]},
        "packages": [image_package, *packages],
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": "SPDXRef-Image",
            }
        ]
        + [
            {"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": p["SPDXID"]}
            for p in packages
        ],
    }


@pytest.fixture(scope="module")
def debian() -> BuiltImage:
    return images.debian_image()


def test_the_truths_own_documents_pass() -> None:
    for image in (images.debian_image(), images.alpine_image(), images.rpm_image()):
        check_cyclonedx(json.dumps(cyclonedx_of(image)), image)
        check_spdx(json.dumps(spdx_of(image)), image)


def _without(document: dict[str, Any], purl_prefix: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["components"] = [c for c in changed["components"] if not c.get("purl", "").startswith(purl_prefix)]
    return changed


def test_a_missing_package_fails(debian: BuiltImage) -> None:
    document = _without(cyclonedx_of(debian), "pkg:npm/minimist@0.0.10")
    with pytest.raises(AssertionError, match=r"npm: not reported by its manager \[\]; missing \[\('npm', 'minimist'"):
        check_cyclonedx(json.dumps(document), debian)


def test_an_extra_package_and_the_removed_one_fail(debian: BuiltImage) -> None:
    document = cyclonedx_of(debian)
    removed = debian.removed[0]
    document["components"].append(
        {
            "type": "library",
            "bom-ref": "gone",
            "name": removed.name,
            "version": removed.version,
            "purl": purl_of(removed),
        }
    )
    with pytest.raises(AssertionError, match=r"deb: not reported by its manager .*python3-lib2to3"):
        check_cyclonedx(json.dumps(document), debian)


def test_a_package_twice_fails(debian: BuiltImage) -> None:
    document = cyclonedx_of(debian)
    twice = copy.deepcopy(document["components"][1])
    twice["bom-ref"] = "twice"
    document["components"].append(twice)
    with pytest.raises(AssertionError, match="deb: not reported by its manager"):
        check_cyclonedx(json.dumps(document), debian)


def test_a_wrong_layer_or_no_source_fails(debian: BuiltImage) -> None:
    document = cyclonedx_of(debian)
    libc6 = next(c for c in document["components"] if c.get("purl", "").startswith("pkg:deb/debian/libc6@"))
    libc6["properties"] = [{"name": LAYER_PROPERTY, "value": debian.layers[1]}]
    with pytest.raises(AssertionError, match="1 components without the layer that brought them in"):
        check_cyclonedx(json.dumps(document), debian)
    libc6["properties"] = [{"name": LAYER_PROPERTY, "value": debian.layers[0]}]
    with pytest.raises(AssertionError, match=r"libc6.*want glibc"):
        check_cyclonedx(json.dumps(document), debian)
    libc6["purl"] += "&upstream=glibc" if "?" in libc6["purl"] else "?upstream=glibc"
    check_cyclonedx(json.dumps(document), debian)  # the purl's upstream qualifier names it just as well


def test_a_document_the_schema_refuses_fails() -> None:
    image = images.alpine_image()
    document = cyclonedx_of(image)
    document["components"][1]["type"] = "package"
    with pytest.raises(AssertionError, match=r"not valid CycloneDX 1\.6"):
        check_cyclonedx(json.dumps(document), image)
    spdx = spdx_of(image)
    del spdx["packages"][1]["downloadLocation"]
    with pytest.raises(AssertionError, match=r"not valid SPDX.*download_location"):
        check_spdx(json.dumps(spdx), image)


def test_the_wrong_operating_system_fails() -> None:
    image = images.rpm_image()
    document = cyclonedx_of(image)
    document["components"][0]["version"] = "8.9"
    with pytest.raises(AssertionError, match="operating-system components"):
        check_cyclonedx(json.dumps(document), image)


def test_an_spdx_document_missing_a_package_fails() -> None:
    image = images.alpine_image()
    document = spdx_of(image)
    document["packages"] = [p for p in document["packages"] if p["name"] != "libcrypto3"]
    document["relationships"] = [
        r for r in document["relationships"] if r["relatedSpdxElement"] in {p["SPDXID"] for p in document["packages"]}
    ]
    with pytest.raises(AssertionError, match=r"apk: .*missing \[\('apk', 'libcrypto3'"):
        check_spdx(json.dumps(document), image)
