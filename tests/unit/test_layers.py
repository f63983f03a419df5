"""The library's layering: no module below the CLI imports the CLI, typer or rich, and the import
graph between dualpatch's own modules has no cycle and never points up the layer order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import REPO_ROOT

SRC = REPO_ROOT / "src" / "dualpatch"

#: Layer of each top-level module or package, lowest first. A module may import its own layer or
#: any lower one. ``report`` renders results and sits below ``experiment``, which writes a report
#: at the end of a run; ``evaluation`` is plain metrics beside scoring. Modules that are not listed
#: (added later) are still checked for cycles and for CLI imports.
LAYERS = {
    "errors": 0,
    "defaults": 0,
    "fileio": 0,
    "events": 0,
    "environment": 0,
    "limits": 0,
    # the model card: the one reader of model.json, below every layer that reads a model folder
    "card": 1,
    "data": 1,
    "features": 2,
    "bank": 3,
    "scoring": 4,
    "metrics": 4,
    # the scorer contract and the one predict loop: numpy only, below models and serving
    "prediction": 4,
    "models": 5,
    "threshold": 5,
    "augment": 6,
    # the run spec reads the registries (data, backbones, scoring, augment) for its choices
    "spec": 6,
    "spec_values": 6,
    "serving": 6,
    "cluster": 6,
    "report": 7,
    "experiment": 8,
    "cli": 9,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_cli(module: str) -> bool:
    top = module.split(".")[1] if "." in module else ""
    return top == "cli" or top.startswith("cli_")


def _imports(path: Path, module: str) -> set[str]:
    """dualpatch modules that ``module`` imports anywhere in its file, lazy imports included."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dualpatch")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("dualpatch"):
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if (SRC.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    SRC.parent / Path(*sub.split(".")) / "__init__.py"
                ).exists():
                    found.add(sub)
                else:
                    found.add(target)
    # the package's own __init__ is a lazy facade over models; it is not a layer of its own
    return {m for m in found if m != "dualpatch" and m != module}


def _graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    return {_module_name(p): _imports(p, _module_name(p)) for p in files}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    top = parts[1]
    return LAYERS.get("cli" if _is_cli(module) else top)


def test_no_library_module_imports_the_cli():
    offenders = [
        f"{m} imports {t}"
        for m, targets in _graph().items()
        if not _is_cli(m)
        for t in targets
        if _is_cli(t)
    ]
    assert not offenders, offenders


def test_imports_never_point_up_the_layers():
    offenders = []
    for m, targets in _graph().items():
        own = _layer(m)
        for t in targets:
            theirs = _layer(t)
            if own is not None and theirs is not None and theirs > own:
                offenders.append(f"{m} (layer {own}) imports {t} (layer {theirs})")
    assert not offenders, offenders


def test_import_graph_has_no_cycle():
    graph = _graph()

    # collapse submodules of the same top-level package: a cycle inside one package is fine
    # (data/__init__ re-exports its modules), a cycle between layers is not
    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])

    collapsed: dict[str, set[str]] = {}
    for m, targets in graph.items():
        collapsed.setdefault(top(m), set()).update(top(t) for t in targets if top(t) != top(m))
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(collapsed.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(nxt):
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(collapsed):
        if not state.get(node):
            visit(node)


def _module_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between single modules (lazy imports included), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt) and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if not state.get(node) and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules():
    """Module by module, inside a package too: ``models/persistence`` finds the estimators through
    the registry they add themselves to, not by importing them back."""
    cycle = _module_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_module_cycle_check_finds_a_cycle_inside_a_package(tmp_path, monkeypatch):
    pkg = tmp_path / "dualpatch"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "persistence.py").write_text(
        "def classes():\n    from dualpatch.models.patchcore import PatchCore\n"
    )
    (pkg / "models" / "patchcore.py").write_text("from dualpatch.models import persistence\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    assert _module_cycle(_graph()) == [
        "dualpatch.models.patchcore",
        "dualpatch.models.persistence",
        "dualpatch.models.patchcore",
    ]


