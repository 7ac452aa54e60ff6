"""The version orders of supply/versions.py, held against each ecosystem's own tools.

Hypothesis draws realistic tricky versions in pairs that share a prefix (so they differ late, where the
rules are subtle) and asks the real oracle about a whole batch at once: dpkg, rpm's Lua rpm.vercmp /
rpm.ver, node-semver (npm install into .cache/), packaging. apk is held against apk-tools' own test
vectors (tests/fixtures/apk-version.data, apk-tools' test/version.data), Go against a table.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import packaging.version
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cargohold.supply.rpmversion import rpmvercmp_key
from cargohold.supply.versions import KINDS, InvalidVersion, compare, is_valid, version_key
from tests.support.version_oracles import dpkg_compare, node_semver_compare, rpm_evr_compare, rpm_vercmp

BATCH = 200
# Each example is one batch for one oracle run. No shrinking, which would rerun the oracle for minutes: the
# assertion names the pairs that differ.
ORACLE_SETTINGS = settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
Pair = tuple[str, str]


# The strategies draw plain pieces and glue them in composites, without .map(): hypothesis describes a failing
# example through the calls that built it, and over .map() results of a whole batch that takes it minutes.
def _joined(draw: st.DrawFn, first: list[str], pieces: list[str], most: int = 5) -> str:
    return draw(st.sampled_from(first)) + "".join(draw(st.lists(st.sampled_from(pieces), max_size=most)))


def _twins(draw: st.DrawFn, first: list[str], pieces: list[str], most: int = 3) -> Pair:
    """Two strings with a common prefix: equal, or different only from some late point on."""
    prefix = _joined(draw, first, pieces, most)
    return prefix + _joined(draw, [""], pieces), prefix + _joined(draw, [""], pieces)


def _either(draw: st.DrawFn, values: list[str]) -> Pair:
    """The same value twice, or two independent ones."""
    one = draw(st.sampled_from(values))
    return (one, one) if draw(st.booleans()) else (one, draw(st.sampled_from(values)))


def _glued(*parts: Pair) -> Pair:
    return "".join(part[0] for part in parts), "".join(part[1] for part in parts)


def _ours(kind: str, pairs: list[Pair]) -> list[int | None]:
    answers: list[int | None] = []
    for a, b in pairs:
        try:
            answers.append(compare(kind, a, b))
        except InvalidVersion:
            answers.append(None)
    return answers


def _assert_agree(kind: str, pairs: list[Pair], oracle: list[int | None], tool: str) -> None:
    ours = _ours(kind, pairs)
    wrong = [(a, b, mine, theirs) for (a, b), mine, theirs in zip(pairs, ours, oracle, strict=True) if mine != theirs]
    assert not wrong, f"{kind} order differs from {tool} (a, b, ours, {tool}'s; None = invalid):\n" + "\n".join(
        map(repr, wrong[:20])
    )


# --- Debian: dpkg --compare-versions -----------------------------------------------------------------

_DEB_DIGITS = ["0", "1", "2", "9", "10", "00", "01"]
_DEB_UPSTREAM = [*_DEB_DIGITS, "a", "b", "z", "A", "rc", "dfsg", "+git", ".", ".", "+", "~", "~~", "~rc"]
_DEB_REVISION = [*_DEB_DIGITS, "+deb12u", "~bpo12+", "ubuntu", "build", ".", "+", "~", "a"]


@st.composite
def deb_pairs(draw: st.DrawFn) -> Pair:
    epoch = _either(draw, ["", "", "0:", "1:", "2:", "10:"])
    upstream = _twins(draw, _DEB_DIGITS, _DEB_UPSTREAM)
    shape = draw(st.sampled_from(["none", "shared", "one"]))
    if shape == "none":
        revision = ("", "")
    elif shape == "shared":
        revision = _twins(draw, _DEB_DIGITS, _DEB_REVISION, 2)
        revision = ("-" + revision[0], "-" + revision[1])
    else:
        revision = ("", "-" + _joined(draw, _DEB_DIGITS, _DEB_REVISION, 3))
    return _glued(epoch, upstream, revision)


DEB_TABLE = [
    ("1.0~rc1", "1.0"),
    ("1.0~rc1", "1.0~rc1~1"),
    ("1.0", "1.0+b1"),
    ("1.0", "1.0a"),
    ("1.0a", "1.0+"),
    ("1:0.9", "2.0"),
    ("1.0-1", "1.0-1.1"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("2.36.1-8+deb12u1", "2.36.1-8"),
    ("3.0.11-1~deb12u2", "3.0.13-1~deb12u1"),
    ("0~", "0"),
    ("1.0", "1.0-0"),
    ("1.00", "1.0"),
    ("1.0", "1.0."),
    ("0:1.0", "1.0"),
    ("1.2.3-beta-1", "1.2.3-1"),
    ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
]


def test_debian_table_matches_dpkg() -> None:
    _assert_agree("deb", DEB_TABLE, dpkg_compare(DEB_TABLE), "dpkg")


@ORACLE_SETTINGS
@given(st.lists(deb_pairs(), min_size=BATCH, max_size=BATCH))
def test_debian_order_matches_dpkg(pairs: list[Pair]) -> None:
    _assert_agree("deb", pairs, dpkg_compare(pairs), "dpkg")


def test_debian_invalid_versions() -> None:
    for bad in ["", "1.0 ", "1:", ":1.0", "a:1.0", "1.0-", "1.0-1-", "1.0_1"]:
        with pytest.raises(InvalidVersion, match="is not a valid Debian version"):
            version_key("deb", bad)


# --- RPM: rpm's own rpmvercmp() and rpm.ver (rpm >= 4.17) --------------------------------------------

_RPM_PIECES = ["0", "1", "9", "10", "01", "001", "a", "b", "rc", "git", "Z", ".", ".", "_", "+", "~", "^", "~~", "^^"]


@st.composite
def rpm_strings(draw: st.DrawFn) -> Pair:
    return _twins(draw, ["0", "1", "2", "10", "a", "~", "^", "."], _RPM_PIECES)


@st.composite
def rpm_evr_pairs(draw: st.DrawFn) -> Pair:
    epoch = _either(draw, ["", "", "0:", "1:", "2:", "01:"])
    version = _twins(draw, ["0", "1", "2", "10", "01"], _RPM_PIECES)
    shape = draw(st.sampled_from(["none", "shared", "one"]))
    if shape == "none":
        release = ("", "")
    elif shape == "shared":
        release = _twins(draw, ["1", "2", "10", "0", "1.el9", "3.fc39"], _RPM_PIECES, 1)
        release = ("-" + release[0], "-" + release[1])
    else:  # a missing or empty release against one
        release = (draw(st.sampled_from(["", "-"])), _joined(draw, ["-1", "-2", "-~", "-^1", "-0"], _RPM_PIECES, 2))
    return _glued(epoch, version, release)


RPM_TABLE = [
    ("1.0~rc1", "1.0"),
    ("1.0~rc1", "1.0~rc2"),
    ("1.0", "1.0^git1"),
    ("1.0^git1", "1.0.1"),
    ("1.0^git1", "1.0^git1~1"),
    ("1.0a", "1.0"),
    ("1.0", "1.0.0"),
    ("1.0", "1_0"),
    ("2.el9", "10.el9"),
    ("001", "1"),
    ("a", "1"),
    ("fc39", "el9"),
]
RPM_EVR_TABLE = [
    ("1:1.0-1", "2.0-1"),
    ("0:1.0-1", "1.0-1"),
    ("1.0-1.el9", "1.0-1.el9_3"),
    ("1.0-1.el9_3", "1.0-2.el9"),
    ("3.0.7-24.el9", "3.0.7-27.el9"),
    ("1.0", "1.0-1"),
    ("1.0-", "1.0"),
    ("1.0-~", "1.0"),
    ("2:1.0", "1:9.9-9"),
]


def test_rpmvercmp_table_matches_rpm(tmp_path: Path) -> None:
    ours = [_rpmvercmp(a, b) for a, b in RPM_TABLE]
    assert ours == rpm_vercmp(RPM_TABLE, tmp_path)


def test_rpm_evr_table_matches_rpm(tmp_path: Path) -> None:
    _assert_agree("rpm", RPM_EVR_TABLE, rpm_evr_compare(RPM_EVR_TABLE, tmp_path), "rpm")


def _rpmvercmp(a: str, b: str) -> int:
    key_a, key_b = rpmvercmp_key(a), rpmvercmp_key(b)
    return (key_a > key_b) - (key_a < key_b)


@ORACLE_SETTINGS
@given(st.lists(rpm_strings(), min_size=BATCH, max_size=BATCH))
def test_rpmvercmp_matches_rpm(tmp_path_factory: pytest.TempPathFactory, pairs: list[Pair]) -> None:
    theirs = rpm_vercmp(pairs, tmp_path_factory.mktemp("rpm"))
    ours = [_rpmvercmp(a, b) for a, b in pairs]
    wrong = [(a, b, mine, rpm) for (a, b), mine, rpm in zip(pairs, ours, theirs, strict=True) if mine != rpm]
    assert not wrong, "rpmvercmp differs from rpm's (a, b, ours, rpm's):\n" + "\n".join(map(repr, wrong[:20]))


@ORACLE_SETTINGS
@given(st.lists(rpm_evr_pairs(), min_size=BATCH, max_size=BATCH))
def test_rpm_evr_order_matches_rpm(tmp_path_factory: pytest.TempPathFactory, pairs: list[Pair]) -> None:
    _assert_agree("rpm", pairs, rpm_evr_compare(pairs, tmp_path_factory.mktemp("rpm")), "rpm")


# --- Alpine: apk-tools' own vectors ------------------------------------------------------------------

APK_DATA = Path(__file__).parent / "fixtures" / "apk-version.data"
# Rows whose versions apk-tools itself calls invalid (its comment: "invalid. do string sort"); we refuse them.
APK_INVALID_ROWS = {"23_foo > 4_beta", "1.0 < 1.0bc"}


def _apk_rows() -> tuple[list[tuple[str, str, str]], list[tuple[str, bool]]]:
    comparisons: list[tuple[str, str, str]] = []
    validity: list[tuple[str, bool]] = []
    for raw in APK_DATA.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) == 1 or line == "!":
            validity.append((words[0].removeprefix("!"), not words[0].startswith("!")))
        elif "~" not in words[1]:  # ~, <~, >~, !~ rows test apk's fuzzy dependency match, not the order
            comparisons.append((words[0], words[1], words[2]))
    return comparisons, validity


def test_apk_order_matches_apk_tools_vectors() -> None:
    comparisons, _ = _apk_rows()
    assert len(comparisons) > 700
    expected = {"<": -1, "=": 0, ">": 1}
    wrong = []
    for a, op, b in comparisons:
        if f"{a} {op} {b}" in APK_INVALID_ROWS:
            assert not (is_valid("apk", a) and is_valid("apk", b))
            continue
        if compare("apk", a, b) != expected[op] or compare("apk", b, a) != -expected[op]:
            wrong.append(f"{a} {op} {b}")
    assert not wrong, "apk order differs from apk-tools' vectors:\n" + "\n".join(wrong)


def test_apk_validity_matches_apk_tools_vectors() -> None:
    _, validity = _apk_rows()
    assert len(validity) > 30
    wrong = [(version, valid) for version, valid in validity if is_valid("apk", version) != valid]
    assert not wrong, f"apk validity differs from apk-tools' vectors (version, apk's answer): {wrong}"


def test_apk_suffix_order() -> None:
    versions = [
        *("1.0_alpha", "1.0_alpha1", "1.0_beta", "1.0_pre", "1.0_rc1", "1.0", "1.0-r1", "1.0~c0ffee"),
        *("1.0_cvs", "1.0_svn", "1.0_git", "1.0_hg", "1.0_p1", "1.0a", "1.0.1"),
    ]
    assert sorted(reversed(versions), key=lambda v: version_key("apk", v)) == versions


# --- PEP 440: packaging ------------------------------------------------------------------------------

# PEP 440's own example of the order, oldest first.
PEP440_ORDER = [
    *("1.0.dev456", "1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12", "1.0b1.dev456", "1.0b2"),
    *("1.0b2.post345.dev456", "1.0b2.post345", "1.0rc1.dev456", "1.0rc1", "1.0", "1.0+abc.5", "1.0+abc.7"),
    *("1.0+5", "1.0.post456.dev34", "1.0.post456", "1.0.15", "1.1.dev1"),
]

_pep440 = st.builds(
    lambda epoch, release, pre, post, dev, local: epoch + release + pre + post + dev + local,
    st.sampled_from(["", "", "1!", "0!"]),
    st.lists(st.sampled_from(["0", "1", "2", "10", "01"]), min_size=1, max_size=4).map(".".join),
    st.sampled_from(["", "", "a1", "b2", "rc1", "c1", "alpha", "-beta.3", "pre2", "preview1"]),
    st.sampled_from(["", "", ".post1", "-1", "post2", ".rev3", "-r4"]),
    st.sampled_from(["", "", ".dev0", "dev1", "-dev"]),
    st.sampled_from(["", "", "+ubuntu1", "+abc.5", "+5", "+local-1"]),
)


def test_pep440_specification_order() -> None:
    assert sorted(reversed(PEP440_ORDER), key=lambda v: version_key("pypi", v)) == PEP440_ORDER
    assert compare("pypi", "1.0", "1.0.0") == 0 and compare("pypi", "1.0a1", "1.0.0alpha1") == 0


@settings(max_examples=300, deadline=None)
@given(_pep440, _pep440)
def test_pep440_order_is_packaging_order(a: str, b: str) -> None:
    va, vb = packaging.version.Version(a), packaging.version.Version(b)
    assert compare("pypi", a, b) == (va > vb) - (va < vb)


def test_pep440_invalid_versions_have_a_clear_message() -> None:
    with pytest.raises(InvalidVersion) as caught:
        version_key("pypi", "1..2")
    assert str(caught.value) == "'1..2' is not a valid PEP 440 version"
    for legacy in ["2.0-SNAPSHOT-x", "dev", "1.0+", "2004d"]:
        assert not is_valid("pypi", legacy), legacy


# --- npm: node-semver --------------------------------------------------------------------------------

_NPM_NUMBERS = ["0", "1", "2", "10", "11"]
_NPM_IDENTIFIERS = ["alpha", "beta", "rc", "0", "1", "2", "10", "x-y", "a1", "1a", "-", "alpha1"]
_NPM_BUILDS = ["", "", "+build", "+001", "+sha.5114f85", "+exp.sha.5114f85"]
_NPM_PREFIXES = ["", "", "", "v", "=", "=v", " v", "vv"]
_NPM_BAD = ["01.2.3", "1.2", "1.2.3-", "1.2.3-01", "1.2.3-a..b", "V1.2.3", "1.2.3.4", "1.2.3+"]


def _npm_core(draw: st.DrawFn) -> str:
    return ".".join(draw(st.lists(st.sampled_from(_NPM_NUMBERS), min_size=3, max_size=3)))


def _npm_prerelease(draw: st.DrawFn, shared: list[str]) -> str:
    identifiers = shared + draw(st.lists(st.sampled_from(_NPM_IDENTIFIERS), max_size=2))
    return "-" + ".".join(identifiers) if identifiers else ""


@st.composite
def npm_pairs(draw: st.DrawFn) -> Pair:
    """Mostly one core with two prereleases sharing their first identifiers, as they differ in real life."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(_NPM_BAD)), _npm_core(draw)
    core = _npm_core(draw)
    cores = (core, core) if draw(st.integers(0, 3)) else (core, _npm_core(draw))
    shared = draw(st.lists(st.sampled_from(_NPM_IDENTIFIERS), max_size=2))
    prereleases = _npm_prerelease(draw, shared), _npm_prerelease(draw, shared)
    prefixes, builds = _either(draw, _NPM_PREFIXES), _either(draw, _NPM_BUILDS)
    return tuple(prefixes[i] + cores[i] + prereleases[i] + builds[i] for i in (0, 1))  # type: ignore[return-value]


