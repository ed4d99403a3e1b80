"""The stages below the curate command do not depend on it: each reads its own config, defined
beside its code, and curate/config.py only composes them (DESIGN.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "data_pipeline"
BELOW_CURATE = ("io", "filters", "dedup", "tokenizer", "tokenize", "executors", "decontaminate")
CURATE = "data_pipeline.curate"


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, anywhere in it (functions and
    TYPE_CHECKING blocks too), relative imports resolved; ``from pkg import name`` counts both
    ``pkg`` and ``pkg.name`` (name may be a module)."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


def curate_imports(path: Path) -> list[str]:
    package = ".".join(path.relative_to(PACKAGE.parent).parent.parts)
    modules = imported_modules(path.read_text(encoding="utf-8"), package)
    return sorted(m for m in modules if m == CURATE or m.startswith(CURATE + "."))


def test_the_check_sees_absolute_relative_and_nested_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..curate import config\nimport data_pipeline.curate.cli\n")
    assert imported_modules(probe.read_text(), "data_pipeline.filters") >= {
        "data_pipeline.curate.config",
        "data_pipeline.curate.cli",
    }
    assert "data_pipeline.curate" in imported_modules("from data_pipeline import curate", "data_pipeline.io")
    assert curate_imports(PACKAGE / "curate" / "cli.py")  # the command imports its own modules


@pytest.mark.parametrize("folder", BELOW_CURATE)
def test_no_stage_below_curate_imports_it(folder: str) -> None:
    sources = sorted((PACKAGE / folder).rglob("*.py"))
    assert sources
    offenders = {str(path.relative_to(PACKAGE.parent)): curate_imports(path) for path in sources}
    assert not {path: modules for path, modules in offenders.items() if modules}