def test_the_layer_check_catches_a_cycle(tmp_path, monkeypatch):
    """The checker itself: a fake package where a low layer imports the CLI is reported."""
    pkg = tmp_path / "dualpatch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "memory.py").write_text("def f():\n    from .cli import app\n")
    (pkg / "cli.py").write_text("from .memory import f\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    graph = _graph()
    assert "dualpatch.cli" in graph["dualpatch.memory"]
    with pytest.raises(AssertionError):
        test_no_library_module_imports_the_cli()
    with pytest.raises(pytest.fail.Exception):
        test_import_graph_has_no_cycle()


#: the modules that define the estimators, whose private names lower layers may not use
ESTIMATORS = ("models/patchcore.py", "models/dual.py")


def _estimator_private_names() -> set[str]:
    """Private methods and attributes (``_name``, not dunder) the estimator classes define."""
    names: set[str] = set()
    for rel in ESTIMATORS:
        for node in ast.walk(ast.parse((SRC / rel).read_text())):
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "self":
                    names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_calls_outside_models() -> list[str]:
    """``x._name`` in a module outside ``models/`` (below it, or above it: serving, cluster,
    experiment, the CLI...) where ``_name`` is an estimator's private name (``self._name`` is the
    module's own object)."""
    private, found = _estimator_private_names(), []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        if _layer(module) is None or module.split(".")[1] == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                    found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_models_reaches_into_an_estimator():
    """The feature cache, the spill store and every lower module get what they need passed down
    (a ``FeatureSource``, a ``MemoryBank``, values); the runtimes, the server and every higher
    module use the estimators' public methods (``score_images``, ``predict_batches``...): none
    touches an estimator's private parts."""
    assert _private_calls_outside_models() == []


def test_the_private_call_check_finds_a_call_up(tmp_path, monkeypatch):
    pkg = tmp_path / "dualpatch"
    for folder in ("models", "bank", "serving"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "patchcore.py").write_text(
        "class PatchCore:\n    def _cache_key(self, s):\n        self._prefix = 1\n"
        "    def _score_batch(self, images):\n        pass\n"
    )
    (pkg / "models" / "dual.py").write_text("")
    (pkg / "bank" / "feature_cache.py").write_text(
        "def key(model, s):\n    return model._cache_key(s)\n"
        "class Store:\n    def k(self):\n        return self._prefix\n"
    )
    # a layer above models: the runtime calling the estimator's private scoring
    (pkg / "serving" / "runtime.py").write_text(
        "def score(model, images):\n    return model._score_batch(images)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    assert _private_calls_outside_models() == [
        "dualpatch.bank.feature_cache:2: model._cache_key",
        "dualpatch.serving.runtime:2: model._score_batch",
    ]


def test_library_source_never_imports_typer_or_rich():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        if _is_cli(module):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            offenders += [
                f"{module}: {n}" for n in names if n.split(".")[0] in ("typer", "rich", "click")
            ]
    assert not offenders, offenders


def test_library_modules_do_not_load_typer():
    """Importing every library module (what a notebook does) never pulls in the CLI stack.

    Only typer and click are checked at run time: scikit-learn itself imports rich.
    """
    modules = sorted(m for m in _graph() if not _is_cli(m))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "    bad = [x for x in ('typer', 'click') if x in sys.modules]\n"
        "    if bad:\n"
        "        sys.exit(f'{m} loads {bad}')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_architecture_md_lists_every_layer_as_the_test_does():
    """ARCHITECTURE.md's layer table and ``LAYERS`` are one map: each package or module named
    there at its layer, and each top-level module or sub-package of src/ in ``LAYERS``."""
    import re

    text = (REPO_ROOT / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| (\d) \| ([^|]+) \|", text, flags=re.M)
    documented = {
        name.rstrip("/"): int(layer)
        for layer, names in rows
        for name in re.findall(r"`([^`]+)`", names)
    }
    assert {k: documented.get(k) for k in LAYERS} == LAYERS
    on_disk = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in SRC.iterdir() if (p / "__init__.py").exists()
    }
    assert on_disk == set(LAYERS)


def test_readme_how_it_works_names_every_sub_package():
    """README's "How it works" table walks the same folders as the code."""
    text = (REPO_ROOT / "README.md").read_text()
    table = text[text.index("## How it works") :].split("\n\n")[1]
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert [p for p in sorted(packages) if f"`{p}/" not in table] == []
