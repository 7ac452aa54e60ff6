"""An image's SBOM as CycloneDX 1.6 JSON and as SPDX 2.3 JSON, each written through its
reference library and validated by it before it is returned.

Both describe the image (its digest, its purl `pkg:oci/<name>@sha256:...`) as the root, the
distribution as an operating-system component, and one component per catalogued package with
its purl, licences and where in the image it was found. The output is the same for the same
catalogue but for the creation time and the serial number / document namespace.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import Property, XsUri
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, License, LicenseExpression
from cyclonedx.model.vulnerability import (
    BomTarget,
    VulnerabilityRating,
    VulnerabilityReference,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.model.vulnerability import Vulnerability as CycloneDXVulnerability
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from license_expression import ExpressionError
from license_expression import LicenseExpression as ParsedExpression
from packageurl import PackageURL
from spdx_tools.common.spdx_licensing import spdx_licensing
from spdx_tools.spdx.model import (
    Actor,
    ActorType,
    CreationInfo,
    Document,
    ExternalPackageRef,
    ExternalPackageRefCategory,
    ExtractedLicensingInfo,
    PackagePurpose,
    Relationship,
    RelationshipType,
    SpdxNoAssertion,
)
from spdx_tools.spdx.model import (
    Package as SpdxPackage,
)
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from .packages import Catalog, Distro, Package
from .scan import Vulnerability

TOOL = "cargohold"
LAYER_PROPERTY = "cargohold:layer"
LOCATION_PROPERTY = "cargohold:location"
SOURCE_PROPERTY = "cargohold:source"  # the source package (name@version) distribution advisories name
_NAMESPACE_BASE = "https://cargohold.invalid/spdx"  # no resolvable host: SPDX only asks for a unique URI


class SbomError(Exception):
    """A document the library's own validator rejects: a bug here, never the image's fault."""


# --- the image's own name ---------------------------------------------------------------------


def image_purl(image_name: str, digest: str) -> PackageURL:
    """`registry/ns/app:1.0` at `sha256:...` -> pkg:oci/app@sha256:...?repository_url=registry/ns/app&tag=1.0"""
    repository = image_name.split("@", 1)[0]
    tag = None
    last_slash = repository.rfind("/")
    if ":" in repository[last_slash + 1 :]:
        repository, tag = repository.rsplit(":", 1)
    qualifiers = {"repository_url": repository}
    if tag:
        qualifiers["tag"] = tag
    name = repository.rsplit("/", 1)[-1].lower()
    return PackageURL(type="oci", name=name, version=digest, qualifiers=qualifiers)


def _refs(catalog: Catalog) -> list[str]:
    """A unique, stable reference per package: its purl, with the location where it repeats."""
    counts: dict[str, int] = {}
    for package in catalog.packages:
        counts[package.purl] = counts.get(package.purl, 0) + 1
    return [p.purl if counts[p.purl] == 1 else f"{p.purl}#{p.location}" for p in catalog.packages]


# --- CycloneDX ---------------------------------------------------------------------------------


def _cyclonedx_licenses(names: tuple[str, ...]) -> list[License]:
    """SPDX ids as ids, names as names; an expression only alone (the schema allows no mix)."""
    factory = LicenseFactory()
    made = [factory.make_from_string(name) for name in names]
    if len(made) <= 1:
        return made
    return [
        DisjunctiveLicense(name=name) if isinstance(item, LicenseExpression) else item
        for name, item in zip(names, made, strict=True)
    ]


def _properties(package: Package) -> list[Property]:
    properties = [Property(name=LOCATION_PROPERTY, value=package.location)]
    if package.layer:
        properties.insert(0, Property(name=LAYER_PROPERTY, value=package.layer))
    if package.source:
        source = f"{package.source}@{package.source_version}" if package.source_version else package.source
        properties.append(Property(name=SOURCE_PROPERTY, value=source))
    return properties


def _os_component(distro: Distro) -> Component:
    return Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=distro.id,
        version=distro.version_id or None,
        description=distro.pretty_name or None,
        bom_ref=f"os:{distro.id}@{distro.version_id}",
    )


def cyclonedx_json(catalog: Catalog, *, image_name: str, vulnerabilities: Sequence[Vulnerability] = ()) -> str:
    """The catalogue as a CycloneDX 1.6 JSON document, validated against the 1.6 schema; with
    `vulnerabilities`, a scan report too (its `vulnerabilities` section, each affecting the
    components of the packages it was found in)."""
    root = Component(
        type=ComponentType.CONTAINER,
        name=image_name,
        version=catalog.image,
        purl=image_purl(image_name, catalog.image),
        bom_ref=catalog.image,
    )
    bom = Bom()
    bom.metadata.component = root
    if catalog.platform:
        bom.metadata.properties.add(Property(name="cargohold:platform", value=catalog.platform))
    components = []
    if catalog.distro is not None:
        components.append(_os_component(catalog.distro))
    for package, ref in zip(catalog.packages, _refs(catalog), strict=True):
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=package.name,
                version=package.version,
                purl=PackageURL.from_string(package.purl),
                bom_ref=ref,
                licenses=_cyclonedx_licenses(package.licenses),
                properties=_properties(package),
            )
        )
    for component in components:
        bom.components.add(component)
    bom.register_dependency(root, components)
    refs = dict(zip((p.purl for p in catalog.packages), _refs(catalog), strict=True))
    for vulnerability in _cyclonedx_vulnerabilities(vulnerabilities, refs):
        bom.vulnerabilities.add(vulnerability)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SbomError(f"the CycloneDX document for {image_name} does not validate: {error}")
    return text


def _cyclonedx_vulnerabilities(found: Sequence[Vulnerability], refs: dict[str, str]) -> list[CycloneDXVulnerability]:
    by_id: dict[str, list[Vulnerability]] = {}
    for item in found:
        by_id.setdefault(item.id, []).append(item)
    made = []
    for ident, items in sorted(by_id.items()):
        first = items[0]
        severity = VulnerabilitySeverity(first.severity.lower())
        fixes = sorted({fix for item in items for fix in item.fixed})
        made.append(
            CycloneDXVulnerability(
                bom_ref=f"vulnerability:{ident}",
                id=ident,
                source=VulnerabilitySource(name="OSV", url=XsUri(f"https://osv.dev/vulnerability/{ident}")),
                references=[
                    VulnerabilityReference(id=alias, source=VulnerabilitySource(name="alias"))
                    for alias in first.aliases
                ],
                ratings=[
                    VulnerabilityRating(
                        severity=severity, score=Decimal(str(first.score)) if first.score is not None else None
                    )
                ],
                description=first.summary or None,
                recommendation=f"upgrade to {', '.join(fixes)}" if fixes else None,
                affects=[BomTarget(ref=refs[item.purl]) for item in items if item.purl in refs],
            )
        )
    return made


# --- SPDX --------------------------------------------------------------------------------------


def _spdx_id(kind: str, name: str, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "package"
    return f"SPDXRef-{kind}-{safe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class _Licences:
    """SPDX licence expressions for the catalogue's licence strings; a string that is no valid
    SPDX expression becomes a LicenseRef- of its own, with its text in the document."""

    def __init__(self) -> None:
        self.extracted: dict[str, ExtractedLicensingInfo] = {}

    def expression(self, names: tuple[str, ...]) -> ParsedExpression | SpdxNoAssertion:
        if not names:
            return SpdxNoAssertion()
        parts = [self._one(name) for name in names]
        return spdx_licensing.parse(" AND ".join(f"({part})" if " " in part else part for part in parts))

    def _one(self, name: str) -> str:
        try:
            if not spdx_licensing.validate(name, strict=True).errors:
                return name
        except (ExpressionError, AttributeError):
            # license-expression 30.4 raises AttributeError from validate() on some strings that
            # are no expression ("MIT/X11", as npm's optimist declares): not one, either way.
            pass
        ref = "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", name.replace("+", "-plus")).strip("-") or "unnamed")
        self.extracted.setdefault(ref, ExtractedLicensingInfo(license_id=ref, extracted_text=name, license_name=name))
        return ref


def _purl_ref(purl: str) -> ExternalPackageRef:
    return ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl)


def spdx_json(catalog: Catalog, *, image_name: str) -> str:
    """The catalogue as an SPDX 2.3 JSON document, validated by spdx-tools."""
    created = datetime.now(UTC).replace(microsecond=0)
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "-", image_name)
    creation = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=image_name,
        document_namespace=f"{_NAMESPACE_BASE}/{safe_name}-{uuid.uuid4()}",
        creators=[Actor(ActorType.TOOL, TOOL)],
        created=created,
    )
    image_id = _spdx_id("Image", image_name, catalog.image)
    packages = [
        SpdxPackage(
            spdx_id=image_id,
            name=image_name,
            download_location=SpdxNoAssertion(),
            version=catalog.image,
            files_analyzed=False,
            license_concluded=SpdxNoAssertion(),
            license_declared=SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion(),
            external_references=[_purl_ref(image_purl(image_name, catalog.image).to_string())],
            primary_package_purpose=PackagePurpose.CONTAINER,
        )
    ]
    if catalog.distro is not None:
        distro = catalog.distro
        packages.append(
            SpdxPackage(
                spdx_id=_spdx_id("OperatingSystem", distro.id, f"{distro.id}@{distro.version_id}"),
                name=distro.id,
                download_location=SpdxNoAssertion(),
                version=distro.version_id or None,
                description=distro.pretty_name or None,
                files_analyzed=False,
                license_concluded=SpdxNoAssertion(),
                license_declared=SpdxNoAssertion(),
                copyright_text=SpdxNoAssertion(),
                primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
            )
        )
    licences = _Licences()
    for package, ref in zip(catalog.packages, _refs(catalog), strict=True):
        where = f"location {package.location}" + (f", layer {package.layer}" if package.layer else "")
        packages.append(
            SpdxPackage(
                spdx_id=_spdx_id("Package", f"{package.type}-{package.name}", ref),
                name=package.name,
                download_location=SpdxNoAssertion(),
                version=package.version,
                files_analyzed=False,
                license_concluded=SpdxNoAssertion(),
                license_declared=licences.expression(package.licenses),
                copyright_text=SpdxNoAssertion(),
                external_references=[_purl_ref(package.purl)],
                primary_package_purpose=PackagePurpose.LIBRARY,
                comment=where,
            )
        )
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    relationships += [Relationship(image_id, RelationshipType.CONTAINS, p.spdx_id) for p in packages[1:]]
    document = Document(
        creation_info=creation,
        packages=packages,
        relationships=relationships,
        extracted_licensing_info=sorted(licences.extracted.values(), key=lambda info: info.license_id or ""),
    )
    problems = validate_full_spdx_document(document, "SPDX-2.3")
    if problems:
        listed = "; ".join(problem.validation_message for problem in problems[:5])
        raise SbomError(f"the SPDX document for {image_name} does not validate: {listed}")
    stream = io.StringIO()
    write_document_to_stream(document, stream, validate=False)
    return stream.getvalue()
