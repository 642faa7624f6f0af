"""The package's import graph is one-way: each module imports only from layers below its own.

Imports inside functions count too (that is where import circles used to hide).
Table from ARCHITECTURE.md §5.2, high to low; modules on one line are siblings and must not
import each other. A subpackage (``plot/``, ``widgets/``, ``cli/``, ``zoo/``) is one unit.
"""
import ast
from pathlib import Path

import pytest

import landscape_nb

LAYERS = """
__main__
cli | widgets
depth
schemes | paths | eigen_maps | plot | spectrum | autorange | recorder | reference
compute
cluster | store | dask_runner
store_chunks | store_writes | store_mismatch
store_lock
runners | validate
hessian | trajectory | reparam | splits
lanczos
evaluate
statecheck
tuning
model_paths
directions | fold | multipoint
params | data | metrics | spec | process | zoo
grid | surface
sharpness | persistence
errors | choices | trees | _version
"""
RANK = {name.strip(): rank for rank, line in enumerate(reversed(LAYERS.strip().splitlines()))
        for name in line.split("|")}
ROOT = Path(landscape_nb.__file__).parent


def _unit(module: str) -> str | None:
    """'landscape_nb.plot.figures' -> 'plot'; None for the package root or outside modules."""
    parts = module.split(".")
    return parts[1] if parts[0] == "landscape_nb" and len(parts) > 1 else None


def internal_imports(source: str, module: str, is_package: bool) -> set[str]:
    """Every landscape_nb unit that ``source`` (the text of ``module``) imports, anywhere in it."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
            if _unit(prefix) is not None:  # 'from .plot import x' is an import of plot, not of plot.x
                names = [prefix]
        else:
            continue
        found.update(u for u in map(_unit, names) if u is not None)
    return found


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Imports that go sideways or up the table, as readable lines."""
    bad = []
    for module, (source, is_package) in sorted(sources.items()):
        unit = _unit(module)
        if unit is None:
            continue
        if unit not in RANK:
            bad.append(f"{module}: unit {unit!r} is not in the layer table; add it to LAYERS")
            continue
        for target in sorted(internal_imports(source, module, is_package) - {unit}):
            if target not in RANK:
                bad.append(f"{module} imports {target!r}, which is not in the layer table")
            elif RANK[target] >= RANK[unit]:
                bad.append(f"{module} (layer {RANK[unit]}) imports {target} (layer {RANK[target]})")
    return bad


def _package_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        sources[".".join(parts)] = (path.read_text(), is_package)
    return sources


def test_every_import_goes_down_the_layer_table():
    bad = violations(_package_sources())
    assert not bad, "upward, sideways or unlisted imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("module, line", [
    ("landscape_nb.evaluate", "from .compute import compute_surface"),        # upward
    ("landscape_nb.sharpness", "def f():\n    from .surface import Surface"),  # upward, hidden in a function
    ("landscape_nb.plot.figures", "from ..widgets import Explorer"),           # upward from a subpackage
    ("landscape_nb.cluster", "import landscape_nb.store"),                     # sideways (siblings)
])
def test_an_upward_or_sideways_import_is_caught(module, line):
    sources = _package_sources()
    source, is_package = sources[module]
    sources[module] = (source + "\n" + line + "\n", is_package)
    assert any(v.startswith(module) for v in violations(sources))


def test_public_names_are_not_shadowed_by_submodules():
    """Importing a submodule sets an attribute of the package: ``lnb.sharpness`` must stay the
    function after ``landscape_nb.sharpness`` (the module) has been imported."""
    import importlib
    import inspect

    for path in ROOT.glob("*.py"):
        if path.stem != "__init__":
            importlib.import_module(f"landscape_nb.{path.stem}")
    modules = {name for name, (_, attr) in landscape_nb._LAZY.items() if attr is None}  # exported as modules
    assert modules == {"plot", "zoo", "cluster", "widgets", "grid"}
    shadowed = [n for n in landscape_nb.__all__ if n not in modules and inspect.ismodule(getattr(landscape_nb, n))]
    assert not shadowed, f"public names that resolve to a module, not the function: {shadowed}"
