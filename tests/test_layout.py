"""The layering of docs/architecture.md: the layers of service/ (each module imports only its
own layer and those below), the server never imports the offline tools, and the root command
works without them (the proxy image ships service/ and conscience_cli/ only)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = ("trainer", "evaluation", "conscience_cli")
ARCHITECTURE = ROOT / "docs" / "architecture.md"

Layer = tuple[str, tuple[str, ...]]  # (name, the module prefixes it holds)


def declared_layers(page: str = "") -> list[Layer]:
    """The layers drawn in docs/architecture.md's "Layers" section, bottom first: its first
    `text` block lists them top first, one a line (name, then module prefixes); the lines
    between them (arrows) start with a space. The drawing is the one declaration."""
    section = (page or ARCHITECTURE.read_text(encoding="utf-8")).split("\n## Layers\n", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    rows = [line.split() for line in block.splitlines() if line.strip() and not line[0].isspace()]
    return [(row[0], tuple(row[1:])) for row in reversed(rows)]


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of_service(root: Path = ROOT) -> dict[str, set[str]]:
    """Every module of `root`/service/ and the service modules it imports anywhere in the file:
    at the top, inside functions, under TYPE_CHECKING (a type-only import couples as well)."""
    paths = sorted((root / "service").rglob("*.py"))
    modules = {_module_name(root, path): path for path in paths}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, `level - 1` packages up
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}".rstrip(".")
                # `from service import tracing` imports the module service.tracing
                imported |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                             for alias in node.names}
        graph[module] = {name for name in imported if name.split(".")[0] == "service"}
    return graph


def layer_of(module: str, layers: list[Layer]) -> int | None:
    """The index (0: bottom) of the layer holding `module`: its longest matching prefix."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(layers) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def upward_imports(graph: dict[str, set[str]], layers: list[Layer]) -> list[str]:
    """Each import of a module in a higher layer than the importer's own."""
    found = []
    for module, imported in sorted(graph.items()):
        own = layer_of(module, layers)
        for name in sorted(imported):
            target = layer_of(name, layers)
            if own is not None and target is not None and target > own:
                found.append(f"{module} ({layers[own][0]}) imports {name} ({layers[target][0]})")
    return found


def test_every_module_of_service_is_in_one_declared_layer() -> None:
    layers = declared_layers()
    prefixes = [prefix for _, held in layers for prefix in held]
    assert len(prefixes) == len(set(prefixes)), "a module prefix in two layers"
    graph = imports_of_service()
    # The root package (an empty __init__) holds nothing to place.
    assert [module for module in graph if module != "service" and layer_of(module, layers) is None] == []
    assert [prefix for prefix in prefixes if not any(m == prefix or m.startswith(prefix + ".") for m in graph)] == []


def test_no_module_of_service_imports_a_layer_above_its_own() -> None:
    assert upward_imports(imports_of_service(), declared_layers()) == []


PLANTED = {
    "top level": "from service.api.state import app_settings\n",
    "in a function": "def _late() -> None:\n    import service.api.state\n",
    "type only": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from service.api import state\n",
    "relative": "from ..api import state\n",
}


@pytest.mark.parametrize("form", PLANTED)
def test_an_upward_import_planted_in_a_copy_is_caught(tmp_path: Path, form: str) -> None:
    shutil.copytree(ROOT / "service", tmp_path / "service", ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "service" / "store" / "db.py").open("a", encoding="utf-8") as module:
        module.write(PLANTED[form])
    planted = upward_imports(imports_of_service(tmp_path), declared_layers())
    assert planted == ["service.store.db (store) imports service.api.state (api)"]


def test_a_layer_drawn_in_another_order_turns_todays_imports_upward() -> None:
    """The check reads the drawing: draw the backends below the conscience and the backends'
    real imports of the conscience (its probe, its labels) go upward."""
    lines = ARCHITECTURE.read_text(encoding="utf-8").split("\n")
    backends, conscience = (next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
                            for name in ("backends", "conscience"))
    lines[backends], lines[conscience] = lines[conscience], lines[backends]
    layers = declared_layers("\n".join(lines))
    assert [name for name, _ in layers][5:7] == ["backends", "conscience"]
    assert any(" (backends) imports service.conscience." in line
               for line in upward_imports(imports_of_service(), layers))


def test_nothing_under_service_imports_the_offline_packages() -> None:
    offenders = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            )
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in OFFLINE]
    assert offenders == []


# Hides the offline packages the way an image without them would.
WITHOUT_OFFLINE = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("trainer", "evaluation"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
sys.meta_path.insert(0, Hide())
sys.argv = ["conscience", *sys.argv[1:]]
from conscience_cli.main import main
main()
"""


def _without_offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_OFFLINE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_without_the_offline_packages_the_proxy_commands_still_work() -> None:
    done = _without_offline("adapters", "--help")
    assert done.returncode == 0, done.stderr
    listing = _without_offline("--help")
    assert listing.returncode == 0 and "serve" in listing.stdout and "train" in listing.stdout


def test_without_the_offline_packages_their_commands_name_the_package() -> None:
    for command, package in (("train", "trainer"), ("finetune", "trainer"), ("eval", "evaluation"),
                             ("calibrate", "evaluation")):
        done = _without_offline(command, "--base-model", "x")
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and f"`{package}` package" in line, line
