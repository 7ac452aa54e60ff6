"""The ecosystems' own tools as oracles of version order, each asked about a whole batch of pairs at once.

Every function takes pairs of versions and returns one answer for each: -1, 0 or 1, or None where the tool
calls the version invalid. A missing tool fails the test (require_tool), never skips it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.servers import require_tool

Pairs = Sequence[tuple[str, str]]
Answers = list[int | None]

_WORKTREE = Path(__file__).resolve().parents[2]
NODE_SEMVER_DIR = _WORKTREE / ".cache" / "npm-semver"  # git-ignored

# One shell for the whole batch: `dpkg --compare-versions` answers by exit status, 0 true, 1 false, 2 error.
_DPKG_LOOP = r"""
while read -r a b; do
  dpkg --compare-versions "$a" lt "$b" 2>/dev/null; lt=$?
  if [ $lt -eq 0 ]; then echo -1; continue; fi
  if [ $lt -ne 1 ]; then echo invalid; continue; fi
  dpkg --compare-versions "$a" eq "$b" 2>/dev/null; eq=$?
  if [ $eq -eq 0 ]; then echo 0; elif [ $eq -eq 1 ]; then echo 1; else echo invalid; fi
done
"""


def _answers(lines: str, expected: int, tool: str) -> Answers:
    words = lines.split()
    if len(words) != expected:
        raise AssertionError(f"{tool} answered {len(words)} of {expected} comparisons:\n{lines[-2000:]}")
    return [None if word == "invalid" else int(word) for word in words]


def dpkg_compare(pairs: Pairs) -> Answers:
    require_tool("dpkg")
    for a, b in pairs:
        assert " " not in a + b and "\n" not in a + b, (a, b)
    stdin = "".join(f"{a} {b}\n" for a, b in pairs)
    result = subprocess.run(["sh", "-c", _DPKG_LOOP], input=stdin, capture_output=True, text=True, check=True)
    return _answers(result.stdout, len(pairs), "dpkg")


def _lua_string(text: str) -> str:
    assert "]==]" not in text and "\n" not in text, text
    return f"[==[{text}]==]"


def _rpm_lua(pairs: Pairs, expression: str, tmp_path: Path) -> Answers:
    """Evaluate `expression` (over Lua strings a and b, giving -1/0/1) for every pair in one rpm run.

    The chunk goes through a file: `rpm --eval` would expand any % in the versions as a macro.
    """
    require_tool("rpm")
    # rpm's Lua print() adds to the macro's expansion without a newline: gather the answers, print them once.
    lines = [f"local function cmp(a, b) return {expression} end", "local answers = {}"]
    lines += [f"answers[#answers + 1] = cmp({_lua_string(a)}, {_lua_string(b)})" for a, b in pairs]
    lines.append('print(table.concat(answers, " "))')
    chunk = tmp_path / "compare.lua"
    chunk.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        ["rpm", "--eval", f'%{{lua: dofile("{chunk}")}}'], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"rpm --eval failed ({result.returncode}): {result.stderr[-2000:]}")
    return _answers(result.stdout, len(pairs), "rpm")


def rpm_vercmp(pairs: Pairs, tmp_path: Path) -> Answers:
    """rpm's rpmvercmp() on plain version (or release) strings, none empty and without ':' or '-'.

    rpm 4.18's rpm.vercmp reads each side as an [epoch:]version[-release]; on such strings that is the epoch 0,
    no release, and rpmvercmp() of the strings themselves.
    """
    for a, b in pairs:
        assert a and b and not set(a + b) & {":", "-"}, (a, b)
    return _rpm_lua(pairs, "rpm.vercmp(a, b)", tmp_path)


def rpm_evr_compare(pairs: Pairs, tmp_path: Path) -> Answers:
    """rpm's comparison of whole [epoch:]version[-release] strings (rpm.ver objects, rpm >= 4.17)."""
    expression = "(rpm.ver(a) < rpm.ver(b)) and -1 or ((rpm.ver(a) == rpm.ver(b)) and 0 or 1)"
    return _rpm_lua(pairs, expression, tmp_path)


def node_semver_dir() -> Path:
    """node-semver, the npm package npm itself orders versions with, installed under .cache/ once."""
    require_tool("node")
    npm = require_tool("npm")
    if not (NODE_SEMVER_DIR / "node_modules" / "semver" / "package.json").exists():
        NODE_SEMVER_DIR.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(NODE_SEMVER_DIR), "semver@7"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(f"npm install semver@7 failed: {result.stderr[-2000:]}", pytrace=False)
    return NODE_SEMVER_DIR


# semver.clean() is npm's reading of a version (blanks and leading =/v dropped); compare() its order.
_NODE_COMPARE = """
const semver = require(process.argv[1] + "/node_modules/semver");
const pairs = JSON.parse(require("fs").readFileSync(0, "utf8"));
const answers = pairs.map(([a, b]) => {
  const ca = semver.clean(a), cb = semver.clean(b);
  return ca === null || cb === null ? "invalid" : String(semver.compare(ca, cb));
});
console.log(answers.join("\\n"));
"""


def node_semver_compare(pairs: Pairs) -> Answers:
    directory = node_semver_dir()
    result = subprocess.run(
        ["node", "-e", _NODE_COMPARE, str(directory)],
        input=json.dumps([list(pair) for pair in pairs]),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"node failed ({result.returncode}): {result.stderr[-2000:]}")
    return _answers(result.stdout, len(pairs), "node-semver")
