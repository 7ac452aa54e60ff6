"""The house's rules, read from the code's imports: inner layers never import outer ones, and no
module imports (even for types only) one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cargohold"

# What each layer may import of ours (besides itself). Top-level modules are layers of their own.
ALLOWED = {
    "oci": set(),
    "storage": {"oci"},
    "auth": {"oci", "storage", "config"},
    "services": {"oci", "storage", "config", "supply"},  # a push queues its scan (supply.results)
    "supply": {"oci", "storage"},
    "lifecycle": {"oci", "storage", "config"},
    "client": {"oci"},
    "config": {"oci"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Modules of ours that `path` imports, TYPE_CHECKING blocks and function bodies included."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cargohold")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("cargohold"):
                target = node.module
            else:
                continue
            found.add(target)
            # `from . import uploads` names a module, not a symbol
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.add(candidate)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_inner_layers_never_import_outer_ones() -> None:
    broken = []
    for module, imported in graph().items():
        own = layer(module)
        if own not in ALLOWED:
            continue
        for target in imported:
            other = layer(target)
            if other != own and other not in ALLOWED[own]:
                broken.append(f"{module} imports {target}")
    assert not broken, "layer rules broken:\n" + "\n".join(sorted(broken))


def test_no_import_circles() -> None:
    edges = graph()
    # A module's package __init__ is imported with it: only edges between real modules count.
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


# The modules that are one backend. Outside storage/, only these name one: everything else takes
# the interfaces (storage/interfaces.py), so a second backend changes nothing above storage/.
BACKEND_MODULES = {
    "cargohold.storage.metadata",
    "cargohold.storage.blobstore",
    "cargohold.storage.uploadfile",
    "cargohold.storage.sqlite",
    "cargohold.storage.postgres",
}
# Modules allowed to name a backend although they sit above storage/: none any more.
STILL_ON_A_BACKEND: set[str] = set()


def test_no_module_above_storage_knows_which_backend_runs() -> None:
    knowing = sorted(
        f"{module} imports {target}"
        for module, imported in graph().items()
        if layer(module) != "storage" and module not in STILL_ON_A_BACKEND
        for target in imported & BACKEND_MODULES
    )
    assert not knowing, "use storage.interfaces and storage.backends instead:\n" + "\n".join(knowing)


@pytest.mark.parametrize("module", ["cargohold.oci.manifest", "cargohold.services.uploads"])
def test_the_reader_sees_imports(module: str) -> None:
    """A check on the check: the graph holds the imports these modules are known to have."""
    expected = {
        "cargohold.oci.manifest": "cargohold.oci.digest",
        "cargohold.services.uploads": "cargohold.storage.records",
    }
    assert expected[module] in graph()[module]