@ORACLE_SETTINGS
@given(st.lists(npm_pairs(), min_size=BATCH, max_size=BATCH))
def test_npm_order_matches_node_semver(pairs: list[Pair]) -> None:
    _assert_agree("npm", pairs, node_semver_compare(pairs), "node-semver")


def test_semver_specification_order() -> None:
    versions = [
        *("1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11"),
        *("1.0.0-rc.1", "1.0.0", "2.0.0", "2.1.0", "2.1.1"),
    ]
    assert sorted(reversed(versions), key=lambda v: version_key("semver", v)) == versions
    assert compare("semver", "1.0.0+build.1", "1.0.0+build.2") == 0
    for bad in ["v1.0.0", "1.0", "01.0.0", "1.0.0-", "1.0.0-01", "=1.0.0"]:
        assert not is_valid("semver", bad), bad


# --- Go: golang.org/x/mod/semver's rules -------------------------------------------------------------

GO_TABLE = [
    ("v1.2.3", "v1.2.4", -1),
    ("v1.10.0", "v1.9.9", 1),
    ("v1.2.3", "v1.2.3+incompatible", 0),
    ("v2.0.0+incompatible", "v1.9.9", 1),
    ("v2.0.0+incompatible", "v2.0.1+incompatible", -1),
    ("v1", "v1.0.0", 0),
    ("v1.2", "v1.2.0", 0),
    ("v1.0.0-rc.1", "v1.0.0", -1),
    ("v1.0.0-beta.2", "v1.0.0-beta.11", -1),
    # Pseudo-versions: vX.0.0-yyyymmddhhmmss-abcdefabcdef, vX.Y.(Z+1)-0.yyyymmddhhmmss-..., vX.Y.Z-pre.0.yyyy...
    ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.0-20200101000000-0123456789ab", -1),
    ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.1", -1),
    ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.0", -1),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.3", 1),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4", -1),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4-0.20200101000000-0123456789ab", -1),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4-pre", -1),
    ("v1.2.4-pre.0.20191109021931-daa7c04131f5", "v1.2.4-pre", 1),
    ("v1.2.4-pre.0.20191109021931-daa7c04131f5", "v1.2.4-pre.1", -1),
    ("v0.0.0-20191109021931-daa7c04131f5+incompatible", "v0.0.0-20191109021931-daa7c04131f5", 0),
]


