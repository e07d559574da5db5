"""The layout is the architecture: imports point one way, and tests mirror the package file for file."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "structnets"
TESTS = Path(__file__).resolve().parent

# Each layer may import the layers listed beside it (and itself); fields never import each other.
LAYERS = {
    "core": set(),
    "graphs": {"core"},
    "nn": {"core", "graphs"},
    "models": {"core", "graphs", "nn"},
    "train": {"core", "graphs", "nn", "models"},
}
FIELDS = {"chem", "lidar", "physics", "text", "sequences"}
BELOW_FIELDS = set(LAYERS)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imported_layers(path: Path) -> set[str]:
    """The top-level structnets packages a module imports (relative or absolute)."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - (node.level - 1)]) if node.level > 1 else list(here)
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not target else [target]
            elif node.module and node.module.split(".")[0] == "structnets":
                names = [node.module.split(".")[1:] or [alias.name for alias in node.names]]
            else:
                continue
            for name in names:
                if name:
                    found.add(name[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "structnets" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path):
    layer = _layer(path)
    imported = _imported_layers(path) - {layer, "__init__", "__version__"}
    if layer in LAYERS:
        allowed = LAYERS[layer]
    elif layer in FIELDS:
        allowed = BELOW_FIELDS
    else:  # cli, __init__, __main__ sit on top
        return
    # the package root only carries the version and the public names of the core
    wrong = {name for name in imported if name in LAYERS or name in FIELDS} - allowed
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


def test_every_module_has_its_test_file():
    missing = []
    for path in _modules():
        if path.name.startswith("_") or path.parent == PACKAGE:
            continue
        expected = TESTS / path.relative_to(PACKAGE).parent / f"test_{path.name}"
        if not expected.is_file():
            missing.append(str(expected.relative_to(TESTS)))
    assert not missing, f"modules without a mirroring test file: {missing}"


def test_every_test_file_mirrors_a_module():
    orphans = []
    for path in sorted(TESTS.rglob("test_*.py")):
        relative = path.relative_to(TESTS)
        if len(relative.parts) == 1:  # tests of the whole package: cli, layout, README
            continue
        module = PACKAGE / relative.parent / path.name.removeprefix("test_")
        if not module.is_file():
            orphans.append(str(relative))
    assert not orphans, f"test files with no module of that name: {orphans}"
