"""Python distributions: the core metadata of installed ones, `*.dist-info/METADATA` (wheels),
`*.egg-info/PKG-INFO` and `*.egg-info` files (setuptools' eggs)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from packaging.metadata import parse_email

from ..layers import Keep, Kept
from . import CatalogError, Findings, Found, PathInterest, PathRule, first_layers

_METADATA_LIMIT = 4 * 1024 * 1024  # a METADATA file holds the long description too, rarely more
_LICENSE_CLASSIFIER = "License :: "
# The classifiers of the commonest licences, by their SPDX ids; others keep the classifier's name.
_CLASSIFIER_IDS = {
    "MIT License": "MIT",
    "BSD License": "BSD-3-Clause",
    "Apache Software License": "Apache-2.0",
    "Python Software Foundation License": "PSF-2.0",
    "ISC License (ISCL)": "ISC",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "The Unlicense (Unlicense)": "Unlicense",
}


def is_metadata(path: str) -> bool:
    return path.endswith((".dist-info/METADATA", ".egg-info/PKG-INFO", ".egg-info"))


INTEREST = PathInterest("python", (PathRule(is_metadata, Keep.HISTORY, max_size=_METADATA_LIMIT),))


@dataclass(frozen=True)
class PythonRecord:
    name: str
    version: str
    licenses: tuple[str, ...]


def normalise_name(name: str) -> str:
    """PEP 503's normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_metadata(content: bytes, *, location: str) -> PythonRecord:
    raw, _unparsed = parse_email(content)
    name, version = raw.get("name"), raw.get("version")
    if not name or not version:
        raise CatalogError(f"{location}: core metadata without {'Name' if not name else 'Version'}")
    return PythonRecord(name.strip(), version.strip(), _licenses(raw))


def _licenses(raw: Mapping[str, object]) -> tuple[str, ...]:
    """License-Expression when there is one; else a License field that is a name rather than a
    whole licence text; else the licence classifiers."""
    expression = raw.get("license_expression")
    if isinstance(expression, str) and expression.strip():
        return (expression.strip(),)
    text = raw.get("license")
    if isinstance(text, str):
        text = text.strip()
        if text and "\n" not in text and len(text) <= 100 and text.upper() != "UNKNOWN":
            return (text,)
    classifiers = raw.get("classifiers")
    found: list[str] = []
    if isinstance(classifiers, list):
        for classifier in classifiers:
            if isinstance(classifier, str) and classifier.startswith(_LICENSE_CLASSIFIER):
                leaf = classifier.rsplit(" :: ", 1)[-1].strip()
                if leaf != "OSI Approved":
                    found.append(_CLASSIFIER_IDS.get(leaf, leaf))
    return tuple(dict.fromkeys(found))


def find(files: Mapping[str, Kept]) -> Findings:
    findings = Findings()
    for path, kept in files.items():
        if kept.content is None or not is_metadata(path):
            continue
        try:
            record = parse_metadata(kept.content, location=path)
        except CatalogError as error:
            findings.unreadable.append(str(error))
            continue

        def versions_of(content: bytes, path: str = path) -> dict[str, str]:
            earlier = parse_metadata(content, location=path)
            return {normalise_name(earlier.name): earlier.version}

        layers = first_layers(kept.history, versions_of)
        findings.packages.append(
            Found(
                type="pypi",
                name=record.name,
                version=record.version,
                location=path,
                layer=layers.get(normalise_name(record.name), kept.entry.layer),
                licenses=record.licenses,
            )
        )
    return findings