@pytest.mark.parametrize(("a", "b", "expected"), GO_TABLE)
def test_go_order(a: str, b: str, expected: int) -> None:
    assert compare("golang", a, b) == expected
    assert compare("golang", b, a) == -expected


@pytest.mark.parametrize(
    "bad", ["1.2.3", "v1.2.3.4", "v01.2.3", "v1.2-pre", "(devel)", "v1.0.0-01", "", "V1.2.3", "v1.2.3+"]
)
def test_go_invalid_versions(bad: str) -> None:
    with pytest.raises(InvalidVersion, match="is not a valid Go module version"):
        version_key("golang", bad)


# --- all orders ----------------------------------------------------------------------------------------

SAMPLES: dict[str, list[str]] = {
    "deb": ["1.0~rc1-1", "1.0-1", "2.36.1-8+deb12u1", "1:0.1-1"],
    "apk": ["1.0_rc1-r0", "1.0-r0", "1.0-r1", "1.0_p1-r0"],
    "rpm": ["1.0~rc1-1.el9", "1.0-1.el9", "1.0^git1-1", "1:0.1-1"],
    "pypi": ["1.0rc1", "1.0", "1.0.post1", "1!0.1"],
    "npm": ["1.0.0-rc.1", "1.0.0", "v1.0.1", "2.0.0"],
    "golang": ["v1.0.0-rc.1", "v1.0.0", "v1.0.1", "v2.0.0+incompatible"],
    "semver": ["1.0.0-rc.1", "1.0.0", "1.0.1", "2.0.0"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_samples_are_in_order(kind: str) -> None:
    versions = SAMPLES[kind]
    for a, b in itertools.pairwise(versions):
        assert compare(kind, a, b) == -1 and compare(kind, b, a) == 1 and compare(kind, a, a) == 0


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown version order 'maven'"):
        compare("maven", "1", "2")


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_messages_name_the_version_and_order(kind: str) -> None:
    bad = "" if kind == "rpm" else "not a version!"  # rpmvercmp orders any other string
    with pytest.raises(InvalidVersion) as caught:
        version_key(kind, bad)
    message = str(caught.value)
    assert message.startswith(f"{bad!r} is not a valid ") and "version" in message
